"""Wall time of a sweep over a transformers Llama against the built-in proxy's sweep of the
same shape, on the same trials, on the CPU, measured in the same run.

    python benchmarks/bench_user_model.py --repeats 3 --steps 10

The Llama is examples/llama/config.json (4 layers, head dim 32, 4:1 grouped-query
attention, a SwiGLU MLP of 2.6875x, vocabulary 256, untied), rebuilt per width by `[model]
hf_config`; the proxy takes its shape from the same file (depth, head dim, KV ratio, MLP
ratio, vocabulary, tying), so QK-norm is the one difference. Widths 128 -> 256: the
narrowest at which 4:1 attention has whole KV heads. Both sweeps train the same 18 trials:
3x3 grids that keep the level-0 spacing (`narrowing.halve_spacing = false`), so each
level's grid is the whole range and no edge extension can add a trial (checked). The local
executor, packs of 8, --workers trials at a time; the pre-sweep coord check is not timed
(check = "none"). Medians over --repeats fresh sweeps, interleaved in alternating order so
that a change of load hits both alike; ratio = Llama / proxy of the medians (target <= 1.3),
and the median of each repeat's own ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from telescope.config import parse_config
from telescope.runs.executor import make_executor
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.sweep import run_sweep

LLAMA = Path(__file__).parents[1] / "examples" / "llama" / "config.json"
SEQ_LEN = 64


def proxy_shape(llama: dict[str, Any]) -> dict[str, Any]:
    """The built-in proxy's `[model]` of the Llama's shape (QK-norm aside)."""
    return {
        "depth": llama["num_hidden_layers"],
        "head_dim": llama["head_dim"],
        "kv_ratio": llama["num_attention_heads"] // llama["num_key_value_heads"],
        "mlp_ratio": llama["intermediate_size"] / llama["hidden_size"],
        "vocab_size": llama["vocab_size"],
        "tied_embeddings": llama["tie_word_embeddings"],
        "seq_len": SEQ_LEN,
    }


def config(model: dict, steps: int, workers: int) -> dict:
    return {
        "model": model,
        "widths": {"base": 128, "calibration": 256, "target": 512},
        "train": {"steps": steps, "batch_size": 8, "warmup_steps": 2, "eval_batches": 2, "device": "cpu"},
        "search": {"lr": {"lo": 0.006, "hi": 0.024, "points": 3}, "weight_decay": {"lo": 0.05, "hi": 0.2, "points": 3}},
        "narrowing": {"min_points": 3, "halve_spacing": False},
        "executor": {"kind": "local", "cpus_per_trial": 1, "max_concurrent": workers},
    }


def timed_sweep(data: dict, folder: Path, name: str) -> tuple[float, int]:
    cfg = parse_config(data)
    executor = make_executor(cfg.executor)
    started = time.perf_counter()
    try:
        with Database(f"sqlite:///{folder / (name + '.db')}") as db:
            run_sweep(cfg, db, MetricsStore(folder / name), name, executor=executor, reuse=False)
            trials = len(db.trials(name))
    finally:
        executor.close()
    return time.perf_counter() - started, trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    models = {
        "proxy": proxy_shape(json.loads(LLAMA.read_text())),
        "llama": {"hf_config": str(LLAMA), "seq_len": SEQ_LEN, "check": "none"},
    }
    times: dict[str, list[float]] = {label: [] for label in models}
    counts: dict[str, set[int]] = {label: set() for label in models}
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for label, model in sorted(models.items(), reverse=r % 2 == 1):
                seconds, trials = timed_sweep(config(model, args.steps, args.workers), Path(tmp), f"{label}{r}")
                times[label].append(seconds)
                counts[label].add(trials)
    if len(counts["proxy"] | counts["llama"]) != 1:
        raise SystemExit(f"the sweeps trained different trial counts: {counts}; the comparison is void")
    (trials,) = counts["proxy"]
    print(f"{'sweep':<6} {'trials':>6} {'median s':>9} {'s/trial':>8}  runs")
    for label in models:
        median = statistics.median(times[label])
        runs = ", ".join(f"{t:.1f}" for t in times[label])
        print(f"{label:<6} {trials:>6} {median:>9.2f} {median / trials:>8.2f}  {runs}")
    ratio = statistics.median(times["llama"]) / statistics.median(times["proxy"])
    pairs = [llama / proxy for llama, proxy in zip(times["llama"], times["proxy"])]
    print(
        f"ratio llama / proxy: {ratio:.2f}x (target <= 1.3x); per repeat {', '.join(f'{p:.2f}' for p in pairs)}, "
        f"median {statistics.median(pairs):.2f}x; the benchmark took {time.perf_counter() - began:.0f} s"
    )


if __name__ == "__main__":
    main()
