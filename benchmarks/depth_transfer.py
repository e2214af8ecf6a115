"""Depth transfer, measured: does the optimal learning rate stay put as the proxy deepens?

    python benchmarks/depth_transfer.py --device cuda --dtype bfloat16 --steps 600 --batch 32 --seq 256 \\
        --workers 4 --out results.json

At one width (64) on the default corpus (the standard library's Python sources, bytes),
for every table (`paper`: Muon; `adamw`), depth rule alpha (0 off, 0.5 depth-muP, 1
CompleteP) and depth (2, 4, 8, 16; the first is the base depth of the rule), an LR line in
steps of sqrt(2) around the table's default LR, extended past an edge best (as
`telescope transfer-check` does) until the optimum is bracketed. Reported per (table,
alpha): the optimum at each depth (a parabola through the best point and its neighbours),
the loss there, the grid steps it moves per doubling of depth, and whether the rule
transfers: every optimum bracketed and within one sqrt(2) step per doubling. Per table the
rule to make the default is the one that transfers at the lowest loss at the deepest depth.

Each line is one pack of trials (telescope.training.train.run_trials: no database, no Ray);
`--workers N` runs N packs at once in their own processes (they share the GPU). Progress is
printed as lines finish, and `--out` is rewritten after each, so a run cut short keeps what
it measured; `--resume` reuses the trials already in `--out` (same settings only).

`--tables paper@C:P` measures the `paper` table with another Muon hidden-LR depth rule,
(L / L_base) ** (C + P * alpha) (the default is CompleteP's, C = -1, P = 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any

SQRT2 = math.sqrt(2.0)
BASE_ALPHA = -1.0  # the line at the base depth, shared by every alpha (trained with the rule off)


# --------------------------------------------------------------------------- settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument(
        "--dtype", default="bfloat16", choices=["bfloat16", "float32"], help="bfloat16 (CUDA autocast) or float32 (CPU)"
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps per trial")
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--depths", default="2,4,8,16", help="increasing; the first is the base depth")
    parser.add_argument("--alphas", default="0,0.5,1", help="depth rule exponents in [0, 1]")
    parser.add_argument(
        "--tables", default="paper,adamw", help="tables; paper@C:P: Muon hidden LR exponent C + P*alpha"
    )
    parser.add_argument("--points", type=int, default=5, help="learning rates per line at first, sqrt(2) apart")
    parser.add_argument("--extension-points", type=int, default=2, help="points added past an edge best")
    parser.add_argument("--max-extensions", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per learning rate (averaged)")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--data", default="stdlib", help="'stdlib' (default corpus) or a path")
    parser.add_argument("--workers", type=int, default=1, help="packs trained at once, each in its own process")
    parser.add_argument("--out", default="depth_transfer.json", help="results (JSON), rewritten after each line")
    parser.add_argument("--resume", action="store_true", help="reuse the trials already in --out")
    args = parser.parse_args(argv)
    args.depth_list = _ints(args.depths, "--depths")
    args.alpha_list = [float(a) for a in args.alphas.split(",")]
    args.table_list = args.tables.split(",")
    if len(args.depth_list) < 2 or any(b <= a for a, b in zip(args.depth_list, args.depth_list[1:])):
        parser.error(f"--depths must be at least two increasing depths, got {args.depths}")
    if any(not 0.0 <= a <= 1.0 for a in args.alpha_list):
        parser.error(f"--alphas must lie in [0, 1], got {args.alphas}")
    if min(args.steps, args.batch, args.seq, args.seeds, args.workers, args.points - 2) < 1:
        parser.error("--steps, --batch, --seq, --seeds and --workers must be >= 1, --points >= 3")
    for spec in args.table_list:
        table_of(spec)  # an unknown table or a malformed rule stops here
    return args


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"{option} must be comma-separated integers, got {text!r}") from None


def table_of(spec: str) -> Any:
    """The table a `--tables` entry names: a registered table, or `paper@C:P` (the paper
    table with its Muon hidden-LR depth rule replaced), registered under that name so trials
    (in any process) find it by name."""
    from telescope.parametrization import TABLES, DepthPower, get_table

    if spec in TABLES:
        return TABLES[spec]
    name, _, rule = spec.partition("@")
    if not rule:
        return get_table(spec)
    try:
        constant, per_alpha = (float(x) for x in rule.split(":"))
    except ValueError:
        raise SystemExit(f"--tables: {spec!r} is not TABLE@CONSTANT:PER_ALPHA") from None
    base = get_table(name)
    hidden = dataclasses.replace(base.depth.hidden, lr=DepthPower(constant, per_alpha))
    table = dataclasses.replace(base, name=spec, depth=dataclasses.replace(base.depth, hidden=hidden))
    TABLES[spec] = table
    return table


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What decides every trial's numbers (a resumed run must match it)."""
    keys = ("steps", "batch", "seq", "width", "head_dim", "weight_decay", "eval_batches", "data", "device", "dtype")
    return {k: getattr(args, k) for k in keys} | {"base_depth": args.depth_list[0]}


