"""Run a benchmark config: every method × data set × seed, cached per cell, then the result tables.

Layout of the output folder::

    DIR/cells/<key>.json     one finished cell (key = hash of the cell's config + data fingerprint)
    DIR/runs/<method>__<dataset>__s<seed>/   the trained model of the cell (a run directory)
    DIR/results.csv|json|md  every cell; quality columns first, timing columns last
    DIR/quality.csv          the deterministic columns only: byte-identical across reruns
    DIR/manifest.json        config hash, data fingerprints, environment
    DIR/index.html           the self-contained report

An interrupted run resumes: finished cells are read back from ``cells/``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

from waferscope.benchmark import measure
from waferscope.benchmark.cell import run_cell
from waferscope.benchmark.config import BenchmarkConfig, load_config
from waferscope.benchmark.protocol import LoadedDataset, load_dataset
from waferscope.benchmark.quality import CLASSIFICATION_COLUMNS, DETECTION_COLUMNS
from waferscope.errors import WaferscopeError
from waferscope.utils import atomic_path

CACHE_FORMAT = 1
ID_COLUMNS = ["task", "method", "model", "dataset", "seed", "n_test"]
MODEL_COLUMNS = ["params"]
# Measured, not reproduced exactly: timings and memory vary run to run, and the saved run's size can
# differ by a few bytes (some models record their fit time in model.json).
OPTIONAL_COLUMNS = ["macro_f1_wm811k_mix", "macro_f1_wm811k_mix_prior", "image_f1_kfold_threshold", "gradcam_energy",
                    "gradcam_pointing", "denoise_gradcam_f1", "denoise_median_f1"]
TIMING_COLUMNS = ["size_bytes", "train_s", "train_cpu_s", "latency_ms", "throughput_wps", "speed_batch_size", "peak_rss_mb",
                  "peak_extra_mb", "load_1min"]


def sha(obj) -> str:
    """Return a short SHA-256 of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cell_key(config: BenchmarkConfig, method, loaded: LoadedDataset, seed: int) -> str:
    """Return the cache key of a cell: everything that decides its result."""
    return sha({"format": CACHE_FORMAT, "task": method.task, "model": method.model, "params": method.params,
                "dataset": loaded.fingerprint, "protocol": loaded.spec.protocol(), "seed": seed,
                "threads": config.threads, "examples": config.examples, "gradcam": config.gradcam,
                "speed": [config.speed_enabled, config.batch_size, config.speed_n, config.repeats]})


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Heartbeat:
    """Logs the current step of a cell with its elapsed time every ``every`` seconds.

    So a cell that trains for a quarter of an hour (models run with progress bars off) does
    not look hung.
    """

    def __init__(self, log, tag: str, every: float = 30.0):
        import threading

        self.log, self.tag, self.every = log, tag, every
        self.step, self.t0 = "starting", time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __call__(self, step: str) -> None:  # the cell's progress callback
        self.step = step
        self.log(f"{self.tag}: {step}")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.log(f"{self.tag}: {self.step} … still working, {_duration(time.perf_counter() - self.t0)} "
                     "into this cell")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def load_average() -> list[float] | None:
    """Return the 1-, 5- and 15-minute load averages (None where the OS has none).

    Recorded beside timings, which on a shared machine depend on it.
    """
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run_benchmark(config_path: str | Path, out_dir: str | Path, force: bool = False, report: bool = True,
                  log=_log, heartbeat: float = 30.0) -> dict:
    """Run every cell of a benchmark config (cached cells are reused), write the results and the report."""
    config = load_config(config_path)  # every config problem surfaces here, before any data or training
    out = Path(out_dir)
    for d in config.datasets:
        if d.missing:
            log(f"note: skipping data set {d.name!r}: {', '.join(d.missing)} not found (optional)")
    loaded = [load_dataset(d, config.tasks, config.path) for d in config.active_datasets]
    (out / "cells").mkdir(parents=True, exist_ok=True)

    grid = [(m, ds, s) for ds in loaded for m in config.methods for s in config.seeds]
    records, failed = [], []
    load_start, t_start = load_average(), time.perf_counter()
    for i, (method, ds, seed) in enumerate(grid, 1):
        key = cell_key(config, method, ds, seed)
        path = out / "cells" / f"{key}.json"
        tag = f"[{i}/{len(grid)}] {method.name} × {ds.name} × seed {seed}"
        if path.is_file() and not force:
            try:
                records.append(json.loads(path.read_text()))
                log(f"{tag}: cached")
                continue
            except ValueError:
                log(f"{tag}: cached cell unreadable, rerunning")
        t0 = time.perf_counter()
        run_dir = out / "runs" / f"{method.name}__{ds.name}__s{seed}"
        load_before = load_average()
        try:
            with _Heartbeat(log, tag, heartbeat) as beat:
                rec = run_cell(config, method, ds, seed, run_dir, progress=beat)
        except Exception as exc:  # one broken model must not lose the other cells; not cached, so retried
            problem = str(exc) if isinstance(exc, WaferscopeError) else f"{type(exc).__name__}: {exc}"
            log(f"{tag}: FAILED: {problem}")
            failed.append({"task": method.task, "method": method.name, "model": method.model,
                           "dataset": ds.name, "seed": seed, "error": problem})
            continue
        rec["key"] = key
        rec["timing"]["load_avg_before"], rec["timing"]["load_avg_after"] = load_before, load_average()
        rec["timing"]["load_1min"] = None if load_before is None else load_before[0]
        _write_text(path, json.dumps(rec))
        records.append(rec)
        cls = method.task == "classification"
        log(f"{tag}: done in {_duration(time.perf_counter() - t0)} "
            f"({'macro F1' if cls else 'image AUROC'} {rec['quality'].get('macro_f1' if cls else 'image_auroc')})")

    manifest = {
        "name": config.name, "task": "+".join(config.tasks), "tasks": config.tasks, "description": config.description,
        "config_path": str(config.path), "config_sha256": hashlib.sha256(config.text.encode()).hexdigest(),
        "datasets": {d.name: {"fingerprint": d.fingerprint, "sources": d.spec.sources, "protocol": d.spec.protocol(),
                              "parts": d.describe()} for d in loaded},
        "skipped_datasets": {d.name: d.missing for d in config.datasets if d.missing},
        "methods": {m.name: {"task": m.task, "model": m.model, "params": m.params, "label": m.label} for m in config.methods},
        "seeds": config.seeds, "speed": {"batch_size": config.batch_size, "n": config.speed_n, "repeats": config.repeats},
        "environment": measure.environment(config.threads),
        # The machine's load beside the timings (1/5/15-min averages): a busy shared machine slows
        # every timing column; the quality columns do not depend on it.
        "load_average": {"start": load_start, "end": load_average(),
                         "wall_s": round(time.perf_counter() - t_start, 1)},
        "failed": failed,
    }
    write_results(out, records, manifest)
    if report:
        from waferscope.benchmark.report import write_report

        write_report(out)
        log(f"wrote {out / 'index.html'}")
    if failed:
        raise BenchmarkIncomplete(f"{len(failed)} of {len(grid)} cells failed (listed in results.md and the report); "
                                  "the others are written; rerun to retry only the failed ones", config.path)
    return {"records": records, "manifest": manifest}


