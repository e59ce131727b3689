"""Pictures written by ``adcore run``: per-image panels, heat maps, masks and curves.

A run writes several hundred panels, so everything per-image is composed
directly with numpy and Pillow (a few milliseconds each) instead of building a
matplotlib figure per panel. Matplotlib is only used, lazily and with the Agg
backend, for the handful of per-category plots (ROC and loss curves); importing
this module therefore stays light.

Conventions: images are ``(H, W, 3) uint8`` RGB arrays; anomaly maps are
``(H, W)`` floats where larger means more anomalous; masks are ``(H, W)`` bool.
"""

from __future__ import annotations

import functools
import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "colorize",
    "overlay",
    "heat_overlay",
    "panel",
    "save_panel",
    "save_image",
    "save_heatmap",
    "save_mask",
    "save_roc",
    "save_curve",
]

PathLike = str | os.PathLike

# Layout constants for panels (pixels).
_GAP = 4  # white space between tiles
_MIN_TILE = 160  # narrowest tile in px: 'ground truth' and a full title line fit
_CAPTION_H = 20  # caption bar above each tile
_TITLE_H = 24  # optional title bar above the whole row
_CAPTION_SIZE = 13
_TITLE_SIZE = 14
_BG = (255, 255, 255)
_EMPTY_TILE = (215, 215, 215)  # light grey: distinct from mid-grey images
_EMPTY_TEXT = (70, 70, 70)
_GT_COLOR = (0, 255, 0)
_PRED_COLOR = (255, 0, 0)
_CAPTIONS = ("image", "ground truth", "heat map", "predicted mask", "overlay")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
@functools.lru_cache(maxsize=16)
def _lut(cmap: str) -> np.ndarray:
    """256x3 uint8 lookup table for ``cmap``, built once from matplotlib."""
    from matplotlib import colormaps  # lazy: only the colormap registry

    rgba = colormaps[cmap](np.linspace(0.0, 1.0, 256))
    lut = np.round(rgba[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled default font, scaled when Pillow supports it."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
        return ImageFont.load_default()


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept grey/RGB(A), uint8 or float in [0, 1]; return (H, W, 3) uint8."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected (H,W) or (H,W,3) image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
            arr = np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5
        else:  # other integer types: assume already 0..255
            arr = np.clip(arr, 0, 255)
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr)


def _check_2d(name: str, arr: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H,W), got shape {arr.shape}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} shape {arr.shape} does not match image {shape}")
    return arr


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` whose 4-neighbourhood leaves the mask (vectorised erosion)."""
    m = mask.astype(bool)
    if not m.any():
        return m
    padded = np.pad(m, 1, mode="constant", constant_values=False)
    eroded = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return m & ~eroded


def _text_tile(height: int, width: int, text: str) -> np.ndarray:
    """Grey placeholder tile with centred text (e.g. "no mask")."""
    img = Image.new("RGB", (width, height), _EMPTY_TILE)
    draw = ImageDraw.Draw(img)
    # >= 13 px: below that the default font's spaces collapse to ~2 px.
    font = _font(int(np.clip(width // 9, 13, 40)))
    text = _fit_text(draw, text, font, width - 2)
    draw.text((width // 2, height // 2), text, fill=_EMPTY_TEXT, font=font, anchor="mm")
    return np.asarray(img)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, max_width: int) -> str:
    """Shorten ``text`` with an ellipsis so it fits in ``max_width`` pixels."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text + "…"


# --------------------------------------------------------------------------- #
# per-image pictures
# --------------------------------------------------------------------------- #
def colorize(anomaly_map: np.ndarray, vmin: float, vmax: float, cmap: str = "jet") -> np.ndarray:
    """Map anomaly scores to colours with a fixed range.

    A fixed ``[vmin, vmax]`` (usually per category) keeps heat maps of
    different images comparable; per-image normalisation would make every
    normal image look alarming.

    Args:
        anomaly_map: (H, W) float scores.
        vmin: score drawn with the lowest colour; lower values are clipped.
        vmax: score drawn with the highest colour; higher values are clipped.
        cmap: matplotlib colormap name (sampled once into a 256-entry table).

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    amap = _check_2d("anomaly_map", anomaly_map).astype(np.float32, copy=False)
    span = float(vmax) - float(vmin)
    if not np.isfinite(span) or span <= 0:
        span = 1e-12
    scaled = (np.nan_to_num(amap, nan=float(vmin)) - float(vmin)) * (255.0 / span)
    idx = np.clip(scaled, 0.0, 255.0).astype(np.uint8)
    return _lut(cmap)[idx]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    color: Sequence[int] = (255, 0, 0),
    alpha: float = 0.4,
) -> np.ndarray:
    """Tint a region of ``image`` and draw its 1-pixel outline in full colour.

    The translucent fill shows what was flagged while keeping the texture
    visible; the solid outline makes small regions findable at a glance.

    Args:
        image: (H, W) or (H, W, 3) image, uint8 or float in [0, 1].
        mask: (H, W) bool region to highlight.
        color: RGB colour of tint and outline.
        alpha: opacity of the tint.

    Returns:
        (H, W, 3) uint8 RGB image (a new array).
    """
    rgb = _to_rgb_uint8(image)
    m = _check_2d("mask", mask, rgb.shape[:2]).astype(bool)
    out = rgb.copy()
    if not m.any():
        return out
    col = np.asarray(color, dtype=np.float32)[:3]
    region = out[m].astype(np.float32)
    out[m] = (region * (1.0 - alpha) + col * alpha + 0.5).astype(np.uint8)
    out[_outline(m)] = col.astype(np.uint8)
    return out


def heat_overlay(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> np.ndarray:
    """Blend the coloured anomaly map over the image.

    Showing scores on top of the image lets a reader judge whether hot spots
    sit on the defect or on background structure.

    Args:
        image: (H, W) or (H, W, 3) image, uint8 or float in [0, 1].
        anomaly_map: (H, W) float scores, same size as ``image``.
        vmin: score mapped to the lowest colour.
        vmax: score mapped to the highest colour.
        alpha: weight of the heat map in the blend.
        cmap: matplotlib colormap name.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    rgb = _to_rgb_uint8(image)
    heat = colorize(_check_2d("anomaly_map", anomaly_map, rgb.shape[:2]), vmin, vmax, cmap)
    out = rgb.astype(np.float32) * (1.0 - alpha) + heat.astype(np.float32) * alpha
    return (out + 0.5).astype(np.uint8)


def panel(
    image: np.ndarray,
    anomaly_map: np.ndarray,
    *,
    gt_mask: np.ndarray | None,
    threshold: float | None,
    vmin: float,
    vmax: float,
    title: str = "",
) -> np.ndarray:
    """Compose the one-row summary picture for a test image.

    Tiles, left to right: image | ground truth | heat map | predicted mask |
    overlay (prediction in red, ground-truth outline in green). Everything a
    reader needs to judge one prediction is side by side, at the same scale.

    Args:
        image: (H, W) or (H, W, 3) image, uint8 or float in [0, 1].
        anomaly_map: (H, W) float scores, same size as ``image``.
        gt_mask: (H, W) bool ground truth, or None (tile reads "no mask").
        threshold: score at or above which a pixel is predicted anomalous,
            or None (tile reads "no threshold", overlay shows no prediction).
        vmin: score mapped to the lowest heat-map colour.
        vmax: score mapped to the highest heat-map colour.
        title: optional line above the row, e.g. path, score and verdict.

    Returns:
        (H', W', 3) uint8 RGB image, roughly ``5 * W + 4 * gap`` wide.
    """
    rgb = _to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    amap = _check_2d("anomaly_map", anomaly_map, (h, w))

    gt = None if gt_mask is None else _check_2d("gt_mask", gt_mask, (h, w)).astype(bool)
    pred = None if threshold is None else (amap >= threshold)

    if gt is None:
        gt_tile = _text_tile(h, w, "no mask")
    else:
        gt_tile = np.repeat((gt.astype(np.uint8) * 255)[:, :, None], 3, axis=2)

    heat_tile = heat_overlay(rgb, amap, vmin, vmax)

    if pred is None:
        pred_tile = _text_tile(h, w, "no threshold")
        seg_tile = rgb.copy()
    else:
        pred_tile = np.repeat((pred.astype(np.uint8) * 255)[:, :, None], 3, axis=2)
        seg_tile = overlay(rgb, pred, _PRED_COLOR)
    if gt is not None:
        seg_tile[_outline(gt)] = _GT_COLOR

    tiles = (rgb, gt_tile, heat_tile, pred_tile, seg_tile)
    if w < _MIN_TILE:  # small images: enlarge (pixel-true) so captions and title fit
        factor = -(-_MIN_TILE // w)
        tiles = tuple(np.repeat(np.repeat(t, factor, axis=0), factor, axis=1) for t in tiles)
        h, w = h * factor, w * factor
    n = len(tiles)
    width = n * w + (n - 1) * _GAP
    # Text scales with the tile so captions stay legible on large images.
    cap_size = int(np.clip(w / 16, _CAPTION_SIZE, 32))
    title_size = int(np.clip(w / 14, _TITLE_SIZE, 36))
    cap_h = max(_CAPTION_H, int(cap_size * 1.6))
    top = max(_TITLE_H, int(title_size * 1.7)) if title else 0
    height = top + cap_h + h

    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    y0 = top + cap_h
    for i, tile in enumerate(tiles):
        x0 = i * (w + _GAP)
        canvas[y0 : y0 + h, x0 : x0 + w] = tile

    # Text is drawn once on the whole canvas (cheap compared with the tiles).
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    cap_font = _font(cap_size)
    for i, caption in enumerate(_CAPTIONS):
        x_mid = i * (w + _GAP) + w / 2
        text = _fit_text(draw, caption, cap_font, w - 2)
        draw.text((x_mid, top + cap_h / 2), text, fill=(0, 0, 0), font=cap_font, anchor="mm")
    if title:
        title_font = _font(title_size)
        text = _fit_text(draw, title, title_font, width - 8)
        draw.text((4, top / 2), text, fill=(0, 0, 0), font=title_font, anchor="lm")
    return np.asarray(pil)


# --------------------------------------------------------------------------- #
# writers
# --------------------------------------------------------------------------- #
def _ensure_parent(path: PathLike) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def save_image(path: PathLike, array: np.ndarray) -> None:
    """Write an image array as a uint8 PNG (grey or RGB; floats taken as [0, 1]).

    Args:
        path: destination file; parent folders are created.
        array: (H, W) or (H, W, 3) uint8, or float in [0, 1].
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:  # keep single-channel data single-channel (masks)
        img = Image.fromarray(_to_rgb_uint8(arr)[:, :, 0] if arr.dtype != np.uint8 else np.ascontiguousarray(arr))
    else:
        img = Image.fromarray(_to_rgb_uint8(arr))
    _ensure_parent(path)
    img.save(os.fspath(path), format="PNG", compress_level=1)


def save_panel(
    path: PathLike,
    image: np.ndarray,
    anomaly_map: np.ndarray,
    *,
    gt_mask: np.ndarray | None,
    threshold: float | None,
    vmin: float,
    vmax: float,
    title: str = "",
) -> None:
    """Compose :func:`panel` and write it as PNG (arguments as for :func:`panel`)."""
    save_image(
        path,
        panel(
            image,
            anomaly_map,
            gt_mask=gt_mask,
            threshold=threshold,
            vmin=vmin,
            vmax=vmax,
            title=title,
        ),
    )


def save_heatmap(path: PathLike, anomaly_map: np.ndarray, vmin: float, vmax: float) -> None:
    """Write the colourised anomaly map alone (same size as the map) as PNG."""
    save_image(path, colorize(anomaly_map, vmin, vmax))


def save_mask(path: PathLike, mask: np.ndarray) -> None:
    """Write a boolean mask as a 0/255 greyscale PNG (the usual ground-truth format)."""
    m = _check_2d("mask", mask).astype(bool)
    save_image(path, m.astype(np.uint8) * 255)


# --------------------------------------------------------------------------- #
# matplotlib plots (per category, few per run)
# --------------------------------------------------------------------------- #
def _pyplot():
    """Import pyplot with the non-interactive Agg backend (lazy, headless-safe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_roc(
    path: PathLike,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float | None]],
    title: str,
) -> None:
    """Plot one or more ROC curves with their AUROC in the legend.

    Args:
        path: destination PNG; parent folders are created.
        curves: label -> (fpr, tpr, auroc); auroc None is shown as "n/a"
            (e.g. a category without defective test images).
        title: plot title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    try:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
        for label, (fpr, tpr, auroc) in curves.items():
            auc_txt = "n/a" if auroc is None else f"{auroc:.3f}"
            # clip_on=False and a small margin: a perfect curve runs along the axes and would vanish.
            ax.plot(np.asarray(fpr), np.asarray(tpr), linewidth=1.5, label=f"{label} (AUROC {auc_txt})",
                    clip_on=False)
        ax.set_xlim(-0.015, 1.015)
        ax.set_ylim(-0.015, 1.015)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        _ensure_parent(path)
        fig.savefig(os.fspath(path), dpi=100)
    finally:
        plt.close(fig)


def save_curve(
    path: PathLike,
    values: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
) -> None:
    """Plot one line per series (e.g. training and validation loss per epoch).

    Args:
        path: destination PNG; parent folders are created.
        values: label -> y values; x is the index starting at 1.
        title: plot title.
        xlabel: x-axis label.
        ylabel: y-axis label.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        for label, ys in values.items():
            ys = np.asarray(list(ys), dtype=float)
            ax.plot(np.arange(1, len(ys) + 1), ys, marker="." if len(ys) <= 50 else None, label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if values:
            ax.legend(fontsize="small")
        fig.tight_layout()
        _ensure_parent(path)
        fig.savefig(os.fspath(path), dpi=100)
    finally:
        plt.close(fig)
