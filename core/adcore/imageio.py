"""Reading real-world images and masks: any mode, bit depth, size and format.

Everything becomes 8-bit RGB (grey is repeated, alpha dropped, 16-bit scaled),
because every backbone expects three channels; failures name the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from adcore.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({' '.join(str(exc).split()) or type(exc).__name__})") from None


def to_rgb8(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling high bit depths by their range."""
    if image.mode in ("RGB",):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or (image.mode == "I" and values.max() > 255) else 255.0
        if image.mode == "F":
            top = 1.0 if values.max() <= 1.0 else max(float(values.max()), 1.0)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB")  # alpha dropped: the photographed surface is the signal
    return image.convert("RGB")


def read_rgb(path: Path, size: int | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8, optionally squashed to size × size."""
    image = to_rgb8(_open(path))
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def read_mask(path: Path, size: int | None = None) -> np.ndarray:
    """Read a ground-truth mask as (H, W) bool (non-zero = defect), resized with nearest neighbour."""
    image = _open(path)
    if image.mode not in ("L", "1"):
        image = Image.fromarray((np.asarray(to_rgb8(image)).max(axis=2) > 0).astype(np.uint8) * 255, mode="L")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.NEAREST)
    return np.asarray(image) > 0


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name, hidden files skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
