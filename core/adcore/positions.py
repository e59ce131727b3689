"""One detector per tile position, for aligned parts (``--tile SIZE --per-position``).

Why: with a fixed camera and one view per category (the thesis's forged parts),
the tile at one place of the grid always shows the same place of the part. A
model of that tile alone learns what is normal *there*, so a bolt hole that is
normal in one corner still counts as a defect elsewhere, which one model of
every tile cannot tell apart. It is PaDiM's per-position idea one level up,
and it needs every image of a category at one size (one grid).

A per-position model folder is the first position's ordinary model folder,
whose metadata records the grid (``positions``: height, width, count), with
each further position's model in ``positions/<k>/`` (row-major order). Each
is checked on load like any model; the whole folder is written atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adcore import fs
from adcore.detector import Detector, load_model
from adcore.errors import ModelFileError
from adcore.modelfile import CONFIG_FILE, MODEL_FORMAT
from adcore.progress import Progress, log_line, silent
from adcore.tiling import TileGrid, cut_tiles, tile_grid

__all__ = ["FIT_TILE_BYTES", "PositionModels", "fit_positions", "load_positions"]

#: Tiles of the training images held in memory at once (uint8): positions are fitted in groups within it.
FIT_TILE_BYTES = 1 << 30
_FOLDER = "positions"


class PositionModels:
    """Fitted detectors, one per tile of a fixed grid; scores each image's tile ``k`` with detector ``k``.

    Attributes:
        detectors: one fitted detector per tile position, row-major.
        grid: the tile grid of every image (its working height and width).
    """

    def __init__(self, detectors: Sequence[Detector], grid: TileGrid) -> None:
        if len(detectors) != grid.count:
            raise ValueError(f"{len(detectors)} detectors for {grid.count} tile positions")
        self.detectors = list(detectors)
        self.grid = grid

    @property
    def name(self) -> str:
        return self.detectors[0].name

    @property
    def config(self) -> Any:
        """The detectors' shared configuration (all were built from the same parameters)."""
        return self.detectors[0].config

    @property
    def loss_history_(self) -> list[float]:
        """Mean training loss per epoch over the positions (empty for training-free detectors)."""
        histories = [d.loss_history_ for d in self.detectors]
        if not histories[0] or any(len(h) != len(histories[0]) for h in histories):
            return []
        return [float(v) for v in np.mean(histories, axis=0)]

    def predict_images(self, images: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """(B, 3, H, W) images of the grid's size -> (B,) worst-tile scores and (B, count, tile, tile) tile maps."""
        grid = self.grid
        tiles = cut_tiles(images, grid).view(len(images), grid.count, *images.shape[1:2], grid.tile, grid.tile)
        scores = np.empty((len(images), grid.count), np.float32)
        maps = torch.empty(len(images), grid.count, grid.tile, grid.tile)
        for k, detector in enumerate(self.detectors):
            part = detector.predict(tiles[:, k], progress=None)
            scores[:, k] = part.scores
            maps[:, k] = torch.from_numpy(part.anomaly_maps)
        return scores.max(axis=1), maps  # the worst tile decides, never the mean

    def save(self, folder: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write every position's model into ``folder`` in one atomic step (see the module docstring)."""
        grid = self.grid
        first = {**(metadata or {}), "positions": {"height": grid.height, "width": grid.width, "count": grid.count}}

        def write(staging: Path) -> None:
            self.detectors[0].write_files(staging, first)
            for k, detector in enumerate(self.detectors[1:], start=1):
                detector.write_files(_position_folder(staging, k), {})

        return fs.replace_folder(Path(folder), write, fs.Kind("a saved model folder", MODEL_FORMAT, CONFIG_FILE))


def fit_positions(make: Callable[[], Detector], images: Callable[[Sequence[Path]], Iterator[torch.Tensor]],
                  paths: Sequence[Path], grid: TileGrid, batch_size: int, progress: Progress = silent
                  ) -> PositionModels:
    """Fit one detector from ``make()`` per position on that tile of every image in ``paths``.

    Args:
        make: builds an unfitted detector (the same parameters each time).
        images: yields each path's (3, H, W) uint8 image at the working resolution, in order.
        paths: the normal training images, all of the grid's size (checked by the framing).
        grid: their tile grid.
        batch_size: tiles per ``fit`` batch.
        progress: each position's fit's progress, as ``Detector.fit`` takes it.

    The training images' tiles of a group of positions are held in memory as
    uint8 (at most :data:`FIT_TILE_BYTES`), so each image is decoded once per
    group, not once per position.
    """
    tile_bytes = 3 * grid.tile * grid.tile
    group = max(1, min(grid.count, FIT_TILE_BYTES // max(1, len(paths) * tile_bytes)))
    detectors: list[Detector] = []
    for start in range(0, grid.count, group):
        stop = min(grid.count, start + group)
        held = torch.empty(len(paths), stop - start, 3, grid.tile, grid.tile, dtype=torch.uint8)
        for i, image in enumerate(images(paths)):
            held[i] = cut_tiles(image[None], grid)[start:stop]
        for k in range(start, stop):
            log_line(f"tile position {k + 1}/{grid.count}: fitting on {len(paths)} tiles")
            detectors.append(make().fit(_Tiles(held[:, k - start], batch_size), progress=progress))
        del held
    return PositionModels(detectors, grid)


def load_positions(folder: Path, first: Detector, metadata: Mapping[str, Any],
                   device: str | None = None) -> PositionModels:
    """The per-position model in ``folder``, whose first position ``first`` was loaded with ``metadata``."""
    shape = metadata.get("positions")
    framing = metadata["framing"]
    if not isinstance(shape, dict):
        raise ModelFileError(f"{folder / CONFIG_FILE}: metadata field 'positions' is missing (a per-position "
                             "model records its grid)")
    grid = tile_grid(shape["height"], shape["width"], framing["tile"], framing["tile_overlap"])
    if grid.count != shape["count"]:
        raise ModelFileError(f"{folder / CONFIG_FILE}: metadata field 'positions.count' is {shape['count']}, but "
                             f"a {shape['width']}x{shape['height']} image has {grid.count} tiles")
    detectors = [first]
    for k in range(1, grid.count):
        place = _position_folder(folder, k)
        if not (place / CONFIG_FILE).is_file():
            raise ModelFileError(f"{place}: the model of tile position {k + 1} of {grid.count} is missing")
        detector, _ = load_model(place, device)
        if detector.name != first.name:
            raise ModelFileError(f"{place}: holds a '{detector.name}' model, not '{first.name}' as position 1")
        detectors.append(detector)
    return PositionModels(detectors, grid)


def _position_folder(folder: Path, k: int) -> Path:
    return folder / _FOLDER / f"{k:03d}"


class _Tiles:
    """Re-iterable float batches in [0, 1] of (N, 3, t, t) uint8 tiles, with their count (what ``fit`` takes)."""

    def __init__(self, tiles: torch.Tensor, batch_size: int) -> None:
        self.tiles = tiles
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.tiles), self.batch_size):
            yield self.tiles[start: start + self.batch_size].float().div_(255.0)
