"""Open time and resident memory of every binary token format, at pretraining scale.

    python benchmarks/bench_data.py [--tokens 1e9] [--dir /tmp] [--batches 100] [--only NAME]

Writes a uint32 dataset (random tokens below 200,000, documents of 256-4,096 tokens) in each
binary format, one format at a time, under --dir, and deletes it afterwards. --tokens is
lowered to what the free disk holds (a format needs up to 2.2x its 4 bytes a token: Parquet
plus its converted cache). Each measurement runs in a fresh process: `load_data` time, then
--batches training batches of 16 x 1024 and 8 validation batches; RSS growth is VmRSS at the
end minus VmRSS before `load_data` (after torch and pyarrow are imported and used once),
split into anonymous memory (copies) and mapped file pages (the page cache, shared and
reclaimable; the kernel maps ~64 KB around every page a window touches); peak is VmHWM
minus the same.

A first open finds the largest token (one pass over every token) and, for Parquet, converts
the column to a raw token file; it is timed with the telescope cache emptied: --repeats times
with the dataset in the page cache (just written; median, and its CPU seconds, which other
jobs on the machine do not inflate), then once from disk (its files dropped from the page
cache with posix_fadvise after an fsync). Later opens find the range cached; they are timed
--repeats times in the page cache (median) and once from disk (the data and telescope's cache
dropped from the page cache).
References, measured in the same run: reading every byte of the raw .bin once (16 MB reads;
the floor for any pass over the tokens), pyarrow decoding the Parquet column once (no
writing), and a plain np.memmap of the raw .bin drawing the same windows by hand (later
open, batches, RSS). Ratios = ours / reference; later opens are medians over --repeats.
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
    start, cpu = time.perf_counter(), time.process_time()
    data = load_data(source, **settings)
    opened, cpu = time.perf_counter() - start, time.process_time() - cpu
    draws = []
    for step in range(batches):
        t = time.perf_counter()
        data.train_batch(step, BATCH, SEQ, seed=0)
        draws.append(time.perf_counter() - t)
    data.val_batches(8, BATCH, SEQ)
    return {"open_s": opened, "cpu_s": cpu, "batch_ms": 1e3 * statistics.median(draws), **grown(before)}


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


def measure_read(source: str) -> dict:
    """Every byte of a file, read once."""
    buffer = bytearray(16 << 20)
    start, cpu = time.perf_counter(), time.process_time()
    with open(source, "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    return {"open_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}


def measure_decode(source: str) -> dict:
    """A Parquet column (PATH:COLUMN), decoded once row group by row group, as the conversion does."""
    import pyarrow.parquet as pq

    path, _, column = source.rpartition(":")
    warm_up_libraries()
    before = resident()
    start, cpu = time.perf_counter(), time.process_time()
    parquet = pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):
        parquet.read_row_group(group, columns=[column], use_threads=False)
    return {"open_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, **grown(before)}


def evict(folder: Path) -> None:
    """Drop a folder's files from the page cache (written back first), so the next read is from disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def run_child(args: list[str], cache: Path) -> dict:
    env = dict(os.environ, TELESCOPE_CACHE=str(cache))
    out = subprocess.run([sys.executable, __file__, *args], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_opens(args: list[str], folder: Path, cache: Path, repeats: int) -> tuple[list[dict], dict]:
    """(`repeats` runs in the page cache, one from disk), each with the telescope cache emptied."""
    in_cache = []
    for _ in range(repeats):
        shutil.rmtree(cache, ignore_errors=True)
        in_cache.append(run_child(args, cache))
    shutil.rmtree(cache, ignore_errors=True)
    evict(folder)
    return in_cache, run_child(args, cache)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=float, default=1e9)
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3, help="later opens per format (median)")
    p.add_argument("--only", help="the formats whose name contains this")
    p.add_argument("--measure", nargs=2, metavar=("SOURCE", "SETTINGS"), help=argparse.SUPPRESS)
    p.add_argument("--reference", metavar="SOURCE", help=argparse.SUPPRESS)
    p.add_argument("--read", metavar="SOURCE", help=argparse.SUPPRESS)
    p.add_argument("--decode", metavar="SOURCE", help=argparse.SUPPRESS)
    args = p.parse_args()
    children = {
        "measure": lambda: measure(args.measure[0], json.loads(args.measure[1]), args.batches),
        "reference": lambda: measure_reference(args.reference, args.batches),
        "read": lambda: measure_read(args.read),
        "decode": lambda: measure_decode(args.decode),
    }
    for flag, child in children.items():
        if getattr(args, flag):
            print(json.dumps(child()))
            return

    free = shutil.disk_usage(args.dir).free
    tokens = int(min(args.tokens, (free - SPARE) / (4 * PEAK_DISK)))
    print(
        f"{tokens:,} tokens a format ({tokens * 4 / 1e9:.2f} GB as uint32; {free / 1e9:.0f} GB free in {args.dir};"
        f" asked for {int(args.tokens):,}); {os.cpu_count()} CPUs, load average {os.getloadavg()[1]:.1f}",
        flush=True,
    )
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-data-", dir=args.dir))
    try:
        for name, (write, settings) in FORMATS.items():
            if args.only and args.only not in name:
                continue
            folder, cache = work / "data", work / "cache"
            folder.mkdir()
            t = time.perf_counter()
            source = write(folder, tokens)
            written = time.perf_counter() - t
            if name.startswith("raw"):
                rows.append(
                    (
                        "reference: read every byte of the raw .bin once",
                        *first_opens(["--read", source], folder, cache, args.repeats),
                        [],
                        None,
                    )
                )
                ref = [
                    run_child(["--reference", source, "--batches", str(args.batches)], cache)
                    for _ in range(args.repeats)
                ]
                rows.append(("reference: np.memmap of the raw .bin", None, None, ref, None))
            if name.startswith("Parquet"):
                rows.append(
                    (
                        "reference: pyarrow decodes the Parquet column once",
                        *first_opens(["--decode", source], folder, cache, args.repeats),
                        [],
                        None,
                    )
                )
            measure_args = ["--measure", source, json.dumps(settings), "--batches", str(args.batches)]
            in_cache, from_disk = first_opens(measure_args, folder, cache, args.repeats)
            later = [run_child(measure_args, cache) for _ in range(args.repeats)]
            evict(folder)
            evict(cache)
            rows.append((name, in_cache, from_disk, later, run_child(measure_args, cache)))
            print(
                f"  {name}: written in {written:.0f} s, first open {med(in_cache, 'open_s'):.2f} s in the page cache,"
                f" {from_disk['open_s']:.2f} s from disk",
                flush=True,
            )
            shutil.rmtree(folder)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average over the last 5 minutes at the end: {os.getloadavg()[1]:.1f}")
    print_table(rows)


