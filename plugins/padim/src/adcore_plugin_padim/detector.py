"""PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly
Detection and Localization", ICPR 2020).

Every position of the finest feature grid gets its own multivariate Gaussian,
fitted on the embeddings of the normal training images at that position; the
anomaly map is the Mahalanobis distance of a test embedding to its position's
Gaussian. Embeddings concatenate three backbone levels (deeper levels repeated
nearest-neighbour style onto the stride-4 grid, as the reference code's
unfold/fold concatenation does) and keep a fixed random subset of channels.
See the plugin README for the choices and deviations.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import attrs
import torch
import torch.nn.functional as F

from adcore.config import in_range, parameter_error, positive_int, strides
from adcore.detector import Fitting
from adcore.errors import DataError, ModelFileError
from adcore.features import BackboneConfig, BackboneDetector
from adcore.modelfile import TensorSpec
from adcore.ops import gaussian_blur, upsample_maps
from adcore.progress import track_batches

#: The paper's channel counts (Table 1 setting): 100 of 448 for ResNet18, 550 of 1792 for WRN50.
PAPER_N_FEATURES = {"resnet18": 100, "wide_resnet50_2": 550}
#: Any other backbone: 100 channels (anomalib's choice for EfficientNet-Lite0, 100 of 176),
#: capped at the number of channels the levels have.
DEFAULT_N_FEATURES = 100
#: Positions inverted at once (bounds the float64 working memory of the inversion).
_INVERT_CHUNK = 512


@attrs.define(kw_only=True)
class PaDiMConfig(BackboneConfig):
    """PaDiM parameters; defaults follow the paper and its reference code.

    Attributes:
        backbone: feature backbone (``adcore list backbones``).
        backbone_weights: weights file instead of the backbone's default weights.
        layers: feature strides concatenated (paper: layer1-3 of a ResNet = strides 4, 8, 16);
            the finest one sets the grid of Gaussians.
        n_features: channels kept by the random channel subset. None: 100 for ResNet18 and
            550 for Wide-ResNet50-2 (the paper's), 100 for any other backbone (capped at the
            channel count of the chosen levels).
        covariance_eps: ε of the regularised covariance Σ + ε·I (paper: 0.01).
        sigma: Gaussian smoothing of the anomaly map, in pixels (reference code: 4).
    """

    layers: tuple[int, ...] = attrs.field(default=(4, 8, 16), validator=strides())
    n_features: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    covariance_eps: float = attrs.field(default=0.01, validator=in_range(0, low_open=True))
    sigma: float = attrs.field(default=4.0, validator=in_range(0))


def resolve_n_features(backbone: str, total: int, n_features: int | None) -> int:
    """Channels to keep: the configured number, or the default for ``backbone``."""
    if n_features is None:
        return min(PAPER_N_FEATURES.get(backbone, DEFAULT_N_FEATURES), total)
    if n_features > total:
        raise parameter_error("PaDiM", "n_features", f"at most {total}, the channels of backbone '{backbone}' "
                              "at the chosen layers", n_features)
    return n_features


def channel_subset(total: int, count: int, seed: int) -> torch.Tensor:
    """A fixed random subset of ``count`` of ``total`` channel indices, sorted, drawn from ``seed``.

    The reference code draws an unordered ``random.sample``; the Mahalanobis distance
    does not depend on the order of the channels, so sorting changes nothing but lets
    each level's share be selected before the levels are upsampled.
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:count].sort().values


