"""DRAEM's losses: L2 + SSIM for the reconstruction, focal loss for the segmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from adcore.losses import ssim


def focal_loss(probabilities: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss −(1 − p_t)^γ · log p_t (Lin et al. 2017; α = 1 as in the DRAEM code).

    Args:
        probabilities: (B, C, H, W) class probabilities (softmax output).
        target: (B, 1, H, W) or (B, H, W) class indices (0 normal, 1 anomalous).
        gamma: focusing parameter (DRAEM: 2).
    """
    if target.ndim == probabilities.ndim - 1:
        target = target.unsqueeze(1)
    p_t = probabilities.gather(1, target.long()).clamp_min(1e-8)
    return (-(1 - p_t) ** gamma * p_t.log()).mean()


def reconstruction_loss(reconstruction: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L2 + (1 − SSIM), λ = 1."""
    return F.mse_loss(reconstruction, images) + (1 - ssim(reconstruction, images))
