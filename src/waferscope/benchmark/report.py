"""The self-contained HTML report of a benchmark folder (``DIR/index.html``).

One file, no external JS/CSS, every figure a base64 PNG, so it opens offline and can be mailed.
Sections: results table; accuracy vs throughput with a decision guide derived from the measured
numbers (seed 001's tree, filled in with our own figures); confusion matrices or ROC/PR curves;
example wafers with anomaly maps or Grad-CAM overlays; environment and hashes.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from waferscope.utils import atomic_path

CLASSIFICATION_ONLY = {"accuracy", "macro_f1", "weighted_f1", "macro_f1_wm811k_mix", "macro_f1_wm811k_mix_prior"}
DETECTION_ONLY = {"image_auroc", "image_aupr", "image_f1", "pixel_auroc", "pixel_aupro", "image_f1_kfold_threshold"}
HEADLINE = {"classification": ("macro_f1", "macro F1"), "detection": ("image_auroc", "image AUROC")}
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(fig, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{_png(fig)}">'


def _esc(x) -> str:
    return html.escape("" if x is None else str(x))


def _wafer_rgb(m) -> np.ndarray:
    try:
        from waferscope.data.render import render_map

        return render_map(np.asarray(m, dtype=np.uint8))
    except ImportError:
        palette = np.array([[255, 255, 255], [190, 205, 220], [213, 94, 0]], dtype=np.uint8)
        return palette[np.asarray(m, dtype=np.uint8)]


def _heat_on_wafer(heat, wafer):
    """A heat map resampled to the wafer's die grid, masked off the wafer (transparent there)."""
    if heat is None:
        return None
    m = np.asarray(wafer)
    h = np.asarray(heat, dtype=float)
    if h.shape != m.shape:
        from skimage.transform import resize

        h = resize(h, m.shape, order=1, mode="edge", anti_aliasing=False)
    return np.ma.masked_where(m == 0, np.clip(h, 0, None))


# ---- data -------------------------------------------------------------------------------------
def load_benchmark(out: Path) -> tuple[dict, list[dict]]:
    doc = json.loads((out / "results.json").read_text())
    records = []
    for cell in doc["cells"]:
        path = out / "cells" / f"{cell['key']}.json"
        records.append(json.loads(path.read_text()) if path.is_file() else dict(cell, artefacts={}))
    return doc, records


def _mean_by_method(task: str, records: list[dict], dataset: str) -> list[dict]:
    """Per method on one data set: the headline quality and speed, averaged over seeds."""
    key = HEADLINE[task][0]
    out = []
    for name in dict.fromkeys(r["method"] for r in records if r["dataset"] == dataset):
        rs = [r for r in records if r["dataset"] == dataset and r["method"] == name]

        def mean(group, col):
            vals = [r[group].get(col) for r in rs if r[group].get(col) is not None]
            return float(np.mean(vals)) if vals else None

        out.append({"method": name, "quality": mean("quality", key), "throughput": mean("timing", "throughput_wps"),
                    "latency": mean("timing", "latency_ms"), "size": mean("quality", "size_bytes"),
                    "memory": mean("timing", "peak_extra_mb"), "params": mean("quality", "params"),
                    "mix": mean("quality", "macro_f1_wm811k_mix"),
                    "mix_prior": mean("quality", "macro_f1_wm811k_mix_prior")})
    return out


