"""Sweeps of the user's own model: Hugging Face configs built per width (one with tied
embeddings, one an MoE), resumed after SIGKILL, refused with another model, costed from
the built model, exported by its own parameter names; the pre-sweep checks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w
from hf_models import TINY_CONFIGS, write_hf_config
from micro import SMALLEST, micro_config
from muon_flops import muon_step_flops
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.config import load_config
from telescope.cost import plan
from telescope.export import export_sweep
from telescope.models import hf
from telescope.storage.database import Database

runner = CliRunner()


def write_sweep(tmp_path: Path, family: str | None = None, pack: int | None = None, **model) -> Path:
    """SMALLEST (widths 16 -> 32, 3x3 grids, 2 steps) over `family`'s tiny config."""
    config = micro_config(**SMALLEST, executor={"max_concurrent": 1} | ({"pack": pack} if pack else {}))
    config["model"] = {"seq_len": 16, "check": "none"} | model
    if family is not None:
        config["model"]["hf_config"] = write_hf_config(tmp_path / family, family)
    path = tmp_path / "sweep.toml"
    path.write_bytes(tomli_w.dumps(config).encode())
    return path


def sweep_args(config: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "sweep",
        str(config),
        "--db",
        f"sqlite:///{tmp_path / 't.db'}",
        "--store",
        str(tmp_path / "store"),
        "--name",
        "s",
        *extra,
    ]


def finished_trials(url: str) -> list:
    try:
        with Database(url, create=False) as db:
            return [t for t in db.trials("s") if t.finished]
    except Exception:  # noqa: BLE001 - not created yet
        return []


@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
def test_hf_sweep_resumes_after_sigkill_and_exports_the_models_own_names(tmp_path: Path, family: str) -> None:
    config = write_sweep(tmp_path, family, pack=1)  # one trial at a time: the kill lands mid-level
    url = f"sqlite:///{tmp_path / 't.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "telescope", *sweep_args(config, tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and len(finished_trials(url)) < 2:
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with Database(url, create=False) as db:
        cut = db.trials("s")
    finished = {t.key: t for t in cut if t.finished}
    assert finished and len(finished) < len(cut), proc.stderr.read()

    resumed = runner.invoke(app, sweep_args(config, tmp_path))
    assert resumed.exit_code == 0, resumed.output
    with Database(url, create=False) as db:
        assert db.get_sweep("s").status == "completed"
        trials = db.trials("s")
        for t in trials:
            if t.key in finished:  # not trained again
                assert (t.attempts, t.val_loss) == (finished[t.key].attempts, finished[t.key].val_loss)
        assert all(
            t.fingerprint["model"] == {"architecture": family, "config_hash": t.spec.hf_config_hash}
            for t in trials
            if t.status.value == "completed"
        )
        payload = export_sweep(db, "s")
    names = {name for group in payload["groups"] for name in group["params"]}
    assert {"model.embed_tokens.weight", "model.layers.*.self_attn.q_proj.weight"} <= names
    measured = payload["measured_on"]["model"]
    if family == "llama":
        assert measured["tied_embeddings"] and "lm_head.weight" not in names
    else:
        assert measured["experts"] == 4 and measured["qk_norm"] and any("experts" in n for n in names)
    assert payload["measured_on"]["horizon"]["tokens_per_trial"] == 2 * 2 * 16

    if family == "llama":  # another architecture in the same file, or another model: refused
        write_hf_config(tmp_path / family, family, intermediate_size=128)
        refused = runner.invoke(app, sweep_args(config, tmp_path))
        assert refused.exit_code == 2 and "different configuration" in refused.output
        refused = runner.invoke(app, sweep_args(config, tmp_path, "--model", "foreign_models:encoder_lm"))
        assert refused.exit_code == 2 and "different configuration" in refused.output


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_plan_counts_are_the_built_models_own(tmp_path: Path, family: str) -> None:
    config = load_config(write_sweep(tmp_path, family))
    p = plan(config)
    path = config.source.hf_path
    for width, params in [*((lc.width, lc.params) for lc in p.levels), (p.target_width, p.target_params)]:
        assert params == sum(q.numel() for q in hf.build(path, width).parameters())
    assert p.levels[0].heads == 1 and p.target_params > p.levels[-1].params


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_newton_schulz_flops_are_the_built_models_own(tmp_path: Path, family: str) -> None:
    """Every hidden matrix, an MoE's expert bank one matrix per expert, as Muon's step runs them."""
    config = load_config(write_sweep(tmp_path, family))
    for lc in plan(config).levels:
        assert lc.newton_schulz_flops_per_trial > 0
        assert lc.newton_schulz_flops_per_trial == pytest.approx(config.train.steps * muon_step_flops(config, lc.width))


