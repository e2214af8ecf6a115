"""`telescope sweep` end to end: real proxy trials, every trial stored, resume after SIGKILL,
an external Ray cluster, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from micro import run_micro_sweep, sweep_command, wait_for, write_micro_config
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.spec import Status
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore

runner = CliRunner()


def write_config(tmp_path: Path, steps: int = 12, min_points: int = 1, executor: str = "local") -> Path:
    return write_micro_config(
        tmp_path / "micro.toml",
        train={"steps": steps},
        narrowing={"min_points": min_points},
        executor={"kind": executor},
    )


def assert_complete(url: str, store: Path, sweep: str, expected_trials: int) -> None:
    """Every planned trial is stored once, finished, with its Parquet metrics file."""
    with Database(url, create=False) as db:
        trials = db.trials(sweep)
        assert db.get_sweep(sweep).status == "completed"
    keys = [t.key for t in trials]
    assert len(keys) == len(set(keys)) == expected_trials
    assert all(t.status in (Status.COMPLETED, Status.DIVERGED) for t in trials)
    metrics = MetricsStore(store)
    assert all(metrics.exists(sweep, t.level, t.key) for t in trials)
    frame = metrics.read(sweep)
    assert set(frame["trial_key"]) == set(keys)


def test_sweep_with_local_executor_stores_every_trial_and_exports(tmp_path: Path, db_url: str) -> None:
    store = tmp_path / "store"
    config = write_config(tmp_path)
    result = runner.invoke(app, ["sweep", str(config), "--db", db_url, "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "base values" in result.output and "parameter groups" in result.output
    assert_complete(db_url, store, "micro", expected_trials=9 + 1 + 1)

    with Database(db_url, create=False) as db:
        finished_at = db.get_sweep("micro").updated_at
    again = runner.invoke(app, ["sweep", str(config), "--db", db_url, "--store", str(store)])
    assert again.exit_code == 0, again.output
    with Database(db_url, create=False) as db:  # a finished sweep answers again, untouched
        assert {t.attempts for t in db.trials("micro")} == {1}
        assert db.get_sweep("micro").updated_at == finished_at

    out = runner.invoke(app, ["export", "micro", "--db", db_url, "--format", "json"])
    payload = json.loads(out.stdout)
    assert {g["role"] for g in payload["groups"]} == {"embedding", "hidden", "output", "vector"}
    assert payload["target_width"] == 256 and len(payload["provenance"]["levels"]) == 3
    for fmt, parse in (("yaml", yaml.safe_load), ("toml", tomllib.loads)):
        out = runner.invoke(app, ["export", "micro", "--db", db_url, "--format", fmt, "--target-width", "512"])
        assert out.exit_code == 0, out.output
        assert parse(out.stdout)["base"] == payload["base"]


def _sweep_process(config: Path, url: str, store: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        # --no-reuse trains: the reference sweep beside it in the database must not stand in
        sweep_command(config, url, store, "--name", name, "--no-reuse"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sweep_killed_mid_level_resumes_to_the_same_answer(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path, steps=30, min_points=3)  # 3 levels of 3x3: 27 trials and any growth
    store = tmp_path / "store"
    reference = run_micro_sweep(db_url, store, "uninterrupted", train={"steps": 30}, narrowing={"min_points": 3})

    def level_one_half_done() -> bool:
        with Database(db_url, create=False) as db:
            done = [t for t in db.trials("interrupted", level=1) if t.finished]
            return 2 <= len(done)

    proc = _sweep_process(config, db_url, store, "interrupted")
    try:
        wait_for(lambda: proc.poll() is not None or (sweep_exists(db_url) and level_one_half_done()))
        proc.send_signal(signal.SIGSTOP)  # frozen mid-level, still holding the sweep
        # A second driver on the same sweep is refused while the first holds it.
        second = _sweep_process(config, db_url, store, "interrupted")
        assert second.wait(timeout=120) == 2
        assert (
            second.stderr.read()
            .strip()
            .endswith(
                "is being run by another telescope process on "
                f"{Database(db_url, create=False).display_url}; wait for it to end"
            )
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Database(db_url, create=False) as db:
        cut = db.trials("interrupted")
        assert db.get_sweep("interrupted").status == "running"
    assert any(not t.finished for t in cut), "the sweep finished before it was killed"
    assert all(t.attempts <= 1 for t in cut)  # the refused driver ran nothing
    # A full disk truncated one finished trial's metrics: the resumed sweep runs it again.
    truncated = next(t for t in cut if t.finished)
    metrics_file = MetricsStore(store).path("interrupted", truncated.level, truncated.key)
    metrics_file.write_bytes(metrics_file.read_bytes()[:50])

    proc = _sweep_process(config, db_url, store, "interrupted")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    # as many as the uninterrupted sweep ran (whether the last level grows depends on the CPU's kernels)
    assert_complete(db_url, store, "interrupted", expected_trials=sum(lv["trials"] for lv in reference["levels"]))
    with Database(db_url, create=False) as db:
        resumed = db.get_sweep("interrupted").result
        finished_before = {t.key: t for t in cut if t.finished}
        for t in db.trials("interrupted"):
            if t.key == truncated.key:
                assert t.attempts == truncated.attempts + 1 and t.val_loss == truncated.val_loss
            elif t.key in finished_before:  # finished trials were not run again
                assert t.attempts == finished_before[t.key].attempts
                assert t.val_loss == finished_before[t.key].val_loss
    assert resumed["best"] == reference["best"]
    assert [lv["best"] for lv in resumed["levels"]] == [lv["best"] for lv in reference["levels"]]


def sweep_exists(url: str) -> bool:
    try:
        with Database(url, create=False) as db:
            return db.get_sweep("interrupted") is not None
    except Exception:
        return False


def test_changed_config_is_refused_unless_new(tmp_path: Path, db_url: str) -> None:
    store = tmp_path / "store"
    config = write_config(tmp_path, steps=4)
    assert runner.invoke(app, ["sweep", str(config), "--db", db_url, "--store", str(store)]).exit_code == 0
    write_config(tmp_path, steps=5)
    refused = runner.invoke(app, ["sweep", str(config), "--db", db_url, "--store", str(store)])
    assert refused.exit_code == 2
    assert "different configuration" in refused.output
    started = runner.invoke(app, ["sweep", str(config), "--db", db_url, "--store", str(store), "--new"])
    assert started.exit_code == 0, started.output
    with Database(db_url, create=False) as db:
        assert {s.name for s in db.list_sweeps()} == {"micro", "micro-2"}


def test_bad_inputs_exit_2_and_write_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    db = tmp_path / "t.db"
    cases = [
        ["sweep", str(tmp_path / "missing.toml"), "--db", f"sqlite:///{db}"],
        ["sweep", str(config), "--db", "nosuchdriver://x"],
        ["sweep", str(config), "--db", f"sqlite:///{db}", "--name", "bad name!"],
        ["export", "nosuch", "--db", f"sqlite:///{db}"],
        ["status", "nosuch", "--db", f"sqlite:///{db}"],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not db.exists()


def test_sweep_on_a_ray_cluster_started_separately(ray_cluster, tmp_path: Path, db_url: str) -> None:
    head, address = ray_cluster
    config = write_config(tmp_path, executor="ray")
    store = tmp_path / "store"
    done = subprocess.run(
        sweep_command(config, db_url, store, "--ray-address", address),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete(db_url, store, "micro", expected_trials=9 + 1 + 1)
    exported = subprocess.run(
        [sys.executable, "-m", "telescope", "export", "micro", "--db", db_url], capture_output=True, text=True
    )
    assert json.loads(exported.stdout)["sweep"] == "micro"
    assert head.poll() is None  # the sweep disconnected without stopping the cluster


def test_the_last_level_extends_past_an_edge_best_until_it_is_interior(tmp_path: Path) -> None:
    """The optimum doubles with the width, faster than the narrowing grid follows: the last
    level's best sits on its sub-grid's edge, so the level grows one step at a time past it."""
    from fake_trials import DriftingTrial
    from micro import micro_config

    from telescope.config import parse_config
    from telescope.runs.executor import make_executor
    from telescope.sweep import run_sweep

    config = parse_config(
        micro_config(
            search={"lr": {"lo": 0.001, "hi": 4.0, "points": 5}, "weight_decay": {"value": 0.1}},
            narrowing={"min_points": 3},
        )
    )
    url, store = f"sqlite:///{tmp_path / 't.db'}", MetricsStore(tmp_path / "store")
    executor = make_executor(config.executor, DriftingTrial())
    with Database(url) as db:
        result = run_sweep(config, db, store, "edge", executor=executor)
        last = result.levels[-1]
        lrs = sorted(t.lr for t in db.trials("edge", level=last.level))
        stored_at = db.get_sweep("edge").updated_at
        again = run_sweep(config, db, store, "edge", executor=executor)  # completed: derived again, untouched
        assert db.get_sweep("edge").updated_at == stored_at
    assert lrs[0] < result.best["lr"] < lrs[-1]
    assert len(lrs) > 3 and last.grid == f"{len(lrs)}"
    assert any("extended" in w and "past it" in w for w in last.warnings)
    assert result.best["lr"] == pytest.approx(0.03 * 64 / 16, rel=0.2)
    assert again == result


def test_a_trial_already_trained_is_reused_across_runs_unless_no_reuse(tmp_path: Path, db_url: str) -> None:
    """A new sweep over the same trials (--new) trains nothing: each trial takes the result
    and step metrics of the identical trial trained before, and status says where from."""
    store = tmp_path / "store"
    config = write_config(tmp_path, steps=4)
    places = ["--db", db_url, "--store", str(store)]
    assert runner.invoke(app, ["sweep", str(config), *places]).exit_code == 0
    again = runner.invoke(app, ["sweep", str(config), *places, "--new"])
    assert again.exit_code == 0, again.output
    retrained = runner.invoke(app, ["sweep", str(config), *places, "--new", "--no-reuse"])
    assert retrained.exit_code == 0, retrained.output
    with Database(places[1], create=False) as db:
        first, second, third = (db.trials(n) for n in ("micro", "micro-2", "micro-3"))
    assert [t.val_loss for t in second] == [t.val_loss for t in first] == [t.val_loss for t in third]
    assert {t.attempts for t in second} == {0} and {t.reused_from for t in second} == {f"micro/{t.key}" for t in first}
    assert {t.attempts for t in third} == {1} and {t.reused_from for t in third} == {None}
    metrics = MetricsStore(store)
    assert metrics.read("micro-2")["train_loss"].tolist() == metrics.read("micro")["train_loss"].tolist()
    assert set(metrics.read("micro-2")["trial_key"]) == {t.key for t in second}
    status = runner.invoke(app, ["status", "micro-2", "--format", "json", "--db", places[1]])
    assert {row["reused_from"] for row in json.loads(status.stdout)} == {f"micro/{t.key}" for t in first}
