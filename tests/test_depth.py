"""Depth transfer (docs/design.md §8): the depth rule on the built-in proxy and on a user's
model, `[depths]` sweeps and their exports, and the bad inputs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from foreign_models import ResidualLM
from micro import SMALLEST, micro_config, run_config_sweep
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.config import parse_config
from telescope.coord.study import CoordCheckSettings, coord_check
from telescope.export import export_sweep
from telescope.models.foreign import optimizers_from_export, parametrize
from telescope.parametrization import DEFAULT_DEPTH_ALPHA, Depth, get_table
from telescope.proxy.model import build_model
from telescope.spec import ModelShape
from telescope.storage.database import Database

runner = CliRunner()


def depth_config(proxy: int, target: int, alpha: float, **sections) -> dict:
    """The micro sweep with [depths] in place of model.depth."""
    config = micro_config(depths={"proxy": proxy, "target": target}, **sections)
    del config["model"]["depth"]
    config["model"]["depth_alpha"] = alpha
    return config


# --------------------------------------------------------------------------- the built-in proxy


def test_depth_coord_check_passes_with_completep_and_drifts_without() -> None:
    """Across depths 2, 4, 8 the residual stream grows with depth without the rule and
    stays put with alpha = 1 (measured at seeds 0, 1, 2: residual slope +0.71 against
    -0.17 to -0.23)."""
    shape = ModelShape(head_dim=32, seq_len=32)
    settings = CoordCheckSettings(widths=(64,), depths=(2, 4, 8), shape=shape)
    completep = coord_check(replace(settings, shape=replace(shape, depth_alpha=1.0)))
    drifted = coord_check(settings)
    assert completep.passed, completep.layers
    assert not drifted.passed
    assert [v.layer for v in completep.layers] == ["embedding", "last.attn", "last.mlp", "residual", "logits"]
    residual = next(v for v in drifted.layers if v.layer == "residual")
    assert residual.slope > 0.5 and not residual.passed


def test_depth_coord_check_cli_says_what_it_checked() -> None:
    result = runner.invoke(
        app, ["coord-check", "--depths", "1,2", "--width", "32", "--head-dim", "16", "--steps", "1", "--json"]
    )
    assert result.exit_code in (0, 1), result.output
    payload = json.loads(result.stdout)
    # the measured default rule (README "Depth"), when --depth-alpha is not given
    assert (payload["axis"], payload["depths"], payload["width"], payload["depth_alpha"]) == ("depth", [1, 2], 32, 1)
    assert [row["layer"] for row in payload["layers"]] == ["embedding", "last.attn", "last.mlp", "residual", "logits"]


def test_proxy_branches_are_scaled_by_the_table_rule() -> None:
    """The proxy's forward at depth 8 against base depth 2: each branch x (2/8)^alpha."""
    shape = ModelShape(depth=8, head_dim=16, seq_len=8, depth_alpha=0.5)
    model = build_model(shape, 32, 32, "paper", torch.Generator().manual_seed(0), base_depth=2)
    assert all(block.branch == pytest.approx(0.5) for block in model.blocks)
    block, x = model.blocks[0], torch.randn(1, 8, 32)
    cos, sin = model.rope_cos[:8], model.rope_sin[:8]
    y = x + 0.5 * block.attn(block.attn_norm(x), cos, sin)
    expected = y + 0.5 * block.mlp(block.mlp_norm(y))
    assert torch.allclose(block(x, cos, sin), expected, atol=1e-6)
    off = build_model(ModelShape(depth=8, head_dim=16, seq_len=8), 32, 32, "paper", base_depth=2)
    assert all(b.branch == 1.0 for b in off.blocks)  # alpha 0: the rule is off


