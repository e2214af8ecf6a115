"""Run the documented-default transfer checks (paper, muon, sp) and print one table.

    python benchmarks/bench_transfer_check.py [--tables paper,muon,sp] [--executor ray]

Each check is `telescope transfer-check -p TABLE --json` with every other setting at its
default (widths 64 and 256, 5 points in sqrt(2) steps around the table's default LR,
2 seeds, 200 steps of 16 x 64 bytes of the default corpus), in a fresh database, so
nothing is resumed. Expected: paper and muon exit 0 (PASS), sp exits 1 (FAIL), each well
inside the 15-minute budget on 2 CPUs; `budget` is wall time / 15 min.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 15 * 60


def run_check(table: str, folder: Path, executor: str | None) -> tuple[int, dict | None, float, str]:
    cmd = [
        sys.executable,
        "-m",
        "telescope",
        "transfer-check",
        "-p",
        table,
        "--json",
        "--db",
        f"sqlite:///{folder / 'bench.db'}",
        "--store",
        str(folder / "store"),
        "--plot",
        str(folder / f"{table}.png"),
    ]
    if executor:
        cmd += ["--executor", executor]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    try:
        payload = json.loads(proc.stdout)
    except json.JSONDecodeError:
        payload = None
    errors = proc.stderr.strip().splitlines()
    return proc.returncode, payload, wall, errors[-1] if errors else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="paper,muon,sp")
    parser.add_argument("--executor", choices=["ray", "local"], default=None)
    parser.add_argument("--out", default=None, help="Keep databases and plots in this folder (default: a temp dir).")
    args = parser.parse_args()
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-transfer-check-"))
    root.mkdir(parents=True, exist_ok=True)
    header = (
        f"{'parametrization':<16}{'exit':>5}{'verdict':>9}{'drift/doubling':>16}{'drift std':>11}"
        f"{'optima (lr)':>22}{'best losses':>18}{'trials':>8}{'wall s':>9}{'budget':>8}"
    )
    rows = []
    for table in args.tables.split(","):
        folder = root / table
        folder.mkdir(exist_ok=True)
        code, payload, wall, last_err = run_check(table, folder, args.executor)
        if payload is None:
            rows.append(f"{table:<16}{code:>5}{'ERROR':>9}  {last_err}")
            continue
        drifts = " ".join(f"{d['drift_per_doubling']:+.2f}" for d in payload["doublings"])
        stds = " ".join(f"{d['drift_std']:.2f}" if d["drift_std"] is not None else "-" for d in payload["doublings"])
        optima = " ".join(f"{w['optimum_lr']:.3g}" for w in payload["widths"])
        losses = " ".join(f"{w['best_loss']:.3f}" if w["best_loss"] is not None else "inf" for w in payload["widths"])
        rows.append(
            f"{table:<16}{code:>5}{payload['verdict']:>9}{drifts:>16}{stds:>11}{optima:>22}{losses:>18}"
            f"{payload['trials']:>8}{wall:>9.0f}{wall / BUDGET_S:>8.2f}"
        )
        print(f"done {table}: exit {code}, {wall:.0f} s", file=sys.stderr, flush=True)
    print(f"transfer-check defaults, results in {root}")
    print(header)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
