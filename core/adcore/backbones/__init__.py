"""The backbone contract: frozen networks that give multi-scale feature maps.

After timm's ``FeatureInfo``: each level has a name, channels and a stride
(reduction), and the input mean/std travel with the weights. Detectors ask for
levels by stride (4, 8, 16, 32), so every method works with every backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch
from torch import nn


@attrs.frozen
class FeatureLevel:
    """One output level of a backbone."""

    name: str
    channels: int
    stride: int
    #: Whether every value is >= 0 (the level is taken after a ReLU, as in ResNets), or signed
    #: (e.g. EfficientNet's linear bottlenecks). Methods that reproduce features need to know.
    non_negative: bool = False


class Backbone(nn.Module):
    """A frozen network returning feature maps at the requested strides.

    Args:
        name: registry name, recorded in saved models.
        body: module mapping a normalised batch to a list of feature maps,
            one per entry of ``levels`` and in that order.
        levels: the levels ``body`` returns, ordered by stride.
        mean: per-channel input mean the weights were trained with.
        std: per-channel input standard deviation.
    """

    def __init__(self, name: str, body: nn.Module, levels: Sequence[FeatureLevel],
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.name = name
        self.body = body.eval().requires_grad_(False)
        self.levels = tuple(levels)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def channels(self) -> list[int]:
        return [level.channels for level in self.levels]

    @property
    def strides(self) -> list[int]:
        return [level.stride for level in self.levels]

    @property
    def non_negative(self) -> list[bool]:
        return [level.non_negative for level in self.levels]

    def train(self, mode: bool = True) -> Backbone:
        # Always frozen: batch-norm statistics must stay the pretrained ones.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Map images in [0, 1], shape (B, 3, H, W), to one feature map per level."""
        return list(self.body((images - self.mean) / self.std))


__all__ = ["Backbone", "FeatureLevel"]
