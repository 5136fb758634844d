"""Streamed statistics at large N: time and peak memory against pyarrow's own floor.

    .venv/bin/python benchmarks/streaming.py [--rows 10000000] [--features 20] [--dir /tmp]

Writes a simulated Parquet data set (``hyperbayes simulate``) under ``--dir``, then measures,
side by side in this run:

1. the floor: reading and decoding the same file with pyarrow alone (``iter_batches`` with
   the same batch size and pyarrow's faster ``pre_buffer=False``, each column turned into a
   NumPy array), in a fresh process;
2. ``hyperbayes fit eb`` end to end in a fresh process: wall time, the pass's own time, peak
   resident memory (ru_maxrss of the child), and the ratio to the floor;
3. ``hyperbayes compare --methods exact,eb,nuts,smc,cv``: the pass against the methods;
4. the same pass on a Dask LocalCluster of 2 worker processes (one thread each), as ``--dask``
   runs it (row-group pieces, each read by the streaming reader in a task), against the
   single-process stream, in this process, with the statistics compared: on fresh workers
   and again on warm ones; and the ``dask.dataframe`` route for reference;
5. a CSV (a tenth of the rows) read by the chunked streaming reader vs ``pyarrow.csv.read_csv``.

Every file it writes is deleted at the end. The machine's load (``uptime``) is printed with
the numbers: on a shared 2-core machine the ratios, measured side by side, are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PY = sys.executable
HB = str(Path(PY).with_name("hyperbayes"))


def _child(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh process: (wall seconds, peak RSS in MB, stdout)."""
    wrapper = (
        "import resource, subprocess, sys, time, json;"
        "t = time.perf_counter(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "w = time.perf_counter() - t;"
        "sys.stderr.write(r.stderr[-2000:]);"
        "print(json.dumps([w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, r.stdout, r.returncode]))"
    )
    res = subprocess.run([PY, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    wall, rss, out, code = json.loads(res.stdout.strip().splitlines()[-1])
    if code != 0:
        raise RuntimeError(f"{cmd} exited {code}: {res.stderr[-1000:]}")
    return wall, rss, out


FLOOR = """
import sys, time, pyarrow.parquet as pq
t = time.perf_counter(); rows = 0
for batch in pq.ParquetFile(sys.argv[1], pre_buffer=False).iter_batches(batch_size=int(sys.argv[2]), use_threads=True):
    for col in batch.columns:
        col.to_numpy()
    rows += batch.num_rows
print(rows, time.perf_counter() - t)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--data", help="an existing simulated Parquet file to use (kept) instead of "
                    "writing one (hyperbayes simulate --rows N --features D --out FILE)")
    ap.add_argument("--csv-rows", type=int, help="rows of the CSV comparison (default: a tenth of "
                    "the rows, at most 10^7)")
    ap.add_argument("--dask-frame", action="store_true", help="also time the dask.dataframe "
                    "route (2-3x slower; on by default up to 2 x 10^7 rows)")
    args = ap.parse_args()
    from hyperbayes.models.sources import DEFAULT_CHUNK_ROWS

    work = Path(tempfile.mkdtemp(prefix="hb-stream-bench-", dir=args.dir))
    try:
        _run(args, work, DEFAULT_CHUNK_ROWS)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"removed {work}")


def _run(args, work: Path, chunk: int) -> None:
    print(f"uptime: {os.popen('uptime').read().strip()}")
    if args.data:
        import pyarrow.parquet as pq

        path = Path(args.data)
        meta = pq.ParquetFile(path).metadata
        args.rows, args.features = meta.num_rows, meta.num_columns - 1
        print(f"using {path}: {args.rows:,} x {args.features} + target, "
              f"{path.stat().st_size / 1e9:.2f} GB")
    else:
        path = work / "sim.parquet"
        t = time.perf_counter()
        _child([HB, "simulate", "--rows", str(args.rows), "--features", str(args.features), "--out", str(path)])
        print(f"wrote {args.rows:,} x {args.features} + target: {path.stat().st_size / 1e9:.2f} GB in "
              f"{time.perf_counter() - t:.1f} s")

    wall_floor, rss_floor, out = _child([PY, "-c", FLOOR, str(path), str(chunk)])
    floor = float(out.split()[1])
    print(f"floor (pyarrow read + decode to NumPy): {floor:.2f} s in-loop, {wall_floor:.2f} s with "
          f"start-up, peak RSS {rss_floor:,.0f} MB")

    wall, rss, out = _child([HB, "fit", "eb", "--data", str(path), "--target", "y", "--json", "--quiet"])
    fit = json.loads(out)
    pass_s = fit["data_read"]["seconds"]
    print(f"fit eb: {wall:.2f} s end to end, pass {pass_s:.2f} s, peak RSS {rss:,.0f} MB; "
          f"pass / floor = {pass_s / floor:.2f}x, end to end / floor with start-up = "
          f"{wall / wall_floor:.2f}x; sigma {fit['sigma']:.4f} (true 0.5 draws w), noise "
          f"{fit['noise']:.4f} (true 1)")
    print(f"uptime: {os.popen('uptime').read().strip()}")

    if not args.skip_compare:
        out_dir = work / "run"
        wall, rss, _ = _child([HB, "compare", "--data", str(path), "--target", "y", "--methods",
                               "exact,eb,nuts,smc,cv", "--out", str(out_dir), "--quiet"])
        summary = json.loads((out_dir / "summary.json").read_text())
        methods = {m: s.get("wall_time") for m, s in summary["methods"].items()}
        run_bytes = sum(p.stat().st_size for p in out_dir.iterdir())
        print(f"compare: {wall:.1f} s end to end, pass {summary['data_read']['seconds']:.1f} s, "
              f"methods {sum(v or 0 for v in methods.values()):.1f} s "
              f"({', '.join(f'{m} {v:.1f}' for m, v in methods.items() if v)}), peak RSS "
              f"{rss:,.0f} MB, run directory {run_bytes / 1e6:.1f} MB")

    _dask_vs_stream(path, chunk, frame_route=args.dask_frame or args.rows <= 20_000_000)
    _csv(work, path, args, chunk)
    print(f"uptime: {os.popen('uptime').read().strip()}")


def _dask_vs_stream(path: Path, chunk: int, *, frame_route: bool) -> None:
    """The ``--dask`` pass (row-group pieces read by the streaming reader in Dask tasks) on a
    fresh LocalCluster, then again on the warm cluster next to a second single-process pass;
    and, for reference, the ``dask.dataframe`` route (``read_parquet`` + partition statistics)."""
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from hyperbayes.models.dask_source import dask_statistics, parquet_statistics
    from hyperbayes.models.streaming import stream_statistics

    def timed(fn):
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out

    def rel(res, ref):
        a, b = res.family, ref.family
        return max(np.linalg.norm(a.comoment - b.comoment) / np.linalg.norm(b.comoment),
                   float(np.max(np.abs(a.mean - b.mean) / np.abs(b.mean))))

    t_single, single = timed(lambda: stream_statistics(path, target="y", chunk_rows=chunk))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        t_first, dist = timed(lambda: parquet_statistics(path, target="y", chunk_rows=chunk))
        t_single2, _ = timed(lambda: stream_statistics(path, target="y", chunk_rows=chunk))
        t_warm, _ = timed(lambda: parquet_statistics(path, target="y", chunk_rows=chunk))
        if frame_route:
            t_frame, frame = timed(lambda: dask_statistics(
                dd.read_parquet(str(path), split_row_groups=True), target="y"))
    print(f"Dask LocalCluster (2 processes x 1 thread), --dask route ({dist.info.chunks} row-group "
          f"chunks in tasks): first pass {t_first:.2f} s vs single-process stream {t_single:.2f} s: "
          f"{t_first / t_single:.2f}x; warm workers {t_warm:.2f} s vs {t_single2:.2f} s: "
          f"{t_warm / t_single2:.2f}x; statistics equal to {rel(dist, single):.1e} relative")
    if frame_route:
        print(f"  dask.dataframe route (read_parquet, partition statistics): {t_frame:.2f} s, "
              f"{t_frame / t_single2:.2f}x the warm single stream; equal to {rel(frame, single):.1e}")


def _csv(work: Path, path: Path, args, chunk: int) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from hyperbayes.models.streaming import stream_statistics

    rows = args.csv_rows or max(1, min(args.rows // 10, 10_000_000))
    csv = work / "sim.csv"
    pf = pq.ParquetFile(path)
    with pacsv.CSVWriter(csv, pf.schema_arrow) as writer:
        done = 0
        for batch in pf.iter_batches(batch_size=chunk):
            writer.write_batch(batch.slice(0, rows - done))
            done += min(batch.num_rows, rows - done)
            if done >= rows:
                break
    mb = csv.stat().st_size / 1e6
    t = time.perf_counter()
    pacsv.read_csv(csv)
    t_arrow = time.perf_counter() - t
    t = time.perf_counter()
    stream_statistics(csv, target="y", chunk_rows=chunk)
    t_stream = time.perf_counter() - t
    print(f"CSV {rows:,} rows ({mb:,.0f} MB): streamed statistics {t_stream:.2f} s "
          f"({mb / t_stream:,.0f} MB/s) vs pyarrow.csv.read_csv {t_arrow:.2f} s "
          f"({mb / t_arrow:,.0f} MB/s): {t_stream / t_arrow:.2f}x")


if __name__ == "__main__":
    main()
