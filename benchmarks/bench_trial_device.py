"""Throughput and peak memory of one trial on a device (bf16 autocast on CUDA), against a
plain reference loop measured in the same run.

    python benchmarks/bench_trial_device.py --device cuda --widths 256,512,1024

Ours: `run_trial` as a sweep runs it (per-step metrics and divergence check, our batched
Muon). Reference: the same model, batches and param groups trained by a bare loop with
torch.optim.Muon + torch.optim.AdamW and no per-step host sync. Tokens/s are medians over
the steps after --warmup (ours: the mean rate over them, as its rows arrive in bursts on a
GPU); ratio = ours / reference (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from telescope.cost import param_counts
from telescope.data import load_data
from telescope.optim.groups import build_optimizers
from telescope.proxy.model import build_model
from telescope.spec import ModelShape, StepMetrics, TrainSettings, TrialSpec
from telescope.training.train import autocast, loss_fn, lr_multiplier, resolve_device, run_trial


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def ours(spec: TrialSpec, warmup: int, device: torch.device) -> tuple[float, float | None, float | None]:
    rows: list[StepMetrics] = []
    reset_peak(device)
    result = run_trial(spec, rows.append)
    # On a GPU the host reads losses every 16 steps, so rows arrive (and are stamped) in
    # bursts: the rate is over the whole span after warm-up, not a median of step gaps.
    span = rows[-1].elapsed - rows[warmup].elapsed
    tokens = spec.train.batch_size * spec.model.seq_len
    return tokens * (len(rows) - 1 - warmup) / span, peak_gib(device), result.val_loss


def reference(spec: TrialSpec, warmup: int, device: torch.device) -> tuple[float, float | None]:
    reset_peak(device)
    data = load_data(spec.train.data)
    model = build_model(
        spec.model, spec.width, spec.base_width, spec.parametrization, torch.Generator().manual_seed(spec.seed)
    ).to(device)
    opt = build_optimizers(
        model, spec.parametrization, spec.lr, spec.weight_decay, spec.width, spec.base_width, muon_cls=torch.optim.Muon
    )
    B, T = spec.train.batch_size, spec.model.seq_len
    stamps = []
    for step in range(spec.train.steps):
        inputs, targets = (t.to(device) for t in data.train_batch(step, B, T, spec.seed))
        opt.set_lr_multiplier(lr_multiplier(step, spec.train))
        with autocast(device):
            loss = loss_fn(model, inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step >= warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    return B * T / statistics.median(per_step), peak_gib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--widths", default="256,512,1024")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    device = resolve_device(args.device)
    shape = ModelShape(depth=args.depth, head_dim=args.head_dim, seq_len=args.seq_len)
    train = TrainSettings(steps=args.steps, batch_size=args.batch, warmup_steps=5, eval_batches=2, device=str(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}, torch {torch.__version__}, depth {args.depth}, head_dim {args.head_dim}, "
        f"batch {args.batch}x{args.seq_len}, {args.steps} steps, medians after step {args.warmup}"
    )
    print(
        f"{'width':>6}{'params':>10}{'ours tok/s':>13}{'ref tok/s':>12}{'ratio':>7}{'ours GiB':>10}{'ref GiB':>9}"
        f"{'val loss':>10}"
    )
    for width in (int(w) for w in args.widths.split(",")):
        spec = TrialSpec(width=width, base_width=min(256, width), lr=0.03, weight_decay=0.05, model=shape, train=train)
        ref_tps, ref_mem = reference(spec, args.warmup, device)
        our_tps, our_mem, val = ours(spec, args.warmup, device)
        mem = lambda x: f"{x:.2f}" if x is not None else "-"  # noqa: E731
        print(
            f"{width:>6}{param_counts(shape, width).total / 1e6:>9.1f}M{our_tps:>13,.0f}{ref_tps:>12,.0f}"
            f"{our_tps / ref_tps:>7.2f}{mem(our_mem):>10}{mem(ref_mem):>9}{val:>10.3f}"
        )


if __name__ == "__main__":
    main()
