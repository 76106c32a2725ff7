"""Writers for the lot views.

PNG figures, CSV tables and one HTML page, all from a
:class:`~waferscope.lots.analysis.LotReport` (the computing is in :mod:`.analysis`).

:func:`write_report` fills a temp folder beside ``out`` and renames it into place when complete,
so an interrupted run never leaves a folder that looks finished. Each ``plot_*`` function takes a
file path or a binary file object (``io.BytesIO``: what a web page serving the figure needs).
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from waferscope.errors import ConfigError
from waferscope.lots.analysis import LotReport, LotStack
from waferscope.utils import replace_folder

STACK_CMAP = "YlOrRd"  # pale yellow (no fails) → dark red (fails on every wafer); no-die cells stay white
MAX_HTML_ROWS = 2000  # the page lists at most this many lots; summary.csv has them all
TREND_COLOURS = {"point": "#0072B2", "ooc": "#D55E00", "limit": "#555555"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def file_stem(lot: str, taken: set[str]) -> str:
    """Return a file-safe name for ``lot``, unique among ``taken`` (which it joins)."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", lot).strip("._") or "lot"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def shared_scale(stacks: dict[str, LotStack]) -> float:
    """Return the colour-scale top shared by every stacked map.

    The largest fail frequency of any drawn lot, rounded up to a multiple of 0.05 (at least
    0.05), so colours compare across lots.
    """
    top = max((s.max_frequency for s in stacks.values()), default=0.0)
    return max(0.05, math.ceil(top / 0.05 - 1e-9) * 0.05)


