"""Images handled as images: the canvas (aspect kept, reflect padding, valid box), texture_knn on tiny
synthetic textures, the declared image capability, and the real-image protocol's pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from waferscope import registry
from imagetools import image_sets
from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError


def test_canvas_keeps_aspect_and_pads_by_reflection():
    from waferscope.models.detectors.common import canvas_maps_to_input, image_canvas

    img = np.tile(np.arange(40, dtype=np.uint8)[None, :] * 6, (20, 1))  # 20×40, a horizontal ramp
    ds = WaferDataset.from_maps([img], ["good"], kind="image", name="ramp")
    c = image_canvas(ds, 32, normalise="image")
    top, left, nh, nw = c.boxes[0]
    assert (nh, nw) == (16, 32) and left == 0 and top == 8  # longer side 32, aspect 1:2 kept
    assert c.valid[0].sum() == 16 * 32 and c.valid[0, top:top + nh].all()
    # reflect padding: the row above the box mirrors the box's second row
    np.testing.assert_allclose(c.x[0, 0, top - 1], c.x[0, 0, top + 1], atol=1e-6)
    maps = canvas_maps_to_input(torch.from_numpy(c.x[:, 0]), c, ds)
    assert maps[0].shape == (20, 40)
    c2 = image_canvas(ds, 32, normalise="image", border=2)
    assert c2.valid[0].sum() == 12 * 28


def test_thin_image_pads_in_rounds():
    from waferscope.models.detectors.common import image_canvas

    ds = WaferDataset.from_maps([np.full((3, 200), 9, np.uint8)], ["good"], kind="image", name="thin")
    c = image_canvas(ds, 64)
    assert c.x.shape == (1, 1, 64, 64) and np.isfinite(c.x).all()


def test_texture_knn_finds_blobs_and_localises_them():
    from sklearn.metrics import roc_auc_score

    train, test = image_sets()
    det = registry.create("texture_knn", "detector", input_size=48, memory_size=3000, position="free",
                          progress=False).fit(train)
    res = det.score(test)
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.9
    hits = [m.flat[int(np.argmax(a))] for a, m in zip(res.maps[6:], test.masks[6:])]
    assert np.mean(hits) >= 0.8
    assert all(a.shape == im.shape for a, im in zip(res.maps, test.maps))


def _spot(n, seed, row, col, shape=(32, 48)):
    """Noisy grey images with one bright 4×4 spot whose place is (row, col) ± 1 px: a framed part's feature."""
    rng = np.random.default_rng(seed)
    imgs = []
    for _ in range(n):
        img = 0.4 + rng.normal(0, 0.03, shape)
        r, c = row + rng.integers(-1, 2), col + rng.integers(-1, 2)
        img[r:r + 4, c:c + 4] = 0.9
        imgs.append(np.clip(img * 255, 0, 255).astype(np.uint8))
    return imgs


def test_texture_knn_relative_search_finds_a_feature_out_of_place(tmp_path):
    """position='relative' (the default for images): a spot that every normal image has at the top left
    is anomalous at the bottom right — the position-free search finds that patch in its memory and
    cannot tell; the per-cell calibration centres new normal images near 0; the run reloads; wafer maps
    keep the position-free search."""
    from sklearn.metrics import roc_auc_score

    from waferscope.base import load_run
    from waferscope.data.synthetic import generate

    train = WaferDataset.from_maps(_spot(16, 0, 6, 8), ["good"] * 16, kind="image", name="train")
    moved = _spot(6, 2, 22, 36)
    masks = [np.zeros((32, 48), bool) for _ in moved]
    for m in masks:
        m[20:28, 34:42] = True
    test = WaferDataset.from_maps(_spot(6, 1, 6, 8) + moved, ["good"] * 6 + ["moved"] * 6,
                                  masks=[None] * 6 + masks, kind="image", name="test")
    det = registry.create("texture_knn", "detector", input_size=48, sigmas=(1.0, 2.0), grid=12, progress=False)
    res = det.fit(train).score(test)
    assert det.position_ == "relative" and det.memory_.shape[0] == 16 and det.cell_loc_.shape == (12, 12)
    assert roc_auc_score(~test.is_normal, res.scores) == 1.0
    assert np.mean([m.flat[int(np.argmax(a))] for a, m in zip(res.maps[6:], masks)]) >= 0.8
    assert abs(np.mean([float(np.mean(m)) for m in res.maps[:6]])) < 1.5  # z-scores, not raw distances
    free = registry.create("texture_knn", "detector", input_size=48, sigmas=(1.0, 2.0), position="free",
                           progress=False).fit(train).score(test)
    assert roc_auc_score(~test.is_normal, free.scores) < 0.8
    det.save(tmp_path / "run")
    np.testing.assert_allclose(load_run(tmp_path / "run").score(test).scores, res.scores, rtol=1e-5)
    wafer = registry.create("texture_knn", "detector", input_size=24, stride=2, memory_size=200, progress=False)
    assert wafer.fit(generate(12, seed=1, size=(24, 24), classes=["none"])).position_ == "free"