class BenchmarkIncomplete(WaferscopeError):
    """Some cells raised an error; results of the others are written."""


# ---- tables -----------------------------------------------------------------------------------
def quality_columns(records: list[dict]) -> list[str]:
    """Return the quality columns of the tasks present in ``records``."""
    tasks = {r.get("task", "classification") for r in records}
    cols = (CLASSIFICATION_COLUMNS if "classification" in tasks else []) + (DETECTION_COLUMNS if "detection" in tasks else [])
    cols += [c for c in OPTIONAL_COLUMNS if any(c in r["quality"] for r in records)]
    classes: list[str] = []
    for r in records:
        classes += [c for c in r["quality"].get("per_class_f1", {}) if c not in classes]
    return cols + [f"f1[{c}]" for c in classes]


def flat_row(rec: dict, qcols: list[str]) -> dict:
    """Return one flat results row of a cell record."""
    row = {c: rec.get(c) for c in ID_COLUMNS}
    q = rec["quality"]
    for c in qcols:
        row[c] = q.get("per_class_f1", {}).get(c[3:-1]) if c.startswith("f1[") else q.get(c)
    for c in MODEL_COLUMNS:
        row[c] = q.get(c)
    for c in TIMING_COLUMNS:
        row[c] = rec["timing"].get(c, q.get(c))
    return row


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _csv(rows: list[dict], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r[c]) if c not in TIMING_COLUMNS else ("" if r[c] is None else r[c]) for c in cols])
    return buf.getvalue()


