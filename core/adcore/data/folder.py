"""The ``folder`` data set: any tree in the MVTec AD layout.

    <root>/<category>/train/good/*            normal training images
    <root>/<category>/validation/good/*       optional: normal images for thresholds
    <root>/<category>/test/good/*             normal test images
    <root>/<category>/test/<defect>/*         defective test images
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png   masks (optional per defect)

``root`` may also be a single category folder. A mask is ``<stem>_mask`` or
``<stem>`` with any image extension, the extension and the ``_mask`` suffix in
any case (``000_MASK.PNG``). Headers of all images and masks are checked up
front, so bad input fails before any model work starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adcore.data import Category, Sample
from adcore.errors import DataError
from adcore.imageio import IMAGE_SUFFIXES, image_size, list_images

__all__ = ["LAYOUT_HINT", "open_folder", "read_category"]

LAYOUT_HINT = "expected <root>/<category>/train/good and test/<defect> (MVTec AD layout)"


def open_folder(root: Path | str | None, categories: Sequence[str] | None = None) -> list[Category]:
    """List the categories under ``root`` (all, or the named ones)."""
    if root is None:
        raise DataError("the folder data set needs --data PATH")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if (root / "train").is_dir():
        found = {root.name: root}
    else:
        found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "train").is_dir()}
    if not found:
        raise DataError(f"{root}: no category folders found; {LAYOUT_HINT}")
    if categories:
        unknown = [c for c in categories if c not in found]
        if unknown:
            raise DataError(f"{root}: no category {unknown[0]!r} (available: {', '.join(found)})")
        found = {c: found[c] for c in categories}
    return [read_category(name, path) for name, path in found.items()]


def read_category(name: str, folder: Path) -> Category:
    """Read one category folder and check its images and masks."""
    train = _normal_samples(folder / "train" / "good", required=True)
    validation = _normal_samples(folder / "validation" / "good", required=False)
    test_dir = folder / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: test folder not found; {LAYOUT_HINT}")
    test: list[Sample] = []
    for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if defect_dir.name == "good":
            test.extend(_normal_samples(defect_dir, required=False))
            continue
        masks_dir = folder / "ground_truth" / defect_dir.name
        masks = _mask_index(masks_dir) if masks_dir.is_dir() else None
        for path in list_images(defect_dir):
            mask = _find_mask(masks, masks_dir, path) if masks is not None else None
            test.append(Sample(path=path, label=1, defect=defect_dir.name, mask_path=mask))
    if not test:
        raise DataError(f"{test_dir}: no test images")
    category = Category(name=name, root=folder, train=tuple(train), test=tuple(test),
                        validation=tuple(validation))
    _check_headers(category)
    return category


def _normal_samples(folder: Path, required: bool) -> list[Sample]:
    if not folder.is_dir():
        if required:
            raise DataError(f"{folder}: training folder not found; {LAYOUT_HINT}")
        return []
    paths = list_images(folder)
    if required and not paths:
        raise DataError(f"{folder}: empty train set (no {'/'.join(IMAGE_SUFFIXES)} images)")
    return [Sample(path=p, label=0) for p in paths]


def _mask_index(masks_dir: Path) -> dict[str, Path]:
    """Mask files by name without extension, a ``_mask`` suffix in any case spelled ``_mask``.

    When one name has several extensions, the first in IMAGE_SUFFIXES order wins (``.png`` first).
    """
    index: dict[str, Path] = {}
    order = {suffix: rank for rank, suffix in enumerate(IMAGE_SUFFIXES)}
    for path in sorted(list_images(masks_dir), key=lambda p: order[p.suffix.lower()]):
        stem = path.stem
        key = f"{stem[:-5]}_mask" if stem.lower().endswith("_mask") else stem
        index.setdefault(key, path)
    return index


def _find_mask(masks: dict[str, Path], masks_dir: Path, image: Path) -> Path:
    for key in (f"{image.stem}_mask", image.stem):
        if key in masks:
            return masks[key]
    raise DataError(f"{image}: no mask {image.stem}_mask.png in {masks_dir}")


def _check_headers(category: Category) -> None:
    for sample in (*category.train, *category.validation, *category.test):
        size = image_size(sample.path)
        if sample.mask_path is not None:
            mask_size = image_size(sample.mask_path)
            if mask_size != size:
                raise DataError(f"{sample.mask_path}: mask size {mask_size[0]}x{mask_size[1]} does not match "
                                f"image {sample.path.name} ({size[0]}x{size[1]})")