# ---- sections ---------------------------------------------------------------------------------
def _table(doc: dict, task: str) -> str:
    rows = [r for r in doc["rows"] if r["task"] == task]
    other = DETECTION_ONLY if task == "classification" else CLASSIFICATION_ONLY
    qcols = [c for c in doc["quality_columns"] if c not in ("task", "model", "n_test") and c not in other
             and not (task == "detection" and c.startswith("f1["))
             and (c in ("method", "dataset", "seed") or any(r.get(c) is not None for r in rows))]
    tcols = [c for c in doc["timing_columns"] if c != "speed_batch_size"]
    head = "".join(f"<th>{_esc(c)}</th>" for c in qcols) + "".join(f'<th class="t">{_esc(c)}</th>' for c in tcols)
    # Best value per data set and quality column in bold.
    best: dict = {}
    for c in qcols[3:]:
        if c in ("params", "size_bytes"):
            continue
        for r in rows:
            v = r.get(c)
            if isinstance(v, (int, float)):
                k = (r["dataset"], c)
                best[k] = max(best.get(k, v), v)
    body = []
    for r in rows:
        cells = []
        for c in qcols:
            v = r.get(c)
            txt = f"{v:.4f}" if isinstance(v, float) else _esc(v)
            if c == "size_bytes" and v is not None:
                txt = f"{v / 1024:.1f} KB"
            bold = best.get((r["dataset"], c)) == v and isinstance(v, float)
            cells.append(f"<td><b>{txt}</b></td>" if bold else f"<td>{txt}</td>")
        cells += [f'<td class="t">{_esc(f"{r[c] / 1024:.1f} KB" if c == "size_bytes" and r.get(c) is not None else r.get(c))}</td>'
                  for c in tcols]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _tradeoff(task: str, records: list[dict], datasets: list[str], batch: int) -> str:
    plt = _plt()
    key, label = HEADLINE[task]
    parts = []
    for ds in datasets:
        pts = [p for p in _mean_by_method(task, records, ds) if p["quality"] is not None and p["throughput"]]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for i, p in enumerate(pts):
            ax.scatter(p["throughput"], p["quality"], s=60, color=TAB10[i % 10], zorder=3)
            ax.annotate(p["method"], (p["throughput"], p["quality"]), textcoords="offset points", xytext=(6, 4), fontsize=9)
        front = _pareto(pts)
        if len(front) > 1:
            ax.plot([p["throughput"] for p in front], [p["quality"] for p in front], "--", color="#999", zorder=2,
                    label="Pareto front")
            ax.legend(loc="lower left", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(f"throughput (wafers/s, batch {batch}, log scale)")
        ax.set_ylabel(label)
        ax.set_title(f"{ds}: {label} vs throughput")
        ax.grid(alpha=0.3, which="both")
        parts.append(f"<div class=fig>{_img(fig, f'{ds} accuracy vs throughput')}{_decision_tree(task, pts)}</div>")
    return "".join(parts)


def _pareto(pts: list[dict]) -> list[dict]:
    """Methods no other method beats on both quality and throughput, by rising throughput."""
    front = [p for p in pts if not any(q["quality"] >= p["quality"] and q["throughput"] >= p["throughput"]
                                       and (q["quality"] > p["quality"] or q["throughput"] > p["throughput"]) for q in pts)]
    return sorted(front, key=lambda p: p["throughput"])


def _decision_tree(task: str, pts: list[dict]) -> str:
    """Seed 001's 'which method for which need' tree, each leaf picked from the measured numbers."""
    label = HEADLINE[task][1]
    best = max(pts, key=lambda p: p["quality"])
    fastest = max(pts, key=lambda p: p["throughput"])

    def desc(p):
        bits = [f"{label} {p['quality']:.3f}", f"{p['throughput']:.0f} wafers/s"]
        if p["latency"] is not None:
            bits.append(f"{p['latency']:.1f} ms/wafer")
        if p["size"] is not None:
            bits.append(f"{p['size'] / 1024:.0f} KB")
        return f"<b>{_esc(p['method'])}</b> ({', '.join(bits)})"

    near = [p for p in pts if p["quality"] >= best["quality"] - 0.01]
    balanced = max(near, key=lambda p: p["throughput"])
    leaves = [("Need the highest accuracy?", best),
              ("Need the most wafers per second (real-time line)?", fastest),
              (f"Within 0.01 of the best {label}, the fastest:", balanced)]
    sized = [p for p in pts if p["size"] is not None]
    if sized:
        leaves.append(("Edge device (smallest model on disk)?", min(sized, key=lambda p: p["size"])))
    realtime = [p for p in pts if p["latency"] is not None and p["latency"] <= 10]
    if realtime:
        leaves.append(("One wafer at a time in ≤ 10 ms, most accurate:", max(realtime, key=lambda p: p["quality"])))
    items = "".join(f"<li>{_esc(q)} → {desc(p)}</li>" for q, p in leaves)
    # A fab's stream is mostly normal wafers: the best macro-F1 re-weighted to the WM-811K class mix,
    # with or without the --prior correction, whichever is higher for that method.
    mixed = [(max(v for v in (p.get("mix"), p.get("mix_prior")) if v is not None), p) for p in pts
             if p.get("mix") is not None]
    if mixed:
        score, p = max(mixed, key=lambda t: t[0])
        how = " with <code>--prior wm811k</code>" if p.get("mix_prior") is not None and p["mix_prior"] > p["mix"] else ""
        items += (f"<li>Mostly normal wafers (the WM-811K mix, 85 % none)? → <b>{_esc(p['method'])}</b>{how} "
                  f"(macro F1 {score:.3f} on that mix)</li>")
    return f'<div class="tree"><b>Which method? (from these measurements)</b><ul>{items}</ul></div>'


def _confusions(records: list[dict]) -> str:
    plt = _plt()
    parts = []
    for r in records:
        conf = r.get("artefacts", {}).get("confusion")
        if not conf or r["seed"] != min(x["seed"] for x in records):
            continue
        cm = np.asarray(conf["matrix"], dtype=float)
        classes = conf["classes"]
        rows = cm.sum(1, keepdims=True)
        frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        n = len(classes)
        fig, ax = plt.subplots(figsize=(1.4 + 0.36 * n, 1.2 + 0.36 * n))
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if frac[i, j] > 0.6 else "black")
        ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{r['method']} on {r['dataset']} (seed {r['seed']})\nmacro F1 {r['quality'].get('macro_f1')}", fontsize=8)
        parts.append(_img(fig, f"confusion {r['method']} {r['dataset']}"))
    return "".join(parts)


