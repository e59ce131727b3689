"""DRAEM's two sub-networks, with the layer layout of the official code (VitjanZ/DRAEM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Input sides must be multiples of this (the discriminative encoder pools five times).
DIVISOR = 32


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _block(c_in: int, c_mid: int, c_out: int | None = None) -> nn.Sequential:
    return nn.Sequential(*_conv(c_in, c_mid), *_conv(c_mid, c_mid if c_out is None else c_out))


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv(c_in, c_out))


class ReconstructiveSubNetwork(nn.Module):
    """Encoder-decoder without skip connections: widths w, 2w, 4w, 8w, 8w, four poolings."""

    def __init__(self, base_width: int = 128, channels: int = 3) -> None:
        super().__init__()
        w = base_width
        self.encoder = nn.ModuleList([_block(channels, w), _block(w, 2 * w), _block(2 * w, 4 * w),
                                      _block(4 * w, 8 * w), _block(8 * w, 8 * w)])
        self.decoder = nn.Sequential(
            _up(8 * w, 8 * w), _block(8 * w, 8 * w, 4 * w),
            _up(4 * w, 4 * w), _block(4 * w, 4 * w, 2 * w),
            _up(2 * w, 2 * w), _block(2 * w, 2 * w, w),
            _up(w, w), _block(w, w),
            nn.Conv2d(w, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
        return self.decoder(x)


class DiscriminativeSubNetwork(nn.Module):
    """U-Net with skip connections: encoder widths w, 2w, 4w, 8w, 8w, 8w (five poolings), 2-class output."""

    def __init__(self, base_width: int = 64, in_channels: int = 6, out_channels: int = 2) -> None:
        super().__init__()
        w = base_width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList([_block(in_channels, widths[0])] +
                                     [_block(widths[i - 1], widths[i]) for i in range(1, 6)])
        ups = [8 * w, 4 * w, 2 * w, w, w]  # output width of each upsampling step
        self.ups = nn.ModuleList()
        self.joins = nn.ModuleList()
        deeper = widths[5]
        for up_width, skip_width in zip(ups, reversed(widths[:5])):
            self.ups.append(_up(deeper, up_width))
            self.joins.append(_block(up_width + skip_width, up_width))
            deeper = up_width
        self.head = nn.Conv2d(w, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, join in zip(self.ups, self.joins):
            x = join(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def init_weights(module: nn.Module) -> None:
    """Official initialisation: conv weights N(0, 0.02); batch-norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
