"""Open time and resident memory of every binary token format, at pretraining scale.

    python benchmarks/bench_data.py [--tokens 1e9] [--dir /tmp] [--batches 100]

Writes a uint32 dataset (random tokens below 200,000, documents of 256-4,096 tokens) in each
binary format, one format at a time, under --dir, and deletes it afterwards. --tokens is
lowered to what the free disk holds (a format needs up to 2.2x its 4 bytes a token: Parquet
plus its converted cache). Each measurement runs in a fresh process: `load_data` time, then
--batches training batches of 16 x 1024 and 8 validation batches; RSS growth is VmRSS at the
end minus VmRSS before `load_data` (after torch and pyarrow are imported and used once),
split into anonymous memory (copies) and mapped file pages (the page cache, shared and
reclaimable; the kernel maps ~64 KB around every page a window touches); peak is VmHWM
minus the same. "cold" is the first open
(a scan for the token range, and for Parquet the conversion to a raw token file), "warm" the
next (the range is cached). Reference: a plain np.memmap of the raw .bin with the same
windows drawn by hand, in the same run. Ratios = ours / reference; medians over --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from telescope.data.testing import write_hf_arrow, write_mds, write_megatron, write_parquet_tokens

BATCH, SEQ = 16, 1024
TOP = 200_000
SPARE = 2 << 30  # bytes of disk left free
PEAK_DISK = 2.2  # a format's peak disk use, in units of 4 bytes a token


def documents(tokens: int, dtype: str = "uint32") -> Iterator[np.ndarray]:
    """Deterministic documents totalling `tokens` tokens."""
    rng = np.random.default_rng(0)
    left = tokens
    while left > 0:
        lengths = np.minimum(np.cumsum(rng.integers(256, 4097, size=4096)), left)
        flat = rng.integers(0, TOP, size=int(lengths[-1]), dtype=np.uint32).astype(dtype, copy=False)
        yield from (d for d in np.split(flat, lengths[:-1]) if len(d))
        left -= int(lengths[-1])


def write_raw(path: Path, tokens: int) -> str:
    with path.open("wb") as f:
        for d in documents(tokens):
            f.write(d.astype("<u4").tobytes())
    return str(path)


def write_npy(path: Path, tokens: int) -> str:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint32, shape=(tokens,))
    at = 0
    for d in documents(tokens):
        out[at : at + len(d)] = d
        at += len(d)
    out.flush()
    del out
    return str(path)


FORMATS = {  # name: (write(dir, tokens) -> source, load_data settings)
    "raw .bin (data_dtype = uint32)": (lambda d, n: write_raw(d / "tokens.bin", n), {"dtype": "uint32"}),
    ".npy uint32": (lambda d, n: write_npy(d / "tokens.npy", n), {}),
    "Megatron int32 (.bin + .idx)": (
        lambda d, n: str(write_megatron(d / "corpus_text_document", documents(n, "int32"))),
        {},
    ),
    "HF save_to_disk (Arrow)": (lambda d, n: f"{write_hf_arrow(d / 'hf', documents(n), dtype='uint32')}:input_ids", {}),
    "MDS ndarray uint32": (lambda d, n: str(write_mds(d / "mds", documents(n), samples_per_shard=30_000)), {}),
    "Parquet list<uint32>": (
        lambda d, n: f"{write_parquet_tokens(d / 'tokens.parquet', documents(n), dtype='uint32')}:input_ids",
        {},
    ),
}


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def warm_up_libraries() -> None:
    """Import and first-use costs of torch and pyarrow, paid before measuring (the reference too)."""
    import pyarrow as pa
    import torch

    torch.from_numpy(np.zeros(2)).sum()
    pa.array([[1, 2]]).offsets.to_numpy()


def resident() -> dict:
    return {k: status(k) for k in ("VmRSS", "RssAnon", "RssFile")}


def grown(before: dict) -> dict:
    now = resident()
    return {
        "rss": now["VmRSS"] - before["VmRSS"],
        "anon": now["RssAnon"] - before["RssAnon"],
        "file": now["RssFile"] - before["RssFile"],
        "peak": status("VmHWM") - before["VmRSS"],
    }


def measure(source: str, settings: dict, batches: int) -> dict:
    """In this (fresh) process: open, draw batches, report seconds and bytes."""
    from telescope.data import load_data

    warm_up_libraries()
    before = resident()
    start = time.perf_counter()
    data = load_data(source, **settings)
    opened = time.perf_counter() - start
    draws = []
    for step in range(batches):
        t = time.perf_counter()
        data.train_batch(step, BATCH, SEQ, seed=0)
        draws.append(time.perf_counter() - t)
    data.val_batches(8, BATCH, SEQ)
    return {"open_s": opened, "batch_ms": 1e3 * statistics.median(draws), **grown(before)}


def measure_reference(source: str, batches: int) -> dict:
    import torch

    warm_up_libraries()
    before = resident()
    start = time.perf_counter()
    tokens = np.memmap(source, dtype="<u4", mode="r")
    opened = time.perf_counter() - start
    offsets = np.arange(SEQ + 1)
    draws = []
    for step in range(batches):
        t = time.perf_counter()
        ids = np.random.default_rng([0, step]).integers(0, len(tokens) - SEQ, size=BATCH)
        w = tokens[ids[:, None] + offsets].astype(np.int64)
        torch.from_numpy(w[:, :-1].copy()), torch.from_numpy(w[:, 1:].copy())
        draws.append(time.perf_counter() - t)
    return {"open_s": opened, "batch_ms": 1e3 * statistics.median(draws), **grown(before)}


def run_child(args: list[str], cache: Path) -> dict:
    env = dict(os.environ, TELESCOPE_CACHE=str(cache))
    out = subprocess.run([sys.executable, __file__, *args], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=float, default=1e9)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="warm opens per format (median)")
    p.add_argument("--measure", nargs=2, metavar=("SOURCE", "SETTINGS"), help=argparse.SUPPRESS)
    p.add_argument("--reference", metavar="SOURCE", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], json.loads(args.measure[1]), args.batches)))
        return
    if args.reference:
        print(json.dumps(measure_reference(args.reference, args.batches)))
        return

    free = shutil.disk_usage(args.dir).free
    tokens = int(min(args.tokens, (free - SPARE) / (4 * PEAK_DISK)))
    print(
        f"{tokens:,} tokens a format ({tokens * 4 / 1e9:.2f} GB as uint32; {free / 1e9:.0f} GB free in {args.dir};"
        f" asked for {int(args.tokens):,})",
        flush=True,
    )
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-data-", dir=args.dir))
    try:
        for name, (write, settings) in FORMATS.items():
            folder, cache = work / "data", work / "cache"
            folder.mkdir()
            t = time.perf_counter()
            source = write(folder, tokens)
            written = time.perf_counter() - t
            measure_args = ["--measure", source, json.dumps(settings), "--batches", str(args.batches)]
            cold = run_child(measure_args, cache)
            warm = [run_child(measure_args, cache) for _ in range(args.repeats)]
            if name.startswith("raw"):
                ref = [
                    run_child(["--reference", source, "--batches", str(args.batches)], cache)
                    for _ in range(args.repeats)
                ]
                rows.append(("reference: np.memmap of the raw .bin", None, ref, 0.0))
            rows.append((name, cold, warm, written))
            print(f"  {name}: written in {written:.0f} s, cold open {cold['open_s']:.2f} s", flush=True)
            shutil.rmtree(folder)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows)


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def print_table(rows: list) -> None:
    ref = rows[0][2]
    mb = 1 << 20
    print(
        "\n| format | cold open s | warm open s | open / ref | batch ms | batch / ref | RSS growth MB"
        " (anon + file) | RSS / ref | cold peak MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, cold, warm, _ in rows:
        cold_open = f"{cold['open_s']:.2f}" if cold else "-"
        peak = f"{(cold or warm[0])['peak'] / mb:.0f}"
        rss = f"{med(warm, 'rss') / mb:.1f} ({med(warm, 'anon') / mb:.1f} + {med(warm, 'file') / mb:.1f})"
        print(
            f"| {name} | {cold_open} | {med(warm, 'open_s'):.4f} | {med(warm, 'open_s') / med(ref, 'open_s'):.0f}x"
            f" | {med(warm, 'batch_ms'):.2f} | {med(warm, 'batch_ms') / med(ref, 'batch_ms'):.2f}x"
            f" | {rss} | {med(warm, 'rss') / max(med(ref, 'rss'), 1):.2f}x | {peak} |"
        )


if __name__ == "__main__":
    main()
