"""Batches of decoded images for detectors, decoded one batch ahead on a thread.

Decoding (Pillow) and the network (torch) both release the GIL, so the next
batch is read while the current one is processed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from adcore.imageio import read_mask, read_rgb

__all__ = ["ImageBatches", "load_images", "load_masks"]


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Read images as one (N, 3, size, size) float32 tensor in [0, 1]."""
    array = np.stack([read_rgb(p, size) for p in paths])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0)


def load_masks(paths: Sequence[Path | None], size: int) -> np.ndarray:
    """Masks as (N, size, size) bool; an absent mask (normal image) is all False."""
    masks = np.zeros((len(paths), size, size), dtype=bool)
    for i, path in enumerate(paths):
        if path is not None:
            masks[i] = read_mask(path, size)
    return masks


class ImageBatches:
    """A re-iterable sequence of image batches read from files.

    Args:
        paths: image files, in order.
        image_size: side of the square every image is resized to.
        batch_size: images per batch.
    """

    def __init__(self, paths: Sequence[Path], image_size: int, batch_size: int = 32) -> None:
        self.paths = list(paths)
        self.image_size = image_size
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[torch.Tensor]:
        chunks = [self.paths[i: i + self.batch_size] for i in range(0, len(self.paths), self.batch_size)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(load_images, chunks[0], self.image_size)
            for chunk in chunks[1:]:
                ready = pending.result()
                pending = pool.submit(load_images, chunk, self.image_size)
                yield ready
            yield pending.result()