def test_transfer_check_across_depths_reports_like_the_width_check(tmp_path: Path) -> None:
    db, store, plot = f"sqlite:///{tmp_path / 't.db'}", str(tmp_path / "store"), tmp_path / "depth.png"
    args = ["transfer-check", "--depths", "1,2", "--width", "32", "--depth-alpha", "1", "--steps", "5"]
    args += ["--points", "3", "--seeds", "1", "--executor", "local", "--db", db, "--store", store]
    first = runner.invoke(app, [*args, "--json", "--plot", str(plot)])
    assert first.exit_code in (0, 1), first.output
    payload = json.loads(first.stdout)
    assert first.exit_code == (0 if payload["passed"] else 1) and plot.stat().st_size > 0
    assert (payload["axis"], payload["width"], payload["depth_alpha"]) == ("depth", 32, 1.0)
    assert [row["depth"] for row in payload["depths"]] == [1, 2] and set(payload["curves"]) == {"1", "2"}
    assert {"optimum_lr", "optimum_steps", "best_loss", "edge", "seed_std_steps"} <= set(payload["depths"][0])
    (doubling,) = payload["doublings"]
    assert (doubling["depth_lo"], doubling["depth_hi"]) == (1, 2) and "deeper_better" in doubling
    assert payload["trials"] >= 6 and payload["ran"] == payload["trials"]
    again = runner.invoke(app, [*args, "--json"])  # the same check again: trains nothing, same verdict
    assert json.loads(again.stdout)["ran"] == 0 and json.loads(again.stdout)["depths"] == payload["depths"]
    with Database(db, create=False) as database:
        keys = {t.key for t in database.trials(payload["check"])}
    assert all(key.startswith(("d1-w32-", "d2-w32-")) for key in keys)


# --------------------------------------------------------------------------- [depths] sweeps and exports


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_export_at_target_depth_differs_by_exactly_the_table_factors(tmp_path: Path, alpha: float) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    run_config_sweep(url, tmp_path / "store", "deep", depth_config(2, 8, alpha, **SMALLEST))
    with Database(url, create=False) as db:
        at_proxy = export_sweep(db, "deep", target_depth=2)
        at_target = export_sweep(db, "deep")  # [depths] target
    assert (at_proxy["proxy_depth"], at_proxy["target_depth"]) == (2, 2)
    assert (at_target["proxy_depth"], at_target["target_depth"]) == (2, 8)
    assert at_target["model"]["depth"] == 8 and at_target["base"] == at_proxy["base"]
    assert at_target["fingerprint"] == at_proxy["fingerprint"]
    assert ("depth" in at_target["fingerprint"]) == (alpha > 0)

    rule, ratio = get_table("paper").depth, 8 / 2
    assert at_target["depth"].get("branch_multiplier", 1.0) == pytest.approx(ratio**-alpha if alpha else 1.0)
    proxy_groups = {(g["role"], g["params"][0], g["in_block"]): g for g in at_proxy["groups"]}
    assert len(proxy_groups) == len(at_target["groups"])
    for g in at_target["groups"]:
        p = proxy_groups[(g["role"], g["params"][0], g["in_block"])]
        power = getattr(rule, g["role"]) if g["in_block"] and g["role"] in ("hidden", "vector") else None
        lr, wd, eps = (
            (
                ratio ** power.lr.exponent(alpha),
                ratio ** power.weight_decay.exponent(alpha),
                ratio ** power.eps.exponent(alpha),
            )
            if power is not None and alpha > 0
            else (1.0, 1.0, 1.0)
        )
        assert g["lr"] == pytest.approx(p["lr"] * lr, rel=1e-12) and g["lr_depth"] == pytest.approx(lr)
        assert g["weight_decay"] == pytest.approx(p["weight_decay"] * wd, rel=1e-12)
        if g["optimizer"] == "adamw":
            assert g["eps"] == pytest.approx(p["eps"] * eps, rel=1e-12) and g["eps_depth"] == pytest.approx(eps)
        assert (g["init_std"], g["multiplier"]) == (p["init_std"], p["multiplier"])
    if alpha == 1.0:  # CompleteP: hidden LR unchanged, epsilon inside blocks / 4
        vectors = [g for g in at_target["groups"] if g["role"] == "vector" and g["in_block"]]
        assert vectors and vectors[0]["eps"] == pytest.approx(at_proxy["groups"][0]["eps"] / 4)
    if alpha == 0.5:  # depth-muP: hidden (Muon) LR x 4^-0.5
        hidden = [g for g in at_target["groups"] if g["role"] == "hidden"]
        assert hidden[0]["lr"] == pytest.approx([g for g in at_proxy["groups"] if g["role"] == "hidden"][0]["lr"] / 2)

    # The proxy built at the target depth takes its optimizers from the export.
    shape = ModelShape(**{k: v for k, v in at_target["model"].items() if k != "check"})
    model = build_model(shape, at_target["target_width"], at_target["base_width"], "paper", base_depth=2)
    optimizers, rows = optimizers_from_export(model, at_target)
    exported = {(g["role"], g["in_block"]): g["lr"] for g in at_target["groups"]}
    for group in optimizers.param_groups:
        assert group["lr"] == pytest.approx(exported[(group["role"], group["in_block"])])

    refused = runner.invoke(app, ["export", "deep", "--db", url, "--target-depth", "1"])
    assert refused.exit_code == 2 and "below the proxies' depth 2" in refused.output