def test_texture_knn_relative_search_needs_two_normal_images():
    """One normal image cannot be its own leave-one-image-out reference: one DataError naming the data."""
    one = WaferDataset.from_maps(_spot(1, 0, 6, 8), ["good"], kind="image", name="one_tile")
    with pytest.raises(DataError, match="one_tile.*at least 2 normal images|at least 2 normal images.*one_tile"):
        registry.create("texture_knn", "detector", input_size=48, grid=12, progress=False).fit(one)


def test_texture_knn_map_search_draws_the_map_and_leaves_the_scores(tmp_path):
    """The finer map search (map_grid) changes the maps, never the image scores (the coarse search's);
    it localises the moved spot; map_grid=None is the coarse search's own map; the run reloads both."""
    from waferscope.base import load_run

    train = WaferDataset.from_maps(_spot(16, 0, 6, 8), ["good"] * 16, kind="image", name="train")
    moved = _spot(4, 2, 22, 36)
    test = WaferDataset.from_maps(_spot(3, 1, 6, 8) + moved, ["good"] * 3 + ["moved"] * 4, kind="image", name="test")
    common = dict(input_size=48, sigmas=(1.0, 2.0), grid=12, progress=False)
    fine = registry.create("texture_knn", "detector", map_grid=24, map_stride=2, map_radius=0, **common).fit(train)
    coarse = registry.create("texture_knn", "detector", map_grid=None, **common).fit(train)
    a, b = fine.score(test), coarse.score(test)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert fine.map_search_["memory"].shape[-2:] == (24, 24) and coarse.map_search_ is None
    assert not all(np.allclose(x, y) for x, y in zip(a.maps, b.maps))
    for m in a.maps[3:]:  # the maximum of the fine map on the moved spot (rows 22-26, cols 36-40 of 32 x 48)
        r, c = np.unravel_index(int(np.argmax(m)), m.shape)
        assert 18 <= r <= 30 and 32 <= c <= 44
    fine.save(tmp_path / "fine")
    coarse.save(tmp_path / "coarse")
    for run, res in ((tmp_path / "fine", a), (tmp_path / "coarse", b)):
        back = load_run(run).score(test)
        np.testing.assert_allclose(back.scores, res.scores, rtol=1e-5)
        np.testing.assert_allclose(np.stack(back.maps), np.stack(res.maps), rtol=1e-4, atol=1e-5)


def test_image_detectors_are_declared_and_listed_in_refusals():
    from waferscope.models.detectors.common import default_detector_for, image_detectors

    names = image_detectors()
    for n in ("texture_knn", "patchcore", "reconpatch", "autoencoder"):
        assert n in names
    assert "pattern_contrast" not in names and "pattern_stats" not in names
    assert default_detector_for("image", "pattern_contrast") == names[0]
    assert default_detector_for("wafer", "autoencoder") == "autoencoder"
    train, _ = image_sets()
    with pytest.raises(DataError, match="reconpatch"):
        registry.create("pattern_stats", "detector", progress=False).fit(train)


