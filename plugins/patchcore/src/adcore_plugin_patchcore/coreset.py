"""Greedy coreset selection (minimax facility location), as in PatchCore.

The official algorithm: project features to a low dimension with a random
linear map, start every point's distance at its mean distance to a few random
points, then repeatedly pick the point farthest from the selection and lower
every point's distance with one new distance row.

This is that algorithm, exactly (same picks up to float rounding), but each
new row is computed only where it can change something. Every point keeps the
selected centre it was last measured against, ``a(x)``, and that distance
``D(x)``. By the triangle inequality a new centre ``c`` can only lower
``mind(x)`` when ``|a(x) - c| < D(x) + mind(x)``; the distances from ``c`` to
the earlier centres are one small product, so the test costs a gather per
point instead of a 128-dimensional distance. After the first few hundred picks
a pick measures a few per cent of the points (while most points are in reach, a plain full pass
is used). Buffers are allocated up front:
memory does not grow with the number of picks.
"""

from __future__ import annotations

import math

import torch

from adcore.progress import bar

_DENSE_SHARE = 0.2  # above this share of candidate points a full pass is cheaper than gathering them
_RECHECK_EVERY = 8  # while passes are dense, test for pruning only every few picks

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
        seed: seeds the projection and the start points.
        progress: show a progress bar.

    Returns:
        (K,) long tensor of selected row indices in pick order, K = max(1, round(N * ratio)).
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
    for s in starts:  # a handful of rows: the official initialisation
        mind += _distances(z, z_sq, z[s], z_sq[s])
    mind /= len(starts)  # distances (not squared) throughout

    nearest = torch.zeros(n, dtype=torch.long)  # a(x): index (in pick order) of the centre measured
    measured = torch.full((n,), float("inf"))  # D(x): distance to that centre
    slack = torch.empty(n)  # D(x) + mind(x): how far a new centre may lie from a(x) and still matter
    centres = torch.empty(count, z.shape[1])
    centres_sq = torch.empty(count)
    selected = torch.empty(count, dtype=torch.long)
    recheck_at = 0
    with bar(total=count, desc="coreset", unit="pick", enabled=progress) as progress_bar:
        for i in range(count):
            pick = int(mind.argmax())
            selected[i] = pick
            centre, centre_sq = z[pick], z_sq[pick]
            centres[i], centres_sq[i] = centre, centre_sq
            candidate = None
            if i > 0 and i >= recheck_at:
                reach = _distances(centres[:i], centres_sq[:i], centre, centre_sq)
                candidate = reach[nearest] < slack
                if int(candidate.sum()) > n * _DENSE_SHARE:
                    candidate = None
                    recheck_at = i + _RECHECK_EVERY  # most points in reach: the test would be wasted
            if candidate is None:
                # Early picks reach most points: one streaming pass beats gathering them.
                dist = _distances(z, z_sq, centre, centre_sq)
                nearest.masked_fill_(dist < measured, i)
                torch.minimum(measured, dist, out=measured)
                torch.minimum(mind, dist, out=mind)
                mind[pick] = 0.0
                torch.add(measured, mind, out=slack)
            else:
                idx = candidate.nonzero().squeeze(1)
                dist = _distances(z[idx], z_sq[idx], centre, centre_sq)
                closer = dist < measured[idx]
                moved = idx[closer]
                nearest[moved] = i
                measured[moved] = dist[closer]
                mind[idx] = torch.minimum(mind[idx], dist)
                mind[pick] = 0.0
                slack[idx] = measured[idx] + mind[idx]
            progress_bar.update(1)
    return selected


def _distances(points: torch.Tensor, points_sq: torch.Tensor, centre: torch.Tensor,
               centre_sq: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of (M, d) points to one centre, from precomputed squared norms."""
    return (points_sq - 2.0 * (points @ centre) + centre_sq).clamp_min_(0).sqrt_()
