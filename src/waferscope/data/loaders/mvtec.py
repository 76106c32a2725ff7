"""Ordinary images in the MVTec-AD layout (one category folder).

The layout::

    <root>/train/good/*.png                 normal training images
    <root>/test/good/*.png                  normal test images
    <root>/test/<defect>/*.png              defective test images
    <root>/ground_truth/<defect>/<stem>_mask.png   pixel masks of the defects

→ ``WaferDataset(kind="image")`` with label ``good`` or the defect name, split ``train``/``test``,
and masks from ``ground_truth`` (bool, same H×W as the image; None for good images and for
defects without a mask file). Grey images stay H×W, colour images become H×W×3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAYOUT_DIRS = ("train", "test", "ground_truth")
GOOD = "good"


def looks_like_mvtec(root: Path) -> bool:
    """Return whether ``root`` has the MVTec-AD folders."""
    return any((root / d).is_dir() for d in LAYOUT_DIRS)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "I;16", "I", "F", "1"):
                arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("RGB"))
                if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
                    arr = arr[..., 0]  # grey stored as RGB: keep one channel
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read as an image ({exc})", path) from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = _read_image(path)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != shape:
        raise DataError(f"mask is {mask.shape[0]}×{mask.shape[1]} but its image is {shape[0]}×{shape[1]}", path)
    return mask > 0


def load_mvtec(root: str | Path) -> WaferDataset:
    """Read one MVTec-AD category folder (see the module docstring)."""
    root = Path(root)
    train_good = root / "train" / GOOD
    if not train_good.is_dir() or not _images(train_good):
        raise DataError("MVTec-AD layout needs normal training images in train/good/ (none found)", root)
    images, labels, masks, ids, splits = [], [], [], [], []

    def add(path: Path, label: str, split: str, mask: np.ndarray | None, img: np.ndarray):
        images.append(img)
        labels.append(label)
        masks.append(mask)
        ids.append(f"{split}/{label}/{path.stem}")
        splits.append(split)

    for p in _images(train_good):
        add(p, GOOD, "train", None, _read_image(p))
    test = root / "test"
    if test.is_dir():
        dirs = [x for x in test.iterdir() if x.is_dir() and not x.name.startswith(".")]
        for d in sorted(dirs, key=lambda x: (x.name != GOOD, x.name)):  # good first, then defects A→Z
            for p in _images(d):
                img = _read_image(p)
                mask = None
                if d.name != GOOD:
                    mask_path = next((root / "ground_truth" / d.name / f"{p.stem}_mask{s}" for s in IMAGE_SUFFIXES
                                      if (root / "ground_truth" / d.name / f"{p.stem}_mask{s}").exists()), None)
                    if mask_path is not None:
                        mask = _read_mask(mask_path, img.shape[:2])
                add(p, d.name, "test", mask, img)
    kinds = {im.ndim for im in images}
    if len(kinds) > 1:  # a few grey images among colour ones: make them all RGB
        images = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in images]
    meta = {"id": ids, "split": splits, "source": root.name}
    return WaferDataset.from_maps(images, labels, masks=masks if any(m is not None for m in masks) else None,
                                  meta=meta, source=root.name, kind="image", name=root.name, where=str(root))
