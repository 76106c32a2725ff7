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
# Every column of the tables: a header with its unit, and one line for the glossary.
COLUMNS = {
    "method": ("method", "the name of the method in the config (a registered model + parameters)"),
    "dataset": ("data set", "the config's data set the cell trained and tested on"),
    "seed": ("seed", "the cell's random seed (same seed → same quality figures)"),
    "accuracy": ("accuracy", "share of test maps whose class is predicted right (0-1)"),
    "macro_f1": ("macro F1", "F1 score of every class, averaged with equal weight per class (0-1); rare classes count as much as common ones"),
    "weighted_f1": ("weighted F1", "per-class F1 averaged with weights = class counts of the test set (0-1)"),
    "macro_f1_wm811k_mix": ("macro F1, WM-811K mix", "the same predictions weighted to the real WM-811K class mix (85 % none)"),
    "macro_f1_wm811k_mix_prior": ("… with --prior wm811k", "as before, after moving the probabilities to that class mix (classify predict --prior wm811k)"),
    "image_auroc": ("image AUROC", "area under the ROC curve of the per-wafer anomaly score, normal vs defective (0.5 = chance, 1 = perfect)"),
    "image_aupr": ("image AUPR", "area under the precision-recall curve of the per-wafer score (defective = positive)"),
    "image_f1": ("image F1 (best)", "the best F1 over all thresholds on the test set (optimistic: the threshold sees test labels)"),
    "image_f1_kfold_threshold": ("image F1 (k-fold thr.)", "F1 at a threshold chosen from training normals only (the honest one)"),
    "pixel_auroc": ("pixel AUROC", "ROC area of the per-die anomaly map against the true defect mask"),
    "pixel_aupro": ("pixel AUPRO", "area under the per-region-overlap curve (up to 30 % false-positive rate), normalised to 0-1"),
    "gradcam_energy": ("Grad-CAM energy", "share of the Grad-CAM heat on the true defect region (0-1)"),
    "gradcam_pointing": ("Grad-CAM pointing", "share of maps whose hottest die lies on the defect"),
    "denoise_gradcam_f1": ("denoise F1 (Grad-CAM)", "F1 of the defect dies kept by Grad-CAM denoising, against the mask"),
    "denoise_median_f1": ("denoise F1 (median)", "the same for a 3×3 median filter (the baseline)"),
    "params": ("parameters", "numbers that define the trained model (weights, or 3 per tree node)"),
    "size_bytes": ("size (KB)", "size of the saved run directory on disk, in kilobytes (1 KB = 1,024 bytes)"),
    "train_s": ("train (s)", "wall-clock seconds to fit (all folds); depends on the machine's load"),
    "train_cpu_s": ("train CPU (s)", "CPU seconds of this process to fit (steadier than wall time on a busy machine)"),
    "latency_ms": ("latency, batch 1 (ms)", "milliseconds to classify or score ONE wafer per call (median); what an online, one-at-a-time caller waits"),
    "throughput_wps": ("throughput (wafers/s)", "wafers per second when calling with batches (batch size in the environment table); what a batch job gets"),
    "peak_rss_mb": ("peak memory (MB)", "peak resident memory of the benchmark process during the cell"),
    "peak_extra_mb": ("extra memory (MB)", "peak memory above what the process held when the cell started"),
    "load_1min": ("load avg (1 min)", "the machine's 1-minute load average when the cell started; above the CPU count, timings are slower"),
}


def _col_head(c: str) -> str:
    if c.startswith("f1["):
        return f"F1 {c[3:-1]}"
    return COLUMNS.get(c, (c, ""))[0]


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
    """Return a heat map resampled to the wafer's die grid, masked off the wafer (transparent there)."""
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
    """Return a benchmark folder's results.json and its per-cell records."""
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

        out.append({"method": name, "model": rs[0].get("model"), "params": rs[0].get("params") or {},
                    "n_train": rs[0].get("n_train"), "n_folds": rs[0].get("n_folds", 1),
                    "quality": mean("quality", key), "throughput": mean("timing", "throughput_wps"),
                    "latency": mean("timing", "latency_ms"), "size": mean("quality", "size_bytes"),
                    "memory": mean("timing", "peak_extra_mb"), "n_params": mean("quality", "params"),
                    "mix": mean("quality", "macro_f1_wm811k_mix"),
                    "mix_prior": mean("quality", "macro_f1_wm811k_mix_prior")})
    return out