def write_results(out: Path, records: list[dict], manifest: dict) -> None:
    """Write results.json, results.csv and results.md (atomically)."""
    qcols = quality_columns(records)
    rows = [flat_row(r, qcols) for r in records]
    all_cols = ID_COLUMNS + qcols + MODEL_COLUMNS + TIMING_COLUMNS
    _write_text(out / "results.csv", _csv(rows, all_cols))
    _write_text(out / "quality.csv", _csv(rows, ID_COLUMNS + qcols + MODEL_COLUMNS))
    _write_text(out / "results.json", json.dumps(
        {"manifest": manifest, "quality_columns": ID_COLUMNS + qcols + MODEL_COLUMNS, "timing_columns": TIMING_COLUMNS,
         "rows": rows, "cells": [{k: v for k, v in r.items() if k != "artefacts"} for r in records]}, indent=1))
    _write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    _write_text(out / "results.md", results_markdown(rows, qcols, manifest))


def results_markdown(rows: list[dict], qcols: list[str], manifest: dict) -> str:
    """Return the results table as Markdown, with the config and data fingerprints."""
    lines = [f"# Benchmark `{manifest['name']}`", "",
             f"Config SHA-256 `{manifest['config_sha256'][:16]}`; data fingerprints: "
             + ", ".join(f"{k} `{v['fingerprint']}`" for k, v in manifest["datasets"].items()), ""]
    head = {"size_bytes": "size (KB)", "train_s": "train (s)", "latency_ms": "latency b=1 (ms)",
            "throughput_wps": f"wafers/s (b={manifest['speed']['batch_size']})", "peak_rss_mb": "peak RSS (MB)",
            "load_1min": "load avg (1 min)"}
    for task, main in (("classification", CLASSIFICATION_COLUMNS), ("detection", DETECTION_COLUMNS)):
        trows = [r for r in rows if r["task"] == task]
        if not trows:
            continue
        main = [c for c in qcols if c in main or (c in OPTIONAL_COLUMNS and any(r.get(c) is not None for r in trows))]
        cols = ["method", "dataset", "seed"] + main + ["params", "size_bytes", "train_s", "latency_ms",
                                                       "throughput_wps", "peak_rss_mb", "load_1min"]
        lines += [f"## {task.capitalize()}", "", "| " + " | ".join(head.get(c, c) for c in cols) + " |",
                  "|" + "---|" * len(cols)]
        for r in trows:
            vals = []
            for c in cols:
                v = r[c]
                if c == "size_bytes" and v is not None:
                    v = f"{v / 1024:.1f}"
                vals.append(_fmt(v) if c not in TIMING_COLUMNS else ("" if v is None else str(v)))
            lines.append("| " + " | ".join(vals) + " |")
        per_class = [c for c in qcols if c.startswith("f1[")]
        if per_class and task == "classification":
            lines += ["", "Per-class F1:", "", "| method | dataset | seed | " + " | ".join(c[3:-1] for c in per_class) + " |",
                      "|" + "---|" * (3 + len(per_class))]
            for r in trows:
                lines.append(f"| {r['method']} | {r['dataset']} | {r['seed']} | "
                             + " | ".join(_fmt(r[c]) for c in per_class) + " |")
        lines.append("")
    if manifest.get("failed"):
        lines += ["## Failed cells", ""] + [f"- {f['method']} × {f['dataset']} × seed {f['seed']}: {f['error']}"
                                          for f in manifest["failed"]] + [""]
    env = manifest["environment"]
    lines += [f"Machine: {env['cpu']} ({env['cpu_count']} CPUs), {env['threads']} thread(s); "
              + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), ""]
    load = manifest.get("load_average")
    if load:
        lines += [f"Load average (1/5/15 min) at the start {load['start']}, at the end {load['end']}: timings "
                  "slow down when it exceeds the CPU count; quality does not change.", ""]
    return "\n".join(lines)
