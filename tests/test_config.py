"""Loading and validating sweep configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from telescope.config import DEFAULT_AXES, PARAMETRIZATIONS, load_config, parse_config
from telescope.errors import ConfigError
from telescope.spec import TrialSpec

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

MINIMAL = """
[model]
depth = 2
head_dim = 16

[widths]
base = 32
calibration = 128
target = 256
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_the_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.widths.levels() == [32, 64, 128]
    assert cfg.search.axes == (DEFAULT_AXES["lr"], DEFAULT_AXES["weight_decay"])
    assert dict(cfg.search.fixed) == {"muon_lr_ratio": 1.0}
    assert cfg.objective == "val_loss" and cfg.parametrization == "paper"
    assert cfg.executor.kind == "ray" and cfg.train.steps == 200
    assert cfg.narrowing.shrink_factor(2) == pytest.approx(0.5)


def test_examples_load():
    paper = load_config(EXAMPLES / "paper-3.7b.toml")
    assert paper.model.depth == 34 and paper.model.vocab_size == 128256 and paper.model.tied_embeddings
    assert paper.train.batch_size * paper.model.seq_len == 2**23
    assert [lp.shape for lp in paper.levels()] == ["8x8", "5x5", "3x3", "3x3"]
    lo, hi = paper.search.axes[0].lo, paper.search.axes[0].hi
    assert lo < 0.0612 < hi
    tiny = load_config(EXAMPLES / "tiny-cpu.toml")
    assert len(tiny.levels()) >= 3
    assert tiny.executor.kind == "ray" and tiny.executor.max_concurrent == 2 and tiny.executor.cpus_per_trial == 1


def test_round_trip_and_canonical_json(tmp_path):
    cfg = load_config(EXAMPLES / "tiny-cpu.toml")
    assert parse_config(cfg.to_dict()) == cfg
    assert parse_config(json.loads(cfg.canonical_json())).canonical_json() == cfg.canonical_json()
    changed = load_config(
        write(tmp_path, (EXAMPLES / "tiny-cpu.toml").read_text().replace("steps = 120", "steps = 121"))
    )
    assert changed.canonical_json() != cfg.canonical_json()


def test_search_entries_can_be_fixed_and_keep_defaults(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            MINIMAL + "[search.weight_decay]\nvalue = 0.0\n[search.muon_lr_ratio]\nlo = 0.5\nhi = 2.0\npoints = 3\n",
        )
    )
    assert cfg.search.names() == ("lr", "muon_lr_ratio")  # lr keeps its default range
    assert dict(cfg.search.fixed) == {"weight_decay": 0.0}
    assert cfg.narrowing.shrink_factor(len(cfg.search.axes)) == pytest.approx(0.5)


def test_trial_spec(tmp_path):
    cfg = load_config(EXAMPLES / "tiny-cpu.toml")
    spec = cfg.trial_spec(64, {"lr": 0.02, "weight_decay": 0.1}, seed=3)
    assert isinstance(spec, TrialSpec)
    assert (spec.width, spec.base_width, spec.lr, spec.weight_decay, spec.muon_lr_ratio, spec.seed) == (
        64,
        32,
        0.02,
        0.1,
        1.0,
        3,
    )
    assert spec.model == cfg.model and spec.train == cfg.train and spec.parametrization == "paper"
    assert TrialSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError):
        cfg.trial_spec(64, {"lr": 0.02}, seed=0)


def test_parametrization_names_match_the_registry():
    from telescope.parametrization import TABLES

    assert set(PARAMETRIZATIONS) == set(TABLES)


