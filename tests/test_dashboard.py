"""`telescope dashboard`: stored runs mirrored into Optuna studies that match the telescope
rows, mirrored again without duplicates, served live over optuna-dashboard's HTTP API,
and bad input in one line with nothing written."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import urllib.request
from pathlib import Path

import optuna
from micro import SMALLEST, micro_config, write_micro_config
from optuna.trial import TrialState
from pg import fresh_postgres_schema
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from telescope.cli.dashboard import serve_mirror
from telescope.cli.main import app
from telescope.config import parse_config
from telescope.dashboard.location import mirror_url, open_mirror
from telescope.dashboard.mirror import KEY_ATTR, Mirror, mirror
from telescope.dashboard.server import bind
from telescope.progress import SweepProgress
from telescope.spec import Status, TrialResult
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore

runner = CliRunner()
STATES = {
    Status.COMPLETED: TrialState.COMPLETE,
    Status.DIVERGED: TrialState.FAIL,
    Status.FAILED: TrialState.FAIL,
    Status.RUNNING: TrialState.RUNNING,
    Status.PENDING: TrialState.WAITING,
}


def store_of(url: str) -> MetricsStore:
    """The metrics store `smallest_sweep_db` ran with (beside its database)."""
    return MetricsStore(Path(url.removeprefix("sqlite:///")).parent / "store")


def by_key(storage, study_name: str) -> dict[str, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=study_name, storage=storage)
    return {t.system_attrs[KEY_ATTR]: t for t in study.trials}


def assert_mirrors(db: Database, store: MetricsStore, storage, sweep: str) -> None:
    """Every telescope trial of `sweep` is one Optuna trial with its params, value, state,
    attributes and step losses."""
    config = parse_config(db.get_sweep(sweep).config)
    for level in db.levels(sweep):
        name = f"{sweep} · level {level.level} · width {level.width}"
        trials = by_key(storage, name)
        rows = db.trials(sweep, level.level)
        assert sorted(trials) == sorted(r.key for r in rows), name
        steps = store.read(sweep, level.level)
        for row in rows:
            trial = trials[row.key]
            assert trial.params == {"lr": row.lr, "weight_decay": row.weight_decay}
            for param, value in trial.params.items():
                dist = trial.distributions[param]
                assert dist.log and dist.low <= value <= dist.high
                assert (dist.low, dist.high) == (min(p[param] for p in level.grid), max(p[param] for p in level.grid))
            assert trial.state is STATES[row.status]
            expected = row.val_loss if config.objective == "val_loss" else row.train_loss
            assert trial.value == (expected if row.status is Status.COMPLETED else None)
            attrs = trial.user_attrs
            assert (attrs["trial_key"], attrs["width"], attrs["seed"], attrs["status"]) == (
                row.key,
                row.width,
                row.seed,
                row.status.value,
            )
            assert (attrs["tokens"], attrs["flops"], attrs["device"], attrs["fingerprint"]) == (
                row.tokens,
                row.flops,
                row.device,
                row.fingerprint,
            )
            assert attrs["muon_lr_ratio"] == row.muon_lr_ratio  # fixed in this sweep: an attribute
            curve = steps[steps.trial_key == row.key]
            assert trial.intermediate_values == dict(zip(curve.step.tolist(), curve.train_loss.tolist()))
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.user_attrs["level_best"] == level.best and study.user_attrs["level_best_loss"] == level.best_loss
        assert study.user_attrs["sweep_answer"]["best"] == db.get_sweep(sweep).result["best"]
        assert study.metric_names == [config.objective]


def test_a_micro_sweep_mirrors_trial_for_trial_and_a_second_mirror_adds_nothing(
    smallest_sweep_db: str, tmp_path: Path
) -> None:
    store = store_of(smallest_sweep_db)
    storage = open_mirror(mirror_url(Database(smallest_sweep_db, create=False).url, str(tmp_path / "mirror.db")))
    with Database(smallest_sweep_db, create=False) as db:
        passes = Mirror(db, store, storage)
        first = passes.run()
        levels = db.levels("micro")
        assert (first.studies, first.trials, first.updated) == (len(levels), len(db.trials("micro")), 0)
        assert [s.study_name for s in storage.get_all_studies()] == [
            "micro · level 0 · width 16",
            "micro · level 1 · width 32",
        ]
        assert_mirrors(db, store, storage, "micro")
        assert not passes.run().changed  # the same mirror, from what it remembers
        assert not mirror(db, store, storage).changed  # a new one, from what the storage holds
        assert sum(len(storage.get_all_trials(s._study_id)) for s in storage.get_all_studies()) == first.trials


def test_diverged_and_failed_trials_are_fail_with_their_reason(tmp_path: Path) -> None:
    url, store = f"sqlite:///{tmp_path / 't.db'}", MetricsStore(tmp_path / "store")
    with Database(url) as db:
        _planned_sweep(db, "bad", n=3)
        keys = [t.key for t in db.trials("bad")]
        db.record_results(
            "bad",
            [
                (keys[0], TrialResult(Status.DIVERGED, train_loss=None, val_loss=None, steps=3)),
                (
                    keys[1],
                    TrialResult(
                        Status.FAILED,
                        train_loss=None,
                        val_loss=None,
                        error="Traceback ...\nRuntimeError: CUDA out of memory",
                    ),
                ),
                (keys[2], TrialResult(Status.COMPLETED, train_loss=2.5, val_loss=2.75)),
            ],
        )
        storage = open_mirror(mirror_url(db.url, None))
        mirror(db, store, storage)
    trials = by_key(storage, "bad · level 0 · width 16")
    assert trials[keys[0]].state is TrialState.FAIL and trials[keys[0]].user_attrs["reason"].startswith(
        "diverged by step 3"
    )
    assert (
        trials[keys[1]].state is TrialState.FAIL
        and trials[keys[1]].user_attrs["reason"] == "RuntimeError: CUDA out of memory"
    )
    assert trials[keys[2]].state is TrialState.COMPLETE and trials[keys[2]].value == 2.75
    assert (tmp_path / "t.optuna.db").is_file()  # the default place: beside the database


def test_transfer_check_lines_are_one_study_each_with_their_extensions(tmp_path: Path) -> None:
    config = write_micro_config(
        tmp_path / "c.toml",
        model={"seq_len": 16},
        train={"steps": 4, "batch_size": 2, "warmup_steps": 1, "eval_batches": 1},
    )
    places = ["--db", str(tmp_path / "t.db"), "--store", str(tmp_path / "store")]
    out = runner.invoke(
        app, ["transfer-check", str(config), "--points", "3", "--widths", "16,32", "--name", "tc", *places]
    )
    assert out.exit_code in (0, 1), out.output
    with Database(str(tmp_path / "t.db"), create=False) as db:
        storage = open_mirror(mirror_url(db.url, None))
        mirror(db, MetricsStore(tmp_path / "store"), storage)
        rows = db.trials("tc")
        verdict = db.get_sweep("tc").result["verdict"]
    studies = {s.study_name: s for s in storage.get_all_studies()}
    assert sorted(studies) == ["tc · line 0 · width 16", "tc · line 1 · width 32"]
    for width, name in ((16, "tc · line 0 · width 16"), (32, "tc · line 1 · width 32")):
        trials = by_key(storage, name)
        line = [r for r in rows if r.width == width]  # extension levels included
        assert sorted(trials) == sorted(r.key for r in line)
        for r in line:
            assert trials[r.key].params == {"lr": r.lr} and trials[r.key].value == r.val_loss
            assert trials[r.key].user_attrs["weight_decay"] == r.weight_decay
        assert studies[name].user_attrs["run_answer"]["verdict"] == verdict


def test_batch_study_lines_are_one_study_per_optimizer_and_batch_size(tmp_path: Path) -> None:
    """Stored as `run_batch_study` stores them: a line per (table, batch size), an extension
    at a later level joining its line."""
    config = parse_config(micro_config())
    lines = {0: ("paper", 2, [0.01, 0.02]), 1: ("adamw", 2, [0.01, 0.02]), 2: ("paper", 2, [0.04])}
    with Database(f"sqlite:///{tmp_path / 't.db'}") as db:
        db.create_sweep(
            "bs", {"study": 1}, parametrization="paper", base_width=16, calibration_width=16, kind="batch-study"
        )
        for level, (table, batch, lrs) in lines.items():
            db.plan_level("bs", level, width=16, grid=[{"lr": lr} for lr in lrs])
            specs = [
                dataclasses.replace(
                    config.trial_spec(16, {"lr": lr, "weight_decay": 0.0}, 0),
                    parametrization=table,
                    train=dataclasses.replace(config.train, batch_size=batch),
                )
                for lr in lrs
            ]
            db.add_trials("bs", level, [(f"{table}-B{batch}-lr={s.lr:g}-s0", s) for s in specs])
        db.record_results(
            "bs", [(t.key, TrialResult(Status.COMPLETED, train_loss=t.lr, val_loss=1.0)) for t in db.trials("bs")]
        )
        storage = open_mirror(mirror_url(db.url, None))
        mirror(db, MetricsStore(tmp_path / "store"), storage)
    assert [s.study_name for s in storage.get_all_studies()] == [
        "bs · line 0 · paper · batch 2",
        "bs · line 1 · adamw · batch 2",
    ]
    paper = by_key(storage, "bs · line 0 · paper · batch 2")
    assert sorted(t.params["lr"] for t in paper.values()) == [0.01, 0.02, 0.04]
    assert all(t.value == t.params["lr"] for t in paper.values())  # a batch study ranks by train loss
    assert paper["paper-B2-lr=0.04-s0"].distributions["lr"].high == 0.04


def test_a_trial_that_finishes_while_serving_shows_within_the_refresh_period(tmp_path: Path) -> None:
    url, store = f"sqlite:///{tmp_path / 't.db'}", MetricsStore(tmp_path / "store")
    refresh = 0.5
    with Database(url) as db:
        _planned_sweep(db, "live", n=2)
        first, second = (t.key for t in db.trials("live"))
        with serve_mirror(bind("127.0.0.1", 0), db, store, refresh=refresh) as base:
            studies = _get(base, "/api/studies")["study_summaries"]
            assert [s["study_name"] for s in studies] == ["live · level 0 · width 16"]
            study_id = studies[0]["study_id"]
            assert _states(base, study_id) == {first: "Waiting", second: "Waiting"}

            db.mark_running("live", [first])
            _wait_for(lambda: _states(base, study_id)[first] == "Running", refresh)
            db.record_results("live", [(first, TrialResult(Status.COMPLETED, train_loss=3.0, val_loss=3.25))])
            _wait_for(lambda: _states(base, study_id)[first] == "Complete", refresh)
            trial = next(t for t in _get(base, f"/api/studies/{study_id}")["trials"] if t["number"] == 0)
            assert trial["values"] == [3.25]
            assert _states(base, study_id)[second] == "Waiting"
        # the same trial moved on in place: no second copy
        assert len(by_key(open_mirror(mirror_url(db.url, None)), "live · level 0 · width 16")) == 2


def test_the_server_answers_with_the_studies_and_the_page(smallest_sweep_db: str, tmp_path: Path) -> None:
    with Database(smallest_sweep_db, create=False) as db:
        with serve_mirror(bind("127.0.0.1", 0), db, store_of(smallest_sweep_db), str(tmp_path / "m.db")) as base:
            names = [s["study_name"] for s in _get(base, "/api/studies")["study_summaries"]]
            assert names == [f"micro · level {lv.level} · width {lv.width}" for lv in db.levels("micro")]
            with urllib.request.urlopen(base + "/dashboard", timeout=10) as page:
                assert page.status == 200 and b"bundle.js" in page.read()


def test_the_mirror_lives_in_its_own_postgres_schema(pg_database) -> None:
    url = fresh_postgres_schema(pg_database)
    schema = make_url(url).query["options"].removeprefix("-csearch_path=")
    with Database(url) as db:
        _planned_sweep(db, "pg", n=2)
        target = mirror_url(db.url, None)
        assert target.query["options"] == f"-csearch_path={schema}_optuna"
        storage = open_mirror(target)
        try:
            counts = mirror(db, MetricsStore("unused-store"), storage)
            assert (counts.studies, counts.trials) == (1, 2)
            assert not mirror(db, MetricsStore("unused-store"), storage).changed
            assert len(by_key(storage, "pg · level 0 · width 16")) == 2
        finally:
            storage.engine.dispose()
        engine = create_engine(db.url)
        try:
            optuna_tables = set(inspect(engine).get_table_names(schema=f"{schema}_optuna"))
            assert {"studies", "trials"} <= optuna_tables and "sweeps" not in optuna_tables
            assert "studies" not in inspect(engine).get_table_names(schema=schema)  # telescope's schema untouched
        finally:
            engine.dispose()


def test_sweep_with_dashboard_serves_for_the_sweep_s_life(tmp_path: Path) -> None:
    config = write_micro_config(tmp_path / "c.toml", **SMALLEST)
    db = tmp_path / "t.db"
    out = runner.invoke(
        app, ["sweep", str(config), "--db", str(db), "--store", str(tmp_path / "s"), "--dashboard", "--port", "0"]
    )
    assert out.exit_code == 0, out.output
    assert "dashboard: http://127.0.0.1:" in out.stderr
    storage = open_mirror(mirror_url(Database(str(db), create=False).url, None))
    with Database(str(db), create=False) as database:
        assert_mirrors(database, MetricsStore(tmp_path / "s"), storage, "micro")  # the final state, mirrored at the end
    assert SweepProgress.dashboard is None


def test_the_live_view_shows_the_dashboard_address() -> None:
    from rich.console import Console

    console = Console(record=True, width=100, force_terminal=False)
    SweepProgress.dashboard = "http://127.0.0.1:8080"
    try:
        console.print(SweepProgress([(9, 1.0)], console=console)._render())
    finally:
        SweepProgress.dashboard = None
    assert "dashboard  http://127.0.0.1:8080" in console.export_text()


# --------------------------------------------------------------------------- bad input


def one_line_exit_2(args: list[str]) -> str:
    result = runner.invoke(app, ["dashboard", *args])
    assert result.exit_code == 2, (args, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    return lines[0]


def test_bad_input_is_one_line_and_writes_nothing(smallest_sweep_db: str, tmp_path: Path) -> None:
    db = ["--db", smallest_sweep_db]
    mirror_file = tmp_path / "m.db"
    where = ["--storage", str(mirror_file), "--port", "0"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert "in use" in one_line_exit_2([*db, "--storage", str(mirror_file), "--port", str(port)])
        config = write_micro_config(tmp_path.parent / f"{tmp_path.name}.toml", **SMALLEST)
        sweep = runner.invoke(
            app,
            [
                "sweep",
                str(config),
                "--db",
                str(tmp_path / "t.db"),
                "--store",
                str(tmp_path / "s"),
                "--dashboard",
                "--port",
                str(port),
            ],
        )
        assert sweep.exit_code == 2 and "in use" in sweep.stderr and len(sweep.stderr.strip().splitlines()) == 1, (
            sweep.output
        )
    assert "no sweep named 'nope'" in one_line_exit_2(["nope", *db, *where])
    assert "not an address of this machine" in one_line_exit_2([*db, *where, "--host", "192.0.2.1"])
    assert "not a known address" in one_line_exit_2([*db, *where, "--host", "no-such-host.invalid"])
    assert "cannot reach the Optuna storage" in one_line_exit_2(
        [*db, "--port", "0", "--storage", "postgresql://postgres@127.0.0.1:1/x"]
    )
    assert "the telescope database itself" in one_line_exit_2([*db, "--port", "0", "--storage", smallest_sweep_db])
    assert "no telescope database" in one_line_exit_2(["--db", str(tmp_path / "none.db"), *where])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- helpers


def _planned_sweep(db: Database, name: str, n: int) -> None:
    """A sweep whose level 0 holds `n` pending trials, as the driver leaves it before training."""
    config = parse_config(micro_config(name=name))
    db.create_sweep(name, config.to_dict(), parametrization="paper", base_width=16, calibration_width=64)
    points = [{"lr": 0.004 * 4**i, "weight_decay": 0.01} for i in range(n)]
    db.plan_level(name, 0, width=16, grid=points)
    db.add_trials(name, 0, [(f"L0-p{i}-s0", config.trial_spec(16, p, 0)) for i, p in enumerate(points)])


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.load(response)


def _states(base: str, study_id: int) -> dict[str, str]:
    trials = _get(base, f"/api/studies/{study_id}")["trials"]
    return {next(a["value"] for a in t["user_attrs"] if a["key"] == "trial_key"): t["state"] for t in trials}


def _wait_for(condition, refresh: float) -> None:
    """Poll until `condition` holds; it must within one refresh period plus the dashboard's
    own cache of the trials (2 s for a small study)."""
    deadline = time.monotonic() + refresh + 2.0 + 1.0
    while not condition():
        assert time.monotonic() < deadline, "the change did not show within the refresh period"
        time.sleep(0.1)
