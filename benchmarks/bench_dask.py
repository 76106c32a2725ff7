"""Batch scoring throughput of the Dask engine against the single-process path.

    python benchmarks/bench_dask.py                                  # 1,000,000 wafers: 100 files × 10,000
    python benchmarks/bench_dask.py --files 20 --per-file 10000      # 200,000 wafers
    python benchmarks/bench_dask.py --workers 1 2 --local-files 2    # which runs; local on a subset

Writes ``--files`` Parquet partitions of ``--per-file`` synthetic wafers (seed = file index) into
``--work``/parts once (reused when present), then times ``run_partitions`` on the bundled default
classifier: ``engine="dask"`` with a LocalCluster of N single-threaded worker processes for each
``--workers`` N (cluster start-up and the ONNX export included: that is what a user waits for),
and ``engine="local"`` (one process, the same per-partition code) on the first ``--local-files``
partitions. Prints one row per run and appends JSON lines to ``--work``/bench_dask.jsonl.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from waferscope.benchmark.measure import environment_line


def make_parts(parts: Path, files: int, per_file: int) -> list[Path]:
    from waferscope.data.io_parquet import write_parquet
    from waferscope.data.synthetic import generate

    parts.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = parts / f"part-{i:05d}.parquet"
        if not path.exists():
            write_parquet(generate(per_file, seed=i), path)  # write_parquet renames into place
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--per-file", type=int, default=10000)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--local-files", type=int, default=5, help="partitions the single-process run scores (0: skip)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/waferscope-bench-dask"))
    args = ap.parse_args(argv)
    import shutil

    from waferscope.models.classifiers import load_default
    from waferscope.scale import run_partitions

    print(environment_line(1) + " (per worker process)")
    t0 = time.perf_counter()
    paths = make_parts(args.work / "parts", args.files, args.per_file)
    print(f"{len(paths)} partitions × {args.per_file} wafers ready in {time.perf_counter() - t0:.0f} s")
    model = load_default()
    runs = [("dask", n, str(args.work / "parts")) for n in args.workers]
    if args.local_files:
        local = args.work / "local_parts"
        local.mkdir(exist_ok=True)
        for p in paths[:args.local_files]:
            if not (local / p.name).exists():
                (local / p.name).symlink_to(p.resolve())
        runs.append(("local", 1, str(local)))
    for engine, workers, data in runs:
        out = args.work / f"out_{engine}_{workers}"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        rows = run_partitions(model, data, out, engine=engine, workers=workers).rows
        secs = time.perf_counter() - t
        row = {"engine": engine, "workers": workers, "wafers": rows, "seconds": round(secs, 1),
               "wafers_per_second": round(rows / secs), "model": "bundled default classifier"}
        print(json.dumps(row))
        with open(args.work / "bench_dask.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