# Each malformed config: (text, the field the one-line error must name first).
MALFORMED = [
    ("[model]\ndepth = 2\n", "widths: missing"),
    (MINIMAL.replace("target = 256", ""), "widths.target: missing"),
    (MINIMAL.replace("depth = 2", "depth = -1"), "model.depth: must be > 0"),
    (MINIMAL.replace("depth = 2", "depth = true"), "model.depth: must be an integer, got true"),
    (MINIMAL.replace("depth = 2", 'depth = "2"'), "model.depth: must be an integer"),
    (MINIMAL.replace("head_dim = 16", "head_dim = 16.0"), "model.head_dim: must be an integer"),
    (MINIMAL.replace("depth = 2", "depht = 2"), "model.depht: unknown key; did you mean 'depth'?"),
    (MINIMAL.replace("depth = 2", "mlp_ratio = 2.7"), "model.mlp_ratio"),
    (MINIMAL.replace("head_dim = 16", "head_dim = 15"), "model.head_dim: must be even"),
    (MINIMAL.replace("calibration = 128", "calibration = 96"), "widths.calibration: must be widths.base"),
    (MINIMAL.replace("calibration = 128", "calibration = 16"), "widths.calibration"),
    (MINIMAL.replace("base = 32", "base = -32"), "widths.base: must be > 0"),
    (MINIMAL.replace("base = 32", "base = 40"), "widths.base: must be a multiple of model.head_dim"),
    (MINIMAL.replace("target = 256", "target = 64"), "widths.target: must be >= widths.calibration"),
    (MINIMAL.replace("depth = 2", "kv_ratio = 4"), "widths.base: 2 heads"),
    (MINIMAL + "[search.lr]\nlo = -1\nhi = 0.1\npoints = 5\n", "search.lr.lo: must be > 0"),
    (MINIMAL + "[search.lr]\nlo = 0.1\nhi = 0.01\npoints = 5\n", "search.lr.hi: must be > search.lr.lo"),
    (MINIMAL + "[search.lr]\nlo = 0.1\nhi = 0.1\npoints = 5\n", "search.lr.hi"),
    (MINIMAL + "[search.lr]\nlo = 0.01\nhi = 0.1\npoints = 1\n", "search.lr.points: must be in [2, 100], got 1"),
    (MINIMAL + "[search.lr]\nlo = 0.01\nhi = 0.1\npoints = 100000001\n", "search.lr.points: must be in [2, 100]"),
    (
        MINIMAL
        + "[search.lr]\nlo = 0.01\nhi = 0.1\npoints = 100\n[search.weight_decay]\nlo = 0.01\nhi = 0.1\npoints = 101\n",
        "search.weight_decay.points: must be in [2, 100]",
    ),
    (
        MINIMAL
        + "[search.lr]\nlo = 0.01\nhi = 0.1\npoints = 100\n[search.weight_decay]\nlo = 0.01\nhi = 0.1\npoints = 100\n"
        "[search.muon_lr_ratio]\nlo = 0.5\nhi = 2\npoints = 2\n",
        "search: a 100 x 100 x 2 grid at level 0 is more than 10000 trials",
    ),
    (MINIMAL + "[train]\nsteps = 100000000000000000000\n", "train.steps: must fit in 64 bits"),
    (MINIMAL + "[train]\nsteps = 9223372036854775807\n", "train.steps: 9223372036854775807 steps of"),
    (MINIMAL + "[search.weight_decay]\nvalue = inf\n", "search.weight_decay.value: must be a finite number"),
    (MINIMAL + "[search.lr]\nlo = 0.01\nhi = 0.1\n", "search.lr.points: missing"),
    (MINIMAL + "[search.lr]\nlo = 0.01\nhi = inf\npoints = 3\n", "search.lr.hi: must be a finite number"),
    (MINIMAL + "[search.lr]\nlo = 0.01\nhi = 0.1\npoints = 3\nvalue = 0.02\n", "search.lr: give either"),
    (MINIMAL + "[search]\nlr = 0.01\n", "search.lr: must be a table"),
    (MINIMAL + "[search.momentum]\nlo = 0.8\nhi = 0.99\npoints = 3\n", "search.momentum: unknown key"),
    (MINIMAL + "[search.lr]\nvalue = 0.01\n[search.weight_decay]\nvalue = 0.1\n", "search: nothing to sweep"),
    ('parametrization = "mup"\n' + MINIMAL, "parametrization: unknown 'mup'"),
    ('objective = "loss"\n' + MINIMAL, "objective: must be one of 'val_loss', 'train_loss'"),
    ("name = 3\n" + MINIMAL, "name: must be a string"),
    ("modle = 1\n" + MINIMAL, "modle: unknown key; did you mean 'model'?"),
    ("model = 3\n[widths]\nbase = 32\ncalibration = 64\ntarget = 64\n", "model: must be a table"),
    (MINIMAL + '[train]\nschedule = "linear"\n', "train.schedule: must be one of 'cosine', 'wsd'"),
    (MINIMAL + "[train]\nsteps = 0\n", "train.steps: must be > 0"),
    (MINIMAL + "[train]\nsteps = 10\nwarmup_steps = 20\n", "train.warmup_steps: must be <= train.steps"),
    (MINIMAL + "[train]\nfinal_lr_ratio = 1.5\n", "train.final_lr_ratio: must be in [0.0, 1.0]"),
    (MINIMAL + "[narrowing]\nshrink = 2\n", "narrowing.shrink: must be 'auto' or in (0, 1]"),
    (MINIMAL + '[narrowing]\nshrink = "half"\n', "narrowing.shrink: must be a number or 'auto'"),
    (MINIMAL + "[narrowing]\nmin_points = 4\n", "narrowing.min_points: must be odd"),
    (MINIMAL + '[narrowing]\nedge_rule = "shrink"\n', "narrowing.edge_rule: must be one of 'keep', 'widen'"),
    (MINIMAL + "[narrowing]\nodd = 1\n", "narrowing.odd: must be true or false, got 1"),
    (MINIMAL + "[seeds]\nper_point = 0\n", "seeds.per_point: must be > 0"),
    (MINIMAL + "[seeds]\nearly_stop = true\n", "seeds.early_stop: needs seeds.per_point >= 2"),
    (MINIMAL + '[executor]\nkind = "slurm"\n', "executor.kind: must be one of 'ray', 'local'"),
    (MINIMAL + "[executor]\nmax_concurrent = 0\n", "executor.max_concurrent: must be >= 1"),
    (MINIMAL + "[executor]\ngpus_per_trial = -0.5\n", "executor.gpus_per_trial: must be >= 0"),
    (MINIMAL + "[model\n", "not valid TOML"),
]


@pytest.mark.parametrize("text,expected", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_config_is_one_line_naming_the_field(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    if expected != "not valid TOML":
        assert message.startswith(expected), message
    else:
        assert expected in message


def test_missing_or_binary_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not a file"):
        load_config(tmp_path)
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "bin.toml")
