"""One sweep level on one device: packed trials against one trial per process, in one run.

    python benchmarks/bench_pack_device.py --device cuda --widths 256,512 --trials 9 --procs 3

Rows per width:
- `pool xN`: a hand-rolled pool of N processes (multiprocessing, spawn), each taking one
  trial at a time through `run_trial` (the reference: what scripts around a sweep do).
- `alone`: the same trials one after another in this process (pool x1 without start-up).
- `packed`: the level's trials in packs of --pack through `run_trials`, in this process.
Wall seconds from the first trial's start (the pool's start-up shown apart), trials/s,
tokens/s, the ratio of wall time to the pool's (< 1: faster), the peak device memory
(per process for the pool), and whether each trial's validation loss is bitwise equal to
its run alone (packing must not change a trial's numbers). Medians over --repeats.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch

from telescope.spec import ModelShape, TrainSettings, TrialSpec
from telescope.training.train import resolve_device, run_trial, run_trials


def level(width: int, n: int, shape: ModelShape, train: TrainSettings) -> list[TrialSpec]:
    """n trials of one level: a grid of LR x weight decay around the paper table's default."""
    side = max(1, round(n**0.5))
    points = [(0.034 * 2 ** (i - side // 2), 0.1 * 2 ** (j - side // 2)) for i in range(side) for j in range(side)]
    return [
        TrialSpec(width=width, base_width=min(256, width), lr=lr, weight_decay=wd, model=shape, train=train)
        for lr, wd in points[:n]
    ]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _one(spec: TrialSpec) -> tuple[float | None, float, float, float]:
    """In a pool worker: (val loss, start, end, peak GiB) of one trial."""
    device = resolve_device(spec.train.device)
    reset_peak(device)
    start = time.time()
    result = run_trial(spec)
    return result.val_loss, start, time.time(), peak_gib(device)


def _ready(_: int) -> None:
    resolve_device("auto")
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")


def pool(specs: list[TrialSpec], procs: int) -> tuple[float, float, list[float | None], float]:
    """(start-up s, wall s, val losses, peak GiB per process) of a process pool."""
    begun = time.time()
    with mp.get_context("spawn").Pool(procs) as workers:
        workers.map(_ready, range(procs))  # start-up: import torch, create the CUDA context
        ready = time.time()
        out = workers.map(_one, specs, chunksize=1)
    first = min(start for _, start, _, _ in out)
    return ready - begun, max(end for _, _, end, _ in out) - first, [v for v, *_ in out], max(m for *_, m in out)


def alone(specs: list[TrialSpec], device: torch.device) -> tuple[float, list[float | None], float]:
    reset_peak(device)
    start = time.time()
    losses = [run_trial(s).val_loss for s in specs]
    return time.time() - start, losses, peak_gib(device)


def packed(specs: list[TrialSpec], pack: int, device: torch.device) -> tuple[float, list[float | None], float]:
    reset_peak(device)
    start = time.time()
    losses = [r.val_loss for i in range(0, len(specs), pack) for r in run_trials(specs[i : i + pack])]
    return time.time() - start, losses, peak_gib(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--widths", default="256,512")
    parser.add_argument("--trials", type=int, default=9, help="trials in the level")
    parser.add_argument("--procs", type=int, default=3, help="processes of the pool")
    parser.add_argument("--pack", type=int, default=9, help="trials per pack")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    shape = ModelShape(depth=args.depth, head_dim=args.head_dim, seq_len=args.seq_len)
    train = TrainSettings(steps=args.steps, batch_size=args.batch, warmup_steps=10, eval_batches=4, device=str(device))
    tokens = args.steps * args.batch * args.seq_len
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}, torch {torch.__version__}, depth {args.depth}, head_dim {args.head_dim}, batch "
        f"{args.batch}x{args.seq_len}, {args.steps} steps, {args.trials} trials per level, medians of {args.repeats}"
    )
    print(
        f"{'width':>6} {'runner':<12}{'start-up s':>11}{'wall s':>9}{'trials/s':>10}{'tokens/s':>13}"
        f"{'wall/pool':>10}{'peak GiB':>10}  bitwise = alone"
    )
    for width in (int(w) for w in args.widths.split(",")):
        specs = level(width, args.trials, shape, train)
        rows: dict[str, list[tuple[float, float, list, float]]] = {}
        for _ in range(args.repeats):  # runners take turns, so a slow spell hits each of them
            up, wall, losses, mem = pool(specs, args.procs)
            rows.setdefault(f"pool x{args.procs}", []).append((up, wall, losses, mem))
            wall, losses, mem = alone(specs, device)
            rows.setdefault("alone", []).append((0.0, wall, losses, mem))
            wall, losses, mem = packed(specs, args.pack, device)
            rows.setdefault(f"packed x{min(args.pack, len(specs))}", []).append((0.0, wall, losses, mem))
        reference = rows["alone"][0][2]
        pool_wall = statistics.median(w for _, w, _, _ in rows[f"pool x{args.procs}"])
        for runner, runs in rows.items():
            up, wall = statistics.median(u for u, *_ in runs), statistics.median(w for _, w, _, _ in runs)
            same = all(r[2] == reference for r in runs)
            diff = max(abs(a - b) for r in runs for a, b in zip(r[2], reference) if a is not None and b is not None)
            print(
                f"{width:>6} {runner:<12}{up:>11.1f}{wall:>9.2f}{len(specs) / wall:>10.2f}"
                f"{len(specs) * tokens / wall:>13,.0f}{wall / pool_wall:>10.2f}{runs[0][3]:>10.2f}  "
                f"{'yes' if same else f'no (max diff {diff:.2e})'}"
            )


if __name__ == "__main__":
    main()