def test_image_protocol_pieces_on_tinytextures(tmp_path):
    from waferscope.evaluate.detection import evaluate_images

    train, test = image_sets()
    row = evaluate_images("texture_knn", {"input_size": 32, "memory_size": 500}, data=(train, test), kfold=True,
                          n_splits=3, img_path=tmp_path / "maps.png")
    assert (tmp_path / "maps.png").stat().st_size > 1000
    assert row["test"]["image_auroc"] >= 0.9 and "pixel_auroc" in row["test"] and "aupro" in row["test"]
    assert 0.0 <= row["max_in_mask"] <= 1.0 and list(row["max_in_mask_per_class"]) == ["blob"]
    assert row["max_in_mask_per_class"]["blob"] == pytest.approx(row["max_in_mask"], abs=1e-3)  # one class
    assert len(row["kfold_threshold"]["per_fold"]) == 3 and "f1" in row["test_at_kfold_threshold"]
    assert "image_auroc" in row["baseline_pixel_zscore"] and "image_auroc" in row["baseline_isolation_forest"]


def test_texture_contrast_finds_blobs():
    from sklearn.metrics import roc_auc_score

    train, test = image_sets()
    det = registry.create("texture_contrast", "detector", input_size=48, memory_size=2000, max_iter=30,
                          anomalies_per_image=2, progress=False).fit(train)
    res = det.score(test)
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.9
    assert all(a.shape == im.shape and np.isfinite(a).all() for a, im in zip(res.maps, test.maps))


def test_synthetic_anomalies_are_seeded_and_inside_valid():
    from waferscope.models.detectors.texture_contrast.synthesis import draem_anomaly, scar_anomaly

    img = np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32)
    valid = np.zeros((40, 40), bool)
    valid[5:35, 5:35] = True
    for make in (lambda r: draem_anomaly(img, [img.T], r, valid), lambda r: scar_anomaly(img, r, valid)):
        a1, m1 = make(np.random.default_rng(3))
        a2, m2 = make(np.random.default_rng(3))
        np.testing.assert_array_equal(a1, a2)
        assert not (m1 & ~valid).any()
        np.testing.assert_array_equal(a1[~m1], img[~m1])  # only the masked pixels change


def test_texture_padim_calibration_finds_blobs_and_centres_normals(tmp_path):
    """calibration_folds: per-cell z-scores of held-out normal distances — new normal images score
    near 0 on average, blobs stand out, the run reloads, and 1 fold is refused."""
    from sklearn.metrics import roc_auc_score

    from waferscope.base import load_run
    from waferscope.errors import ConfigError

    train, test = image_sets()
    det = registry.create("texture_padim", "detector", input_size=32, sigmas=(1.0, 2.0), stride=2, grid=4,
                          calibration_folds=3, progress=False).fit(train)
    assert det.cell_loc_.shape == (4, 4) and (det.cell_scale_ > 0).all() and (det.cell_loc_ > 0).all()
    res = det.score(test)
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.9
    normal_means = [float(np.mean(m)) for m in res.maps[:6]]
    assert abs(np.mean(normal_means)) < 1.5  # z-scores, not raw distances (those are ≥ 0 and ~√C)
    det.save(tmp_path / "run")
    np.testing.assert_allclose(load_run(tmp_path / "run").score(test).scores, res.scores, atol=1e-5)
    plain = registry.create("texture_padim", "detector", input_size=32, sigmas=(1.0, 2.0), stride=2, grid=4,
                            calibration_folds=0, progress=False).fit(train).score(test)
    assert min(float(np.mean(m)) for m in plain.maps[:6]) > max(normal_means)
    with pytest.raises(ConfigError, match="calibration_folds"):
        registry.create("texture_padim", "detector", calibration_folds=1, progress=False).fit(train)


def _banded(n, seed, band=False, shape=(40, 40)):
    """Vertical-streak textures; ``band`` makes a horizontal band of rows 10–21 streak 3× stronger
    (a broad region of another texture, like magnetic tile's `uneven`), returned with its mask."""
    rng = np.random.default_rng(seed)
    imgs, masks = [], []
    for _ in range(n):
        streaks = rng.normal(0, 0.05, shape[1])[None, :] + rng.normal(0, 0.01, shape)
        m = np.zeros(shape, bool)
        if band:
            m[10:22] = True
            streaks = np.where(m, 3 * streaks, streaks)
        imgs.append(np.clip((0.5 + streaks) * 255, 0, 255).astype(np.uint8))
        masks.append(m)
    return imgs, masks


