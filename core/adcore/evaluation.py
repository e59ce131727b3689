"""A test set's metrics (:func:`evaluate`), and pixel metrics at a chosen evaluation size, one image at a time.

:func:`evaluate` computes every metric of ``metrics.json`` and the ROC points
plotted from them, each curve from one sort. Pixel metrics at the working
resolution use the maps and masks in memory; at another ``--eval-size`` they
(AUPRO included) are streamed. Why: at each image's native size a test split can hold 60 million pixels; its
maps, masks and a sort of them all at once would not fit. Here each map is
upsampled (bilinear) and each mask read (nearest neighbour) at the evaluation
size only while that image is counted (:func:`adcore.metrics.pixel_roc_streamed`),
so memory holds the defect pixels' scores and one image. The result is exact:
the same pixel AUROC and AUPRO as the same pixels held in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import torch

from adcore import metrics
from adcore.imageio import read_mask
from adcore.metrics import StreamedROC, pixel_roc_streamed
from adcore.ops import upsample_maps
from adcore.results import Metrics

if TYPE_CHECKING:
    from adcore.data import Sample
    from adcore.framing import Framing, Inspection

__all__ = ["Evaluation", "eval_shape", "evaluate", "flat", "streamed_pixel_roc"]

Points = tuple[np.ndarray, np.ndarray]


@attrs.frozen
class Evaluation:
    """A test set's metrics and what the outputs plot from them.

    Attributes:
        metrics: every metric of metrics.json (None where undefined).
        image_roc: image ROC (fpr, tpr), None with one class only.
        pixel_roc: pixel ROC (fpr, tpr), None without defect pixels.
        masks: the working-resolution masks read for the pixel metrics, for the panels to reuse; None
            when pixel metrics were streamed at another size or there are no masks.
    """

    metrics: Metrics
    image_roc: Points | None
    pixel_roc: Points | None
    masks: list[np.ndarray] | None


def evaluate(framing: Framing, test: Sequence[Sample], prediction: Inspection, *, has_masks: bool,
             eval_size: str | int, native_sizes: Sequence[tuple[int, int]],
             image_threshold: float | None) -> Evaluation:
    """Image metrics, and pixel metrics at ``eval_size``: in memory at the working size, else streamed.

    Args:
        framing: how the test images were framed (masks are read at each map's shape).
        test: the test samples, in the order of ``prediction``.
        prediction: their scores and working-resolution maps.
        has_masks: whether the category has ground-truth masks for its defects.
        eval_size: "working", "native" or a longest side.
        native_sizes: each test file's (width, height).
        image_threshold: the calibrated image threshold (None: no calibration images).
    """
    labels = np.array([s.label for s in test])
    scores = prediction.scores
    image = metrics.roc_curve(labels, scores)
    best = metrics.f1_max(labels, scores)
    at_threshold = (metrics.threshold_metrics(labels, scores, image_threshold)
                    if image_threshold is not None else {"precision": None, "recall": None, "f1": None})
    in_memory = has_masks and eval_size == "working"
    masks = [framing.read_mask(s.mask_path, m.shape) for s, m in zip(test, prediction.maps)] if in_memory else None
    pixel_auroc = aupro = pixel_points = None
    if masks is not None and any(m.any() for m in masks):
        pixel = metrics.roc_curve(flat(masks), flat(prediction.maps))
        pixel_auroc, aupro = _defined(pixel.auroc), _defined(metrics.aupro(masks, prediction.maps))
        pixel_points = pixel.points() if pixel_auroc is not None else None
    elif has_masks and not in_memory:
        shapes = [eval_shape(eval_size, size, m.shape) for size, m in zip(native_sizes, prediction.maps)]
        streamed = streamed_pixel_roc(prediction.maps, [s.mask_path for s in test], shapes)
        pixel_auroc, aupro = _defined(streamed.auroc), _defined(streamed.aupro)
        pixel_points = streamed.points() if pixel_auroc is not None else None
    values = Metrics(
        image_auroc=_defined(image.auroc),
        pixel_auroc=pixel_auroc,
        aupro=aupro,
        image_f1_max=_defined(best[0]) if best else None,
        image_f1_max_threshold_on_test=_defined(best[1]) if best else None,
        image_precision=_defined(at_threshold["precision"]),
        image_recall=_defined(at_threshold["recall"]),
        image_f1=_defined(at_threshold["f1"]),
    )
    image_points = image.points() if image.auroc is not None else None
    return Evaluation(values, image_points, pixel_points, masks)


def flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Every pixel of maps or masks of possibly different sizes, as one flat array."""
    return np.concatenate([a.reshape(-1) for a in arrays]) if len(arrays) else np.zeros(0, np.float32)


def _defined(value: Any) -> Any:
    """None for a metric that is undefined here (NaN or infinite), so metrics.json stays valid JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def eval_shape(eval_size: str | int, native: tuple[int, int], working: tuple[int, int]) -> tuple[int, int]:
    """(h, w) an image is evaluated at: its map's own ("working"), its file's ("native"), or a longest side.

    Args:
        eval_size: "working", "native" or an int (longest side, aspect ratio of the file kept).
        native: the file's (width, height).
        working: the map's (h, w).
    """
    width, height = native
    if eval_size == "working":
        return working
    if eval_size == "native":
        return height, width
    scale = int(eval_size) / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


class _Pairs:
    """(mask, map) of every image at its evaluation size, made again on each pass."""

    def __init__(self, maps: Sequence[np.ndarray], masks: Sequence[Path | None],
                 shapes: Sequence[tuple[int, int]]) -> None:
        self.maps, self.masks, self.shapes = maps, masks, shapes

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for image_map, mask, shape in zip(self.maps, self.masks, self.shapes):
            big = upsample_maps(torch.from_numpy(np.ascontiguousarray(image_map))[None], shape)[0].numpy()
            yield (np.zeros(shape, bool) if mask is None else read_mask(mask, (shape[1], shape[0]))), big


def streamed_pixel_roc(maps: Sequence[np.ndarray], masks: Sequence[Path | None],
                       shapes: Sequence[tuple[int, int]]) -> StreamedROC:
    """Exact pixel ROC and AUPRO of working-resolution ``maps`` against mask files, each at its shape in ``shapes``."""
    return pixel_roc_streamed(_Pairs(maps, masks, shapes))