# ---- sections ---------------------------------------------------------------------------------
def _table(doc: dict, task: str) -> str:
    """Two tables: quality (deterministic) and speed/size/memory (measured).

    So the timing columns are not off-screen to the right of 20 quality columns.
    """
    rows = [r for r in doc["rows"] if r["task"] == task]
    other = DETECTION_ONLY if task == "classification" else CLASSIFICATION_ONLY
    qcols = [c for c in doc["quality_columns"] if c not in ("task", "model", "n_test") and c not in other
             and not (task == "detection" and c.startswith("f1["))
             and (c in ("method", "dataset", "seed") or any(r.get(c) is not None for r in rows))]
    tcols = ["method", "dataset", "seed"] + [c for c in doc["timing_columns"] if c != "speed_batch_size"
                                             and any(r.get(c) is not None for r in rows)]
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

    def cell(r, c, bold_best: bool) -> str:
        v = r.get(c)
        if c == "size_bytes" and v is not None:
            txt = f"{v / 1024:,.1f}"
        elif c == "params" and isinstance(v, (int, float)):
            txt = f"{v:,.0f}"
        elif c == "throughput_wps" and isinstance(v, (int, float)):
            txt = f"{v:,.0f}"
        elif isinstance(v, float):
            txt = f"{v:.4f}" if c not in doc["timing_columns"] else f"{v:g}"
        else:
            txt = _esc(v)
        bold = bold_best and best.get((r["dataset"], c)) == v and isinstance(v, float)
        return f"<td><b>{txt}</b></td>" if bold else f"<td>{txt}</td>"

    def table(cols, bold_best, cls=""):
        head = "".join(f'<th title="{_esc(COLUMNS.get(c, ("", ""))[1])}">{_esc(_col_head(c))}</th>' for c in cols)
        body = "".join("<tr>" + "".join(cell(r, c, bold_best) for c in cols) + "</tr>" for r in rows)
        return f'<div class="scroll"><table class="{cls}"><tr>{head}</tr>{body}</table></div>'

    return ("<h3>Quality (deterministic)</h3>" + table(qcols, True)
            + "<h3>Speed, size and memory (measured; vary with the machine and its load)</h3>"
            + table(tcols, False, "timing"))


def _tradeoff(task: str, records: list[dict], datasets: list[str], batch: int, what=None) -> str:
    plt = _plt()
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    key, label = HEADLINE[task]
    parts = []
    for ds in datasets:
        pts = [p for p in _mean_by_method(task, records, ds) if p["quality"] is not None and p["throughput"]]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6.8, 4.4))
        for i, p in enumerate(pts):
            ax.scatter(p["throughput"], p["quality"], s=60, color=TAB10[i % 10], zorder=3)
            ax.annotate(p["method"], (p["throughput"], p["quality"]), textcoords="offset points", xytext=(6, 4), fontsize=9)
        front = _pareto(pts)
        if len(front) > 1:
            ax.plot([p["throughput"] for p in front], [p["quality"] for p in front], "--", color="#999", zorder=2,
                    label="Pareto front (no other method is both faster and better)")
            # below the axes: inside, the legend covered a point
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
        ax.set_xscale("log")
        xs = [p["throughput"] for p in pts]
        ax.set_xlim(min(xs) / 1.6, max(xs) * 2.5)  # room for the labels right of the points
        ys = [p["quality"] for p in pts]
        pad = max(0.02, (max(ys) - min(ys)) * 0.12)
        ax.set_ylim(min(ys) - pad, min(1.0, max(ys) + pad) + pad / 2)
        # major ticks only (1, 10, 100, ... and 2×, 5×), written 1,000 not 10^3; minor labels collided
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(f"throughput (wafers/s in batches of {batch}, log scale)")
        ax.set_ylabel(label)
        ax.set_title(f"{ds}: {label} vs throughput")
        ax.grid(alpha=0.3, which="both")
        parts.append(f"<div class=fig>{_img(fig, f'{ds} accuracy vs throughput')}"
                     f"{_decision_tree(task, pts, batch, what(ds) if what else ds)}</div>")
    return "".join(parts)


def _pareto(pts: list[dict]) -> list[dict]:
    """Methods no other method beats on both quality and throughput, by rising throughput."""
    front = [p for p in pts if not any(q["quality"] >= p["quality"] and q["throughput"] >= p["throughput"]
                                       and (q["quality"] > p["quality"] or q["throughput"] > p["throughput"]) for q in pts)]
    return sorted(front, key=lambda p: p["throughput"])


def _what_row_is(p: dict, data_desc: str) -> str:
    """Return what a row's model is: trained by this benchmark (on how many maps of which data), not a bundled model.

    A row named like a bundled architecture says which bundled model differs from it.
    """
    n = f"{p['n_train']:,} " if p.get("n_train") else ""
    folds = f" (per fold, {p['n_folds']} folds)" if (p.get("n_folds") or 1) > 1 else ""
    # how it ran, not what it is ("verbose": the detectors' progress in results recorded before issue 30)
    quiet = ("progress", "verbose", "n_jobs", "predict_batch_size")
    params = ", ".join(f"{k}={v}" for k, v in (p.get("params") or {}).items() if k not in quiet)
    text = (f"<code>{_esc(p.get('model') or p['method'])}</code>{' (' + _esc(params) + ')' if params else ''}, "
            f"trained here on {n}maps of {_esc(data_desc)}{folds}")
    twins = bundled_of_model(p.get("model"))
    if twins:
        text += ("; <i>not</i> the bundled " + " or ".join(f"<code>{_esc(t)}</code>" for t in twins)
                 + " (the same model type, trained differently: <code>waferscope models</code>)")
    return text