def test_large_scale_channels_are_relative_to_the_image_and_see_bands():
    from waferscope.models.detectors.texture_padim.features import large_scale_channels

    imgs, masks = _banded(1, 0, band=True)
    x = torch.from_numpy(imgs[0].astype(np.float32) / 255)[None, None]
    x = (x - x.mean()) / x.std()
    f = large_scale_channels(x, [(0, 0, 40, 40)], (1.0, 2.0), (4.0,))
    assert f.shape == (1, 7, 40, 40)
    np.testing.assert_allclose(f.mean((2, 3)).numpy(), 0, atol=1e-4)  # minus the image's own level
    gx_energy = f[0, 1].numpy()  # σ=1 Gx²: the vertical streaks' strength
    assert gx_energy[12:20].mean() > gx_energy[28:].mean() + 1.0  # log energy, ~ln 9 higher in the band
    brighter = large_scale_channels(x + 1.0, [(0, 0, 40, 40)], (1.0, 2.0), (4.0,))
    # a brighter exposure: brightness and gradient energies unchanged (the Hessian ones are left out:
    # the truncated second-derivative kernels are not exactly zero-sum; canvases have mean 0 anyway)
    keep = [0, 1, 2, 4, 5]
    np.testing.assert_allclose(brighter[:, keep].numpy(), f[:, keep].numpy(), atol=1e-3)


def test_texture_padim_large_sigmas_find_bands_and_reload(tmp_path):
    """large_sigmas: the band of stronger texture is found per image and per pixel (the plain filter
    bank sees its local texture too, so both detect it; the large-scale channels must not hurt), the
    run reloads with the same scores, and a non-positive σ is one ConfigError."""
    from sklearn.metrics import roc_auc_score

    from waferscope.base import load_run
    from waferscope.errors import ConfigError

    tr, _ = _banded(16, 0)
    good, _ = _banded(6, 1)
    bad, masks = _banded(6, 2, band=True)
    train = WaferDataset.from_maps(tr, ["good"] * 16, kind="image", name="train")
    test = WaferDataset.from_maps(good + bad, ["good"] * 6 + ["band"] * 6, masks=[None] * 6 + masks,
                                  kind="image", name="test")
    det = registry.create("texture_padim", "detector", input_size=40, sigmas=(1.0, 2.0), stride=2, grid=8,
                          fine_factor=0, large_sigmas=(4.0,), progress=False).fit(train)
    assert det.mean_.shape == (64, 24 + 7)  # 12 filter-bank channels + energy per σ, and 7 large-scale
    res = det.score(test)
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.9
    pix = np.concatenate([m.ravel() for m in res.maps[6:]])
    assert roc_auc_score(np.concatenate([m.ravel() for m in masks]), pix) >= 0.8
    det.save(tmp_path / "run")
    np.testing.assert_allclose(load_run(tmp_path / "run").score(test).scores, res.scores, rtol=1e-5)
    with pytest.raises(ConfigError, match="large_sigmas"):
        registry.create("texture_padim", "detector", large_sigmas=(0.0,), progress=False).fit(train)


def _padim_reference(feats, shrinkage, folds):
    """The in-memory PaDiM fit the streaming one replaces: all features at once, float64 per cell."""
    cm, cs = feats.mean((0, 2, 3)), feats.std((0, 2, 3)).clamp_min(1e-6)
    z = (feats - cm[None, :, None, None]) / cs[None, :, None, None]
    n, c, g, _ = z.shape

    def gaussians(zz):
        x = zz.double().permute(2, 3, 0, 1).reshape(g * g, len(zz), c)
        mean = x.mean(1)
        d = x - mean[:, None]
        cov = d.transpose(1, 2) @ d / (len(zz) - 1)
        ridge = shrinkage * cov.diagonal(dim1=1, dim2=2).mean(1)
        return mean.float(), torch.linalg.inv(cov + ridge[:, None, None] * torch.eye(c, dtype=cov.dtype)).float()

    from waferscope.models.detectors.texture_padim.anomaly_map import mahalanobis_maps

    held = torch.empty(n, g, g)
    for fold in folds:
        rest = np.setdiff1d(np.arange(n), fold)
        held[fold] = mahalanobis_maps(z[fold], *gaussians(z[rest])).sqrt()
    return cm, cs, *gaussians(z), held.mean(0), held.std(0)


