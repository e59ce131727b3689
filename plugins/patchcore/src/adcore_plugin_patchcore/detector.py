"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Locally aware patch features from two middle backbone levels, a memory bank of
all training patches reduced by greedy coreset selection, and nearest-neighbour
distances as anomaly scores. Follows the paper and the official code
(amazon-science/patchcore-inspection); see the plugin README for deviations.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import numpy as np
import torch

from adcore.config import in_range, one_of, positive_int, strides
from adcore.detector import Fitting
from adcore.features import BackboneConfig, BackboneDetector, embedding_width, patch_embedding
from adcore.modelfile import TensorSpec
from adcore.neighbors import INDEX_KINDS, build_index
from adcore.ops import gaussian_blur, upsample_maps
from adcore.progress import Progress, track_batches
from adcore_plugin_patchcore.coreset import sharded_coreset

Reader = Callable[[int, int], torch.Tensor]


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
        index: nearest-neighbour search, "clustered" (default: exact, skips k-means cells
            that cannot hold a nearer entry), "exact" (blocked brute force, the same
            scores) or faiss's approximate "ivf" / "hnsw" (``pip install adcore[ann]``).
        coreset_exact_limit: banks up to this many patches get the exact greedy
            coreset; larger ones are cut into shards of at most this size.
        memory_budget_mb: training patch features above this size are streamed to a
            temporary file (always removed) instead of being held in memory.
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
    index: str = attrs.field(default="clustered", validator=one_of(*INDEX_KINDS))
    coreset_exact_limit: int = attrs.field(default=500_000, validator=positive_int)
    memory_budget_mb: int = attrs.field(default=2048, validator=positive_int)


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
        c = self.config
        embedding = patch_embedding(self.extractor(images), c.patch_size, c.pretrain_embed_dimension,
                                    c.target_embed_dimension)
        b, d, h, w = embedding.shape
        return embedding.permute(0, 2, 3, 1).reshape(b * h * w, d), (h, w)

    # -- estimator API ---------------------------------------------------
    def _fit(self, batches: Iterable[torch.Tensor], count: int, fitting: Fitting) -> None:
        c = self.config
        with self._stored_features(batches, count, fitting.progress) as (read, total):
            _, self.memory_bank_ = sharded_coreset(read, total, c.coreset_ratio, c.coreset_exact_limit,
                                                   c.coreset_projection_dim, c.coreset_start_points, c.seed,
                                                   fitting.progress)
        self._index = build_index(self.memory_bank_, c.index, c.seed)

    @contextmanager
    def _stored_features(self, batches: Iterable[torch.Tensor], count: int,
                         progress: Progress) -> Iterator[tuple[Reader, int]]:
        """All training patch features, in memory within the budget, else in a temporary file."""
        stream = iter(track_batches(progress, batches, count, "patchcore features"))
        first = next(stream)
        embedding, grid = self.embed(first)
        rows = count * grid[0] * grid[1]
        if rows * embedding.shape[1] * 4 <= self.config.memory_budget_mb * 2**20:
            bank = torch.empty(rows, embedding.shape[1])
            filled = _fill(bank, embedding, 0)
            for batch in stream:
                filled = _fill(bank, self.embed(batch)[0], filled)
            yield (lambda lo, hi: bank[lo:hi]), filled
            return
        with tempfile.TemporaryDirectory(prefix="patchcore-") as folder:
            path = Path(folder) / "features.f32"
            with path.open("wb") as handle:
                handle.write(embedding.numpy().tobytes())
                for batch in stream:
                    handle.write(self.embed(batch)[0].numpy().tobytes())
            dim = embedding.shape[1]
            yield _file_reader(path, dim), path.stat().st_size // (4 * dim)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, grid = self.embed(images)
        batch = images.shape[0]
        distances, locations = self._index.search(embedding, 1)
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
        _, support = self._index.search(nearest, self.config.num_neighbors)
        support_dist = (test_feature.unsqueeze(1) - self.memory_bank_[support]).norm(dim=2)  # (B, b)
        weight = 1.0 - torch.softmax(support_dist, dim=1)[:, 0]
        return weight * score

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"memory_bank": self.memory_bank_}

    def _state_spec(self) -> dict[str, TensorSpec]:
        dim = embedding_width(self.feature_levels(), self.config.target_embed_dimension)
        return {"memory_bank": TensorSpec(("N", dim))}

    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.memory_bank_ = tensors["memory_bank"].float().contiguous()
        self._index = build_index(self.memory_bank_, self.config.index, self.config.seed)


def _fill(bank: torch.Tensor, embedding: torch.Tensor, filled: int) -> int:
    """Copy one batch's patch features into the preallocated bank; the new fill level."""
    bank[filled: filled + embedding.shape[0]] = embedding
    return filled + embedding.shape[0]


def _file_reader(path: Path, dim: int) -> Reader:
    """Rows [lo, hi) of a float32 (N, dim) file, read into memory (no mapping stays resident)."""
    def read(lo: int, hi: int) -> torch.Tensor:
        values = np.fromfile(path, dtype=np.float32, count=(hi - lo) * dim, offset=lo * dim * 4)
        return torch.from_numpy(values.reshape(hi - lo, dim))

    return read
