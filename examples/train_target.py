"""Train the target-width proxy with the hyperparameters a sweep exported.

    telescope sweep examples/tiny-cpu.toml
    telescope export tiny-cpu -o tiny-cpu-export.json
    python examples/train_target.py tiny-cpu-export.json --steps 100

Builds telescope's own model at the export's target width (the family is in the export),
gets its optimizers from the export file with `optimizers_from_export` (Muon for hidden
matrices, AdamW for the rest, each group at the export's absolute LR and weight decay),
trains it on the default corpus with the sweep's schedule shape (linear warmup, cosine
decay to 0.1x) and prints the loss. For your own model, swap `build_model` for it and
call `parametrize(model, ...)` first (see the README, "Into your training code").
"""

from __future__ import annotations

import argparse
import sys
import time

from telescope import (
    ModelShape,
    TelescopeError,
    TrainSettings,
    build_model,
    load_data,
    load_export,
    optimizers_from_export,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="the file `telescope export SWEEP -o FILE` wrote (JSON, YAML or TOML)")
    parser.add_argument("--steps", type=int, default=60, help="training steps (default 60)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    parser.add_argument("--warmup", type=int, default=None, help="warmup steps (default 10%% of --steps)")
    parser.add_argument("--data", default="stdlib", help="'stdlib' (default corpus) or a path")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--log-every", type=int, default=10, help="print the loss every this many steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        train(args)
    except TelescopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def train(args: argparse.Namespace) -> None:
    import torch

    from telescope.training.train import autocast, loss_fn, lr_multiplier, resolve_device, validation_loss

    if args.steps < 1 or args.batch_size < 1 or args.log_every < 1:
        raise TelescopeError("--steps, --batch-size and --log-every must be >= 1")
    export = load_export(args.export)
    if "model" not in export:
        raise TelescopeError(f"{args.export}: has no model family; re-export it with this telescope version")
    shape = ModelShape(**export["model"])
    device = resolve_device(args.device)
    width, base_width = export["target_width"], export["base_width"]
    generator = torch.Generator().manual_seed(args.seed)
    # At the export's target depth, its branches scaled against the proxies' depth (the depth rule).
    model = build_model(shape, width, base_width, export["parametrization"], generator, export.get("proxy_depth")).to(
        device
    )
    optimizers, assignments = optimizers_from_export(model, export)
    for role in ("embedding", "hidden", "output", "vector"):
        rows = [a for a in assignments if a["role"] == role]
        if rows:
            print(
                f"{role:9s} {rows[0]['optimizer']:5s} lr {rows[0]['lr']:.4g}  wd {rows[0]['weight_decay']:.4g}  "
                f"({len(rows)} tensors)"
            )

    schedule = TrainSettings(
        steps=args.steps, warmup_steps=args.warmup if args.warmup is not None else args.steps // 10
    )
    data = load_data(args.data)
    B, T = args.batch_size, shape.seq_len
    started = time.perf_counter()
    print(
        f"training width {width} ({sum(p.numel() for p in model.parameters()):,} parameters) on {data.name}, "
        f"{args.steps} steps of {B}x{T} tokens, device {device}"
    )
    for step in range(args.steps):
        inputs, targets = (t.to(device) for t in data.train_batch(step, B, T, args.seed))
        optimizers.set_lr_multiplier(lr_multiplier(step, schedule))
        with autocast(device):
            loss = loss_fn(model, inputs, targets)
        loss.backward()
        optimizers.step()
        optimizers.zero_grad()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1:5d}  train loss {loss.item():.4f}  ({time.perf_counter() - started:.1f}s)")
    val = validation_loss(model, data.val_batches(4, B, T), device)
    print(f"validation loss {val:.4f}")


if __name__ == "__main__":
    sys.exit(main())