def _sweep_process(config: Path, url: str, store: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "telescope", "sweep", str(config), "--db", url, "--store", str(store), "--no-reuse"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_depths_sweep_runs_end_to_end_and_resumes_after_sigkill(tmp_path: Path) -> None:
    import tomli_w

    url, store = f"sqlite:///{tmp_path / 't.db'}", tmp_path / "store"
    sections = depth_config(1, 4, 1.0, train={"steps": 30}, narrowing={"min_points": 3})
    sections["name"] = "deep"
    reference = run_config_sweep(url, store, "uninterrupted", sections)
    path = tmp_path / "deep.toml"
    path.write_bytes(tomli_w.dumps(sections).encode())

    plan = runner.invoke(app, ["plan", str(path), "--json", "--no-data-check"])
    assert plan.exit_code == 0, plan.output
    costs = json.loads(plan.stdout)
    assert (costs["proxy_depth"], costs["target_depth"]) == (1, 4)
    assert costs["full_depth_sweep_flops"] > 2 * costs["sweep_flops"]  # depth 4 proxies cost more than twice
    assert costs["depth_saving"] == pytest.approx(costs["full_depth_sweep_flops"] / costs["sweep_flops"])

    proc = _sweep_process(path, url, store)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None:
            assert time.monotonic() < deadline, "timed out"
            try:
                with Database(url, create=False) as db:
                    if len([t for t in db.trials("deep", level=1) if t.finished]) >= 2:
                        break
            except Exception:  # noqa: BLE001 - not created yet
                pass
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Database(url, create=False) as db:
        cut = {t.key: t for t in db.trials("deep")}
        assert db.get_sweep("deep").status == "running"
    assert any(not t.finished for t in cut.values()), "the sweep finished before it was killed"

    resumed = runner.invoke(app, ["sweep", str(path), "--db", url, "--store", str(store), "--no-reuse"])
    assert resumed.exit_code == 0, resumed.output
    assert "depth: proxies of 1 blocks, exported for 4 (alpha 1)" in " ".join(resumed.output.split())
    with Database(url, create=False) as db:
        result = db.get_sweep("deep").result
        trials = db.trials("deep")
        export = export_sweep(db, "deep")
    # as many as the uninterrupted sweep ran (whether the last level grows depends on the CPU's kernels)
    assert len(trials) == sum(lv["trials"] for lv in reference["levels"]) and all(t.finished for t in trials)
    for t in trials:
        if t.key in cut and cut[t.key].finished:  # finished trials were not run again
            assert (t.attempts, t.val_loss) == (cut[t.key].attempts, cut[t.key].val_loss)
    assert [lv["best"] for lv in result["levels"]] == [lv["best"] for lv in reference["levels"]]
    assert result["best"] == reference["best"]
    assert (export["proxy_depth"], export["target_depth"], export["model"]["depth"]) == (1, 4, 4)
    assert trials[0].fingerprint["depth"]["alpha"] == 1.0


# --------------------------------------------------------------------------- a user's model


def test_user_model_blocks_get_the_branch_multiplier_from_an_export() -> None:
    """parametrize(model, export) puts (L_base / L)^alpha on each block's branch through a
    hook, and refuses a model of another depth than the export's target."""
    export = {
        "sweep": "s",
        "target_width": 32,
        "base_width": 16,
        "parametrization": "paper",
        "proxy_depth": 2,
        "target_depth": 8,
        "fingerprint": {"depth": {"alpha": 1.0}},
        "base": {"lr": 0.03, "weight_decay": 0.1},
        "groups": [],
    }
    model = ResidualLM(32, depth=8)
    parametrize(model, export, generator=torch.Generator().manual_seed(0))
    block, x = model.layers[3], torch.randn(2, 5, 32)
    expected = x + 0.25 * _bare(block.mlp, block.norm(x))
    assert torch.allclose(block(x), expected, atol=1e-6)
    parametrize(model, export)  # again (new init): the hook is not stacked
    assert torch.allclose(block(x), x + 0.25 * _bare(block.mlp, block.norm(x)), atol=1e-6)
    with pytest.raises(Exception, match="differs from the export's target depth 8"):
        parametrize(ResidualLM(32, depth=4), export)
    assert get_table("paper").branch_multiplier(Depth(8, 2, 1.0)) == 0.25


def _bare(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's output without its forward hooks."""
    return module.forward(x)


def test_user_model_sweep_with_depth_alpha_and_no_blocks_is_one_line(tmp_path: Path) -> None:
    import tomli_w

    config = micro_config(**SMALLEST)
    config["model"] = {"factory": "foreign_models:flat_lm", "seq_len": 16, "depth_alpha": 1.0}
    path = tmp_path / "flat.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    db = tmp_path / "t.db"
    for command in (
        ["sweep", str(path), "--db", f"sqlite:///{db}", "--store", str(tmp_path / "s")],
        ["plan", str(path)],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "cannot find the model's residual blocks" in result.output
    assert not db.exists() and not (tmp_path / "s").exists()
    # A rule naming the blocks makes the same model fine.
    config["model"]["rules"] = [[r"first|second", "block"]]
    path.write_bytes(tomli_w.dumps(config).encode())
    assert runner.invoke(app, ["plan", str(path)]).exit_code == 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["transfer-check", "--depths", "4,2"], "strictly increasing"),
        (["transfer-check", "--depths", "2,2,4"], "strictly increasing"),
        (["coord-check", "--depths", "8,4"], "strictly increasing"),
        (["transfer-check", "--depths", "2,4", "--depth-alpha", "1.5"], "--depth-alpha: must be in [0, 1]"),
        (["coord-check", "--depths", "2,4", "--depth-alpha", "-0.5"], "--depth-alpha: must be in [0, 1]"),
        (["transfer-check", "--depths", "2,4", "--widths", "64,128"], "give it with --width"),
    ],
)
def test_bad_depth_arguments_are_one_line_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    db = tmp_path / "t.db"
    result = runner.invoke(app, [*args, "--db", f"sqlite:///{db}"] if args[0] == "transfer-check" else args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert not db.exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["model"].update(depth_alpha=1.5), "model.depth_alpha: must be in [0.0, 1.0], got 1.5"),
        (lambda c: c["depths"].update(target=1), "depths.target: must be >= depths.proxy (2), got 1"),
        (lambda c: c["model"].update(depth=2), "model.depth: a [depths] section gives the proxies' depth"),
    ],
)
def test_bad_depth_config_is_one_line_and_writes_nothing(tmp_path: Path, edit, message: str) -> None:
    import tomli_w

    config = depth_config(2, 8, 0.5)
    edit(config)
    path = tmp_path / "bad.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    db = tmp_path / "t.db"
    for command in (["sweep", str(path), "--db", f"sqlite:///{db}"], ["plan", str(path)]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert not db.exists()


def test_a_trial_without_depth_transfer_keeps_its_spec_dict_and_content_key() -> None:
    """The depth fields are left out at their defaults, so every trial stored before depth
    transfer existed keeps its content key (and is reused); with the rule on they count."""
    from telescope.runs.content import content_key
    from telescope.spec import TrialSpec

    plain = TrialSpec(width=32, base_width=32, lr=0.01, weight_decay=0.0)
    assert "base_depth" not in plain.to_dict() and "depth_alpha" not in plain.to_dict()["model"]
    deep = replace(plain, model=replace(plain.model, depth_alpha=1.0), base_depth=1)
    assert TrialSpec.from_dict(deep.to_dict()) == deep and TrialSpec.from_dict(plain.to_dict()) == plain
    assert content_key(deep) != content_key(plain)


def test_a_depths_section_without_a_rule_takes_the_measured_default() -> None:
    """Shallow proxies need a depth rule; the one README "Depth" measured to transfer is the
    default, and a config that names its own (0 included) keeps it."""
    config = micro_config(depths={"proxy": 2, "target": 8})
    del config["model"]["depth"]
    assert parse_config(config).model.depth_alpha == DEFAULT_DEPTH_ALPHA == 1.0
    assert parse_config(depth_config(2, 8, 0.0)).model.depth_alpha == 0.0
    assert parse_config(depth_config(2, 8, 0.5)).model.depth_alpha == 0.5
    assert parse_config(micro_config()).model.depth_alpha == 0.0  # no [depths]: off
    for alpha in (0.0, 1.0):  # what is stored reads back the same (a resume's config)
        stored = parse_config(depth_config(2, 8, alpha)).to_dict()
        assert parse_config(stored).model.depth_alpha == alpha and "depth" not in stored["model"]
