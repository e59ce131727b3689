"""Tensor operations several methods share: smoothing and upsampling of maps, crops and padding of images."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["crop_windows", "gaussian_blur", "pad_to_multiple", "resize_to", "upsample_maps"]


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


def resize_to(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, C, h, w) maps to ``size`` (no-op when equal); the one resize of tensors."""
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of (B, h, w) score maps to ``size``."""
    return resize_to(maps.unsqueeze(1), size).squeeze(1)


def pad_to_multiple(images: torch.Tensor, divisor: int) -> torch.Tensor:
    """Pad the bottom and right of (B, C, H, W) images so both sides are multiples of ``divisor``.

    Reflect padding, so the padded border looks like image content to a
    convolutional network; replicate where the image is too small to reflect.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    if not (pad_h or pad_w):
        return images
    mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
    return F.pad(images, (0, pad_w, 0, pad_h), mode=mode)


def crop_windows(images: torch.Tensor, tops: Sequence[int], lefts: Sequence[int],
                 size: tuple[int, int]) -> torch.Tensor:
    """One ``size`` window of each image, its top-left corner at (tops[i], lefts[i]).

    The caller draws the corners with its own generator, so a training run stays
    reproducible from its seed.
    """
    height, width = size
    return torch.stack([image[:, int(t): int(t) + height, int(l): int(l) + width]
                        for image, t, l in zip(images, tops, lefts)])