class GaussianAccumulator:
    """Streaming per-position mean and scatter matrix (Chan et al.'s pairwise update), float64.

    ``update`` takes one batch (B, P, D); memory is O(P·D²), independent of the number of images.
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None  # (P, D)
        self.scatter: torch.Tensor | None = None  # (P, D, D): sum of centred outer products

    def update(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64).transpose(0, 1)  # (P, B, D)
        positions, batch, dim = x.shape
        if self.mean is None:
            self.mean = torch.zeros(positions, dim, dtype=torch.float64, device=x.device)
            self.scatter = torch.zeros(positions, dim, dim, dtype=torch.float64, device=x.device)
        assert self.scatter is not None
        batch_mean = x.mean(dim=1)
        centred = x - batch_mean.unsqueeze(1)
        total = self.count + batch
        delta = batch_mean - self.mean
        self.scatter.baddbmm_(centred.transpose(1, 2), centred)
        if self.count:
            self.scatter.baddbmm_(delta.unsqueeze(2), delta.unsqueeze(1), alpha=self.count * batch / total)
        self.mean.add_(delta, alpha=batch / total)
        self.count = total

    def covariance(self, eps: float = 0.0) -> torch.Tensor:
        """Unbiased covariance (1/(N-1)) plus ``eps``·I, (P, D, D) float64; consumes the scatter."""
        assert self.scatter is not None and self.count >= 2
        cov = self.scatter.div_(self.count - 1)
        cov.diagonal(dim1=-2, dim2=-1).add_(eps)
        self.scatter = None
        return cov


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run batched small LAPACK calls on one CPU thread.

    Torch loops over the batch and MKL threads each 100x100 call; the thread
    hand-offs cost far more than the work (measured: cholesky_inverse of 1024
    matrices 0.28 s on one thread, 100 s on two threads of a loaded machine).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def inverse_spd(matrices: torch.Tensor, chunk: int = _INVERT_CHUNK) -> torch.Tensor:
    """Inverses of symmetric positive definite (P, D, D) matrices via Cholesky, as float32."""
    out = torch.empty(matrices.shape, dtype=torch.float32, device=matrices.device)
    with _one_thread(matrices.device):
        for start in range(0, matrices.shape[0], chunk):
            factor, info = torch.linalg.cholesky_ex(matrices[start: start + chunk])
            if bool((info != 0).any()):
                raise DataError("a feature covariance is not positive definite; raise covariance_eps")
            out[start: start + chunk] = torch.cholesky_inverse(factor).float()
    return out


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, inv_covariance: torch.Tensor) -> torch.Tensor:
    """Distances sqrt((x-μ)ᵀ Σ⁻¹ (x-μ)) of (B, P, D) embeddings to per-position Gaussians -> (B, P)."""
    delta = (x - mean.unsqueeze(0)).transpose(0, 1)  # (P, B, D)
    squared = (torch.bmm(delta, inv_covariance) * delta).sum(dim=2)  # (P, B)
    return squared.clamp_min_(0).sqrt_().transpose(0, 1)


class PaDiM(BackboneDetector):
    """PaDiM anomaly detector.

    Fitted attributes:
        mean_: (P, D) mean embedding of each of the P = h·w grid positions.
        inv_covariance_: (P, D, D) inverse of each position's regularised covariance.
        channels_: (D,) indices of the kept channels in the concatenated levels.
        grid_: (h, w) the feature grid the Gaussians belong to.
    """

    name = "padim"
    Config = PaDiMConfig

    # -- embedding -------------------------------------------------------
    def embed(self, images: torch.Tensor, channels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Embeddings (B, h·w, D) on the finest level's grid, and that grid (h, w).

        Each level keeps its share of the (sorted) channel subset, deeper levels are
        repeated onto the finest grid (nearest), and the levels are concatenated.
        Every level is written straight into the (B, h, w, D) result: building it
        channel-first and transposing cost three extra copies (~5 ms per image).
        """
        levels = self.extractor(images)
        batch = images.shape[0]
        grid = (int(levels[0].shape[-2]), int(levels[0].shape[-1]))
        out = torch.empty(batch, *grid, channels.numel(), device=levels[0].device)
        column = offset = 0
        for features in levels:
            width = features.shape[1]
            local = channels[(channels >= offset) & (channels < offset + width)] - offset
            offset += width
            count = local.numel()
            if count == 0:
                continue
            part = features.index_select(1, local.to(features.device))
            target = out[..., column: column + count]
            column += count
            height, wide = part.shape[-2:]
            if grid[0] % height or grid[1] % wide:  # not a whole ratio: let interpolate pick
                target.copy_(F.interpolate(part, size=grid, mode="nearest").permute(0, 2, 3, 1))
                continue
            ry, rx = grid[0] // height, grid[1] // wide
            blocks = target.unflatten(1, (height, ry)).unflatten(3, (wide, rx))
            blocks.copy_(part.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand_as(blocks))
        return out.reshape(batch, grid[0] * grid[1], -1), grid

    # -- estimator API ---------------------------------------------------
    def _fit(self, batches: Iterable[torch.Tensor], count: int, fitting: Fitting) -> None:
        c = self.config
        total = sum(self.extractor.channels)
        channels = channel_subset(total, resolve_n_features(c.backbone, total, c.n_features), c.seed)
        accumulator = GaussianAccumulator()
        grid: tuple[int, int] | None = None
        for batch in track_batches(fitting.progress, batches, count, "padim features"):
            embedding, batch_grid = self.embed(batch, channels)
            if grid is None:
                grid = batch_grid
            elif batch_grid != grid:
                raise DataError(f"PaDiM needs training images of one size: a batch of "
                                f"{tuple(batch.shape[-2:])} images gives a {batch_grid[0]}x{batch_grid[1]} "
                                f"feature grid, earlier ones {grid[0]}x{grid[1]}")
            accumulator.update(embedding)
        if accumulator.count < 2:
            raise DataError(f"PaDiM needs at least 2 training images to estimate covariances; "
                            f"got {accumulator.count}")
        assert accumulator.mean is not None and grid is not None
        self.mean_ = accumulator.mean.float()
        self.inv_covariance_ = inverse_spd(accumulator.covariance(c.covariance_eps))
        self.channels_ = channels.to(c.device)
        self.grid_ = grid

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, grid = self.embed(images, self.channels_)
        if grid != self.grid_:
            raise DataError(f"PaDiM models each position of the {self.grid_[0]}x{self.grid_[1]} feature grid "
                            f"it was fitted on, but these {images.shape[-2]}x{images.shape[-1]} images give a "
                            f"{grid[0]}x{grid[1]} grid; predict on images of the size used for fitting")
        distances = mahalanobis(embedding, self.mean_, self.inv_covariance_)
        maps = upsample_maps(distances.reshape(images.shape[0], *grid), tuple(images.shape[-2:]))
        maps = gaussian_blur(maps, self.config.sigma)
        return maps.amax(dim=(1, 2)), maps

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean_, "inv_covariance": self.inv_covariance_, "channels": self.channels_,
                "grid": torch.tensor(self.grid_, dtype=torch.int64)}

    def _state_spec(self) -> dict[str, TensorSpec]:
        dim = resolve_n_features(self.config.backbone, self._total_channels(), self.config.n_features)
        return {"mean": TensorSpec(("P", dim)), "inv_covariance": TensorSpec(("P", dim, dim)),
                "channels": TensorSpec((dim,), torch.int64), "grid": TensorSpec((2,), torch.int64)}

    def _check_state(self, tensors: Mapping[str, torch.Tensor]) -> None:
        height, width = (int(v) for v in tensors["grid"].tolist())
        positions = tensors["mean"].shape[0]
        if height < 1 or width < 1 or height * width != positions:
            raise ValueError(f"tensor 'grid' is {height}x{width}, but 'mean' has {positions} positions")
        channels = tensors["channels"]
        total = self._total_channels()
        if channels.numel() and (int(channels.min()) < 0 or int(channels.max()) >= total
                                 or not bool((channels[1:] > channels[:-1]).all())):
            raise ValueError(f"tensor 'channels' must hold increasing channel indices in [0, {total})")

    def _total_channels(self) -> int:
        return sum(level.channels for level in self.feature_levels())

    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        device = self.config.device
        self.mean_ = tensors["mean"].float().to(device).contiguous()
        self.inv_covariance_ = tensors["inv_covariance"].float().to(device).contiguous()
        self.channels_ = tensors["channels"].long().to(device)
        height, width = (int(v) for v in tensors["grid"].tolist())
        self.grid_ = (height, width)
        if self.mean_.shape[0] != height * width or self.inv_covariance_.shape[0] != height * width:
            raise ModelFileError(f"PaDiM model tensors do not match their {height}x{width} grid")
