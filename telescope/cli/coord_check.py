"""`telescope coord-check`: a PASS/FAIL verdict on a parametrization's width scaling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from telescope.cli.common import console, print_rows
from telescope.errors import ConfigError
from telescope.parametrization import DEFAULT_PARAMETRIZATION
from telescope.spec import ModelShape


def parse_widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ConfigError(f"--widths must be comma-separated integers, got {text!r}") from None
    if any(w <= 0 for w in widths):
        raise ConfigError(f"--widths must be positive, got {text!r}")
    return widths


def parse_depths(text: str) -> tuple[int, ...]:
    """`--depths 2,4,8`: at least two positive depths, strictly increasing."""
    try:
        depths = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise ConfigError(f"--depths must be comma-separated integers, got {text!r}") from None
    if len(depths) < 2 or depths[0] < 1 or any(b <= a for a, b in zip(depths, depths[1:])):
        raise ConfigError(f"--depths needs at least two positive depths, strictly increasing, got {text!r}")
    return depths


DepthsOption = Annotated[
    str | None,
    typer.Option(help="Check across these depths (comma-separated, increasing) at one width; the first is the base."),
]
DepthAlphaOption = Annotated[
    float | None,
    typer.Option(
        "--depth-alpha",
        help="With --depths: the depth rule's branch exponent, 0 off, 0.5 depth-muP, 1 CompleteP (the default; "
        "README: Depth).",
    ),
]


def coord_check(
    parametrization: Annotated[
        str, typer.Option("--parametrization", "-p", help="paper, muon, adamw or sp.")
    ] = DEFAULT_PARAMETRIZATION,
    widths: Annotated[
        str, typer.Option(help="Comma-separated widths; the first is the base width.")
    ] = "64,128,256,512",
    steps: Annotated[int, typer.Option(help="Training steps per width.")] = 10,
    lr: Annotated[float, typer.Option(help="Base learning rate eta0 (constant, no warmup).")] = 0.01,
    threshold: Annotated[float, typer.Option(help="Largest |log-log slope| that passes.")] = 0.25,
    head_dim: Annotated[int, typer.Option(help="Attention head dimension.")] = 32,
    depth: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    depths: DepthsOption = None,
    width: Annotated[int, typer.Option(help="With --depths: the one width checked.")] = 64,
    depth_alpha: DepthAlphaOption = None,
    data: Annotated[str, typer.Option(help="'stdlib' (default corpus) or a path.")] = "stdlib",
    seed: Annotated[int, typer.Option(help="Seed for init and data order.")] = 0,
    model: Annotated[
        str | None, typer.Option("--model", help="Your model: package.module:factory, factory(width) -> nn.Module.")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Role rules for --model (TOML or JSON), tried before the defaults.")
    ] = None,
    plot: Annotated[str | None, typer.Option(help="Write the activation plot to this PNG.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the per-layer verdicts as JSON.")] = False,
) -> None:
    """Train each width (or, with --depths, each depth) a few steps and check that every
    layer's activation size does not move with it. Exit 0 if every layer passes, 1 otherwise."""
    from telescope.cli.checks import check_plot_file, check_widths_fit
    from telescope.cli.common import model_rules, positive_number
    from telescope.coord.study import CoordCheckSettings, plot_coord_check
    from telescope.coord.study import coord_check as run_coord_check
    from telescope.parametrization import DEFAULT_DEPTH_ALPHA, check_depth_alpha

    checked_depths = parse_depths(depths) if depths is not None else ()
    if depth_alpha is None:
        depth_alpha = DEFAULT_DEPTH_ALPHA if checked_depths else 0.0
    shape = ModelShape(depth=depth, head_dim=head_dim, depth_alpha=check_depth_alpha(depth_alpha, "--depth-alpha"))
    if checked_depths and model is not None:
        raise ConfigError("--depths checks the built-in proxy; your model's factory decides its own depth")
    checked_widths = (width,) if checked_depths else parse_widths(widths)
    if model is None:
        deepest = ModelShape(depth=checked_depths[-1], head_dim=head_dim) if checked_depths else shape
        check_widths_fit(deepest, checked_widths, "cpu", "--width" if checked_depths else "--widths")
    if plot:
        check_plot_file(Path(plot))
    settings = CoordCheckSettings(
        parametrization=parametrization,
        widths=checked_widths,
        depths=checked_depths,
        steps=steps,
        lr=positive_number(lr, "--lr"),
        threshold=positive_number(threshold, "--threshold"),
        shape=shape,
        data=data,
        seed=seed,
        model_factory=model,
        model_rules=model_rules(rules, model),
    )
    result = run_coord_check(settings)
    if plot:
        plot_coord_check(result, plot)
    rows = [
        {
            "layer": v.layer,
            "slope": round(v.slope, 3),
            "passes": v.bounds(),
            "change_slope": round(v.change_slope, 3),
            "verdict": "PASS" if v.passed else "FAIL",
        }
        for v in result.layers
    ]
    axis = f"depths {depths} at width {width}, depth_alpha {depth_alpha:g}" if checked_depths else f"widths {widths}"
    if json_out:
        payload = {"parametrization": parametrization, "axis": settings.axis, "lr": result.lr, "passed": result.passed}
        if checked_depths:
            payload |= {"depths": list(checked_depths), "width": width, "depth_alpha": depth_alpha}
        typer.echo(json.dumps(payload | {"layers": rows}, indent=2))
    else:
        print_rows(rows, title=f"coord check: {parametrization}, {axis}, {steps} steps, lr {result.lr:g}")
        rule = (
            f"|slope| <= {threshold}"
            if model is None
            else f"each layer's slope between the shrinking {parametrization} designs for it and +{threshold}"
        )
        verdict = "PASS" if result.passed else "FAIL"
        console.print(f"{verdict}: {rule} {'for every layer' if result.passed else 'violated'}", markup=False)
    raise typer.Exit(0 if result.passed else 1)
