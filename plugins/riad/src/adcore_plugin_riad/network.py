"""The inpainting U-Net of RIAD and the disjoint cell masks it inpaints."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from adcore.ops import pad_to_multiple

#: Input sides must be multiples of this (four 2x downsamplings); other sizes are reflect-padded.
DIVISOR = 16


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True)]


class _Up(nn.Module):
    """4×4 stride-2 transposed conv to the skip's width, concatenation, two 3×3 conv blocks."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
        self.convs = nn.Sequential(*_conv_bn_relu(2 * c_out, c_out), *_conv_bn_relu(c_out, c_out))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """The RIAD U-Net of the public reimplementations: widths w, 2w, 4w, 8w, 8w.

    Downsampling by 4×4 stride-2 convolutions (no pooling), upsampling by 4×4 stride-2
    transposed convolutions, skips concatenated, 3×3 conv + BatchNorm + ReLU blocks and a
    3×3 output convolution with tanh: images live in [-1, 1], so an erased cell (zero) is
    mid-grey. Inputs of any size: reflect-padded to a multiple of 16 and cropped back.
    """

    def __init__(self, base_width: int = 64, channels: int = 3) -> None:
        super().__init__()
        w = base_width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        self.encoder = nn.ModuleList([nn.Sequential(*_conv_bn_relu(channels, w), *_conv_bn_relu(w, w))] + [
            nn.Sequential(*_conv_bn_relu(widths[i - 1], widths[i], kernel=4, stride=2),
                          *_conv_bn_relu(widths[i], widths[i])) for i in range(1, 5)])
        self.decoder = nn.ModuleList([_Up(widths[i + 1], widths[i]) for i in reversed(range(4))])
        self.head = nn.Sequential(nn.Conv2d(w, channels, 3, padding=1), nn.Tanh())
        # channels_last: CPU convolutions (forward and backward) run ~1.35x faster (measured on
        # DRAEM's networks, batch 8 at 128 px, one thread).
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, DIVISOR).contiguous(memory_format=torch.channels_last)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)[..., :height, :width]


def disjoint_masks(height: int, width: int, cell: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, H, W) bool masks (True = masked): the k×k cells of the image split at random into n disjoint sets.

    Every cell belongs to exactly one set, so the masks are disjoint and together cover the image.
    """
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    order = torch.randperm(rows * cols, generator=generator)
    assignment = torch.empty(rows * cols, dtype=torch.long)
    assignment[order] = torch.arange(rows * cols) % n  # balanced: each set gets ~1/n of the cells
    pixels = assignment.view(rows, cols).repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:height, :width]
    return torch.stack([pixels == j for j in range(n)])


def inpaint(network: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, masks: torch.Tensor,
            together: bool = True) -> torch.Tensor:
    """Reconstruct ``images`` (B, C, H, W) from n inpainting passes, one per mask of ``masks`` (n, H, W).

    Pass j sees the image with the cells of mask j set to zero (mid-grey for images in
    [-1, 1]); the reconstruction takes
    every pixel from the pass in which it was masked. ``together`` runs the n passes as
    one batch of n·B images (training); otherwise one pass at a time (less memory).
    """
    n = masks.shape[0]
    keep = (~masks).to(images.dtype)[:, None, None]  # (n, 1, 1, H, W)
    hide = masks.to(images.dtype)[:, None, None]
    if together:
        inputs = (images.unsqueeze(0) * keep).flatten(0, 1)
        outputs = network(inputs).unflatten(0, (n, images.shape[0]))
        return (outputs * hide).sum(dim=0)
    result = torch.zeros_like(images)
    for j in range(n):
        result += network(images * keep[j]) * hide[j]
    return result