def test_a_coord_check_fail_stops_the_sweep_before_anything_is_written(tmp_path: Path) -> None:
    config = write_sweep(tmp_path, check="coord")
    result = runner.invoke(app, sweep_args(config, tmp_path, "--model", "foreign_models:width_scaled_logits"))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and "logits" in result.output and "roles" in result.output
    assert "the sweep did not start" in result.output
    assert not (tmp_path / "t.db").exists()


def _unknown_type(tmp_path: Path) -> list[str]:
    (tmp_path / "c.json").write_text(json.dumps({"model_type": "falcon", "hidden_size": 64, "num_attention_heads": 4}))
    return ["hf_config", str(tmp_path / "c.json")]


@pytest.mark.parametrize(
    "model, expected",
    [
        ({"factory": "no_such_module:f"}, "no module named 'no_such_module'"),
        ({"factory": "foreign_models:raising"}, "failed at width 16: RuntimeError: cannot build width 16"),
        ({"factory": "foreign_models:not_a_module"}, "returned a dict, not a torch.nn.Module"),
        ({"factory": "foreign_models:broken_forward"}, "its forward fails on a batch of the data 'stdlib'"),
        ({"factory": "foreign_models:small_vocab"}, "its logits have 100 entries but the data 'stdlib' has 256 tokens"),
        ({"hf_config": "no/such/config.json"}, "model.hf_config: no such file"),
        ({"hf_config": "NOT_JSON"}, "is not JSON"),
        (
            {"hf_config": "UNKNOWN"},
            "model_type 'falcon' has no width table, so its width fields (hidden_size, num_attention_heads)",
        ),
        ({"hf_config": "HEAD_DIM_24"}, "width 16 is not a multiple of the config's head dim 24"),
    ],
)
def test_bad_models_are_one_line_and_nothing_written(tmp_path: Path, model: dict, expected: str) -> None:
    if model.get("hf_config") == "NOT_JSON":
        (tmp_path / "c.json").write_text("{not json")
        model = {"hf_config": str(tmp_path / "c.json")}
    elif model.get("hf_config") == "UNKNOWN":
        model = dict([_unknown_type(tmp_path)])
    elif model.get("hf_config") == "HEAD_DIM_24":
        model = {"hf_config": write_hf_config(tmp_path / "h", "llama", head_dim=24, hidden_size=96)}
    result = runner.invoke(app, sweep_args(write_sweep(tmp_path, **model), tmp_path))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    assert expected in result.output
    assert not (tmp_path / "t.db").exists() and not (tmp_path / "store").exists()


def test_without_transformers_an_hf_sweep_is_one_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    result = runner.invoke(app, sweep_args(write_sweep(tmp_path, "llama"), tmp_path))
    assert result.exit_code == 2 and "pip install 'telescope[hf]'" in result.output, result.output
    assert not (tmp_path / "t.db").exists()


def test_an_export_warns_once_on_a_model_unlike_its_proxies_strict_refuses_and_its_recipe_is_used(capsys) -> None:
    import torch
    from hf_models import llama

    from telescope.config import parse_config
    from telescope.errors import TelescopeError
    from telescope.export import measured_on
    from telescope.models.foreign import optimizers_from_export
    from telescope.parametrization import fingerprint
    from telescope.spec import Recipe

    proxies = parse_config(micro_config())  # the built-in proxy: head dim 16, QK-norm, one layer
    recipe = Recipe(grad_clip=0.5, adamw_betas=(0.8, 0.9), adamw_eps=1e-6, muon_momentum=0.9, muon_nesterov=False)
    payload = {
        "sweep": "micro",
        "target_width": 64,
        "base_width": 16,
        "parametrization": "paper",
        "fingerprint": fingerprint("paper", 1.0, recipe),
        "base": {"lr": 0.01, "weight_decay": 0.1},
        "groups": [],
        "measured_on": measured_on(proxies),
    }
    model = llama(64)  # head dim 16, no QK-norm, two layers
    optimizers, _ = optimizers_from_export(model, payload)
    err = capsys.readouterr().err
    assert err.startswith("telescope: warning: ") and err.count("\n") == 1
    assert "qk_norm False vs True" in err and "depth 2 vs 1" in err and "head_dim" not in err
    with pytest.raises(TelescopeError, match="differs from the proxies the export 'micro' was measured on"):
        optimizers_from_export(model, payload, strict=True)
    adamw = next(o for o in optimizers.optimizers if isinstance(o, torch.optim.AdamW))
    muon = next(o for o in optimizers.optimizers if not isinstance(o, torch.optim.AdamW))
    assert adamw.defaults["betas"] == (0.8, 0.9) and adamw.defaults["eps"] == 1e-6
    assert (muon.defaults["momentum"], muon.defaults["nesterov"], optimizers.grad_clip) == (0.9, False, 0.5)


def test_coord_check_of_a_model_with_too_small_a_vocabulary_is_one_line() -> None:
    result = runner.invoke(
        app, ["coord-check", "--model", "foreign_models:small_vocab", "--widths", "32,64", "--steps", "1"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "its logits have 100 entries but the data 'stdlib' has 256 tokens" in result.output
