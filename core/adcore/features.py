"""Shared feature extraction: one frozen backbone pass per batch, levels by stride."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import ClassVar

import attrs
import torch
import torch.nn.functional as F

from adcore.backbones import Backbone, FeatureLevel
from adcore.backbones.folding import folded_copy
from adcore.backbones.timm_backbones import RANDOM
from adcore.config import strides
from adcore.detector import Detector, DetectorConfig
from adcore.ops import resize_to

__all__ = ["CPU_FORWARD_BATCH", "BackboneConfig", "BackboneDetector", "FeatureExtractor", "backbone_levels",
           "embedding_width", "patch_embedding"]


#: Images per backbone call on a CPU: EfficientNet-Lite0 at 256 px runs 65-70 images/s in
#: slices of 4 and 31 in one batch of 32 (2 threads, benchmarks/bench_detector.py).
CPU_FORWARD_BATCH = 4


class FeatureExtractor:
    """Run a registered backbone and return the feature maps at the requested strides.

    Args:
        backbone: registry name (``adcore list backbones``).
        strides: feature levels wanted, e.g. ``(8, 16)``.
        weights: a weights file, ``"random"`` (tests only) or None for the default weights.
        device: torch device.
    """

    def __init__(self, backbone: str, strides: Sequence[int], weights: str | None = None,
                 device: str = "cpu") -> None:
        from adcore.plugins import get_registry

        factory = get_registry().load_object("backbone", backbone)
        if weights == RANDOM:
            _warn_random_weights(backbone)
        self.network: Backbone = factory(tuple(strides), weights)
        probe = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        self.network.body = folded_copy(self.network.body, probe)
        # channels_last roughly doubles CPU convolution throughput (see shared reference numbers).
        self.network = self.network.to(device=device, memory_format=torch.channels_last)
        self.device = device

    @property
    def channels(self) -> list[int]:
        return self.network.channels

    @property
    def strides(self) -> list[int]:
        return self.network.strides

    @property
    def non_negative(self) -> list[bool]:
        """Per level: whether the backbone declares it post-ReLU (all values >= 0)."""
        return self.network.non_negative

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W) in [0, 1] -> one contiguous float32 map per stride.

        On a CPU the batch runs in slices of :data:`CPU_FORWARD_BATCH` images, whose
        activations stay in the cache (a batch of 32 at 256 px has 200 MB layers).
        """
        with torch.no_grad():
            x = images.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
            if x.device.type != "cpu" or x.shape[0] <= CPU_FORWARD_BATCH:
                return [f.float().contiguous() for f in self.network(x)]
            slices = [self.network(part) for part in x.split(CPU_FORWARD_BATCH)]
            return [torch.cat([levels[i].float() for levels in slices]).contiguous() for i in range(len(slices[0]))]


_warned_random: set[str] = set()


def _warn_random_weights(backbone: str) -> None:
    """One stderr line per backbone and process (not per batch or category): scores will mean nothing."""
    from tqdm import tqdm

    if backbone not in _warned_random:
        _warned_random.add(backbone)
        tqdm.write(f"Warning: backbone '{backbone}' has random weights (backbone_weights='random'); "
                   f"its features are noise, fit only for tests", file=sys.stderr)


@functools.lru_cache(maxsize=None)
def backbone_levels(backbone: str, strides: tuple[int, ...]) -> tuple[FeatureLevel, ...]:
    """A backbone's levels at these strides, built on the meta device: no weights read, no memory used.

    (A module first imported inside would make its import-time tensors on meta; timm makes none.)
    """
    from adcore.plugins import get_registry

    factory = get_registry().load_object("backbone", backbone)
    with torch.device("meta"):
        return factory(strides, RANDOM).levels


def patch_embedding(levels: Sequence[torch.Tensor], patch_size: int, level_dim: int,
                    target_dim: int) -> torch.Tensor:
    """Locally aware patch features (B, D, h, w) on the finest level's grid (PatchCore, SimpleNet).

    As the official PatchMaker + Preprocessing + Aggregator: each level's
    zero-padded ``patch_size`` neighbourhood, flattened channel-major, is
    average-pooled to ``level_dim`` values; the levels are resized to the finest
    grid, stacked level-major and pooled again to ``target_dim``. Pooling a
    C·p·p vector to C values averages each channel's patch, so when all levels
    together have at most ``target_dim`` channels the features keep their native
    width and each level is a plain p×p average pool.
    """
    grid = tuple(levels[0].shape[-2:])
    native = sum(f.shape[1] for f in levels) <= target_dim
    pooled = torch.cat([resize_to(_aggregate(f, patch_size, level_dim, native), grid) for f in levels], dim=1)
    return pooled if native else _pool_channels(pooled, target_dim)


def embedding_width(levels: Sequence[FeatureLevel], target_dim: int) -> int:
    """D of :func:`patch_embedding` for these levels, known before any image is seen."""
    return min(sum(level.channels for level in levels), target_dim)


def _aggregate(features: torch.Tensor, p: int, level_dim: int, native: bool) -> torch.Tensor:
    if native:
        return F.avg_pool2d(features, p, stride=1, padding=p // 2, count_include_pad=True)
    b, c, h, w = features.shape
    patches = F.unfold(features, p, padding=p // 2)  # (B, C*p*p, h*w), channel-major like the official code
    pooled = F.adaptive_avg_pool1d(patches.transpose(1, 2).reshape(b * h * w, 1, c * p * p), level_dim)
    return pooled.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def _pool_channels(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Adaptive average pooling over the channel axis of (B, C, h, w) to ``dim`` channels."""
    b, c, h, w = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
    return F.adaptive_avg_pool1d(flat, dim).reshape(b, h, w, dim).permute(0, 3, 1, 2)


@attrs.define(kw_only=True)
class BackboneConfig(DetectorConfig):
    """Parameters of every detector built on a frozen pretrained backbone.

    Attributes:
        backbone: feature backbone (``adcore list backbones``).
        backbone_weights: weights file instead of the backbone's default weights.
        layers: strides of the feature levels read; each detector sets its paper's default.
    """

    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    layers: tuple[int, ...] = attrs.field(default=(8, 16), validator=strides())


class BackboneDetector(Detector):
    """A detector on frozen backbone features; the network is built on first use.

    Subclasses read features with ``self.extractor(images)``; the levels are
    :meth:`feature_strides` (by default the config's ``layers``).
    """

    Config: ClassVar[type[DetectorConfig]] = BackboneConfig

    def __init__(self, config: DetectorConfig | None = None, **params: object) -> None:
        super().__init__(config, **params)
        self._extractor: FeatureExtractor | None = None

    def feature_strides(self) -> tuple[int, ...]:
        """Strides of the feature levels this detector reads."""
        return tuple(self.config.layers)  # type: ignore[attr-defined]

    def feature_levels(self) -> tuple[FeatureLevel, ...]:
        """The levels this detector reads (channels, strides), known without loading the backbone.

        Model-file checks use them to size the expected tensors before any weights are read.
        """
        return backbone_levels(self.config.backbone, self.feature_strides())  # type: ignore[attr-defined]

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            c = self.config
            self._extractor = FeatureExtractor(c.backbone, self.feature_strides(),  # type: ignore[attr-defined]
                                               c.backbone_weights, c.device)  # type: ignore[attr-defined]
        return self._extractor
