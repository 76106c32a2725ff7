"""STDF V4 loading speed and memory at production scale, side by side with pystdf.

Generates (seeded, streamed to disk one wafer at a time) a probe lot in the usual record order —
FAR, ATR, MIR, SDR, PMR, PGR, WCR; per wafer WIR, the first full PTR of each test, then per die
PIR, ``--ptr`` short PTRs, one 4-result MPR and a PRR; ~1 % of the dies re-probed at the end of the
wafer without a retest flag; DTRs; WRR; then TSR, HBR, SBR, PCR, MRR — by default 100 wafers of
20,108 dies (a disc 160 dies across), ~510 MB. Then, each in a fresh subprocess (so its peak RSS,
``VmHWM``, is its own):

- waferscope's ``load_stdf`` on the whole file: MB/s (wall clock and per CPU-second), peak RSS;
- pystdf (``Parser`` with a sink keeping the PRRs, what a map needs) on a ``--pystdf-wafers``-wafer
  file of the same generator (a whole 500 MB lot would take pystdf most of an hour): its MB/s is
  extrapolated to the big file by size, and labelled so; waferscope is timed on that small file too
  for a like-for-like ratio.

Targets: ≥ 20× pystdf and ≥ 50 MB/s on one core, peak RSS < 300 MB.

    python benchmarks/bench_stdf.py                      # ~510 MB in /tmp, kept for re-runs
    python benchmarks/bench_stdf.py --wafers 10 --gzip   # smaller, plus the same file gzip'd
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CHILD_OURS = r"""
import json, sys, time
def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
from waferscope.data.loaders.stdf import load_stdf
t0, c0 = time.perf_counter(), time.process_time()
ds = load_stdf(sys.argv[1])
t1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({"seconds": t1 - t0, "cpu_seconds": c1 - c0, "peak_rss_bytes": peak(), "wafers": len(ds),
                  "dies": int(sum(int((m > 0).sum()) for m in ds.maps)),
                  "fails": int(sum(int((m == 2).sum()) for m in ds.maps))}))
"""

CHILD_PYSTDF = r"""
import io, json, sys, time, contextlib
def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
from pystdf.IO import Parser
from pystdf import V4
class Sink:
    def __init__(self):
        self.prrs = 0
        self.wafers = 0
    def after_send(self, source, data):
        rec, fields = data
        if rec is V4.prr:
            self.prrs += 1
        elif rec is V4.wir:
            self.wafers += 1
sink = Sink()
t0, c0 = time.perf_counter(), time.process_time()
with open(sys.argv[1], "rb") as fh, contextlib.redirect_stderr(io.StringIO()):
    p = Parser(inp=fh, recTypes=V4.records)
    p.addSink(sink)
    p.parse()
t1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({"seconds": t1 - t0, "cpu_seconds": c1 - c0, "peak_rss_bytes": peak(), "wafers": sink.wafers,
                  "prrs": sink.prrs}))
