"""Numbers as a person reads them: `158 TFLOP`, `49.4k` parameters, losses to 4 decimals.

The terminal tables and the report print through these; csv, json and the export keep
the raw values.
"""

from __future__ import annotations

import math

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_COUNTS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k"))  # parameters and tokens: 3.67B


def _scaled(x: float, digits: int, prefixes=_SI) -> tuple[str, str]:
    """(number, prefix) with `digits` significant digits, e.g. 1.58262e14 -> ("158", "T")."""
    for scale, prefix in prefixes:
        if abs(x) >= scale:
            return _sig(x / scale, digits), prefix
    return _sig(x, digits), ""


def _sig(x: float, digits: int) -> str:
    text = f"{x:.{digits}g}"
    return text if "e" not in text else f"{x:.0f}"  # 158.3 -> "158", never "1.58e+02"


def flops(x: float | None) -> str:
    """1.58262e14 -> `158 TFLOP`."""
    if x is None or not math.isfinite(x):
        return "-"
    number, prefix = _scaled(x, 3)
    return f"{number} {prefix}FLOP"


def count(n: float | None) -> str:
    """49376 -> `49.4k`, 3.67e9 -> `3.67B`: parameters, tokens, trials."""
    if n is None or not math.isfinite(n):
        return "-"
    if abs(n) < 1000:
        return str(int(n)) if float(n).is_integer() else _sig(n, 3)
    number, prefix = _scaled(n, 3, _COUNTS)
    return f"{number}{prefix}"


def loss(x: float | None) -> str:
    """A loss to 4 decimals; `-` for none."""
    return "-" if x is None else f"{x:.4f}"


def value(x: float | None, digits: int = 4) -> str:
    """A hyperparameter or ratio to `digits` significant digits (0.034, 1.25e-05)."""
    if x is None:
        return "-"
    return f"{x + 0.0:.{digits}g}"  # + 0.0: no "-0"


def seconds(x: float | None) -> str:
    """A duration: `8.4 s`, `3:05` (minutes), `1:02:03` (hours)."""
    if x is None or not math.isfinite(x):
        return "-"
    if x < 60:
        return f"{x:.2g} s" if x < 10 else f"{x:.0f} s"
    whole = int(round(x))
    if whole < 3600:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
