"""Greedy coreset selection (minimax facility location), as in PatchCore.

The official algorithm: project features to a low dimension with a random
linear map, start every point's distance at its mean distance to a few random
points, then repeatedly pick the point farthest from the current selection and
lower every point's distance with one new distance row.

The selection here is that algorithm, exactly, but each new row is only
computed where it can change something: points are grouped once into compact
blocks (a few k-means steps), and a block whose every point is already closer
to the selection than the triangle inequality allows the new point to be is
skipped. Late picks touch a small share of the points, so the loop runs many
times faster than a full pass per pick. All buffers are allocated up front:
memory does not grow with the number of picks.
"""

from __future__ import annotations

import math

import torch

from adcore.progress import bar

_KMEANS_STEPS = 4


def random_projection(features: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Project (N, D) to (N, dim) with a Gaussian random map (identity when D <= dim)."""
    if features.shape[1] <= dim:
        return features
    matrix = torch.randn(features.shape[1], dim, generator=generator) / math.sqrt(dim)
    return features @ matrix


def greedy_coreset(features: torch.Tensor, ratio: float, projection_dim: int = 128,
                   start_points: int = 10, seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Indices of the greedy coreset of ``features``.

    Args:
        features: (N, D) patch features.
        ratio: share of points to keep, in (0, 1].
        projection_dim: dimension of the random projection used for distances.
        start_points: random points whose mean distance initialises the selection.
        seed: seeds the projection, the start points and the block grouping.
        progress: show a progress bar.

    Returns:
        (K,) long tensor of selected row indices, K = max(1, round(N * ratio)), in pick order.
    """
    n = features.shape[0]
    count = max(1, min(n, int(round(n * ratio))))
    if count >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    z = random_projection(features.float(), projection_dim, generator).contiguous()
    z_sq = (z * z).sum(1)
    starts = torch.randperm(n, generator=generator)[: min(start_points, n)]
    mind = torch.zeros(n)
    for s in starts:  # a handful of rows, official initialisation
        mind += (z_sq - 2.0 * (z @ z[s]) + z_sq[s]).clamp_min_(0).sqrt_()
    mind = (mind / len(starts)).square_()  # squared distances from here on

    order, block_start, block_len = _blocks(z, generator)
    z, z_sq, mind = z[order].contiguous(), z_sq[order].contiguous(), mind[order].contiguous()
    n_blocks = block_start.shape[0]
    point_block = torch.repeat_interleave(torch.arange(n_blocks), block_len)
    centroids = torch.zeros(n_blocks, z.shape[1]).index_add_(0, point_block, z) / block_len.unsqueeze(1)
    radius = torch.zeros(n_blocks).scatter_reduce_(
        0, point_block, (z - centroids[point_block]).norm(dim=1), "amax", include_self=False)
    block_max = torch.zeros(n_blocks).scatter_reduce_(0, point_block, mind, "amax", include_self=False)
    selected = torch.empty(count, dtype=torch.long)
    full_pass_below = n // 2
    with bar(total=count, desc="coreset", unit="pick") as progress_bar:
        progress_bar.disable = progress_bar.disable or not progress
        for i in range(count):
            b = int(block_max.argmax())
            start = int(block_start[b])
            pick = start + int(mind[start: start + int(block_len[b])].argmax())
            selected[i] = pick
            point = z[pick]
            reach = (centroids - point).norm(dim=1) - radius  # lower bound of distance to each block
            candidate = (reach.clamp_min(0).square() < block_max)
            candidate[b] = True
            blocks = candidate.nonzero().squeeze(1)
            lengths = block_len[blocks]
            total = int(lengths.sum())
            if total > full_pass_below:
                dist = z_sq - 2.0 * (z @ point) + z_sq[pick]
                torch.minimum(mind, dist, out=mind)
                mind[pick] = 0.0
                block_max.scatter_reduce_(0, point_block, mind, "amax", include_self=False)
            else:
                offsets = torch.cumsum(lengths, 0) - lengths
                idx = torch.repeat_interleave(block_start[blocks] - offsets, lengths) + torch.arange(total)
                dist = z_sq[idx] - 2.0 * (z[idx] @ point) + z_sq[pick]
                mind[idx] = torch.minimum(mind[idx], dist)
                mind[pick] = 0.0
                block_max.scatter_reduce_(0, point_block[idx], mind[idx], "amax", include_self=False)
            progress_bar.update(1)
    return order[selected]


def _blocks(z: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group points into about sqrt(N) compact blocks with a few k-means steps.

    Returns the permutation that makes blocks contiguous, and each block's start and length.
    """
    n = z.shape[0]
    k = max(1, min(n, int(math.sqrt(n))))
    centres = z[torch.randperm(n, generator=generator)[:k]].clone()
    rows = max(1, (64 * 2**20) // (4 * k))
    assign = torch.empty(n, dtype=torch.long)
    for step in range(_KMEANS_STEPS):
        c_sq = (centres * centres).sum(1)
        for s in range(0, n, rows):
            block = torch.addmm(c_sq.unsqueeze(0), z[s: s + rows], centres.t(), alpha=-2.0)
            assign[s: s + rows] = block.argmin(1)
        if step < _KMEANS_STEPS - 1:
            sums = torch.zeros_like(centres).index_add_(0, assign, z)
            counts = torch.bincount(assign, minlength=k).unsqueeze(1)
            centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    order = torch.argsort(assign, stable=True)
    counts = torch.bincount(assign, minlength=k)
    counts = counts[counts > 0]
    starts = torch.cumsum(counts, 0) - counts
    return order, starts, counts
