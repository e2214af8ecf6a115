"""Wall time of a sweep over a transformers Llama of the built-in proxy's shape against the
built-in proxy's sweep on the same grid, on the CPU, measured in the same run.

    python benchmarks/bench_user_model.py --repeats 3 --steps 10

Both sweeps: widths 32 -> 64, depth 2, head dim 32, 4x MLP, vocabulary 256, untied, a
3x3 grid at each level, the local executor. The Llama is built from a config.json by
`[model] hf_config` (no QK-norm: the one difference in shape) and trains one trial per
process; the proxy trains in packs. The pre-sweep coord check is not timed (check =
"none"). Medians over --repeats fresh sweeps; ratio = Llama / proxy (target <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from telescope.config import parse_config
from telescope.storage.database import Database
from telescope.storage.metrics import MetricsStore
from telescope.sweep import run_sweep
from telescope.trials import make_executor

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 256,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
    "rms_norm_eps": 1e-6,
}


def config(model: dict, steps: int, workers: int) -> dict:
    return {
        "model": model,
        "widths": {"base": 32, "calibration": 64, "target": 256},
        "train": {"steps": steps, "batch_size": 8, "warmup_steps": 2, "eval_batches": 2, "device": "cpu"},
        "search": {"lr": {"lo": 0.006, "hi": 0.024, "points": 3}, "weight_decay": {"lo": 0.05, "hi": 0.2, "points": 3}},
        "narrowing": {"min_points": 3},
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
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "llama").mkdir()
        (folder / "llama" / "config.json").write_text(json.dumps(LLAMA))
        proxy = {"depth": 2, "head_dim": 32, "seq_len": 64}
        llama = {"hf_config": str(folder / "llama"), "seq_len": 64, "check": "none"}
        times: dict[str, list[float]] = {"proxy": [], "llama": []}
        counts: dict[str, int] = {}
        for r in range(args.repeats):  # interleaved, so a load change hits both
            for label, model in (("proxy", proxy), ("llama", llama)):
                seconds, counts[label] = timed_sweep(config(model, args.steps, args.workers), folder, f"{label}{r}")
                times[label].append(seconds)
    print(f"{'sweep':<8} {'trials':>6} {'median s':>9}  runs")
    for label in ("proxy", "llama"):
        print(
            f"{label:<8} {counts[label]:>6} {statistics.median(times[label]):>9.2f}  "
            f"{', '.join(f'{t:.1f}' for t in times[label])}"
        )
    ratio = statistics.median(times["llama"]) / statistics.median(times["proxy"])
    print(f"ratio llama / proxy: {ratio:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