def test_texture_padim_streaming_fit_equals_the_in_memory_fit():
    """fit accumulates per-cell moments batch by batch (batches of 5 cut across the 3 calibration
    folds): the same channel statistics, Gaussians and calibration as the in-memory fit, to float
    tolerance; scores do not depend on the batch size."""
    train, test = image_sets()
    kw = dict(input_size=32, sigmas=(1.0, 2.0), stride=2, grid=4, calibration_folds=3, progress=False)
    det = registry.create("texture_padim", "detector", predict_batch_size=5, **kw).fit(train)
    feats = torch.cat([f for *_, f in det._batches(train, "")])
    folds = np.array_split(np.random.default_rng(0).permutation(len(train)), 3)
    ref = _padim_reference(feats, 0.01, folds)
    got = (det.channel_mean_, det.channel_scale_, det.mean_, det.precision_, det.cell_loc_, det.cell_scale_)
    for name, a, b in zip(["channel_mean", "channel_scale", "mean", "precision", "cell_loc", "cell_scale"], got, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4 * float(b.abs().max()), err_msg=name)
    one_batch = registry.create("texture_padim", "detector", predict_batch_size=64, **kw).fit(train)
    np.testing.assert_allclose(one_batch.score(test).scores, det.score(test).scores, rtol=1e-4)


def test_cell_moments_stay_exact_far_from_zero():
    """The sums are shifted: features with a mean 10⁹ times their spread keep their covariance (plain
    Σxxᵀ − ΣxΣxᵀ/n would lose it all to float64 rounding)."""
    from waferscope.models.detectors.texture_padim.gaussians import CellMoments

    x = torch.from_numpy(np.random.default_rng(0).normal(1e9, 1.0, (40, 3, 2, 2)))
    m = CellMoments(CellMoments.shift_from(x[:7]))
    for part in torch.split(x, 7):
        m.add(part)
    mean, prec = m.gaussians(torch.zeros(3), torch.ones(3), 1e-9)
    xs = x.double().permute(2, 3, 0, 1).reshape(4, 40, 3)
    d = xs - xs.mean(1, keepdim=True)
    cov = d.transpose(1, 2) @ d / 39
    np.testing.assert_allclose(torch.linalg.inv(prec.double()).numpy(), cov.numpy(), rtol=1e-4)
    np.testing.assert_allclose(mean.double().numpy(), xs.mean(1).numpy(), rtol=1e-6)
    ch_mean, ch_std = m.channel_stats()
    np.testing.assert_allclose(ch_std.numpy(), x.double().std((0, 2, 3)).numpy(), rtol=1e-4)


def test_fine_channels_pool_a_finer_canvas_onto_the_grid():
    """fine_channels: a 1 px dark line on a 64 px canvas, pooled 2 × 2 onto a 32 grid — max pooling
    keeps the line's full second-derivative response (signed), the mean halves it; shapes and energies."""
    from waferscope.models.detectors.texture_padim.features import fine_channels, pool_cells

    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, :, 33] = -1.0  # a vertical line on an odd column: split across two cells by mean pooling
    mx = fine_channels(x, [(0, 0, 64, 64)], (0.7,), 13, 2, 32, "max")
    av = fine_channels(x, [(0, 0, 64, 64)], (0.7,), 13, 2, 32, "avg")
    en = fine_channels(x, [(0, 0, 64, 64)], (0.7,), 13, 2, 32, "energy")
    assert mx.shape == av.shape == en.shape == (1, 12, 32, 32)
    gxx = 3  # per σ: G, Gx, Gy, Gxx, Gyy, Gxy; a dark vertical line is a positive Gxx ridge
    assert mx[0, gxx, 16, 16] > 1.5 * av[0, gxx, 16, 16] > 0
    assert (en[0, 1:6] >= 0).all() and en[0, gxx, 16, 16] > 0.5 * mx[0, gxx, 16, 16]
    np.testing.assert_allclose(mx[0, 6:].numpy(), av[0, 6:].numpy())  # energies are pooled by the mean
    t = torch.tensor([[[[1.0, -3.0], [2.0, 0.0]]]])
    assert pool_cells(t, 2, "max").item() == -3.0 and pool_cells(t, 2, "avg").item() == 0.0
    assert abs(pool_cells(t, 2, "energy").item() - (14 / 4) ** 0.5) < 1e-6


