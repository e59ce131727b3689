"""Pixel metrics at a chosen evaluation size, one image at a time.

Why: at each image's native size a test split can hold 60 million pixels; its
maps, masks and a sort of them all at once would not fit. Here each map is
upsampled (bilinear) and each mask read (nearest neighbour) at the evaluation
size only while that image is counted (:func:`adcore.metrics.pixel_roc_streamed`),
so memory holds the defect pixels' scores and one image. The result is exact:
the same pixel AUROC as the same pixels held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from adcore.imageio import read_mask
from adcore.metrics import StreamedROC, pixel_roc_streamed
from adcore.ops import upsample_maps

__all__ = ["eval_shape", "streamed_pixel_roc"]


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
    """Exact pixel ROC of working-resolution ``maps`` against mask files, each at its shape in ``shapes``."""
    return pixel_roc_streamed(_Pairs(maps, masks, shapes))
