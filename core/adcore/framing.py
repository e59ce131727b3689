"""How an image file becomes what a detector sees, and how its answer becomes one map per image.

Three framings, applied by the core around any detector (no plugin code):

* ``squash`` (the default): the image is resized to ``image_size`` squared,
  aspect ratio lost; the map is that square.
* ``keep``: the longest side is resized to ``image_size``, the aspect ratio
  kept, and the rest of the square is padded (edge pixels repeated, which
  gives the network the weakest edge). Padding is never scored: the map is
  cropped to the image's own pixels, the image score is the maximum of that
  crop (a detector's own score could come from the padding), and thresholds
  and metrics only ever see the crop.
* tiles (``tile`` set): the image is scaled by ``tile_scale`` (1 = native),
  aspect ratio kept, and cut into overlapping tiles (:mod:`adcore.tiling`);
  ``fit`` sees the tiles of normal images, the tile maps are stitched by
  maximum, and the image score is the maximum of the tiles' scores. With
  ``per_position`` (aligned parts, every image of one size) each tile
  position gets its own detector (:mod:`adcore.positions`).

Maps come back at the *working* resolution: the square, the crop, or the
scaled image. The framing is saved in a model's metadata, so ``adcore predict``
applies exactly what the model was fitted with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np
import torch

from adcore.data.loading import ImageBatches
from adcore.detector import Detector, Prediction
from adcore.errors import ConfigError, DataError
from adcore.imageio import image_size, read_mask, read_rgb
from adcore.options import FramingFields
from adcore.positions import PositionModels, fit_positions
from adcore.progress import Progress, bar, silent
from adcore.tiling import TileGrid, cut_tiles, stitch_maps, tile_grid

__all__ = ["Framing", "Inspection", "Predictor"]


class Predictor(Protocol):
    """What a framing drives: a fitted detector or an ONNX export (``predict`` as Detector's)."""

    def predict(self, images: Any, progress: str | None = ...) -> Prediction: ...


@attrs.frozen
class Inspection:
    """Scores and maps of images framed by a :class:`Framing`.

    Attributes:
        scores: (N,) float32 image scores.
        maps: one (h, w) float32 map per image at its working resolution (sizes may differ).
    """

    scores: np.ndarray
    maps: list[np.ndarray]


@attrs.frozen(kw_only=True)
class Framing(FramingFields):
    """A resizing mode or a tiling, with its numbers (its fields are :class:`~adcore.options.FramingFields`,
    checked by :class:`~adcore.options.RunOptions`)."""

    # -- sizes -----------------------------------------------------------
    @property
    def input_size(self) -> int:
        """Side of the squares the detector sees: the tile, else the image size (what an export traces)."""
        return self.image_size if self.tile is None else self.tile

    def working_shape(self, width: int, height: int) -> tuple[int, int]:
        """(h, w) of the map of an image of ``width`` × ``height`` (its working resolution)."""
        if self.tile is not None:
            return max(1, round(height * self.tile_scale)), max(1, round(width * self.tile_scale))
        if self.resize == "squash":
            return self.image_size, self.image_size
        scale = self.image_size / max(width, height)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def check_images(self, paths: Sequence[Path]) -> list[tuple[int, int]]:
        """Each image's (width, height) from its header; a tile larger than an image is refused up front."""
        sizes = [image_size(p) for p in paths]
        if self.tile is None:
            return sizes
        if self.per_position and sizes:
            for path, size in zip(paths, sizes):
                if self.working_shape(*size) != self.working_shape(*sizes[0]):
                    raise ConfigError(f"--per-position needs every image of a category at one size: {path} is "
                                      f"{size[0]}x{size[1]}, {paths[0]} is {sizes[0][0]}x{sizes[0][1]}")
        for path, (width, height) in zip(paths, sizes):
            h, w = self.working_shape(width, height)
            if self.tile > min(h, w):
                raise ConfigError(f"--tile {self.tile} is larger than {path} ({width}x{height}, {w}x{h} at "
                                  f"--tile-scale {self.tile_scale:g}); choose a smaller --tile or a larger "
                                  "--tile-scale")
        return sizes

    def metadata(self) -> dict[str, Any]:
        """What a model file records (``metadata.framing``), checked by :mod:`adcore.modelfile`."""
        return {"resize": self.resize, "tile": self.tile, "tile_overlap": self.tile_overlap,
                "tile_scale": self.tile_scale, "per_position": self.per_position}

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Framing:
        """The framing a model was fitted with; a model saved before framings existed was squashed."""
        return cls(image_size=int(metadata.get("image_size", 256)), **metadata.get("framing", {}))

    # -- reading ---------------------------------------------------------
    def read(self, path: Path) -> np.ndarray:
        """The image at its working resolution, (h, w, 3) uint8, no padding."""
        width, height = image_size(path)
        h, w = self.working_shape(width, height)
        return read_rgb(path, (w, h))

    def read_mask(self, path: Path | None, shape: tuple[int, int]) -> np.ndarray:
        """A ground-truth mask at ``shape`` (h, w); all False for a normal image."""
        return np.zeros(shape, bool) if path is None else read_mask(path, (shape[1], shape[0]))

    def _pixels(self, path: Path) -> torch.Tensor:
        """(3, H, W) uint8: the padded square in keep mode, the scaled image for tiles."""
        image = self.read(path)
        if self.tile is None and self.resize == "keep":
            s = self.image_size
            image = np.pad(image, ((0, s - image.shape[0]), (0, s - image.shape[1]), (0, 0)), mode="edge")
        return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)

    def _detector_input(self, path: Path) -> torch.Tensor:
        """(3, H, W) float in [0, 1]: what the detector sees of ``path``."""
        return self._pixels(path).float().div_(255.0)

    def _inputs(self, paths: Sequence[Path], read: Callable[[Path], torch.Tensor] | None = None
                ) -> Iterator[torch.Tensor]:
        """Each image's detector input (or ``read(path)``), the next one decoded on a thread while this one is used."""
        if not paths:
            return
        read = read or self._detector_input
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read, paths[0])
            for path in paths[1:]:
                ready = pending.result()
                pending = pool.submit(read, path)
                yield ready
            yield pending.result()

    # -- fit and predict -------------------------------------------------
    def fit_images(self, paths: Sequence[Path], batch_size: int) -> ImageBatches | _FramedBatches:
        """What ``Detector.fit`` takes: batches of framed normal images (tiles, with tiling)."""
        if self.tile is None and self.resize == "squash":
            return ImageBatches(paths, self.image_size, batch_size)
        return _FramedBatches(self, list(paths), batch_size)

    def fit_positions(self, make: Callable[[], Detector], paths: Sequence[Path], batch_size: int,
                      progress: Progress = silent) -> PositionModels:
        """With ``per_position``: one detector from ``make()`` per tile position, fitted on that tile of ``paths``."""
        height, width = self.working_shape(*image_size(paths[0]))  # check_images made them all this size
        grid = tile_grid(height, width, self.tile, self.tile_overlap)  # type: ignore[arg-type]
        return fit_positions(make, lambda chosen: self._inputs(chosen, self._pixels), paths, grid, batch_size,
                             progress)

    def predict(self, scorer: Predictor, paths: Sequence[Path], batch_size: int,
                progress: str | None = "predict") -> Inspection:
        """Score images and return one map per image at its working resolution."""
        if isinstance(scorer, PositionModels):
            return self._predict_positions(scorer, list(paths), batch_size, progress)
        if self.tile is None and self.resize == "squash":
            prediction = scorer.predict(ImageBatches(paths, self.image_size, batch_size), progress=progress)
            return Inspection(prediction.scores, list(prediction.anomaly_maps))
        if self.tile is None:
            return self._predict_kept(scorer, list(paths), batch_size, progress)
        return self._predict_tiled(scorer, list(paths), batch_size, progress)

    def _predict_kept(self, scorer: Predictor, paths: list[Path], batch_size: int,
                      progress: str | None) -> Inspection:
        prediction = scorer.predict(_FramedBatches(self, paths, batch_size), progress=progress)
        maps = []
        for path, square in zip(paths, prediction.anomaly_maps):
            h, w = self.working_shape(*image_size(path))
            maps.append(np.ascontiguousarray(square[:h, :w]))
        scores = np.array([m.max() for m in maps], dtype=np.float32)  # padding never scored
        return Inspection(scores, maps)

    def _predict_tiled(self, scorer: Predictor, paths: list[Path], batch_size: int,
                       progress: str | None) -> Inspection:
        scores, maps = [], []
        with bar(total=len(paths), desc=progress or "tiles", unit="img", enabled=progress is not None) as shown:
            for image in self._inputs(paths):
                grid = tile_grid(image.shape[1], image.shape[2], self.tile, self.tile_overlap)  # type: ignore[arg-type]
                stitched = torch.full((1, grid.height, grid.width), float("-inf"))
                best = float("-inf")
                for rows in _row_groups(grid, batch_size):
                    part = scorer.predict(cut_tiles(image[None], rows), progress=None)
                    stitch_maps(torch.from_numpy(part.anomaly_maps), rows, out=stitched)
                    best = max(best, float(part.scores.max()))  # the worst tile decides, never the mean
                scores.append(best)
                maps.append(stitched[0].numpy())
                shown.update(1)
        return Inspection(np.array(scores, dtype=np.float32), maps)

    def _predict_positions(self, scorer: PositionModels, paths: list[Path], batch_size: int,
                           progress: str | None) -> Inspection:
        """A few images at a time: each detector scores its own tile of all of them in one batch."""
        grid = scorer.grid
        chunk = max(1, batch_size // grid.count)
        scores, maps = [], []
        with bar(total=len(paths), desc=progress or "tiles", unit="img", enabled=progress is not None) as shown:
            held: list[torch.Tensor] = []
            for i, (path, image) in enumerate(zip(paths, self._inputs(paths))):
                if tuple(image.shape[1:]) != (grid.height, grid.width):
                    raise DataError(f"{path}: {image.shape[2]}x{image.shape[1]} at the working resolution, but this "
                                    f"per-position model was fitted on {grid.width}x{grid.height} images")
                held.append(image)
                if len(held) == chunk or i == len(paths) - 1:
                    best, tile_maps = scorer.predict_images(torch.stack(held))
                    scores.append(best)
                    maps.extend(stitch_maps(tile_maps.view(-1, grid.tile, grid.tile), grid).numpy())
                    shown.update(len(held))
                    held = []
        return Inspection(np.concatenate(scores) if scores else np.zeros(0, np.float32), maps)


def _row_groups(grid: TileGrid, batch_size: int) -> Iterator[TileGrid]:
    """The grid in groups of whole tile rows of about ``batch_size`` tiles: bounded memory per step."""
    per_group = max(1, batch_size // len(grid.cols))
    for start in range(0, len(grid.rows), per_group):
        yield attrs.evolve(grid, rows=grid.rows[start: start + per_group])


class _FramedBatches:
    """A re-iterable of batches of framed images (keep: padded squares; tiling: tiles), with their count."""

    def __init__(self, framing: Framing, paths: list[Path], batch_size: int) -> None:
        self.framing = framing
        self.paths = paths
        self.batch_size = batch_size

    def __len__(self) -> int:
        if self.framing.tile is None:
            return len(self.paths)
        return sum(self._grid(*self.framing.working_shape(*image_size(p))).count for p in self.paths)

    def _grid(self, height: int, width: int) -> TileGrid:
        return tile_grid(height, width, self.framing.tile, self.framing.tile_overlap)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[torch.Tensor]:
        pending: list[torch.Tensor] = []
        held = 0
        for image in self.framing._inputs(self.paths):
            pieces = image[None] if self.framing.tile is None else cut_tiles(image[None], self._grid(*image.shape[1:]))
            pending.append(pieces)
            held += len(pieces)
            while held >= self.batch_size:
                merged = torch.cat(pending)
                yield merged[: self.batch_size]
                pending, held = [merged[self.batch_size:]], len(merged) - self.batch_size
        if held:
            yield torch.cat(pending)
