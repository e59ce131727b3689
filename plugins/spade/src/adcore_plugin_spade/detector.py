"""SPADE (Cohen & Hoshen, "Sub-Image Anomaly Detection with Deep Pyramid Correspondences", 2020).

Two stages, both plain k-nearest-neighbour search on frozen backbone features:

1. Image level: every image is described by the global average pool of its
   deepest feature level; the anomaly score of a test image is the mean
   Euclidean distance to its K nearest training images.
2. Pixel level: the feature pyramid (several levels, resized to the finest
   grid and concatenated) of those K training images forms a gallery; every
   test position scores the mean distance to its κ nearest gallery features,
   over all positions of the K images (sub-image correspondences, no
   alignment assumed). The map is upsampled to the input and smoothed.

See the plugin README for defaults and deviations from the paper.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs
import torch

from adcore.config import in_range, one_of, positive_int, strides
from adcore.detector import Fitting
from adcore.errors import DataError
from adcore.features import BackboneConfig, BackboneDetector
from adcore.modelfile import TensorSpec
from adcore.neighbors import ExactIndex, NeighbourIndex, PartitionedRows
from adcore.ops import gaussian_blur, resize_to, upsample_maps
from adcore.progress import track_batches

_STRIDES = (4, 8, 16, 32)
_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@attrs.define(kw_only=True)
class SpadeConfig(BackboneConfig):
    """SPADE parameters; defaults follow the paper.

    Attributes:
        backbone: feature backbone (``adcore list backbones``).
        backbone_weights: weights file instead of the backbone's default weights.
        layers: strides of the pixel-level pyramid, concatenated on the finest one's
            grid (paper: the outputs of ResNet stages 1-3 = strides 4, 8, 16).
        image_layer: stride of the level whose global average pool describes an
            image for the K-nearest-image search (paper: the last stage, stride 32).
        k_images: K, nearest training images used for the image score and as the
            pixel gallery (paper: 50); clipped to the training-set size.
        k_pixels: κ, nearest gallery features averaged for a pixel score (paper: 1).
        sigma: Gaussian smoothing of the anomaly map, in pixels (paper: 4).
        gallery_dtype: storage type of the cached training pyramids, "float16"
            (half the memory; distances are still computed in float32) or "float32".
        index: pixel-gallery search, "clustered" (default: exact; the training pixels are cut
            into k-means cells once, and cells that cannot hold a nearer feature are skipped)
            or "exact" (blocked brute force, the same scores).
        pixel_cells: k-means cells of the training pixels for the clustered search.
    """

    layers: tuple[int, ...] = attrs.field(default=(4, 8, 16), validator=strides(_STRIDES))
    image_layer: int = attrs.field(default=32, validator=one_of(*_STRIDES))
    k_images: int = attrs.field(default=50, validator=positive_int)
    k_pixels: int = attrs.field(default=1, validator=positive_int)
    sigma: float = attrs.field(default=4.0, validator=in_range(0))
    gallery_dtype: str = attrs.field(default="float16", validator=one_of(*_DTYPES))
    index: str = attrs.field(default="clustered", validator=one_of("exact", "clustered"))
    pixel_cells: int = attrs.field(default=256, validator=positive_int)


class Spade(BackboneDetector):
    """SPADE anomaly detector.

    Fitted attributes:
        image_features_: (N, C_img) float32 global-pooled features of the training images.
        pyramid_: (N, h, w, C_pix) training feature pyramids on the finest grid,
            stored as ``gallery_dtype``.
    """

    name = "spade"
    Config = SpadeConfig

    def feature_strides(self) -> tuple[int, ...]:
        """The pixel-level pyramid plus the image-level layer."""
        return tuple(sorted(set(self.config.layers) | {self.config.image_layer}))

    # -- features --------------------------------------------------------
    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image descriptors (B, C_img) and pixel pyramids (B, h, w, C_pix), both float32."""
        levels = dict(zip(self.extractor.strides, self.extractor(images)))
        image = levels[self.config.image_layer].mean(dim=(2, 3))
        finest = levels[self.config.layers[0]]
        grid = (int(finest.shape[-2]), int(finest.shape[-1]))
        pyramid = torch.cat([resize_to(levels[s], grid) for s in self.config.layers], dim=1)
        return image, pyramid.permute(0, 2, 3, 1).contiguous()

    # -- estimator API ---------------------------------------------------
    def _fit(self, batches: Iterable[torch.Tensor], count: int, fitting: Fitting) -> None:
        image_features = pyramid = None
        filled = 0
        for batch in track_batches(fitting.progress, batches, count, "spade features"):
            image, pixels = self.features(batch)
            if pyramid is None:
                image_features = torch.empty(count, image.shape[1], device=image.device)
                pyramid = torch.empty(count, *pixels.shape[1:], dtype=_DTYPES[self.config.gallery_dtype],
                                      device=pixels.device)
            if pixels.shape[1:] != pyramid.shape[1:]:
                raise DataError(f"training images must all have the same size; feature grid "
                                f"{tuple(pixels.shape[1:3])} differs from {tuple(pyramid.shape[1:3])}")
            image_features[filled: filled + len(batch)] = image
            pyramid[filled: filled + len(batch)] = pixels
            filled += len(batch)
        assert image_features is not None and pyramid is not None
        self.image_features_ = image_features[:filled].contiguous()
        self.pyramid_ = pyramid[:filled].contiguous()
        self._prepare()

    def _prepare(self) -> None:
        """The image index and, for the clustered search, the training pixels cut into cells once."""
        self._images = ExactIndex(self.image_features_)
        if self.config.index == "clustered":
            n, h, w, c = self.pyramid_.shape
            self._pixels = PartitionedRows(self.pyramid_.reshape(-1, c), torch.arange(n).repeat_interleave(h * w),
                                           self.config.pixel_cells, seed=self.config.seed)

    def _gallery(self, chosen: torch.Tensor) -> NeighbourIndex:
        """Search structure over every position of the training images ``chosen``."""
        if self.config.index == "clustered":
            return self._pixels.index(chosen)
        return ExactIndex(self.pyramid_[chosen].reshape(-1, self.pyramid_.shape[-1]).float())

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores (B,) and raw pixel scores (B, h, w) on the pyramid grid."""
        image, pixels = self.features(images)
        image_dist, neighbours = self._images.search(image, self.config.k_images)
        scores = image_dist.mean(dim=1)
        batch, h, w, c = pixels.shape
        maps = torch.empty(batch, h * w, device=pixels.device)
        for b in range(batch):  # one gallery per test image; all its positions at once
            dist, _ = self._gallery(neighbours[b]).search(pixels[b].reshape(h * w, c), self.config.k_pixels)
            maps[b] = dist.mean(dim=1)
        return scores, maps.reshape(batch, h, w)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, maps = self.score(images)
        maps = upsample_maps(maps, tuple(images.shape[-2:]))
        return scores, gaussian_blur(maps, self.config.sigma)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"image_features": self.image_features_, "pyramid": self.pyramid_}

    def _state_spec(self) -> dict[str, TensorSpec]:
        channels = {level.stride: level.channels for level in self.feature_levels()}
        pixel = sum(channels[s] for s in self.config.layers)
        return {"image_features": TensorSpec(("N", channels[self.config.image_layer])),
                "pyramid": TensorSpec(("N", "h", "w", pixel), _DTYPES[self.config.gallery_dtype])}

    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        device = self.config.device
        self.image_features_ = tensors["image_features"].float().to(device).contiguous()
        self.pyramid_ = tensors["pyramid"].to(device, _DTYPES[self.config.gallery_dtype]).contiguous()
        self._prepare()
