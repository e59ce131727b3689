"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Locally aware patch features from two middle backbone levels, a memory bank of
all training patches reduced by greedy coreset selection, and nearest-neighbour
distances as anomaly scores. Follows the paper and the official code
(amazon-science/patchcore-inspection); see the plugin README for deviations.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch
import torch.nn.functional as F

from adcore.config import in_range, positive_int, strides
from adcore.features import BackboneConfig, BackboneDetector, resize_to
from adcore.modelfile import TensorSpec
from adcore.ops import gaussian_blur, nearest_neighbours, squared_norms, upsample_maps
from adcore.progress import track_batches
from adcore_plugin_patchcore.coreset import greedy_coreset


@attrs.define(kw_only=True)
class PatchCoreConfig(BackboneConfig):
    """PatchCore parameters; defaults are the paper's.

    Attributes:
        backbone: feature backbone (``adcore list backbones``).
        backbone_weights: weights file instead of the backbone's default weights.
        layers: feature strides used (paper: layer2 + layer3 of WRN50 = strides 8, 16).
        patch_size: neighbourhood aggregated around each position (paper: 3).
        pretrain_embed_dimension: per-level dimension after channel pooling (official: 1024).
        target_embed_dimension: final patch feature dimension (official: 1024); a
            backbone whose levels have fewer channels in total keeps its native width.
        coreset_ratio: share of training patches kept in the memory bank (paper: 10%).
        coreset_projection_dim: random projection dimension for coreset distances (128).
        coreset_start_points: random points initialising the greedy selection (official: 10).
        num_neighbors: b, bank neighbours in the image-score re-weighting (paper: 9).
        sigma: Gaussian smoothing of the anomaly map, in pixels (paper: 4).
    """

    layers: tuple[int, ...] = attrs.field(default=(8, 16), validator=strides())
    patch_size: int = attrs.field(default=3, validator=positive_int)
    pretrain_embed_dimension: int = attrs.field(default=1024, validator=positive_int)
    target_embed_dimension: int = attrs.field(default=1024, validator=positive_int)
    coreset_ratio: float = attrs.field(default=0.1, validator=in_range(0, 1, low_open=True))
    coreset_projection_dim: int = attrs.field(default=128, validator=positive_int)
    coreset_start_points: int = attrs.field(default=10, validator=positive_int)
    num_neighbors: int = attrs.field(default=9, validator=positive_int)
    sigma: float = attrs.field(default=4.0, validator=in_range(0))


class PatchCore(BackboneDetector):
    """PatchCore anomaly detector.

    Fitted attributes:
        memory_bank_: (M, D) coreset of training patch features.
    """

    name = "patchcore"
    Config = PatchCoreConfig

    # -- embedding -------------------------------------------------------
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch features (B*h*w, D) on the finest level's grid, and that grid (h, w)."""
        levels = self.extractor(images)
        grid = tuple(levels[0].shape[-2:])
        native = sum(f.shape[1] for f in levels) <= self.config.target_embed_dimension
        pooled = [self._aggregate(f, native) for f in levels]
        pooled = [resize_to(f, grid) for f in pooled]  # pooling over channels commutes with resizing
        batch = images.shape[0]
        if native:
            embedding = torch.cat(pooled, dim=1)
        else:
            stacked = torch.cat(pooled, dim=1)  # (B, L*pretrain_dim, h, w), level-major as in the official aggregator
            embedding = _pool_channels(stacked, self.config.target_embed_dimension)
        return embedding.permute(0, 2, 3, 1).reshape(batch * grid[0] * grid[1], -1), grid

    def _aggregate(self, features: torch.Tensor, native: bool) -> torch.Tensor:
        """Local neighbourhood aggregation of one level.

        The official code unfolds p×p patches (zero padded) and average-pools each
        flattened (C, p, p) vector to ``pretrain_embed_dimension``. Pooling a C·p·p
        vector to C values averages each channel's patch, i.e. a zero-padded p×p
        average pool, which is what the native-width path computes directly.
        """
        p = self.config.patch_size
        if native:
            return F.avg_pool2d(features, p, stride=1, padding=p // 2, count_include_pad=True)
        b, c, h, w = features.shape
        patches = F.unfold(features, p, padding=p // 2)  # (B, C*p*p, h*w), channel-major like the official code
        pooled = F.adaptive_avg_pool1d(patches.transpose(1, 2).reshape(b * h * w, 1, c * p * p),
                                       self.config.pretrain_embed_dimension)
        return pooled.reshape(b, h, w, -1).permute(0, 3, 1, 2)

    # -- estimator API ---------------------------------------------------
    def _fit(self, batches: Iterable[torch.Tensor], count: int) -> None:
        bank: torch.Tensor | None = None
        filled = 0
        for batch in track_batches(batches, count, "patchcore features"):
            embedding, grid = self.embed(batch)
            if bank is None:
                bank = torch.empty(count * grid[0] * grid[1], embedding.shape[1])
            bank[filled: filled + embedding.shape[0]] = embedding
            filled += embedding.shape[0]
        assert bank is not None
        bank = bank[:filled]
        c = self.config
        keep = greedy_coreset(bank, c.coreset_ratio, c.coreset_projection_dim, c.coreset_start_points, c.seed)
        self.memory_bank_ = bank[keep].contiguous()
        self._bank_sq = squared_norms(self.memory_bank_)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, grid = self.embed(images)
        batch = images.shape[0]
        distances, locations = nearest_neighbours(embedding, self.memory_bank_, 1, self._bank_sq)
        patch_scores = distances[:, 0].reshape(batch, -1)
        scores = self._image_scores(embedding.reshape(batch, -1, embedding.shape[1]), patch_scores,
                                    locations[:, 0].reshape(batch, -1))
        maps = upsample_maps(patch_scores.reshape(batch, *grid), tuple(images.shape[-2:]))
        return scores, gaussian_blur(maps, self.config.sigma)

    def _image_scores(self, embedding: torch.Tensor, patch_scores: torch.Tensor,
                      locations: torch.Tensor) -> torch.Tensor:
        """Paper eq. 7: the largest patch distance, down-weighted when its nearest bank
        entry sits in a dense neighbourhood of the bank (b nearest bank entries)."""
        rows = torch.arange(patch_scores.shape[0])
        worst = patch_scores.argmax(dim=1)
        score = patch_scores[rows, worst]
        test_feature = embedding[rows, worst]  # (B, D)
        nearest = self.memory_bank_[locations[rows, worst]]  # (B, D) m*
        _, support = nearest_neighbours(nearest, self.memory_bank_, self.config.num_neighbors, self._bank_sq)
        support_dist = (test_feature.unsqueeze(1) - self.memory_bank_[support]).norm(dim=2)  # (B, b)
        weight = 1.0 - torch.softmax(support_dist, dim=1)[:, 0]
        return weight * score

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"memory_bank": self.memory_bank_}

    def _state_spec(self) -> dict[str, TensorSpec]:
        total = sum(level.channels for level in self.feature_levels())
        dim = min(total, self.config.target_embed_dimension)  # the native width when it is smaller
        return {"memory_bank": TensorSpec(("N", dim))}

    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.memory_bank_ = tensors["memory_bank"].float().contiguous()
        self._bank_sq = squared_norms(self.memory_bank_)


def _pool_channels(features: torch.Tensor, dim: int) -> torch.Tensor:
    """Adaptive average pooling over the channel axis of (B, C, h, w) to ``dim`` channels."""
    b, c, h, w = features.shape
    flat = features.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
    return F.adaptive_avg_pool1d(flat, dim).reshape(b, h, w, dim).permute(0, 3, 1, 2)
