"""Reading real-world images and masks: any mode, bit depth, size and format.

Everything becomes 8-bit RGB (grey is repeated, alpha dropped, 16-bit scaled),
because every backbone expects three channels; failures name the file. EXIF
orientation is applied to images and masks alike, and :func:`image_size` gives
the upright size, so header checks agree with what is read. Two kinds of file
are refused before any work: names that are not valid UTF-8 (results, CSV and
JSON could not name them) and headers declaring more than
``ADCORE_MAX_IMAGE_PIXELS`` pixels (a decompression bomb would exhaust memory).
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from adcore.errors import ConfigError, DataError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS_ENV", "check_file_name",
           "display_name", "image_size", "list_images", "max_image_pixels", "read_mask", "read_rgb", "to_rgb8"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_IMAGE_PIXELS_ENV = "ADCORE_MAX_IMAGE_PIXELS"
#: 200 megapixels: far above any inspection camera, far below what exhausts a machine's memory.
DEFAULT_MAX_IMAGE_PIXELS = 200_000_000
#: EXIF orientations that turn the image a quarter, so width and height swap.
_QUARTER_TURNS = (5, 6, 7, 8)


def max_image_pixels() -> int:
    """The pixel limit of one image: ``ADCORE_MAX_IMAGE_PIXELS`` if set, else 200 megapixels."""
    text = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_IMAGE_PIXELS_ENV} must be a positive integer (pixels per image); got {text!r}")
    return value


def display_name(path: Path | str) -> str:
    """A path as printable text, bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_file_name(path: Path) -> Path:
    """Refuse a path that is not valid UTF-8 (on Linux a name may be any bytes): no output could name it."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{display_name(path)}: file name is not valid UTF-8; rename the file") from None
    return path


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn every way opening ``path`` can fail into one DataError naming it, the pixel limit included."""
    check_file_name(path)
    limit = max_image_pixels()
    Image.MAX_IMAGE_PIXELS = limit  # Pillow warns above it and raises above twice it: both refuse here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: image has more than {limit:,} pixels (possible decompression bomb); "
                        f"set {MAX_IMAGE_PIXELS_ENV} to raise the limit") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as exc:
        raise DataError(f"{path}: cannot read image ({' '.join(str(exc).split()) or type(exc).__name__})") from None


def _open(path: Path) -> Image.Image:
    # From a file object, not a path: Pillow 13 memory-maps an uncompressed TIFF by its upright
    # size, which garbles a TIFF stored a quarter turn away (orientation 5 to 8).
    with _reading(path), open(path, "rb") as handle:
        image = Image.open(handle)
        image.load()
        if image.format != "TIFF":  # Pillow turns TIFFs upright itself while loading them
            ImageOps.exif_transpose(image, in_place=True)
    return image


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the upright image, from the file header without decoding the pixels."""
    with _reading(path), open(path, "rb") as handle, Image.open(handle) as image:
        width, height = _stored_size(image)
        # Image.getexif, not PngImageFile's: that one decodes the whole file to find an eXIf chunk
        # after the pixels, which the PNG specification does not allow.
        orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
        return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """Width and height as stored; for a TIFF, Pillow's own size may already be the upright one."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None and ExifTags.Base.ImageWidth in tags and ExifTags.Base.ImageLength in tags:
        return int(tags[ExifTags.Base.ImageWidth]), int(tags[ExifTags.Base.ImageLength])
    return image.size


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


def read_rgb(path: Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8, optionally resized to size × size or to (width, height)."""
    image = to_rgb8(_open(path))
    target = _target(size)
    if target is not None and image.size != target:
        image = image.resize(target, Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _target(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Pillow's (width, height) for a square side or a (width, height) pair."""
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def read_mask(path: Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as (H, W) bool (True = defect), resized with nearest neighbour.

    Any non-zero pixel is a defect, at any bit depth (a 16-bit 0/1 mask too).
    Colour masks go by the colour channels (alpha is ignored, as for images)
    and palette masks by the palette colour: whatever shows as black is normal.
    """
    defect = _nonzero(_open(path))
    target = _target(size)
    if target is not None and defect.shape != target[::-1]:
        defect = np.asarray(Image.fromarray(defect).resize(target, Image.NEAREST))
    return defect


def _nonzero(image: Image.Image) -> np.ndarray:
    if image.mode != "P" and len(image.getbands()) == 1:
        return np.asarray(image) != 0  # the stored values: no scaling that could round 1/65535 to 0
    return np.asarray(to_rgb8(image)).any(axis=2)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name, hidden files skipped, names checked."""
    return sorted(check_file_name(p) for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
