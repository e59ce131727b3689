"""Cutting images into overlapping tiles and stitching tile maps back into one map.

Why: a defect a few tens of pixels wide in a 2905 px photograph vanishes when
the image is squashed to 256 px. Cut into tiles at (or near) native resolution,
the defect keeps its size, and every detector sees inputs of the size it was
built for without knowing about tiles.

Tiles start every ``round(tile * (1 - overlap))`` pixels and the last one is
moved flush with the far edge, so tiles cover the whole image and never hold
padding. Where tiles overlap, stitched maps keep the **maximum**: a defect seen
by one tile keeps its full score instead of being averaged with tiles that did
not see it (anomalib's tiler averages, which dilutes it).
"""

from __future__ import annotations

import attrs
import torch

__all__ = ["TileGrid", "cut_tiles", "stitch_maps", "tile_grid"]


@attrs.frozen
class TileGrid:
    """Where the tiles of an image of ``height`` × ``width`` start.

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        tile: side of the square tiles.
        rows: top edge of each tile row, increasing.
        cols: left edge of each tile column, increasing.
    """

    height: int
    width: int
    tile: int
    rows: torch.Tensor
    cols: torch.Tensor

    @property
    def count(self) -> int:
        """Tiles per image."""
        return len(self.rows) * len(self.cols)


def _starts(length: int, tile: int, stride: int) -> torch.Tensor:
    starts = torch.arange(0, length - tile + 1, stride)
    if int(starts[-1]) + tile < length:  # flush with the far edge: the whole image is covered, nothing padded
        starts = torch.cat([starts, torch.tensor([length - tile])])
    return starts


def tile_grid(height: int, width: int, tile: int, overlap: float) -> TileGrid:
    """The tiles of one image; ``tile`` must fit in both sides (the caller checks and names the option)."""
    if not (tile <= height and tile <= width):
        raise ValueError(f"tile {tile} does not fit in {width}x{height}")
    stride = max(1, round(tile * (1.0 - overlap)))
    return TileGrid(height, width, tile, _starts(height, tile, stride), _starts(width, tile, stride))


def cut_tiles(images: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """(B, C, H, W) images -> (B * grid.count, C, tile, tile) tiles, row-major per image.

    A strided view of every tile position (``unfold``, no copy) indexed at the
    grid's starts: one gather, no loop over tiles.
    """
    t = grid.tile
    windows = images.unfold(2, t, 1).unfold(3, t, 1)  # (B, C, H-t+1, W-t+1, t, t), a view
    picked = windows[:, :, grid.rows[:, None], grid.cols[None, :]]  # (B, C, rows, cols, t, t): only the tiles copied
    return picked.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1], t, t)


def stitch_maps(tile_maps: torch.Tensor, grid: TileGrid, out: torch.Tensor | None = None) -> torch.Tensor:
    """(B * grid.count, tile, tile) tile maps -> (B, H, W), overlaps combined by maximum (scatter-max).

    Pixels no tile covers are -inf. With ``out`` (B, H, W) the maps are maxed into it in place, so an
    image's tiles can be stitched a few rows at a time (``grid`` then lists only those rows).
    """
    t = grid.tile
    batch = tile_maps.shape[0] // grid.count
    offsets = torch.arange(t)
    ys = (grid.rows[:, None] + offsets)[:, None, :, None]  # (rows, 1, t, 1)
    xs = (grid.cols[:, None] + offsets)[None, :, None, :]  # (1, cols, 1, t)
    index = (ys * grid.width + xs).reshape(1, -1).to(tile_maps.device).expand(batch, -1)
    if out is None:
        out = torch.full((batch, grid.height, grid.width), float("-inf"), dtype=tile_maps.dtype,
                         device=tile_maps.device)
    out.view(batch, -1).scatter_reduce_(1, index, tile_maps.reshape(batch, -1), reduce="amax")
    return out
