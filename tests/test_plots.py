"""`telescope plot`: four valid figures from a real finished micro sweep, and the data behind
each figure equal to the database's rows, diverged and failed trials included."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from micro import micro_config
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.config import parse_config
from telescope.report.data import (
    best_losses,
    curves,
    drift_series,
    figure_data,
    fit_power_law,
    level_maps,
    load_sweep,
)
from telescope.report.plots import FIGURES, draw_loss_vs_width, draw_transfer
from telescope.runs.executor import make_executor
from telescope.search import fit_drift
from telescope.spec import Status, TrialResult
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.storage.query import run_query
from telescope.sweep import run_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MICRO = micro_config(
    train={"steps": 6, "warmup_steps": 1, "eval_batches": 1},
    search={"weight_decay": {"lo": 0.01, "hi": 0.1, "points": 2}},
)

runner = CliRunner()


@dataclasses.dataclass(frozen=True)
class FinishedSweep:
    url: str
    name: str
    diverged_key: str  # a level-0 trial on the best weight decay's lr curve
    failed_key: str


def build_micro_sweep(root: Path) -> FinishedSweep:
    """A real 3-level sweep (6 + 1 + 1 trials at widths 16, 32, 64) in root/sweep.db, built
    once per test session and shared by test_plots and test_report through the folder."""
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'sweep.db'}"
    done = root / "done"
    if not done.exists():
        config = parse_config(MICRO)
        with Database(url) as db:
            executor = make_executor(config.executor)
            try:
                result = run_sweep(config, db, MetricsStore(root / "store"), "micro", executor=executor)
            finally:
                executor.close()
            # A few proxy steps do not diverge or fail: record those outcomes directly, as the
            # driver stores them (NULL losses, a status), on trials that are not a level's best.
            best_wd = result.levels[0].best["weight_decay"]
            best_lr = result.levels[0].best["lr"]
            level0 = db.trials("micro", level=0)
            diverged = next(t for t in level0 if t.weight_decay == best_wd and t.lr != best_lr)
            failed = next(t for t in level0 if t.weight_decay != best_wd and t.lr != best_lr)
            db.record_results(
                "micro",
                [
                    (diverged.key, TrialResult(Status.DIVERGED, tokens=256, flops=1e6, wall_time=0.5, steps=2)),
                    (failed.key, TrialResult(Status.FAILED, error="RuntimeError: out of memory")),
                ],
            )
        (root / "keys").write_text(f"{diverged.key}\n{failed.key}\n")
        done.touch()
    diverged_key, failed_key = (root / "keys").read_text().split()
    return FinishedSweep(url, "micro", diverged_key, failed_key)


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> FinishedSweep:
    return build_micro_sweep(tmp_path_factory.getbasetemp() / "report-micro-sweep")


def fabricate_one_axis_sweep(url: str, name: str, *, finish: bool = True, transfer_check: dict | None = None) -> None:
    """A sweep that swept only lr (weight decay fixed), written row by row without training:
    level 0 at width 16 (its top lr diverged), level 1 at width 32."""
    config = parse_config(
        {
            "name": name,
            "model": {"depth": 1, "head_dim": 16, "seq_len": 32},
            "widths": {"base": 16, "calibration": 32, "target": 128},
            "search": {"lr": {"lo": 0.01, "hi": 0.16, "points": 3}, "weight_decay": {"value": 0.05}},
        }
    )
    levels = [(0, 16, {0.01: 3.1, 0.04: 2.7, 0.16: None}), (1, 32, {0.02: 2.5, 0.04: 2.4, 0.08: 2.45})]
    with Database(url) as db:
        db.create_sweep(
            name, config.to_dict(), parametrization="paper", base_width=16, calibration_width=32, target_width=128
        )
        summaries, optima = [], []
        for level, width, losses in levels:
            db.plan_level(name, level, width=width, grid=[{"lr": lr} for lr in losses])
            keys = {lr: f"L{level}-lr={lr:g}-s0" for lr in losses}
            db.add_trials(name, level, [(keys[lr], config.trial_spec(width, {"lr": lr}, 0)) for lr in losses])
            db.record_results(
                name,
                [
                    (
                        keys[lr],
                        TrialResult(Status.COMPLETED if loss else Status.DIVERGED, loss, loss, 100, 1e6, 1.0, 10),
                    )
                    for lr, loss in losses.items()
                ],
            )
            best_lr = min((lr for lr in losses if losses[lr]), key=lambda lr: losses[lr])
            db.finish_level(name, level, best={"lr": best_lr}, best_loss=losses[best_lr])
            optima.append((width, {"lr": best_lr}))
            summaries.append(
                {
                    "level": level,
                    "width": width,
                    "grid": "3",
                    "trials": 3,
                    "diverged": level == 0,
                    "failed": 0,
                    "best": {"lr": best_lr},
                    "best_loss": losses[best_lr],
                    "warnings": [],
                }
            )
        if not finish:
            return
        result = {
            "sweep": name,
            "parametrization": "paper",
            "objective": "val_loss",
            "base_width": 16,
            "calibration_width": 32,
            "target_width": 128,
            "best": {"lr": 0.04},
            "best_loss": 2.4,
            "fixed": {"weight_decay": 0.05, "muon_lr_ratio": 1.0},
            "levels": summaries,
            "warnings": [],
            "drift": [dataclasses.asdict(a) for a in fit_drift(optima, 128).axes],
        }
        if transfer_check is not None:
            result["transfer_check"] = transfer_check
        db.update_sweep(name, status="completed", result=result)


def loaded(url: str, name: str):
    with Database(url, create=False) as db:
        return load_sweep(db, name)


def query(micro: FinishedSweep, sql: str) -> list[dict]:
    return run_query(sql, micro.url).records()


def assert_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


# --------------------------------------------------------------------------- the files


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. matplotlib: a clipped title, a layout not applied
def test_plot_writes_four_pngs_and_svgs_and_prints_their_paths(micro: FinishedSweep, tmp_path: Path) -> None:
    out = tmp_path / "figures"
    result = runner.invoke(app, ["plot", micro.name, "--db", micro.url, "-o", str(out), "--svg"])
    assert result.exit_code == 0, result.output
    printed = [Path(line) for line in result.stdout.split()]
    expected = [out / f"{f.name}.{ext}" for f in FIGURES for ext in ("png", "svg")]
    assert printed == expected
    assert len(FIGURES) == 4 and sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected)
    for f in FIGURES:
        assert_png(out / f"{f.name}.png")
        assert (out / f"{f.name}.svg").read_text().lstrip().startswith("<?xml")


# --------------------------------------------------------------------------- the data behind each figure


def test_loss_vs_lr_curves_are_the_trials_at_each_levels_best_weight_decay(micro: FinishedSweep) -> None:
    data = loaded(micro.url, micro.name)
    drawn = curves(data, "lr")
    assert [c.width for c in drawn] == [16, 32, 64]
    for curve in drawn:
        rows = query(
            micro,
            f"SELECT trial_key, lr, val_loss, status FROM trials WHERE sweep = 'micro' AND level = {curve.level} "
            "AND weight_decay = (SELECT best_weight_decay FROM levels WHERE sweep = 'micro' AND level = "
            f"{curve.level}) "
            "ORDER BY lr",
        )
        assert [(t.key, t.values["lr"], t.loss, t.status.value) for t in curve.trials] == [
            (r["trial_key"], r["lr"], r["val_loss"], r["status"]) for r in rows
        ]
    diverged = [t for t in drawn[0].trials if t.key == micro.diverged_key]
    assert len(diverged) == 1 and diverged[0].status is Status.DIVERGED and diverged[0].loss is None


def test_diverged_trial_is_drawn_as_a_cross_on_the_loss_vs_lr_figure(micro: FinishedSweep) -> None:
    data = loaded(micro.url, micro.name)
    (lr,) = [r["lr"] for r in query(micro, f"SELECT lr FROM trials WHERE trial_key = '{micro.diverged_key}'")]
    fig = draw_transfer(curves(data, "lr"), data.objective)
    crosses = [line for line in fig.axes[0].get_lines() if line.get_marker() == "x" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in crosses] == [[lr]]
    # the completed points are drawn at their losses, the diverged one is not among them
    circles = [line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]
    assert lr not in list(circles[0].get_xdata())


def test_level_maps_hold_every_trial_of_each_level_with_its_status(micro: FinishedSweep) -> None:
    data = loaded(micro.url, micro.name)
    maps = level_maps(data)
    levels = query(
        micro, "SELECT level, width, best_lr, best_weight_decay FROM levels WHERE sweep = 'micro' ORDER BY level"
    )
    assert [(m.level, m.width) for m in maps] == [(r["level"], r["width"]) for r in levels]
    for m, lv in zip(maps, levels):
        assert m.best == {"lr": lv["best_lr"], "weight_decay": lv["best_weight_decay"]}
        rows = query(
            micro, f"SELECT lr, weight_decay, val_loss, status FROM trials WHERE sweep = 'micro' AND level = {m.level}"
        )
        cells = {(c.values["lr"], c.values["weight_decay"]): (c.loss, c.status.value) for c in m.cells}
        assert cells == {(r["lr"], r["weight_decay"]): (r["val_loss"], r["status"]) for r in rows}
    statuses = [c.status for c in maps[0].cells]
    assert statuses.count(Status.DIVERGED) == 1 and statuses.count(Status.FAILED) == 1
    # the grid narrows: level 0 spans the whole lr range, later levels a finer sub-grid
    assert maps[1].x_spacing < maps[0].x_spacing


def test_loss_vs_width_points_are_the_levels_best_losses_with_a_power_law_fit(micro: FinishedSweep) -> None:
    data = loaded(micro.url, micro.name)
    rows = query(micro, "SELECT width, best_loss FROM levels WHERE sweep = 'micro' ORDER BY level")
    points = best_losses(data)
    assert points == [(r["width"], r["best_loss"]) for r in rows]
    figures = figure_data(data)
    if figures.power_law is not None:  # three widths, three parameters: the curve passes through them
        for width, loss in points:
            assert figures.power_law(width) == pytest.approx(loss, abs=1e-3)
    else:  # a few proxy steps can give losses that no decreasing power law fits; the figure says so
        assert "power law" in figures.power_law_note


def test_power_law_fit_recovers_known_parameters_and_needs_three_widths() -> None:
    widths = [64, 128, 256, 512, 1024]
    law = fit_power_law(widths, [30.0 / d**0.7 + 1.5 for d in widths])
    assert (law.A, law.a, law.E) == pytest.approx((30.0, 0.7, 1.5), rel=1e-4)
    with pytest.raises(ValueError, match="needs 3 widths"):
        fit_power_law([64, 128], [2.0, 1.9])
    with pytest.raises(ValueError, match="do not follow a power law"):
        fit_power_law([16, 32, 64], [4.0, 3.86, 3.70])  # falls faster at larger width
    fig = draw_loss_vs_width(
        [(64, 2.0), (128, 1.9)], None, "a power-law fit needs 3 widths, this sweep has 2", "val_loss"
    )
    # said in words above the axes, where it covers no point
    assert "needs 3" in fig.axes[0].get_title() and not fig.axes[0].texts


def test_drift_points_are_the_level_optima_and_the_fit_is_the_stored_one(micro: FinishedSweep) -> None:
    data = loaded(micro.url, micro.name)
    with Database(micro.url, create=False) as db:
        stored = {d["name"]: d for d in db.require_sweep("micro").result["drift"]}
    rows = query(micro, "SELECT width, best_lr, best_weight_decay FROM levels WHERE sweep = 'micro' ORDER BY level")
    series = {s.name: s for s in drift_series(data)}
    assert set(series) == {"lr", "weight_decay"}
    for name in series:
        assert list(series[name].optima) == [(r["width"], r[f"best_{name}"]) for r in rows]
        assert dataclasses.asdict(series[name].fit) == stored[name]
        assert series[name].fitted()(1 / 256) == pytest.approx(stored[name]["at_target"])
        assert series[name].target_width == 256


def test_single_swept_hyperparameter_draws_a_line_per_level(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    fabricate_one_axis_sweep(url, "lr-only")
    data = loaded(url, "lr-only")
    figures = figure_data(data)
    assert figures.maps is None and [c.width for c in figures.lines] == [16, 32]
    assert [(c.values["lr"], c.status) for c in figures.lines[0].cells()][-1] == (0.16, Status.DIVERGED)
    assert figures.power_law is None and "needs 3" in figures.power_law_note
    out = tmp_path / "figs"
    result = runner.invoke(app, ["plot", "lr-only", "--db", url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    for f in FIGURES:
        assert_png(out / f"{f.name}.png")


# --------------------------------------------------------------------------- bad input


def test_bad_input_exits_2_with_one_line_and_writes_nothing(micro: FinishedSweep, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'open.db'}"
    fabricate_one_axis_sweep(url, "unfinished", finish=False)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["plot", "nosuch", "--db", micro.url, "-o", str(tmp_path / "out1")], "no sweep named 'nosuch'"),
        (["plot", "unfinished", "--db", url, "-o", str(tmp_path / "out2")], "has not finished"),
        (["plot", "micro", "--db", micro.url, "-o", str(a_file)], "is a file"),
        (["plot", "micro", "--db", micro.url, "-o", str(tmp_path / "missing" / "out3")], "does not exist"),
        (["plot", "micro", "--db", str(tmp_path / "none.db"), "-o", str(tmp_path / "out4")], "no telescope database"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "open.db", "open.db.lock"]
