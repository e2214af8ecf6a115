"""`telescope trial`: train one proxy and print its result."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from telescope.cli.common import WideOption, print_rows
from telescope.parametrization import DEFAULT_PARAMETRIZATION
from telescope.spec import ModelShape, TrainSettings, TrialSpec

RESULT_COLUMNS = ["status", "train_loss", "val_loss", "steps", "tokens", "flops", "wall_time", "device"]
RESULT_DROP = ["steps", "tokens", "device"]  # what a narrow terminal leaves out first


def trial(
    width: Annotated[int, typer.Option(help="Model width (a multiple of --head-dim).")] = 64,
    lr: Annotated[
        float | None, typer.Option(help="Base learning rate eta0. Default: the table's suggested LR.")
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="Coupled weight decay lambda.")] = 0.0,
    steps: Annotated[int, typer.Option(help="Training steps.")] = 300,
    parametrization: Annotated[
        str, typer.Option("--parametrization", "-p", help="paper, muon, adamw or sp.")
    ] = DEFAULT_PARAMETRIZATION,
    base_width: Annotated[int, typer.Option(help="muP base width (m = width / base width).")] = 64,
    depth: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    head_dim: Annotated[int, typer.Option(help="Attention head dimension.")] = 32,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.")] = 64,
    warmup_steps: Annotated[int, typer.Option(help="Linear warmup steps.")] = 20,
    data: Annotated[str, typer.Option(help="'stdlib' (default corpus) or a path.")] = "stdlib",
    data_dtype: Annotated[
        str | None, typer.Option(help="Tokens of a headerless .bin: uint16 (default), uint32 or int32.")
    ] = None,
    tokenizer: Annotated[str | None, typer.Option(help="A tokenizer.json to encode text with.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for init and data order.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print spec and result as one JSON object.")] = False,
    wide: WideOption = False,
) -> None:
    """Train one proxy model and print its losses, tokens, FLOPs and wall time."""
    from telescope.data import load_train_data
    from telescope.parametrization import get_table
    from telescope.training.train import run_trial

    train = TrainSettings(
        steps=steps,
        batch_size=batch_size,
        warmup_steps=warmup_steps,
        data=data,
        device=device,
        data_dtype=data_dtype,
        tokenizer=tokenizer,  # type: ignore[arg-type]  # load_data checks the dtype
    )
    spec = TrialSpec(
        width=width,
        base_width=base_width,
        lr=lr if lr is not None else get_table(parametrization).default_lr,
        weight_decay=weight_decay,
        parametrization=parametrization,
        seed=seed,
        model=ModelShape(depth=depth, head_dim=head_dim, seq_len=seq_len, vocab_size=load_train_data(train).vocab_size),
        train=train,
    )
    result = run_trial(spec)
    if json_out:
        typer.echo(json.dumps({"spec": spec.to_dict(), "result": result.to_dict()}, indent=2))
        return
    print_rows(
        [result.to_dict()],
        columns=RESULT_COLUMNS,
        drop=RESULT_DROP,
        wide=wide,
        title=f"trial: {parametrization}, width {width}, lr {spec.lr:g}, weight decay {weight_decay:g}",
    )
