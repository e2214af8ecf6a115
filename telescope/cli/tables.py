"""Terminal tables that fit: short headers, human numbers, no word ever broken inside a cell.

A table wider than the terminal leaves out its least important columns (named in a caption)
rather than squeezing every cell; free-text columns (errors, warnings) take the room left
and end in an ellipsis. `--wide` prints every column at full width.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from telescope import readable

# Short names for terminal headers (csv and json keep the full keys).
HEADERS = {
    "trial_key": "key",
    "weight_decay": "wd",
    "muon_lr_ratio": "muon:adamw",
    "train_loss": "train loss",
    "val_loss": "val loss",
    "wall_time": "time",
    "attempts": "tries",
    "best_lr": "best lr",
    "best_weight_decay": "best wd",
    "best_muon_lr_ratio": "best muon:adamw",
    "best_loss": "best loss",
    "flops": "FLOPs",
}

_LOSS = ("train_loss", "val_loss", "best_loss")
_VALUE = ("lr", "weight_decay", "muon_lr_ratio", "best_lr", "best_weight_decay", "best_muon_lr_ratio")
FORMATS: dict[str, Callable[[Any], str]] = {
    **{key: readable.loss for key in _LOSS},
    **{key: readable.value for key in _VALUE},
    "flops": readable.flops,
    "tokens": readable.count,
    "params": readable.count,
    "wall_time": readable.seconds,
}

TEXT = ("error", "warnings", "device", "value")  # free text: shortened, never the reason to drop a column
_MIN_TEXT = 12  # narrower than this, a text column is left out instead
_EDGE = 1  # the table's left border
_PER_COLUMN = 3  # one space each side and a border


def cell(key: str, value: Any, raw: bool = False) -> str:
    """A value as a terminal table shows it (empty for missing); `raw`: every float to 6
    significant digits, whatever its column."""
    if value is None:
        return ""
    if isinstance(value, float) and key in FORMATS and not raw:
        return FORMATS[key](value)
    if isinstance(value, float):
        return readable.value(value, 6)
    return str(value)


def fitted_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    width: int,
    *,
    title: str | None = None,
    drop: Sequence[str] = (),
    wide: bool = False,
    raw: bool = False,
) -> tuple[Table, int]:
    """The table of `rows` for a terminal `width` columns wide, and the width it needs.

    `drop` names the columns that may be left out, least important first; unless `wide`,
    they go one by one until the table fits. `raw` keeps the keys as headers and prints
    floats to 6 significant digits (SQL results)."""
    headers = {c: c if raw else HEADERS.get(c, c) for c in columns}
    cells = {c: [cell(c, r.get(c), raw) for r in rows] for c in columns}
    natural = {c: max([len(headers[c]), *map(len, cells[c])]) for c in columns}
    shown = list(columns)

    def needed(cols: list[str], squeeze: bool) -> int:
        return _EDGE + sum(
            _PER_COLUMN + (min(natural[c], _MIN_TEXT) if squeeze and c in TEXT else natural[c]) for c in cols
        )

    if not wide:
        for column in [c for c in drop if c in shown]:
            if needed(shown, squeeze=True) <= width:
                break
            shown.remove(column)
    left_out = [c for c in columns if c not in shown]
    caption = f"left out: {', '.join(headers[c] for c in left_out)} (--wide shows every column)" if left_out else None
    table = Table(title=title, caption=caption)
    room = (
        width - needed([c for c in shown if c not in TEXT], squeeze=False) - _PER_COLUMN * sum(c in TEXT for c in shown)
    )
    texts = [c for c in shown if c in TEXT]
    for c in shown:
        numeric = (c in FORMATS and not raw) or (cells[c] and all(_numeric(v) for v in cells[c] if v))
        if c in TEXT and not wide:
            share = max(_MIN_TEXT, room // max(len(texts), 1))
            table.add_column(headers[c], no_wrap=True, overflow="ellipsis", max_width=share)
        else:
            table.add_column(headers[c], no_wrap=True, justify="right" if numeric else "left")
    for i in range(len(rows)):
        table.add_row(*(cells[c][i] for c in shown))
    return table, needed(shown, squeeze=not wide)


def _numeric(text: str) -> bool:
    """A number, or a number and its unit (`4.5 s`, `33.3 GFLOP`): right-aligned."""
    first, *rest = text.split()
    try:
        float(first)
    except ValueError:
        return False
    return all(word.isalpha() for word in rest)


def print_table(
    console: Console,
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
    drop: Sequence[str] = (),
    wide: bool = False,
    raw: bool = False,
) -> None:
    """Print a fitted table on `console`; with `wide`, at the width it needs even past the
    terminal's edge."""
    table, needed = fitted_table(list(rows), columns, console.width, title=title, drop=drop, wide=wide, raw=raw)
    if wide and needed > console.width:  # a console as wide as the table: rich caps print(width=) at its own
        wider = Console(
            file=console.file,
            width=needed,
            markup=False,
            force_terminal=console.is_terminal,
            color_system=console.color_system,
            no_color=console.no_color,
        )
        wider.print(table, crop=False)
    else:
        console.print(table)
