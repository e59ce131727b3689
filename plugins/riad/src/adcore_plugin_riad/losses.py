"""Image-similarity terms of RIAD: SSIM and the multi-scale gradient magnitude similarity (MSGMS)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from adcore.losses import ssim

#: Stability constant of the gradient magnitude similarity (GMSD, Xue et al. 2013; RIAD code: 0.0026).
GMS_C = 0.0026
#: Pyramid levels of MSGMS (the image and three 2x average-pooled copies).
MSGMS_LEVELS = 4


@functools.lru_cache(maxsize=8)
def _prewitt(device: str, dtype: torch.dtype) -> torch.Tensor:
    """(2, 1, 3, 3) Prewitt kernels for d/dx and d/dy, divided by 3 as in the RIAD code."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]]) / 3.0
    return torch.stack([gx, gx.t()]).unsqueeze(1).to(device=device, dtype=dtype)


def median3(images: torch.Tensor) -> torch.Tensor:
    """3×3 median filter of (B, 1, H, W) maps, replicate-padded: it keeps sensor noise and
    JPEG ringing out of the gradients that GMS compares (as the RIAD reimplementations do)."""
    padded = F.pad(images, (1, 1, 1, 1), mode="replicate")
    patches = F.unfold(padded, 3).view(images.shape[0], 9, *images.shape[-2:])
    return patches.sort(dim=1).values[:, 4:5]  # the middle of 9: median's value, and ONNX has a sort


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Prewitt gradient magnitude (B, 1, H, W) of the median-filtered grey (channel mean) image."""
    grey = median3(images.mean(dim=1, keepdim=True))
    grads = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), _prewitt(str(images.device), images.dtype))
    return torch.sqrt((grads * grads).sum(dim=1, keepdim=True) + 1e-12)


def gms_map(x: torch.Tensor, y: torch.Tensor, c: float = GMS_C) -> torch.Tensor:
    """Gradient magnitude similarity (2 g_x g_y + c) / (g_x² + g_y² + c), (B, 1, H, W), 1 where equal."""
    gx, gy = gradient_magnitude(x), gradient_magnitude(y)
    return (2 * gx * gy + c) / (gx * gx + gy * gy + c)


def _pyramid(x: torch.Tensor, y: torch.Tensor, levels: int):  # type: ignore[no-untyped-def]
    for level in range(levels):
        if level:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        yield x, y


def msgms_loss(x: torch.Tensor, y: torch.Tensor, c: float = GMS_C, levels: int = MSGMS_LEVELS) -> torch.Tensor:
    """Mean of 1 − GMS over a ``levels``-level average-pooled pyramid."""
    return torch.stack([(1 - gms_map(a, b, c)).mean() for a, b in _pyramid(x, y, levels)]).mean()


def msgms_map(x: torch.Tensor, y: torch.Tensor, c: float = GMS_C, levels: int = MSGMS_LEVELS) -> torch.Tensor:
    """Per-pixel MSGMS (B, H, W): GMS maps of every pyramid level, upsampled bilinearly and averaged."""
    size = tuple(x.shape[-2:])
    total = torch.zeros((x.shape[0], 1, *size), dtype=x.dtype, device=x.device)
    for a, b in _pyramid(x, y, levels):
        level = gms_map(a, b, c)
        if tuple(level.shape[-2:]) != size:
            level = F.interpolate(level, size=size, mode="bilinear", align_corners=False)
        total += level
    return (total / levels).squeeze(1)


def ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 − SSIM."""
    return 1 - ssim(x, y)