def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def print_table(rows: list) -> None:
    """One line a format; a reference line leaves blank what it does not measure."""
    read = next((r[1] for r in rows if r[0].startswith("reference: read")), None)
    memmap = next((r[3] for r in rows if r[0].startswith("reference: np.memmap")), None)
    mb = 1 << 20
    print(
        "\n| format | first open s (page cache) | its CPU s | / read once | first open s (from disk) | later open s"
        " | later open s (from disk) | batch ms | batch / ref | RSS growth MB (anon + file) | RSS / ref"
        " | first open peak MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, in_cache, from_disk, later, later_from_disk in rows:
        cells = [name]
        if in_cache:
            ratio = f"{med(in_cache, 'open_s') / med(read, 'open_s'):.1f}x" if read else "-"
            cells += [f"{med(in_cache, 'open_s'):.2f}", f"{med(in_cache, 'cpu_s'):.2f}", ratio]
            cells += [f"{from_disk['open_s']:.2f}"]
        else:
            cells += ["-"] * 4
        if later:
            rss = f"{med(later, 'rss') / mb:.1f} ({med(later, 'anon') / mb:.1f} + {med(later, 'file') / mb:.1f})"
            cells += [f"{med(later, 'open_s'):.4f}"]
            cells += [f"{later_from_disk['open_s']:.4f}" if later_from_disk else "-", f"{med(later, 'batch_ms'):.2f}"]
            cells += [f"{med(later, 'batch_ms') / med(memmap, 'batch_ms'):.2f}x" if memmap else "-", rss]
            cells += [f"{med(later, 'rss') / max(med(memmap, 'rss'), 1):.2f}x" if memmap else "-"]
        else:
            cells += ["-"] * 6
        peaks = [r["peak"] for r in (in_cache or later) if "peak" in r]
        cells.append(f"{max(peaks) / mb:.0f}" if peaks else "-")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
