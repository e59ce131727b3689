"""Tensor operations several methods share: smoothing, upsampling, nearest neighbours."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_CHUNK_BYTES = 256 * 2**20


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, H, W) maps, kernel radius 4σ as in scipy.

    Reflect padding (replicate where a map is smaller than the radius).
    """
    if sigma <= 0:
        return maps
    radius = int(4.0 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = maps.unsqueeze(1)
    height, width = maps.shape[-2:]
    mode = "reflect" if height > radius and width > radius else "replicate"
    out = F.pad(out, (radius, radius, radius, radius), mode=mode)
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    out = F.conv2d(out, kernel.view(1, 1, -1, 1))
    return out.squeeze(1)


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

