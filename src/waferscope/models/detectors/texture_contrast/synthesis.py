"""Synthetic anomalies on normal images, as the discriminative detectors define them.

- DRAEM (Zavrtanik et al., ICCV 2021): a Perlin-noise mask (2-D gradient noise at a random power-of-two
  scale, thresholded at 0.5) filled with a foreign texture ``A`` blended into the image ``I`` as
  ``(1 − M)·I + (1 − β)·M·A + β·M·I`` with β ~ U(0, 0.8). DRAEM takes ``A`` from the DTD texture set;
  offline there is none, so ``A`` here is procedural: another normal image rotated / mirrored /
  inverted (NSA's "natural" source, Schlüter et al., ECCV 2022), or Perlin noise texture.
- CutPaste-scar (Li et al., CVPR 2021): a thin rotated rectangle cut from the image and pasted
  elsewhere with jittered intensity — long thin defects (scratches, hairline cracks).

Everything works on one-channel standardised float images (the image canvas) and is seeded.
"""

from __future__ import annotations

import numpy as np


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin gradient noise in about [-1, 1] on ``shape``, ``res`` lattice cells per axis."""
    h, w = shape
    ry, rx = res
    gy, gx = np.linspace(0, ry, h, endpoint=False), np.linspace(0, rx, w, endpoint=False)
    yy, xx = np.meshgrid(gy, gx, indexing="ij")
    iy, ix = yy.astype(int), xx.astype(int)
    fy, fx = yy - iy, xx - ix
    angles = rng.uniform(0, 2 * np.pi, (ry + 1, rx + 1))
    grad = np.stack([np.cos(angles), np.sin(angles)], -1)

    def dot(oy, ox):
        g = grad[iy + oy, ix + ox]
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    fade = lambda t: 6 * t ** 5 - 15 * t ** 4 + 10 * t ** 3  # noqa: E731 — Perlin's quintic
    uy, ux = fade(fy), fade(fx)
    top = dot(0, 0) * (1 - ux) + dot(0, 1) * ux
    bottom = dot(1, 0) * (1 - ux) + dot(1, 1) * ux
    return (top * (1 - uy) + bottom * uy) * np.sqrt(2)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, min_pixels: int = 4) -> np.ndarray:
    """DRAEM's anomaly mask: Perlin noise at scale 2^a × 2^b (a, b ∈ 0..5), rotated, > 0.5."""
    for _ in range(20):
        res = (2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6)))
        noise = perlin(shape, res, rng)
        if rng.random() < 0.5:
            noise = noise.T if shape[0] == shape[1] else noise[::-1]
        mask = noise > 0.5
        if mask.sum() >= min_pixels:
            return mask
    return mask


def _source(img: np.ndarray, others: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Return a foreign texture for the mask: another normal image transformed, or Perlin texture."""
    kind = rng.integers(0, 3)
    if kind == 0 and others:
        src = others[int(rng.integers(0, len(others)))]
        src = np.rot90(src, int(rng.integers(1, 4))) if src.shape[0] == src.shape[1] else src[::-1, ::-1]
        src = np.ascontiguousarray(src)
    elif kind == 1:
        src = -img  # the image itself, inverted: same texture, opposite contrast
    else:
        res = 2 ** int(rng.integers(2, 6))
        src = 2.0 * perlin(img.shape, (res, res), rng)
    return src * rng.uniform(0.5, 2.0) + rng.uniform(-2.0, 2.0)


def draem_anomaly(img: np.ndarray, others: list[np.ndarray], rng: np.random.Generator,
                  valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(augmented image, mask): a Perlin-masked foreign texture blended in (see the module docstring)."""
    mask = perlin_mask(img.shape, rng)
    if valid is not None:
        mask &= valid
    src = _source(img, others, rng)
    beta = rng.uniform(0.0, 0.8)
    out = np.where(mask, (1 - beta) * src + beta * img, img)
    return out.astype(np.float32), mask


def scar_anomaly(img: np.ndarray, rng: np.random.Generator,
                 valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(augmented image, mask): CutPaste-scar.

    A thin rotated strip of the image, intensity jittered, pasted at another place.
    """
    h, w = img.shape
    length = rng.uniform(0.1, 0.5) * max(h, w)
    width = rng.uniform(1.0, max(2.0, 0.02 * max(h, w)))
    theta = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
    yy, xx = np.mgrid[:h, :w]
    u = (yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
    v = -(yy - cy) * np.cos(theta) + (xx - cx) * np.sin(theta)
    mask = (np.abs(u) <= length / 2) & (np.abs(v) <= width / 2)
    if valid is not None:
        mask &= valid
    dy, dx = int(rng.integers(-h // 4, h // 4 + 1)), int(rng.integers(-w // 4, w // 4 + 1))
    src = np.roll(img, (dy, dx), axis=(0, 1)) * rng.uniform(0.5, 1.5) + rng.choice([-1, 1]) * rng.uniform(0.5, 2.5)
    return np.where(mask, src, img).astype(np.float32), mask
