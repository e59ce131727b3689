"""Tensor operations several methods share: smoothing and upsampling of anomaly maps."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["gaussian_blur", "upsample_maps"]


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
