"""Tensor operations several methods share: smoothing, upsampling, nearest neighbours."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_BYTES = 256 * 2**20


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps, kernel radius 4σ as in scipy.

    Reflect padding (replicate where a map is smaller than the radius). Each
    pass is one matrix product with a banded (n, n) matrix that holds the
    kernel and the padding: a single-channel convolution runs about ten times
    slower on a CPU than these two GEMMs.
    """
    if sigma <= 0:
        return maps
    height, width = maps.shape[-2:]
    rows = _blur_matrix(height, float(sigma), maps.dtype, maps.device)
    cols = _blur_matrix(width, float(sigma), maps.dtype, maps.device)
    return torch.matmul(torch.matmul(rows, maps), cols.T)


@functools.lru_cache(maxsize=16)
def _blur_matrix(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) matrix B with (B @ x)[i] = Σ_j kernel[j] · x[pad(i + j)], j in [-r, r]."""
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    source = torch.arange(n).unsqueeze(1) + torch.arange(-radius, radius + 1).unsqueeze(0)
    if n > radius:  # reflect without repeating the edge sample, as torch's "reflect" padding
        source = source.abs()
        source = torch.where(source > n - 1, 2 * (n - 1) - source, source)
    else:
        source = source.clamp(0, n - 1)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix.index_put_((torch.arange(n).unsqueeze(1).expand_as(source), source),
                      kernel.expand_as(source).clone(), accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B, h, w) score maps to ``size``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """Row-wise squared L2 norms of (N, D)."""
    return (x * x).sum(dim=1)


def nearest_neighbours(queries: torch.Tensor, bank: torch.Tensor, k: int = 1,
                       bank_sq: torch.Tensor | None = None,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances and indices of the k nearest bank rows for every query.

    Works through the queries in chunks so the (chunk, M) distance block stays
    under ``chunk_bytes``; each chunk is one matrix multiply (no loop over rows).

    Args:
        queries: (Q, D).
        bank: (M, D).
        k: neighbours per query (clipped to M).
        bank_sq: precomputed ``squared_norms(bank)`` to reuse across calls.
        chunk_bytes: memory bound for one distance block.

    Returns:
        distances (Q, k) ascending and indices (Q, k).
    """
    k = min(k, bank.shape[0])
    if bank_sq is None:
        bank_sq = squared_norms(bank)
    rows = chunk_rows(bank.shape[0], chunk_bytes)
    distances = torch.empty(queries.shape[0], k, dtype=torch.float32, device=queries.device)
    indices = torch.empty(queries.shape[0], k, dtype=torch.long, device=queries.device)
    bank_t = bank.t()
    # One distance block reused for every chunk: allocating it afresh per chunk costs
    # page faults on every call (SPADE calls this once per test image).
    buffer = torch.empty(min(rows, queries.shape[0]), bank.shape[0], dtype=torch.float32, device=queries.device)
    for start in range(0, queries.shape[0], rows):
        q = queries[start: start + rows]
        block = buffer[: q.shape[0]]
        torch.addmm(bank_sq.unsqueeze(0), q, bank_t, alpha=-2.0, out=block)
        block += squared_norms(q).unsqueeze(1)
        if k == 1:
            values, idx = block.min(dim=1, keepdim=True)
        else:
            values, idx = block.topk(k, dim=1, largest=False)
        distances[start: start + rows] = values.clamp_min_(0).sqrt_()
        indices[start: start + rows] = idx
    return distances, indices


def chunk_rows(width: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows of a float32 (rows, width) block that fit in ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * max(1, width)))