def _draw_stack(ax, stack: LotStack, vmax: float):
    plt = _plt()
    cmap = plt.get_cmap(STACK_CMAP).with_extremes(bad="white")
    freq = np.ma.masked_invalid(stack.frequency)
    im = ax.imshow(freq, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    return im


def _stack_title(stack: LotStack, row: pd.Series | None) -> str:
    y = "" if row is None or pd.isna(row["yield"]) else f", yield {100 * row['yield']:.1f} %"
    return f"{stack.lot}\n{stack.wafers} wafer{'s' if stack.wafers != 1 else ''}{y}"


def plot_stack(stack: LotStack, path: Path, vmax: float, row: pd.Series | None = None) -> Path:
    """One lot's stacked map with its colour bar (scale 0..``vmax``, shared by all lots) as PNG."""
    plt = _plt()
    on = stack.tested > 0
    uneven = on.any() and stack.tested[on].min() < stack.tested[on].max()
    # wafers of different extents: a second panel shows how many wafers each cell's frequency rests on
    fig, axes = plt.subplots(1, 2 if uneven else 1, figsize=(9.6 if uneven else 5.2, 4.6), squeeze=False)
    ax = axes[0, 0]
    im = _draw_stack(ax, stack, vmax)
    ax.set_title(_stack_title(stack, row) + f"  (aligned by {stack.rule})", fontsize=9)
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("fail frequency (failing wafers / wafers with the die)", fontsize=8)
    if uneven:
        ax2 = axes[0, 1]
        cmap = plt.get_cmap("Blues").with_extremes(bad="white")
        im2 = ax2.imshow(np.ma.masked_where(~on, stack.tested), cmap=cmap, vmin=0, vmax=stack.wafers,
                         interpolation="nearest")
        ax2.set_xticks([])
        ax2.set_yticks([])
        ax2.set_title("wafers with a die at each position", fontsize=9)
        from matplotlib.ticker import MaxNLocator

        bar2 = fig.colorbar(im2, ax=ax2, fraction=0.046, pad=0.04)
        bar2.locator = MaxNLocator(integer=True)
        bar2.update_ticks()
        bar2.set_label("wafers", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_stack_gallery(stacks: dict[str, LotStack], path: Path, vmax: float, summary: pd.DataFrame,
                       per_row: int = 6) -> Path:
    """All drawn lots' stacked maps in one grid (time order) sharing one colour bar."""
    plt = _plt()
    rows_by_lot = summary.set_index("lot")
    n = len(stacks)
    ncol = min(per_row, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.1 * ncol + 1.0, 2.3 * nrow + 0.6), squeeze=False)
    im = None
    for ax, (lot, st) in zip(axes.ravel(), stacks.items()):
        im = _draw_stack(ax, st, vmax)
        ax.set_title(_stack_title(st, rows_by_lot.loc[lot] if lot in rows_by_lot.index else None), fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"stacked lot maps: per-die fail frequency, shared scale 0–{vmax:.2f}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 0.97))
    cax = fig.add_axes((0.94, 0.15, 0.015, 0.7))
    bar = fig.colorbar(im, cax=cax)
    bar.set_label("fail frequency", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def zone_totals(zones: pd.DataFrame) -> pd.DataFrame:
    """Return the zone table pooled over every lot (lot ``(all lots)``), same columns."""
    keys = ["kind", "zone"]
    g = zones.groupby(keys, sort=False)
    out = g[["dies", "pass_dies", "fail_dies"]].sum().reset_index()
    bounds = g[["rho_from", "rho_to"]].first().reset_index()
    out = out.merge(bounds, on=keys)
    out["yield"] = np.divide(out["pass_dies"], out["dies"], out=np.full(len(out), np.nan), where=out["dies"] > 0)
    out.insert(0, "lot", "(all lots)")
    return out[zones.columns]


def plot_zone_yield(zones: pd.DataFrame, path: Path, lots: list[str]) -> Path:
    """Heat map of zone yield: a row for all lots pooled, then one per lot in ``lots``.

    One column per zone (rings centre → edge, quadrants, edge band / inner); each cell written
    in %.
    """
    plt = _plt()
    table = pd.concat([zone_totals(zones), zones[zones["lot"].isin(lots)]], ignore_index=True)
    table["col"] = table["zone"]
    grid = table.pivot_table(index="lot", columns="col", values="yield", sort=False, dropna=False)
    cols = list(dict.fromkeys(zones["zone"]))
    order = ["(all lots)"] + [x for x in lots if x in grid.index]
    grid = grid.reindex(index=order, columns=cols)
    vals = grid.to_numpy(dtype=np.float64)
    lo = np.nanmin(vals) if np.isfinite(vals).any() else 0.0
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(cols), 0.9 + 0.3 * len(order)))
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=min(lo, 0.999), vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(vals):
        if np.isfinite(v):
            ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.axhline(0.5, color="black", lw=1)
    kinds = list(dict.fromkeys(zones["kind"]))
    edges = np.cumsum([sum(1 for z in cols if (zones.loc[zones["zone"] == z, "kind"].iloc[0] == k)) for k in kinds])[:-1]
    for e in edges:
        ax.axvline(e - 0.5, color="black", lw=1)
    ax.set_title("yield by zone (%): rings centre → edge, quadrants, edge band", fontsize=9)
    bar = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("yield", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def pareto_totals(pareto: pd.DataFrame) -> pd.DataFrame:
    """Return the Pareto pooled over every lot (lot ``(all lots)``), same columns."""
    g = pareto.groupby("bin", sort=False).agg(dies=("dies", "sum"), bin_name=("bin_name", "first")).reset_index()
    g = g.sort_values(["dies", "bin"], ascending=[False, True], kind="stable")
    g["share"] = g["dies"] / g["dies"].sum()
    g["cum_share"] = g["share"].cumsum()
    g["rank"] = np.arange(1, len(g) + 1)
    g["lot"] = "(all lots)"
    return g[pareto.columns].reset_index(drop=True)


def plot_pareto(pareto: pd.DataFrame, path: Path, lots: list[str], top: int = 10, per_row: int = 3) -> Path | None:
    """Bar chart of the ``top`` fail bins (dies) with the cumulative share as a line.

    A first panel pooled over all lots, then one per lot in ``lots`` that has counted dies (None
    when none has).
    """
    lots = [x for x in lots if (pareto["lot"] == x).any()]
    if not lots:
        return None
    pareto = pd.concat([pareto_totals(pareto), pareto], ignore_index=True)
    lots = ["(all lots)"] + lots
    plt = _plt()
    ncol = min(per_row, len(lots))
    nrow = math.ceil(len(lots) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False)
    for ax, lot in zip(axes.ravel(), lots):
        part = pareto[pareto["lot"] == lot].head(top)
        labels = [f"{b}" + (f"\n{nm[:10]}" if nm else "") for b, nm in zip(part["bin"], part["bin_name"])]
        x = np.arange(len(part))
        ax.bar(x, part["dies"], color="#D55E00")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_ylabel("fail dies", fontsize=8)
        ax.set_title(f"{lot}: {int(pareto.loc[pareto['lot'] == lot, 'dies'].sum())} fail dies", fontsize=9)
        ax2 = ax.twinx()
        ax2.plot(x, 100 * part["cum_share"], color="#0072B2", marker="o", ms=3)
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("cumulative %", fontsize=8)
    for ax in axes.ravel()[len(lots):]:
        ax.axis("off")
    fig.suptitle("bin Pareto per lot (fail dies by bin)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_trend(trend: pd.DataFrame, path: Path, per_row: int = 3) -> Path | None:
    """One p-chart per signature seen in some lot.

    Each lot's share (points, time order), the centre line p̄ and the ±σ limits (steps, they move
    with each lot's size); out-of-control lots ringed in vermillion. None when no signature is seen.
    """
    # a signature no charted lot shows (p̄ = 0) is a flat line at 0: left out (trend.csv keeps it)
    seen = trend.groupby("signature", sort=False)["count"].sum()
    sigs = [s for s in dict.fromkeys(trend["signature"]) if seen[s] > 0]
    if not sigs:
        return None
    plt = _plt()
    ncol = min(per_row, len(sigs))
    nrow = math.ceil(len(sigs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 2.7 * nrow), squeeze=False)
    for ax, sig in zip(axes.ravel(), sigs):
        part = trend[trend["signature"] == sig].sort_values("order")
        x = np.arange(len(part))
        ooc = part["out_of_control"].to_numpy() != ""
        ax.step(x, part["ucl"], where="mid", color=TREND_COLOURS["limit"], lw=0.8, ls="--")
        ax.step(x, part["lcl"], where="mid", color=TREND_COLOURS["limit"], lw=0.8, ls="--")
        ax.axhline(part["p_bar"].iloc[0], color=TREND_COLOURS["limit"], lw=1)
        ax.plot(x, part["p"], color=TREND_COLOURS["point"], lw=0.6, marker="o", ms=2.5 if len(x) > 60 else 4)
        ax.plot(x[ooc], part["p"].to_numpy()[ooc], ls="none", marker="o", ms=6, mfc="none",
                mec=TREND_COLOURS["ooc"], mew=1.5)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{sig}: p̄ {part['p_bar'].iloc[0]:.3f}, {int(ooc.sum())} out of control", fontsize=9)
        ax.set_ylabel("share of wafers", fontsize=8)
        if len(x) <= 30:
            ax.set_xticks(x, part["lot"], rotation=60, ha="right", fontsize=6)
        else:
            ax.set_xlabel(f"{len(x)} lots in time order", fontsize=8)
    for ax in axes.ravel()[len(sigs):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=TREND_COLOURS["point"], marker="o", ms=4, lw=0.6, label="lot share p"),
               Line2D([], [], color=TREND_COLOURS["limit"], lw=1, label="centre line p̄"),
               Line2D([], [], color=TREND_COLOURS["limit"], lw=0.8, ls="--", label="control limits (UCL / LCL)"),
               Line2D([], [], ls="none", marker="o", ms=6, mfc="none", mec=TREND_COLOURS["ooc"], mew=1.5,
                      label="out of control")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("signature trend: share of wafers per lot with p-chart limits", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- HTML ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1500px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f2f2f2;cursor:pointer;position:sticky;top:0}td.t,th.t{text-align:left}
tr.ooc td{background:#fde7dc}.scroll{max-height:520px;overflow:auto;display:inline-block;border:1px solid #ccc}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:13px}.maps{display:flex;flex-wrap:wrap;gap:6px}
.maps a{font-size:12px}code{background:#f4f4f4;padding:1px 4px}
"""
# Click a header to sort by that column (numbers numerically; again to reverse).
_JS = """
document.querySelectorAll('table.sortable').forEach(t=>{t.querySelectorAll('th').forEach((th,i)=>{
th.onclick=()=>{const b=t.tBodies[0],rows=[...b.rows],asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
const v=r=>{const s=r.cells[i].dataset.v??r.cells[i].textContent;const x=parseFloat(s);return isNaN(x)?s:x};
rows.sort((a,c)=>{const x=v(a),y=v(c);return (x>y?1:x<y?-1:0)*(asc?1:-1)});rows.forEach(r=>b.appendChild(r))}})});
"""


_PERCENT = {"yield", "anomalous_share", "share", "cum_share", "p", "p_bar", "lcl", "ucl"}


def _fmt(col: str, v) -> tuple[str, str]:
    """(text shown, sort value) of one cell."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "", ""
    if isinstance(v, (float, np.floating)) and (col in _PERCENT or col.startswith(("share_", "wafer_yield"))):
        return f"{100 * float(v):.1f} %", f"{float(v):.6f}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}", f"{float(v):.6g}"
    return str(v), str(v)


def html_table(df: pd.DataFrame, max_rows: int = MAX_HTML_ROWS, row_class=None) -> str:
    """Return a sortable HTML table of ``df`` (at most ``max_rows`` rows), values escaped."""
    cols = list(df.columns)
    text_cols = {c for c in cols if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])}
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">{html.escape(str(c))}</th>' for c in cols)
    body = []
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for c in cols:
            text, key = _fmt(c, row[c])
            cls = ' class="t"' if c in text_cols else ""
            cells.append(f'<td{cls} data-v="{html.escape(key)}">{html.escape(text)}</td>')
        rc = row_class(row) if row_class else ""
        body.append(f'<tr{f" class={chr(34)}{rc}{chr(34)}" if rc else ""}>' + "".join(cells) + "</tr>")
    more = (f'<p class="note">{len(df) - max_rows} more rows in the CSV.</p>' if len(df) > max_rows else "")
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            + "\n".join(body) + "</tbody></table></div>" + more)


_PICKED = {"wafers": "with the most wafers", "yield": "with the lowest yield"}
_SOURCES = {"predicted": "the classifier's predictions", "label": "the data's own labels"}


def render_html(report: LotReport, images: dict[str, str], map_files: dict[str, str], notes: list[str]) -> str:
    """Return the index page: settings, lot summary, stacked maps, zone yield.

    Pareto and trend (images by relative path, tables inline).
    """
    s = report.settings
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lots: {esc(str(s.get('data')))}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Lot report: {esc(str(s.get('data')))}</h1>",
             f"<p>{s['wafers']} wafers in {s['lots']} lots; lots in time order by "
             f"{esc(s['time_column']) if s.get('time_column') else 'first appearance in the data (no time column)'}; "
             f"classes from {_SOURCES.get(s.get('class_source'), 'nowhere (no labels, no classifier)')}.</p>"]
    parts += [f'<p class="note">{esc(n)}</p>' for n in notes]
    parts.append("<h2>Lot summary</h2><p class='note'>yield = pass / (pass + fail) dies pooled over the lot; "
                 "class shares among the lot's classified wafers; shaded rows: out of control on some signature (see the "
                 "trend); click a header to sort. "
                 "<a href='summary.csv'>summary.csv</a> · <a href='wafers.csv'>wafers.csv</a></p>")
    parts.append(html_table(report.summary, row_class=lambda r: "ooc" if r.get("out_of_control") else ""))
    if "stacks" in images:
        parts.append(f"<h2>Stacked lot maps</h2><p class='note'>Per-die fail frequency across each lot's wafers "
                     f"({len(report.stacks)} lots {_PICKED.get(s.get('map_by'), '')}, in time order), one colour "
                     f"scale shared by all lots; white = no wafer has a die there. Per-lot PNGs:</p>")
        links = " · ".join(f'<a href="{esc(f)}">{esc(lot)}</a>' for lot, f in map_files.items())
        parts.append(f'<div class="maps">{links}</div>')
        parts.append(f'<p><img src="{esc(images["stacks"])}" alt="stacked lot maps"></p>')
    parts.append(f"<h2>Yield by zone</h2><p class='note'>{s['rings']} rings of equal width in normalised radius "
                 f"(ring 1 = centre), quadrants (front view, notch down), edge band {s['edge_width']} die(s) wide. "
                 "<a href='zones.csv'>zones.csv</a></p>")
    if "zones" in images:
        parts.append(f'<p><img src="{esc(images["zones"])}" alt="yield by zone"></p>')
    parts.append("<h2>Bin Pareto</h2>")
    if "pareto" in images:
        parts.append(f'<p><img src="{esc(images["pareto"])}" alt="bin Pareto"></p>'
                     "<p class='note'><a href='pareto.csv'>pareto.csv</a></p>")
        parts.append(html_table(report.pareto[report.pareto["rank"] <= 10], max_rows=500))
    else:
        parts.append("<p class='note'>These files carry no bin codes (only pass/fail die states), so there is no "
                     "bin Pareto.</p>")
    parts.append("<h2>Signature trend</h2>")
    if "trend" in images:
        ooc = report.trend[report.trend["out_of_control"] != ""]
        parts.append(f"<p class='note'>Share of wafers per lot for each signature with p-chart limits p̄ ± "
                     f"{s['sigma']:g}·sqrt(p̄(1−p̄)/n) over lots with ≥ {s['min_wafers']} classified wafers. "
                     f"{len(ooc)} out-of-control points. <a href='trend.csv'>trend.csv</a></p>")
        parts.append(f'<p><img src="{esc(images["trend"])}" alt="signature trend"></p>')
        if len(ooc):
            parts.append("<h3>Out-of-control lots</h3>" + html_table(ooc, max_rows=500))
    else:
        parts.append("<p class='note'>No trend: no classes (no labels, no classifier) and no anomaly flags, "
                     "or no lot has enough wafers.</p>")
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


# ---- everything, atomically ---------------------------------------------------------------------
def check_out_dir(out: Path, overwrite: bool) -> None:
    """ConfigError when ``out`` is a file, or a non-empty folder and ``overwrite`` is False."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"the output folder {out} is not empty; give another folder or allow overwriting it")


def write_report(report: LotReport, out: str | Path, *, overwrite: bool = False, notes: list[str] | None = None,
                 progress: bool = False) -> Path:
    """Write ``out/``: summary.csv, wafers.csv, zones.csv, pareto.csv, trend.csv, stacked_maps.png, maps/<lot>.png.

    zones.png, pareto.png (with bins), trend.png (with classes or flags) and index.html.
    Built in a temp folder beside ``out`` and renamed into place when complete.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    check_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report.summary.to_csv(tmp / "summary.csv", index=False)
        report.wafers.to_csv(tmp / "wafers.csv", index=False)
        report.zones.to_csv(tmp / "zones.csv", index=False)
        report.pareto.to_csv(tmp / "pareto.csv", index=False)
        report.trend.to_csv(tmp / "trend.csv", index=False)
        images: dict[str, str] = {}
        map_files: dict[str, str] = {}
        drawn = list(report.stacks)
        steps = tqdm(total=len(drawn) + 4, desc="figures", unit="fig", disable=not progress, file=sys.stderr, leave=False)
        if drawn:
            vmax = shared_scale(report.stacks)
            (tmp / "maps").mkdir()
            rows, taken = report.summary.set_index("lot"), set()
            for lot in drawn:
                name = f"maps/{file_stem(lot, taken)}.png"
                plot_stack(report.stacks[lot], tmp / name, vmax, rows.loc[lot] if lot in rows.index else None)
                map_files[lot] = name
                steps.update()
            plot_stack_gallery(report.stacks, tmp / "stacked_maps.png", vmax, report.summary)
            images["stacks"] = "stacked_maps.png"
        steps.update()
        zone_lots = drawn or report.summary["lot"].head(24).tolist()
        if not report.zones.empty:
            plot_zone_yield(report.zones, tmp / "zones.png", zone_lots)
            images["zones"] = "zones.png"
        steps.update()
        if not report.pareto.empty:
            fails = report.pareto.groupby("lot")["dies"].sum()
            pareto_lots = [x for x in (drawn or report.summary["lot"].tolist()) if x in fails.index][:11]
            if plot_pareto(report.pareto, tmp / "pareto.png", pareto_lots) is not None:
                images["pareto"] = "pareto.png"
        steps.update()
        if plot_trend(report.trend, tmp / "trend.png") is not None:
            images["trend"] = "trend.png"
        steps.update()
        steps.close()
        (tmp / "index.html").write_text(render_html(report, images, map_files, notes or []), encoding="utf-8")
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the folder is meant to be shared like any output
        replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