def bundled_of_model(model: str | None) -> list[str]:
    """Return the bundled models (classifiers and detectors) whose registered model is ``model``."""
    if not model:
        return []
    from waferscope.models import classifiers, detectors

    names = []
    for pkg in (classifiers, detectors):
        for name, run_dir in pkg.BUNDLED.items():
            try:
                if json.loads((Path(run_dir) / "model.json").read_text()).get("name") == model:
                    names.append(name)
            except (OSError, ValueError):
                continue
    return names


def _decision_tree(task: str, pts: list[dict], batch: int = 0, data_desc: str = "") -> str:
    """Seed 001's 'which method for which need' tree, each leaf picked from the measured numbers.

    Every leaf says what its model is and gives each number with its unit.
    """
    label = HEADLINE[task][1]
    best = max(pts, key=lambda p: p["quality"])
    fastest = max(pts, key=lambda p: p["throughput"])

    def desc(p):
        bits = [f"{label} {p['quality']:.3f}",
                f"{p['throughput']:,.0f} wafers/s" + (f" in batches of {batch}" if batch else "")]
        if p["latency"] is not None:
            bits.append(f"{p['latency']:.1f} ms latency for one wafer per call")
        if p["size"] is not None:
            bits.append(f"{p['size'] / 1024:,.0f} KB on disk")
        return f"<b>{_esc(p['method'])}</b> ({'; '.join(bits)})"

    near = [p for p in pts if p["quality"] >= best["quality"] - 0.01]
    balanced = max(near, key=lambda p: p["throughput"])
    leaves = [("Need the highest accuracy?", best),
              ("Need the most wafers per second (batch jobs)?", fastest),
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
    named = dict.fromkeys(p["method"] for _, p in leaves)
    what = "".join(f"<li><b>{_esc(p['method'])}</b>: {_what_row_is(p, data_desc)}</li>"
                   for p in pts if p["method"] in named)
    return ('<div class="tree"><b>Which method? (from these measurements)</b>'
            f"<ul>{items}</ul><b>What these rows are</b>"
            "<p class=note>Every row was trained by this benchmark, so these are methods, not the models "
            "bundled with waferscope (<code>waferscope models</code>; their figures on real maps are in the "
            "README).</p>"
            f"<ul>{what}</ul></div>")


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
    load = manifest.get("load_average")
    if load:
        rows.append(("load average (1/5/15 min)",
                     f"at the start {load['start']}, at the end {load['end']} ({env['cpu_count']} CPUs; above that "
                     "count, other work shares the CPUs and every timing column is slower; quality is unaffected)"))
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


def _data_desc(manifest: dict, ds: str) -> str:
    """Return a data set in words: its name and what it holds, e.g. 'synthetic (train: synthetic:n=1350,seed=1)'."""
    d = manifest["datasets"].get(ds, {})
    sources, parts = d.get("sources") or [], list(d.get("parts") or {})
    if sources and len(sources) == len(parts) and "train" in parts:
        return f"{ds} (train: {sources[parts.index('train')]})"
    return f"{ds} ({', '.join(str(s) for s in sources)})" if sources else ds


def _glossary(doc: dict) -> str:
    used = [c for c in dict.fromkeys(doc["quality_columns"] + doc["timing_columns"]) if c in COLUMNS]
    items = "".join(f"<tr><th>{_esc(COLUMNS[c][0])}</th><td><code>{_esc(c)}</code></td><td>{_esc(COLUMNS[c][1])}</td></tr>"
                    for c in used)
    if any(c.startswith("f1[") for c in doc["quality_columns"]):
        items += ("<tr><th>F1 CLASS</th><td><code>f1[CLASS]</code></td><td>F1 score of one class: the harmonic mean "
                  "of its precision and recall (0-1)</td></tr>")
    return (f"<table class=env><tr><th>header</th><th>column in results.csv</th><th>meaning</th></tr>{items}</table>")


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1320px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f3f5f8} .t{background:#fbf8ef;color:#555} table.env td,table.env th{text-align:left;white-space:normal}
.scroll{overflow-x:auto} table.timing td{background:#fbf8ef} img{max-width:100%;margin:6px 10px 6px 0;vertical-align:top}
.fig{display:flex;flex-wrap:wrap;align-items:flex-start;gap:12px}
.tree{border-left:3px solid #4a7;padding:4px 12px;font-size:14px;max-width:560px}
.tree ul{padding-left:18px;margin:6px 0} .tree li{margin:4px 0} .note{color:#666;font-size:13px} .failed{color:#b00}
"""


def render_report(out: Path) -> str:
    """Return the HTML report page of a benchmark folder."""
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
                     _tradeoff(task, records, datasets, batch, lambda ds: _data_desc(manifest, ds))
                     or "<p>no timings measured</p>"]
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
    sections += ["<h2>Glossary of the columns</h2>", _glossary(doc),
                 "<h2>Environment and hashes</h2>", _environment(manifest, all_records)]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>waferscope benchmark {_esc(manifest['name'])}</title><style>{CSS}</style></head><body>"
            + "\n".join(sections) + "</body></html>")


def write_report(out: str | Path) -> Path:
    """Write the HTML report of a benchmark folder (atomically); return its path."""
    out = Path(out)
    page = render_report(out)
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page)
        tmp.chmod(0o644)
    return out / "index.html"