def _curves(records: list[dict], datasets: list[str]) -> str:
    plt = _plt()
    parts = []
    seed = min(r["seed"] for r in records)
    for ds in datasets:
        rs = [r for r in records if r["dataset"] == ds and r["seed"] == seed and r.get("artefacts", {}).get("roc")]
        if not rs:
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.8))
        for i, r in enumerate(rs):
            art, q = r["artefacts"], r["quality"]
            a1.plot(art["roc"]["x"], art["roc"]["y"], color=TAB10[i % 10], label=f"{r['method']} ({q.get('image_auroc')})")
            a2.plot(art["pr"]["x"], art["pr"]["y"], color=TAB10[i % 10], label=f"{r['method']} ({q.get('image_aupr')})")
        a1.plot([0, 1], [0, 1], ":", color="#aaa")
        a1.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"{ds}: image ROC (AUROC)")
        a2.set(xlabel="recall", ylabel="precision", title=f"{ds}: precision-recall (AUPR)")
        for a in (a1, a2):
            a.legend(fontsize=7, loc="lower right" if a is a1 else "lower left")
            a.grid(alpha=0.3)
        parts.append(_img(fig, f"{ds} ROC and PR curves"))
    return "".join(parts)


def _examples(task: str, records: list[dict], datasets: list[str]) -> str:
    plt = _plt()
    parts = []
    seed = min(r["seed"] for r in records)
    for ds in datasets:
        rs = [r for r in records if r["dataset"] == ds and r["seed"] == seed and r.get("artefacts", {}).get("examples")]
        if task == "classification":
            rs = [r for r in rs if any(e.get("gradcam") is not None for e in r["artefacts"]["examples"])] or rs[:1]
        if not rs:
            continue
        k = max(len(r["artefacts"]["examples"]) for r in rs)
        fig, axes = plt.subplots(len(rs) + 1, k, figsize=(1.9 * k, 2.0 * (len(rs) + 1)), squeeze=False)
        for j in range(k):
            for i in range(len(rs) + 1):
                axes[i, j].axis("off")
        first = rs[0]["artefacts"]["examples"]
        for j, e in enumerate(first):
            axes[0, j].imshow(_wafer_rgb(e["map"]), interpolation="nearest")
            axes[0, j].set_title(f"#{e['index']} {e['label']}", fontsize=8)
        for i, r in enumerate(rs, 1):
            heats = [_heat_on_wafer(e.get("anomaly") if task == "detection" else e.get("gradcam"), e["map"])
                     for e in r["artefacts"]["examples"]]
            # One colour scale per method (row), so a normal wafer looks cooler than a defective one.
            vmax = max([float(h.max()) for h in heats if h is not None and h.count()] or [1.0]) or 1.0
            for j, (e, h) in enumerate(zip(r["artefacts"]["examples"], heats)):
                ax = axes[i, j]
                ax.imshow(_wafer_rgb(e["map"]), interpolation="nearest")
                if h is not None:
                    ax.imshow(h, cmap="inferno", alpha=0.65, vmin=0, vmax=vmax, interpolation="nearest")
                if task == "detection":
                    ax.set_title(f"{r['method']}: {e['score']:.3g}", fontsize=7)
                else:
                    ax.set_title(f"{r['method']}: {e['pred']} ({e['confidence']:.2f})", fontsize=7)
        what = "anomaly maps (score in the title)" if task == "detection" else "Grad-CAM (prediction, confidence)"
        parts.append(f"<h3>{_esc(ds)}: {what}</h3>" + _img(fig, f"{ds} examples"))
    return "".join(parts)


