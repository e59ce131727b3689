"""Greedy coreset selection (minimax facility location), as in PatchCore.

The official algorithm: project features to a low dimension with a random
linear map, start every point's distance at its mean distance to a few random
points, then repeatedly pick the point farthest from the selection and lower
every point's distance with one new distance row.

This module picks exactly the same points, in rounds. A round takes the
``T`` points farthest from the selection as candidates; every other point's
distance is at most the (T+1)-th largest, ``τ``, and distances only shrink. Inside
the round the greedy loop runs on the candidates alone (T-long rows), and a
candidate whose updated distance is still at least ``τ`` is the global farthest point,
so it is the plain loop's next pick. When none is, one matrix product of all
points against the round's picks updates every distance. Many picks share one
pass over the N points, and that pass is a matrix product instead of a
matrix-vector product per pick.

For banks above ``exact_limit`` points the selection runs on contiguous shards
of at most that many points (a composable coreset: each shard keeps the same
share), so the cost grows as N × (shard picks) rather than N × picks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from adcore.progress import Progress, silent

__all__ = ["random_projection", "greedy_coreset", "sharded_coreset"]

_CANDIDATES = 8192  # points examined per round (T)
_BLOCK_BYTES = 8 * 2**20  # one (points, picks) block: stays in the last-level cache


def random_projection(features: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Project (N, D) to (N, dim) with a Gaussian random map (identity when D <= dim)."""
    if features.shape[1] <= dim:
        return features
    matrix = torch.randn(features.shape[1], dim, generator=generator) / math.sqrt(dim)
    return features @ matrix


def greedy_coreset(features: torch.Tensor, ratio: float, projection_dim: int = 128,
                   start_points: int = 10, seed: int = 0, progress: Progress = silent) -> torch.Tensor:
    """Indices of the greedy coreset of ``features``.

    Args:
        features: (N, D) patch features.
        ratio: share of points to keep, in (0, 1].
        projection_dim: dimension of the random projection used for distances.
        start_points: random points whose mean distance initialises the selection.
        seed: seeds the projection and the start points.
        progress: where the picks are counted.

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
    mind = _distances(z, z_sq, z[starts], z_sq[starts]).mean(1)  # the official initialisation
    selected = torch.empty(count, dtype=torch.long)
    filled = 0
    with progress("coreset", count, "pick") as task:
        while filled < count:
            picks = _round(z, z_sq, mind, count - filled)
            selected[filled: filled + len(picks)] = picks
            filled += len(picks)
            _lower(mind, z, z_sq, picks)
            task.advance(len(picks))
    return selected


def sharded_coreset(read_shard: Callable[[int, int], torch.Tensor], n: int, ratio: float, exact_limit: int,
                    projection_dim: int = 128, start_points: int = 10, seed: int = 0,
                    progress: Progress = silent) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy coreset of N points read as contiguous shards of at most ``exact_limit`` rows.

    ``read_shard(lo, hi)`` returns rows [lo, hi) (from memory or from disk); every
    shard keeps ``ratio`` of its rows. A single shard is :func:`greedy_coreset` itself.

    Returns:
        the selected indices (K,) and their rows (K, D), read while each shard is loaded.
    """
    shards = max(1, math.ceil(n / exact_limit))
    edges = [round(i * n / shards) for i in range(shards + 1)]
    indices, rows = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        shard = read_shard(lo, hi)
        picks = greedy_coreset(shard, ratio, projection_dim, start_points, seed, progress)
        indices.append(picks + lo)
        rows.append(shard[picks].float())
    return torch.cat(indices), torch.cat(rows).contiguous()


def _round(z: torch.Tensor, z_sq: torch.Tensor, mind: torch.Tensor, budget: int) -> torch.Tensor:
    """The plain loop's next picks (at least one) that the round's candidates can certify."""
    size = min(_CANDIDATES, z.shape[0] - 1)
    top, candidates = mind.topk(size + 1)
    ceiling = float(top[size])  # no other point is farther from the selection than this
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny per-pick steps: a thread barrier each would cost more than the work
    try:
        chosen = _certified_picks(z[candidates[:size]], z_sq[candidates[:size]], top[:size].clone(), ceiling,
                                  budget)
    finally:
        torch.set_num_threads(threads)
    return candidates[chosen]


def _certified_picks(cz: torch.Tensor, cz_sq: torch.Tensor, local: torch.Tensor, ceiling: float,
                     budget: int) -> torch.Tensor:
    """Greedy picks among the candidates while the farthest one stays at or above ``ceiling``."""
    chosen: list[int] = []
    while len(chosen) < budget:
        j = int(local.argmax())
        if chosen and float(local[j]) < ceiling:
            break
        chosen.append(j)
        torch.minimum(local, _distances(cz, cz_sq, cz[j: j + 1], cz_sq[j: j + 1])[:, 0], out=local)
        local[j] = -1.0  # picked
    return torch.tensor(chosen)


def _lower(mind: torch.Tensor, z: torch.Tensor, z_sq: torch.Tensor, picks: torch.Tensor) -> None:
    """mind = min(mind, distance to any of ``picks``), in cache-sized blocks.

    The minimum is taken over |p|² - 2 z·p before |z|² is added and the root taken: both
    are monotonic, so the result is bit-identical to the distances' minimum, and three
    passes over each (points, picks) block are saved.
    """
    rows = max(1, _BLOCK_BYTES // (4 * len(picks)))
    pz, pz_sq = z[picks], z_sq[picks].unsqueeze(0)
    for lo in range(0, z.shape[0], rows):
        nearest = torch.addmm(pz_sq, z[lo: lo + rows], pz.t(), alpha=-2.0).min(1).values
        nearest.add_(z_sq[lo: lo + rows]).clamp_min_(0).sqrt_()
        torch.minimum(mind[lo: lo + rows], nearest, out=mind[lo: lo + rows])
    mind[picks] = 0.0


def _distances(points: torch.Tensor, points_sq: torch.Tensor, centres: torch.Tensor,
               centres_sq: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (M, C) of points to centres, from precomputed squared norms."""
    block = torch.addmm(centres_sq.unsqueeze(0), points, centres.t(), alpha=-2.0)
    return block.add_(points_sq.unsqueeze(1)).clamp_min_(0).sqrt_()