def test_texture_padim_fine_canvas_channels_fit_score_and_reload(tmp_path):
    """fine_factor: the finer canvas's channels join the Gaussian (12 per fine σ), blobs are still
    found, the run reloads with the same scores, and a factor of 1 or an unknown pooling is one
    ConfigError each."""
    from sklearn.metrics import roc_auc_score

    from waferscope.base import load_run
    from waferscope.errors import ConfigError

    train, test = image_sets()
    det = registry.create("texture_padim", "detector", input_size=24, sigmas=(2.0,), stride=2, grid=6,
                          fine_factor=2, fine_sigmas=(0.7, 1.0), fine_pool="energy", calibration_folds=3,
                          progress=False).fit(train)
    assert det.mean_.shape == (36, 12 + 24)
    res = det.score(test)
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.9
    det.save(tmp_path / "run")
    np.testing.assert_allclose(load_run(tmp_path / "run").score(test).scores, res.scores, rtol=1e-5)
    with pytest.raises(ConfigError, match="fine_factor"):
        registry.create("texture_padim", "detector", fine_factor=1, progress=False).fit(train)
    with pytest.raises(ConfigError, match="fine_pool"):
        registry.create("texture_padim", "detector", fine_pool="median", progress=False).fit(train)


def test_texture_padim_run_saved_before_fine_factor_loads_without_fine_channels(tmp_path):
    """A run saved before ``fine_factor`` existed (its params lack it) reloads with the fine canvas
    off — the default's extra channels would not match its Gaussians — and scores as before."""
    import json

    from waferscope.base import load_run

    train, test = image_sets()
    det = registry.create("texture_padim", "detector", input_size=24, sigmas=(1.0, 2.0), stride=2, grid=4,
                          fine_factor=0, calibration_folds=0, progress=False).fit(train)
    det.save(tmp_path / "run")
    header = next(p for p in (tmp_path / "run").iterdir() if p.suffix == ".json")
    doc = json.loads(header.read_text())
    doc["params"].pop("fine_factor")
    header.write_text(json.dumps(doc))
    old = load_run(tmp_path / "run")
    assert old.fine_factor == 0
    np.testing.assert_allclose(old.score(test).scores, det.score(test).scores, rtol=1e-5)


def test_autoencoder_images_on_the_canvas_calibrated_per_pixel(tmp_path):
    """Images: grey aspect-kept canvas, one-channel reconstruction, each pixel's residual a z-score against
    held-out normals (new normals average near 0, blobs stand out and are localised); the run reloads."""
    from sklearn.metrics import roc_auc_score

    from waferscope.base import load_run

    train, test = image_sets(n_train=20)
    det = registry.create("autoencoder", "detector", input_size=32, base_channels=8, epochs=15, batch_size=8,
                          progress=False).fit(train)
    assert det.image_input_ == "canvas" and det.pixel_loc_.shape == (32, 32) and (det.pixel_scale_ > 0).all()
    assert det.model_.encoder[0][0].in_channels == 1
    res = det.score(test)
    assert roc_auc_score(~test.is_normal, res.scores) >= 0.9
    assert np.mean([m.flat[int(np.argmax(a))] for a, m in zip(res.maps[6:], test.masks[6:])]) >= 0.8
    assert abs(np.mean([float(np.mean(m)) for m in res.maps[:6]])) < 1.5
    assert all(a.shape == im.shape for a, im in zip(res.maps, test.maps))
    det.save(tmp_path / "run")
    np.testing.assert_allclose(load_run(tmp_path / "run").score(test).scores, res.scores, rtol=1e-5)


def test_efficientad_refuses_images_naming_the_image_detectors():
    """EfficientAD scored below the pixel z-score baseline on device images with either teacher: it takes
    wafer maps only, and says which detectors take images (fit, and score with a wafer-fitted model)."""
    from waferscope.data.synthetic import generate
    from waferscope.models.detectors.common import image_detectors

    assert "efficientad" not in image_detectors() and "autoencoder" in image_detectors()
    train, test = image_sets()
    det = registry.create("efficientad", "detector", pretrained=None, input_size=16, epochs=1, progress=False)
    with pytest.raises(DataError, match="texture_knn"):
        det.fit(train)
    det.fit(generate(12, seed=1, size=(24, 24), classes=["none"]))
    with pytest.raises(DataError, match="texture_padim"):
        det.score(test)