def _environment(manifest: dict, records: list[dict]) -> str:
    env = manifest["environment"]
    rows = [("config", f"{manifest['config_path']}"), ("config SHA-256", manifest["config_sha256"]),
            ("seeds", ", ".join(map(str, manifest["seeds"]))), ("threads", env["threads"]),
            ("CPU", f"{env['cpu']} ({env['cpu_count']} logical CPUs)"), ("platform", env["platform"]),
            ("versions", ", ".join(f"{k} {v}" for k, v in env["versions"].items())),
            ("speed", f"latency: batch 1, median of {manifest['speed']['repeats']} runs; throughput: "
                      f"{manifest['speed']['n']} wafers in batches of {manifest['speed']['batch_size']}"),
            ("peak memory", env["peak_memory"])]
    for name, d in manifest["datasets"].items():
        parts = "; ".join(f"{k}: {v['n']} maps" for k, v in d["parts"].items())
        rows.append((f"data set {name}", f"fingerprint {d['fingerprint']} — {parts} — protocol {d['protocol']} — "
                                         f"{', '.join(d['sources'])}"))
    for name, missing in manifest.get("skipped_datasets", {}).items():
        rows.append((f"skipped {name}", f"not found: {', '.join(missing)}"))
    trs = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    keys = "".join(f"<tr><td>{_esc(r['method'])}</td><td>{_esc(r['dataset'])}</td><td>{r['seed']}</td>"
                   f"<td><code>{_esc(r.get('key'))}</code></td></tr>" for r in records)
    return (f"<table class=env>{trs}</table><h3>Cell hashes (cache keys)</h3>"
            f"<table><tr><th>method</th><th>dataset</th><th>seed</th><th>key</th></tr>{keys}</table>")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1320px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f5f8} .t{background:#fbf8ef;color:#555} table.env td,table.env th{text-align:left;white-space:normal}
.scroll{overflow-x:auto} img{max-width:100%;margin:6px 10px 6px 0;vertical-align:top}
.fig{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
.tree{border-left:3px solid #4a7;padding:4px 12px;font-size:14px;max-width:560px}
.tree ul{padding-left:18px;margin:6px 0} .tree li{margin:4px 0} .note{color:#666;font-size:13px} .failed{color:#b00}
"""


def render_report(out: Path) -> str:
    doc, all_records = load_benchmark(out)
    manifest = doc["manifest"]
    datasets = list(manifest["datasets"])
    batch = manifest["speed"]["batch_size"]
    tasks = [t for t in ("classification", "detection") if any(r.get("task") == t for r in all_records)]
    sections = [
        f"<h1>waferscope benchmark: {_esc(manifest['name'])}</h1>",
        f"<p class=note>{_esc(manifest.get('description', ''))} "
        f"{len(manifest['methods'])} methods × {len(datasets)} data sets × {len(manifest['seeds'])} seeds. "
        "Quality columns are deterministic (rounded to 4 decimals); shaded columns are timings and vary "
        "between runs.</p>",
    ]
    for task in tasks:
        records = [r for r in all_records if r.get("task") == task]
        sections += [f"<h2>{task.capitalize()}: results</h2>", _table(doc, task),
                     f"<h2>{task.capitalize()}: accuracy vs throughput</h2>",
                     _tradeoff(task, records, datasets, batch) or "<p>no timings measured</p>"]
        if task == "classification":
            sections += ["<h2>Confusion matrices</h2>", f"<div class=fig>{_confusions(records)}</div>"]
            ex = _examples(task, records, datasets)
            if ex:
                sections += ["<h2>Example wafers (classification)</h2>", ex]
        else:
            sections += ["<h2>ROC and precision-recall curves</h2>", _curves(records, datasets),
                         "<h2>Example wafers and anomaly maps</h2>", _examples(task, records, datasets)]
    if manifest.get("failed"):
        items = "".join(f"<li>{_esc(f['method'])} × {_esc(f['dataset'])} × seed {f['seed']}: {_esc(f['error'])}</li>"
                        for f in manifest["failed"])
        sections += [f"<h2>Failed cells</h2><ul class=failed>{items}</ul>"]
    sections += ["<h2>Environment and hashes</h2>", _environment(manifest, all_records)]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>waferscope benchmark {_esc(manifest['name'])}</title><style>{CSS}</style></head><body>"
            + "\n".join(sections) + "</body></html>")


def write_report(out: str | Path) -> Path:
    out = Path(out)
    page = render_report(out)
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page)
        tmp.chmod(0o644)
    return out / "index.html"