def trial_spec(args: argparse.Namespace, table: str, alpha: float, depth: int, lr: float, seed: int) -> Any:
    from telescope.spec import ModelShape, TrainSettings, TrialSpec

    return TrialSpec(
        width=args.width,
        base_width=args.width,
        lr=lr,
        weight_decay=args.weight_decay,
        parametrization=table,
        seed=seed,
        model=ModelShape(depth=depth, head_dim=args.head_dim, seq_len=args.seq, depth_alpha=alpha),
        train=TrainSettings(
            steps=args.steps,
            batch_size=args.batch,
            warmup_steps=max(1, args.steps // 10),
            eval_batches=args.eval_batches,
            data=args.data,
            device=args.device,
        ),
        base_depth=args.depth_list[0],
    )


# --------------------------------------------------------------------------- one pack, in a worker


def run_pack(tables: list[str], specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Train the trials `specs` (TrialSpec dicts, one pack) and return their results."""
    from telescope.spec import TrialSpec
    from telescope.training.train import run_trials

    for spec in tables:  # a worker process registers the custom tables again
        table_of(spec)
    started = time.perf_counter()
    results = run_trials([TrialSpec.from_dict(s) for s in specs])
    wall = time.perf_counter() - started
    return [
        {"status": r.status.value, "val_loss": r.val_loss, "train_loss": r.train_loss, "device": r.device, "wall": wall}
        for r in results
    ]


# --------------------------------------------------------------------------- the driver


@dataclasses.dataclass
class Line:
    table: str
    alpha: float
    depth: int
    lrs: list[float]
    extensions: int = 0
    done: bool = False
    optimum: Any = None  # telescope.transfer_check.analysis.SeededOptimum

    def __post_init__(self) -> None:
        self.lrs = list(self.lrs)

    @property
    def name(self) -> str:
        alpha = "any" if self.alpha == BASE_ALPHA else f"{self.alpha:g}"
        return f"{self.table} alpha={alpha} depth={self.depth}"

    @property
    def trained_alpha(self) -> float:
        return 0.0 if self.alpha == BASE_ALPHA else self.alpha


def trial_id(table: str, alpha: float, depth: int, lr: float, seed: int) -> str:
    return f"{table}|{alpha:g}|{depth}|{lr:.6g}|{seed}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from telescope.data import load_train_data
    from telescope.training.train import resolve_device
    from telescope.transfer_check.analysis import lr_line

    device = resolve_device(args.device, "--device")
    if device.type == "cuda" and args.dtype != "bfloat16":
        raise SystemExit("--dtype: telescope trains under bfloat16 autocast on CUDA; pass --dtype bfloat16")
    dtype = "bfloat16 autocast" if device.type == "cuda" else "float32"
    load_train_data(trial_spec(args, "paper", 0.0, args.depth_list[0], 0.01, 0).train)  # the corpus cache, once
    trials = _resumed(args)
    seeds = list(range(args.seeds))
    # At the base depth every factor of the rule is 1, so one line (trained with alpha 0)
    # serves every alpha: BASE_ALPHA.
    lines = [
        Line(
            spec,
            alpha if depth != args.depth_list[0] else BASE_ALPHA,
            depth,
            lr_line(table_of(spec).default_lr, args.points),
        )
        for spec in args.table_list
        for depth in reversed(args.depth_list)  # deepest first: the longest packs start early
        for alpha in (args.alpha_list if depth != args.depth_list[0] else [BASE_ALPHA])
    ]
    started = time.perf_counter()
    pool: Executor = (
        ThreadPoolExecutor(1)
        if args.workers == 1
        else ProcessPoolExecutor(args.workers, mp_context=__import__("multiprocessing").get_context("spawn"))
    )
    print(
        f"depth transfer: {len(lines)} lines ({', '.join(args.table_list)} x alpha {args.alphas} x depths "
        f"{args.depths}), width {args.width}, {args.steps} steps of {args.batch} x {args.seq} tokens, "
        f"{args.seeds} seed(s), on {device} ({dtype}), {args.workers} worker(s)",
        flush=True,
    )
    pending: dict[Future, tuple[Line, list[tuple[float, int]]]] = {}

    def submit(line: Line, lrs: list[float]) -> None:
        wanted = [
            (lr, s) for lr in lrs for s in seeds if trial_id(line.table, line.alpha, line.depth, lr, s) not in trials
        ]
        if not wanted:
            assess(line)
            return
        specs = [trial_spec(args, line.table, line.trained_alpha, line.depth, lr, s).to_dict() for lr, s in wanted]
        pending[pool.submit(run_pack, args.table_list, specs)] = (line, wanted)

    def assess(line: Line) -> None:
        from telescope.transfer_check.analysis import locate_seeds, next_extension

        losses = [
            [_loss(trials.get(trial_id(line.table, line.alpha, line.depth, lr, s))) for lr in line.lrs] for s in seeds
        ]
        line.optimum = locate_seeds(line.lrs, losses)
        more = next_extension(
            line.lrs, line.optimum.mean, line.extensions, max_extensions=args.max_extensions, n=args.extension_points
        )
        o = line.optimum.mean
        note = (
            f", extending {o.direction} by {len(more)}" if more else (f", unresolved ({o.edge} edge)" if o.edge else "")
        )
        mean = [sum(col) / len(col) for col in zip(*losses)]
        curve = " ".join(f"{lr:.3g}:{loss:.4f}" for lr, loss in zip(line.lrs, mean))
        print(
            f"[{_clock(time.perf_counter() - started)}] {line.name}: optimum {o.lr:.4g} (loss {o.loss:.4f}){note}  "
            f"[{curve}]",
            flush=True,
        )
        if more:
            line.extensions += 1
            line.lrs = sorted(line.lrs + list(more))
            submit(line, list(more))
        else:
            line.done = True

    try:
        for line in lines:
            submit(line, line.lrs)
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in finished:
                line, wanted = pending.pop(future)
                for (lr, seed), result in zip(wanted, future.result()):
                    trials[trial_id(line.table, line.alpha, line.depth, lr, seed)] = result
                assess(line)
                _write(args, trials, lines, dtype, device, time.perf_counter() - started)
    finally:
        pool.shutdown(cancel_futures=True)
    summary = _write(args, trials, lines, dtype, device, time.perf_counter() - started)
    _print_table(summary, args)
    print(f"wrote {args.out} ({len(trials)} trials, {_clock(time.perf_counter() - started)})", flush=True)
    return 0


def _loss(result: dict[str, Any] | None) -> float:
    value = None if result is None else result.get("val_loss")
    return value if value is not None and math.isfinite(value) else math.inf


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _resumed(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    if not args.resume or not os.path.exists(args.out):
        return {}
    with open(args.out) as f:
        previous = json.load(f)
    if previous.get("settings") != settings_of(args):
        raise SystemExit(f"--resume: {args.out} was measured with other settings: {previous.get('settings')}")
    print(f"resuming: {len(previous['trials'])} trials from {args.out}", flush=True)
    return dict(previous["trials"])


# --------------------------------------------------------------------------- the summary


def summarize(args: argparse.Namespace, lines: list[Line]) -> list[dict[str, Any]]:
    """Per (table, alpha): the optimum and its loss per depth, steps per doubling, and
    whether it transfers (all bracketed, every doubling within one sqrt(2) step)."""
    from telescope.transfer_check.analysis import grid_steps, verdict_from_optima

    rows = []
    for spec in args.table_list:
        for alpha in args.alpha_list:
            line_of = {ln.depth: ln for ln in lines if ln.table == spec and ln.alpha in (alpha, BASE_ALPHA)}
            if not all(ln.optimum is not None for ln in line_of.values()):
                continue
            depths = sorted(line_of)
            optima = [line_of[d].optimum.mean for d in depths]
            drifts = [
                grid_steps(b.lr, a.lr, SQRT2) / math.log2(db / da)
                for (da, a), (db, b) in zip(zip(depths, optima), zip(depths[1:], optima[1:]))
            ]
            resolved = all(o.edge is None and math.isfinite(o.loss) for o in optima)
            check = verdict_from_optima(depths, [line_of[d].optimum for d in depths], 1.0, axis="depth")
            rows.append(
                {
                    "table": spec,
                    "alpha": alpha,
                    "depths": depths,
                    "optimum_lr": [o.lr for o in optima],
                    "optimum_loss": [o.loss if math.isfinite(o.loss) else None for o in optima],
                    "edge": [o.edge for o in optima],
                    "steps_per_doubling": drifts,
                    "total_steps_per_doubling": grid_steps(optima[-1].lr, optima[0].lr, SQRT2)
                    / math.log2(depths[-1] / depths[0]),
                    "transfers": resolved and all(abs(d) <= 1.0 + 1e-9 for d in drifts),
                    "check_verdict": check.label,
                    "check_reasons": list(check.reasons),
                    "finished": all(ln.done for ln in line_of.values()),
                }
            )
    return rows


def recommend(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per table: the alpha that transfers at the lowest loss at the deepest depth, if any."""
    out = {}
    for table in dict.fromkeys(r["table"] for r in rows):
        ok = [r for r in rows if r["table"] == table and r["transfers"] and r["optimum_loss"][-1] is not None]
        if not ok:
            out[table] = {"alpha": None, "why": "no alpha transfers within one sqrt(2) step per doubling"}
            continue
        best = min(ok, key=lambda r: r["optimum_loss"][-1])
        out[table] = {
            "alpha": best["alpha"],
            "why": f"transfers, and the lowest loss at depth {best['depths'][-1]} among those that do "
            f"({best['optimum_loss'][-1]:.4f})",
        }
    return out


def _write(args, trials, lines, dtype: str, device, elapsed: float) -> list[dict[str, Any]]:
    import torch

    rows = summarize(args, lines)
    payload = {
        "settings": settings_of(args),
        "environment": {
            "torch": torch.__version__,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "dtype": dtype,
            "workers": args.workers,
            "elapsed_s": round(elapsed, 1),
        },
        "lines": [
            {"table": ln.table, "alpha": ln.alpha, "depth": ln.depth, "lrs": ln.lrs, "done": ln.done} for ln in lines
        ],
        "summary": rows,
        "recommendation": recommend(rows),
        "trials": trials,
    }
    tmp = f"{args.out}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, args.out)
    return rows


def _print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    depths = args.depth_list
    head = f"{'table':<14}{'alpha':>6}" + "".join(f"{f'depth {d}':>18}" for d in depths)
    print("\noptimal LR (loss at the optimum) per depth; steps moved per doubling of depth (sqrt(2) grid)")
    print(head + f"{'steps/doubling':>24}{'overall':>9}{'transfers':>11}")
    for r in rows:
        cells = "".join(
            f"{f'{lr:.4g} ({loss:.4f})' if loss is not None else 'diverged':>18}"
            for lr, loss in zip(r["optimum_lr"], r["optimum_loss"])
        )
        drift = " ".join(f"{d:+.2f}" for d in r["steps_per_doubling"])
        edge = "" if all(e is None for e in r["edge"]) else " (edge)"
        print(
            f"{r['table']:<14}{r['alpha']:>6g}{cells}{drift:>24}{r['total_steps_per_doubling']:>+9.2f}"
            f"{('yes' if r['transfers'] else 'no') + edge:>11}"
        )
    for table, rec in recommend(rows).items():
        choice = "keep depth_alpha = 0 (off)" if rec["alpha"] is None else f"depth_alpha = {rec['alpha']:g}"
        print(f"{table}: {choice}: {rec['why']}")


if __name__ == "__main__":
    sys.exit(main())
