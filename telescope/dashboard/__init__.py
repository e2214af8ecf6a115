"""Telescope's runs in optuna-dashboard: a mirror into an Optuna storage, and a server on it.

    storage = open_mirror(mirror_url(db.url, None))    # telescope.optuna.db beside telescope.db
    mirror(db, MetricsStore(), storage)                 # adds only what is new
    with serving(bind("127.0.0.1", 8080), storage, lambda: mirror(db, store, storage)) as url:
        ...                                             # optuna-dashboard at url, refreshed every 5 s

(`telescope.dashboard.location`, `.mirror`, `.server`; the studies are `.studies`.)
"""
