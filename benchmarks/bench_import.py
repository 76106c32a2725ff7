"""Import speed and memory of `waferscope data import` on an LSWMD-layout pickle.

Builds a pickle in the layout of the Kaggle/MIR ``LSWMD.pkl`` (pandas 0.x / Python 2 module paths,
nested-array labels, ~79 % unlabelled like the full file, map sizes 25–60 dies across), then
imports it to Parquet in a fresh subprocess and reports maps/s and the peak resident memory of
that subprocess (``VmHWM``, its resident-set high-water mark) against the pickle's size.

Targets: ≥ 20,000 maps/s; peak RSS < 3 × pickle size.

    python benchmarks/bench_import.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CHILD = r"""
def peak_rss_bytes():
    # VmHWM: this process's own high-water mark. (getrusage's ru_maxrss would also count the
    # parent's memory at fork time, which Linux carries over exec.)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
import json, sys, time
t0 = time.perf_counter()
from waferscope.data.loaders.streaming import import_to_parquet
t1, c1 = time.perf_counter(), time.process_time()
n = import_to_parquet(sys.argv[1], sys.argv[2], batch_size=8192, progress=False)
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"rows": n, "import_s": t2 - t1, "import_cpu_s": c2 - c1, "startup_s": t1 - t0,
                  "peak_rss_bytes": peak_rss_bytes()}))
"""

# WM-811K label shares among the 811,457 wafers (172,950 labelled, 147,431 of them 'none').
LABEL_SHARES = {"": 0.7869, "none": 0.1817, "Edge-Ring": 0.0119, "Edge-Loc": 0.0064, "Center": 0.0053,
                "Loc": 0.0044, "Scratch": 0.0015, "Random": 0.0011, "Donut": 0.0007, "Near-full": 0.0001}


def _disc(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:rows, :cols]
    on = ((yy - (rows - 1) / 2) / (rows / 2)) ** 2 + ((xx - (cols - 1) / 2) / (cols / 2)) ** 2 <= 1
    m = on.astype(np.uint8)
    m[on & (rng.random((rows, cols)) < rng.uniform(0.02, 0.3))] = 2
    return m


def build_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # A few hundred distinct grid sizes, as on real production lines (one per product).
    products = [(int(r), int(c)) for r, c in rng.integers(25, 61, size=(300, 2))]
    names = list(LABEL_SHARES)
    p = np.array(list(LABEL_SHARES.values()))
    labels = rng.choice(len(names), size=n, p=p / p.sum())
    product = rng.integers(0, len(products), size=n)
    empty = np.zeros((0, 0), dtype=np.float64)
    maps, fail, split = [], [], []
    for i in range(n):
        maps.append(_disc(*products[product[i]], rng))
        name = names[labels[i]]
        fail.append(np.array([[name]]) if name else empty)
        split.append(np.array([["Training" if rng.random() < 0.316 else "Test"]]) if name else empty)
    return pd.DataFrame({
        "waferMap": maps,
        "dieSize": np.array([products[k][0] * products[k][1] * 1.3 for k in product]),
        "lotName": [f"lot{i // 25 + 1}" for i in range(n)],
        "waferIndex": (np.arange(n) % 25 + 1).astype(float),
        "trianTestLabel": split,
        "failureType": fail,
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None, help="Folder to keep the pickle and Parquet in.")
    args = ap.parse_args()
    from waferscope.data.loaders.legacy_pickle import dump_legacy_dataframe

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        pkl, out = folder / "LSWMD_bench.pkl", folder / "LSWMD_bench.parquet"
        t = time.perf_counter()
        df = build_frame(args.rows, args.seed)
        with open(pkl, "wb") as f:
            dump_legacy_dataframe(df, f)
        del df
        print(f"built {args.rows} rows, pickle {pkl.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t:.1f} s",
              file=sys.stderr)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        res = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, str(pkl), str(out)], env=env,
                             capture_output=True, text=True)
        if res.returncode:
            sys.exit(res.stderr)
        r = json.loads(res.stdout)
        size = pkl.stat().st_size
        result = {
            "rows": r["rows"],
            "pickle_mb": round(size / 1e6, 1),
            "parquet_mb": round(out.stat().st_size / 1e6, 1),
            "import_s": round(r["import_s"], 2),
            "import_cpu_s": round(r["import_cpu_s"], 2),
            "maps_per_s": round(r["rows"] / r["import_s"]),
            "maps_per_cpu_s": round(r["rows"] / r["import_cpu_s"]),
            "load_average_1min": round(os.getloadavg()[0], 1),  # other jobs on the machine slow the wall clock
            "peak_rss_mb": round(r["peak_rss_bytes"] / 1e6, 1),
            "peak_rss_over_pickle": round(r["peak_rss_bytes"] / size, 2),
            "targets_met": {"maps_per_s>=20000": r["rows"] / r["import_s"] >= 20000,
                            "peak_rss<3x_pickle": r["peak_rss_bytes"] < 3 * size},
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
