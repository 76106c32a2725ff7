"""Explain a fitted classifier's decisions on a data set, score the explanations, denoise maps.

exp = explain(classifier, dataset, method="gradcam")
exp.heat[i]            # heat map at wafer i's own die resolution, in [0, 1]
localisation_table(exp, dataset)           # energy inside the mask, pointing game (needs masks)
denoised = denoise(dataset, exp, "otsu")   # a WaferDataset with the irrelevant fails removed
denoising_table(dataset, exp)              # Grad-CAM vs median vs components, die-level F1
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from waferscope.data.classes import FAIL
from waferscope.data.dataset import WaferDataset
from waferscope.errors import ConfigError, DataError
from waferscope.explain.denoise import denoise_components, denoise_gradcam, denoise_median, die_scores
from waferscope.explain.gradcam import GradCAM, to_die_grid
from waferscope.explain.localization import energy_in_mask, pointing_hit

# Seed 002 drops these from localisation: their "pattern" is the whole wafer or nothing.
NON_LOCAL_CLASSES = ("Random", "Near-full", "none")


@dataclass
class Explanation:
    """What :func:`explain` returns: the predicted classes, probabilities and one heat map per wafer."""

    method: str
    target_layer: str
    classes: list[str]
    predicted: np.ndarray  # (N,) class names
    proba: np.ndarray  # (N, n_classes)
    heat: list[np.ndarray]  # per wafer, (H, W) float32 in [0, 1] at die resolution


def _network(classifier):
    from waferscope.base import Estimator

    if not (isinstance(classifier, Estimator) and classifier.get_tags().gradcam):
        raise ConfigError(f"{type(classifier).__name__} is not a neural network: Grad-CAM needs a CNN classifier "
                          "(e.g. cnn, resnet18, kd_student)")
    classifier._check_fitted()
    return classifier.network_


def explain(classifier, dataset: WaferDataset, method: str = "gradcam", target_layer: str | None = None,
            batch_size: int = 256, progress: bool = True, target: str = "predicted") -> Explanation:
    """Grad-CAM heat maps of every wafer at die resolution.

    ``target="predicted"`` explains the class the model chose (why did it say Scratch?);
    ``target="label"`` explains each wafer's labelled class where the model knows it (falling back
    to the prediction): the usual protocol when scoring localisation against ground truth
    (Zhang et al.'s pointing game), so a misclassified wafer still asks "where is the Scratch?".
    """
    if target not in ("predicted", "label"):
        raise ConfigError(f"explanation target must be 'predicted' or 'label', got {target!r}")
    import torch
    from tqdm.auto import tqdm

    net = _network(classifier)
    if len(dataset) == 0:
        raise DataError("nothing to explain: the data set is empty", dataset.name)
    x = classifier.to_tensor(dataset)
    cam = GradCAM(net, target_layer=target_layer, method=method)
    heats, logits = [], []
    classes = list(classifier.classes_)
    index = {c: i for i, c in enumerate(classes)}
    wanted = None
    if target == "label":
        wanted = np.array([index.get(str(lab), -1) for lab in dataset.labels], dtype=np.int64)
    for start in tqdm(range(0, len(x), batch_size), desc=f"{method}", disable=not progress, file=sys.stderr,
                      leave=False):
        xb = x[start:start + batch_size]
        targets = None
        if wanted is not None:
            with torch.no_grad():
                pred = net(xb).argmax(1).numpy()
            w = wanted[start:start + batch_size]
            targets = np.where(w >= 0, w, pred)
        h, lg = cam(xb, targets)
        heats.append(h)
        logits.append(lg)
    heat_s = np.concatenate(heats)
    logit = np.concatenate(logits)
    proba = torch.softmax(torch.from_numpy(logit), 1).numpy()
    heat = []
    # a network whose input is not the plain nearest resize maps its heat back itself (area
    # resampling of the cropped dies, the canonical rotation/flip undone)
    own = classifier.heat_to_die_grids(heat_s, dataset)
    for i, m in enumerate(dataset.maps):
        h = own[i] if own is not None else to_die_grid(heat_s[i], m.shape[:2])
        if dataset.kind == "wafer":
            h = np.where(m > 0, h, 0.0).astype(np.float32)  # no die, no evidence
        heat.append(h)
    return Explanation(method, cam.target_layer, classes, np.asarray(classes, dtype=object)[proba.argmax(1)],
                       proba, heat)


def _need_masks(dataset: WaferDataset, what: str) -> None:
    if dataset.masks is None or all(k is None for k in dataset.masks):
        raise DataError(f"{what} needs ground-truth masks (synthetic maps have them)", dataset.name)


def localisation_table(heat: list[np.ndarray], dataset: WaferDataset, source: str = "gradcam") -> pd.DataFrame:
    """Per wafer with a mask: class, energy inside the mask, pointing-game hit.

    For wafer maps ``fail_energy_in_mask`` also counts only the heat on failing dies — the dies
    that can carry a pattern — which is what Grad-CAM denoising acts on.
    """
    _need_masks(dataset, "localisation scoring")
    rows = []
    for i, (m, k) in enumerate(zip(dataset.maps, dataset.masks)):
        if k is None or not k.any():
            continue
        row = {"id": dataset.ids[i], "class": str(dataset.labels[i]), "source": source}
        if dataset.kind == "wafer":
            row["energy_in_mask"] = energy_in_mask(heat[i], k, m > 0)
            row["fail_energy_in_mask"] = energy_in_mask(heat[i], k, m == FAIL)
            row["pointing_hit"] = pointing_hit(heat[i], k, m > 0)
        else:
            row["energy_in_mask"] = energy_in_mask(heat[i], k)
            row["pointing_hit"] = pointing_hit(heat[i], k)
        rows.append(row)
    return pd.DataFrame(rows)


def summarise_localisation(table: pd.DataFrame) -> pd.DataFrame:
    """Return the localisation table summarised per (source, class): wafers, mean energy in the mask, pointing game."""
    if table.empty:
        return table
    aggs = {"wafers": ("id", "size"), "energy_in_mask": ("energy_in_mask", "mean")}
    if "fail_energy_in_mask" in table:
        aggs["fail_energy_in_mask"] = ("fail_energy_in_mask", "mean")
    aggs["pointing_game"] = ("pointing_hit", "mean")
    return table.groupby(["source", "class"], sort=False).agg(**aggs).reset_index()


def denoise(dataset: WaferDataset, explanation: Explanation, threshold: str | float = "otsu") -> WaferDataset:
    """Return the maps with the fails outside the explanation's heat (thresholded) turned to pass."""
    if dataset.kind != "wafer":
        raise DataError("denoising works on wafer maps, not images", dataset.name)
    maps = [denoise_gradcam(m, h, threshold) for m, h in zip(dataset.maps, explanation.heat)]
    out = WaferDataset.from_maps(maps, dataset.labels, multilabels=dataset.multilabels, masks=dataset.masks,
                                 meta=dataset.meta.copy(), source=f"{dataset.name}-denoised", validate=False)
    out.meta["source"] = dataset.meta["source"].astype(str) + "+gradcam-denoised"
    return out


def denoising_table(dataset: WaferDataset, explanation: Explanation, threshold: str | float = "otsu",
                    classes: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Die-level precision/recall/F1/IoU against the masks for Grad-CAM, median and component filters.

    Also for the raw map (no denoising); one row per wafer.
    """
    _need_masks(dataset, "denoising evaluation")
    methods = {
        "raw": lambda m, h: m,
        "gradcam": lambda m, h: denoise_gradcam(m, h, threshold),
        "median": lambda m, h: denoise_median(m),
        "components": lambda m, h: denoise_components(m),
    }
    rows = []
    for i, (m, k) in enumerate(zip(dataset.maps, dataset.masks)):
        label = str(dataset.labels[i])
        if k is None or not k.any() or label in NON_LOCAL_CLASSES or (classes and label not in classes):
            continue
        for name, fn in methods.items():
            rows.append({"id": dataset.ids[i], "class": label, "method": name, **die_scores(fn(m, explanation.heat[i]), k)})
    return pd.DataFrame(rows)


def picture_sample(dataset: WaferDataset, explanation: Explanation, n: int, seed: int = 0) -> list[int]:
    """Up to ``n`` wafers to draw, spread over the classes.

    Taken in turn from each class (the label, or the predicted class of an unlabelled wafer), in
    a seeded random order within a class. The first ``n`` rows of a class-sorted folder would
    all be one class. Returned grouped by class.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset.labels).astype(str)
    groups = np.where(labels != "", labels, np.asarray(explanation.predicted).astype(str))
    members = {g: list(rng.permutation(np.flatnonzero(groups == g))) for g in sorted(set(groups.tolist()))}
    picked: dict[str, list[int]] = {g: [] for g in members}
    total = 0
    while total < min(n, len(groups)):
        for g in members:
            if members[g] and total < n:
                picked[g].append(int(members[g].pop(0)))
                total += 1
    return [i for g in picked for i in sorted(picked[g])]


def overlay_figure(dataset: WaferDataset, explanation: Explanation, index: list[int], path, denoised=None):
    """Return a PNG grid: each wafer, its heat map over the wafer, and (optionally) the denoised map."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from waferscope.data.render import render_map
    from waferscope.utils import atomic_path

    cols = 3 if denoised is not None else 2
    fig, axes = plt.subplots(len(index), cols, figsize=(2.4 * cols, 2.4 * len(index)), squeeze=False)
    for r, i in enumerate(index):
        m = dataset.maps[i]
        rgb = render_map(m)
        title = f"{dataset.labels[i] or '?'} → {explanation.predicted[i]} ({explanation.proba[i].max():.2f})"
        axes[r, 0].imshow(rgb, interpolation="nearest")
        axes[r, 0].set_title(title, fontsize=8)
        axes[r, 1].imshow(rgb, interpolation="nearest")
        heat = np.ma.masked_where(m == 0, explanation.heat[i]) if dataset.kind == "wafer" else explanation.heat[i]
        shown = axes[r, 1].imshow(heat, cmap="jet", alpha=0.55, vmin=0, vmax=1, interpolation="bilinear")
        axes[r, 1].set_title(f"{explanation.method}", fontsize=8)
        # the scale of the heat: 0 = no relevance for the class, 1 = the map's most relevant die
        bar = fig.colorbar(shown, ax=axes[r, 1], fraction=0.046, pad=0.03, ticks=[0, 0.5, 1])
        bar.ax.tick_params(labelsize=6)
        bar.set_label("relevance", fontsize=6)
        if denoised is not None:
            axes[r, 2].imshow(render_map(denoised.maps[i]), interpolation="nearest")
            axes[r, 2].set_title("denoised", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
