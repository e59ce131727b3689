"""Image-similarity losses the reconstruction methods share (RIAD, DRÆM)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["ssim"]


@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float, device: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g).to(device=device, dtype=dtype)[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images in [0, 1] (Gaussian window 11×11, σ = 1.5, C1 = 0.01², C2 = 0.03²)."""
    channels = x.shape[1]
    kernel = _gaussian_window(window, sigma, str(x.device), x.dtype).expand(channels, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, kernel, padding=window // 2, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x * mu_x
    syy = blur(y * y) - mu_y * mu_y
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2))
    return value.mean()