"""


def generate(path: Path, wafers: int, diameter: int, n_ptr: int, seed: int) -> dict:
    from tqdm import tqdm

    from waferscope.data.loaders.stdf_writer import write_probe_lot

    tmp = path.with_name(path.name + ".part")
    t0 = time.perf_counter()
    with open(tmp, "wb") as fh:
        # write_probe_lot streams one wafer at a time; the bar shows wafers as the file grows
        with tqdm(total=wafers, unit="wafer", desc=f"generate {path.name}", mininterval=1) as bar:
            class Counting:
                def write(self, data):
                    if data[2:4] == b"\x02\x14":  # a WRR (REC_TYP 2, REC_SUB 20): one more wafer done
                        bar.update(1)
                    return fh.write(data)

            info = write_probe_lot(Counting(), n_wafers=wafers, diameter=diameter, seed=seed, n_ptr=n_ptr)
    os.replace(tmp, path)
    info["generate_seconds"] = time.perf_counter() - t0
    return info


def run_child(code: str, path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wafers", type=int, default=100)
    ap.add_argument("--diameter", type=int, default=160, help="dies across a wafer (160 → 20,108 dies)")
    ap.add_argument("--ptr", type=int, default=12, help="short PTRs per die (plus one MPR)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/waferscope-bench-stdf"))
    ap.add_argument("--pystdf-wafers", type=int, default=1, help="wafers in the file pystdf is timed on")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of our loader; the best is reported")
    ap.add_argument("--gzip", action="store_true", help="also time the big file gzip'd (level 1)")
    ap.add_argument("--delete", action="store_true", help="delete the generated files afterwards")
    args = ap.parse_args(argv)

    args.dir.mkdir(parents=True, exist_ok=True)
    tag = f"w{args.wafers}-d{args.diameter}-p{args.ptr}-s{args.seed}"
    big = args.dir / f"lot-{tag}.stdf"
    small = args.dir / f"lot-w{args.pystdf_wafers}-d{args.diameter}-p{args.ptr}-s{args.seed}.stdf"
    for path, n in ((big, args.wafers), (small, args.pystdf_wafers)):
        if not path.exists():
            info = generate(path, n, args.diameter, args.ptr, args.seed)
            print(f"generated {path} ({path.stat().st_size / 1e6:,.1f} MB) in {info['generate_seconds']:.1f} s",
                  file=sys.stderr)
    big_mb, small_mb = big.stat().st_size / 1e6, small.stat().st_size / 1e6

    results: dict = {"file": str(big), "file_mb": round(big_mb, 1), "wafers": args.wafers, "load_before": os.getloadavg()[0]}
    ours = min((run_child(CHILD_OURS, big) for _ in range(args.repeats)), key=lambda r: r["seconds"])
    results["waferscope"] = {**ours, "mb_per_s": big_mb / ours["seconds"], "mb_per_cpu_s": big_mb / ours["cpu_seconds"],
                             "peak_rss_mb": ours["peak_rss_bytes"] / 1e6}
    ours_small = min((run_child(CHILD_OURS, small) for _ in range(args.repeats)), key=lambda r: r["seconds"])
    ref = run_child(CHILD_PYSTDF, small)
    results["small_file"] = {"file": str(small), "file_mb": round(small_mb, 1), "wafers": args.pystdf_wafers}
    results["pystdf"] = {**ref, "mb_per_s": small_mb / ref["seconds"], "mb_per_cpu_s": small_mb / ref["cpu_seconds"],
                         "peak_rss_mb": ref["peak_rss_bytes"] / 1e6,
                         "extrapolated_seconds_for_big_file": ref["seconds"] * big_mb / small_mb}
    results["waferscope_small"] = {**ours_small, "mb_per_s": small_mb / ours_small["seconds"],
                                   "mb_per_cpu_s": small_mb / ours_small["cpu_seconds"]}
    results["speedup_same_file_cpu"] = ref["cpu_seconds"] / ours_small["cpu_seconds"]
    results["speedup_big_vs_pystdf_extrapolated_wall"] = results["pystdf"]["extrapolated_seconds_for_big_file"] / ours["seconds"]
    if args.gzip:
        gz = big.with_name(big.name + ".gz")
        if not gz.exists():
            subprocess.run(f"gzip -1 -c {big} > {gz}.part && mv {gz}.part {gz}", shell=True, check=True)
        zipped = run_child(CHILD_OURS, gz)
        results["waferscope_gzip"] = {**zipped, "gz_mb": gz.stat().st_size / 1e6,
                                      "inflated_mb_per_s": big_mb / zipped["seconds"],
                                      "peak_rss_mb": zipped["peak_rss_bytes"] / 1e6}
    results["load_after"] = os.getloadavg()[0]
    results["cpu_count"] = os.cpu_count()

    w, p = results["waferscope"], results["pystdf"]
    print(f"file: {big_mb:,.1f} MB, {args.wafers} wafers, {w['dies']:,} dies, {w['fails']:,} fail "
          f"(load average {results['load_before']:.2f} → {results['load_after']:.2f}, {os.cpu_count()} CPUs)")
    print(f"waferscope load_stdf : {w['seconds']:.1f} s = {w['mb_per_s']:.0f} MB/s wall, {w['mb_per_cpu_s']:.0f} MB/s "
          f"per CPU-second, peak RSS {w['peak_rss_mb']:.0f} MB")
    print(f"pystdf ({args.pystdf_wafers}-wafer file, {small_mb:.1f} MB): {p['seconds']:.1f} s = {p['mb_per_s']:.2f} MB/s wall, "
          f"{p['mb_per_cpu_s']:.2f} MB/s per CPU-second, peak RSS {p['peak_rss_mb']:.0f} MB; "
          f"extrapolated to the big file: {p['extrapolated_seconds_for_big_file'] / 60:.0f} min")
    print(f"waferscope on the same small file: {results['waferscope_small']['mb_per_cpu_s']:.0f} MB/s per CPU-second → "
          f"{results['speedup_same_file_cpu']:.0f}× pystdf (CPU time, same file); "
          f"{results['speedup_big_vs_pystdf_extrapolated_wall']:.0f}× (wall, big file vs pystdf extrapolated)")
    if args.gzip:
        z = results["waferscope_gzip"]
        print(f"gzip'd ({z['gz_mb']:.0f} MB): {z['seconds']:.1f} s = {z['inflated_mb_per_s']:.0f} MB/s of STDF, "
              f"peak RSS {z['peak_rss_mb']:.0f} MB")
    print(json.dumps(results))
    if args.delete:
        for path in (big, small, big.with_name(big.name + ".gz")):
            path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
