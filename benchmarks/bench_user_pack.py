"""Per-step time of a transformers Llama's trials packed (one batched model, torch.func)
against the same trials trained alone, one after another, on the CPU, in the same run.

    python benchmarks/bench_user_pack.py --widths 32,64 --pack 4 --steps 10 --repeats 3

The Llama has the built-in proxy's shape (depth 2, head dim 32, 4x MLP, vocabulary 256),
built from a config.json as `[model] hf_config` builds it. Per width: --pack trials
(different learning rates, same seed) as one pack, and alone; seconds per trial-step =
wall time / (trials x steps), medians over --repeats; ratio = alone / packed (> 1: packing
is faster). The numbers of each trial are the same either way (tests/test_user_model_sweep.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from telescope.models import hf
from telescope.spec import ModelShape, TrainSettings, TrialSpec
from telescope.training.train import run_trials

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="32,64")
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(LLAMA))
        digest = hf.architecture_hash(LLAMA)
        train = TrainSettings(steps=args.steps, batch_size=8, warmup_steps=2, eval_batches=1, device="cpu")
        print(f"{'width':>5} {'packed s/step':>14} {'alone s/step':>13} {'ratio':>6}")
        for width in map(int, args.widths.split(",")):
            specs = [
                TrialSpec(
                    width=width,
                    base_width=32,
                    lr=0.004 * 1.5**i,
                    weight_decay=0.1,
                    model=ModelShape(seq_len=64),
                    train=train,
                    hf_config=str(path),
                    hf_config_hash=digest,
                )
                for i in range(args.pack)
            ]
            run_trials(specs[:1])  # warm up: imports, the batchability probe
            packed, alone = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                run_trials(specs)
                packed.append((time.perf_counter() - started) / (len(specs) * args.steps))
                started = time.perf_counter()
                for spec in specs:
                    run_trials([spec])
                alone.append((time.perf_counter() - started) / (len(specs) * args.steps))
            p, a = statistics.median(packed), statistics.median(alone)
            print(f"{width:>5} {p:>14.4f} {a:>13.4f} {a / p:>6.2f}")


if __name__ == "__main__":
    main()
