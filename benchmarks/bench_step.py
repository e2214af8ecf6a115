"""Time the proxy's training step and our Muon against torch's, in one run.

    python benchmarks/bench_step.py [--width 64] [--repeats 30]

Rows: our full trial step (forward, backward, batched Muon + AdamW) vs a plain reference
loop (same model and batch, torch.optim.Muon + torch.optim.AdamW, same groups); then our
Muon step alone vs torch.optim.Muon on the proxy's matrices. Ratio = reference / ours
(> 1: ours is faster). Medians over --repeats after warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from telescope.data import load_data
from telescope.optim.groups import build_optimizers
from telescope.optim.muon import Muon
from telescope.proxy.model import build_model
from telescope.spec import ModelShape
from telescope.training.train import loss_fn


def median_seconds(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_fn(width: int, shape: ModelShape, batch, muon_cls):
    model = build_model(shape, width, 64, "paper", torch.Generator().manual_seed(0))
    opt = build_optimizers(model, "paper", 0.03, 0.1, width, 64, muon_cls=muon_cls)
    inputs, targets = batch

    def step():
        loss_fn(model, inputs, targets).backward()
        opt.step()
        opt.zero_grad()

    return step


def muon_step_fn(width: int, shape: ModelShape, muon_cls):
    model = build_model(shape, width, 64, "paper", torch.Generator().manual_seed(0))
    matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks")]
    gen = torch.Generator().manual_seed(1)
    for p in matrices:
        p.grad = torch.randn(p.shape, generator=gen)
    opt = muon_cls(matrices, lr=0.03, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    return opt.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,256")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    shape = ModelShape()
    batch = load_data("stdlib").train_batch(0, 16, shape.seq_len, 0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 16x{shape.seq_len}, depth {shape.depth}"
    )
    print(f"{'what':<28}{'width':>6}{'ours ms':>10}{'reference ms':>14}{'ratio':>8}")
    for width in (int(w) for w in args.widths.split(",")):
        rows = [
            (
                "trial step (fwd+bwd+optim)",
                train_step_fn(width, shape, batch, Muon),
                train_step_fn(width, shape, batch, torch.optim.Muon),
            ),
            (
                "Muon step (hidden matrices)",
                muon_step_fn(width, shape, Muon),
                muon_step_fn(width, shape, torch.optim.Muon),
            ),
        ]
        for what, ours, reference in rows:
            t_ref = median_seconds(reference, args.repeats)  # interleave to share any drift
            t_ours = median_seconds(ours, args.repeats)
            print(f"{what:<28}{width:>6}{t_ours * 1e3:>10.2f}{t_ref * 1e3:>14.2f}{t_ref / t_ours:>8.2f}")


if __name__ == "__main__":
    main()
