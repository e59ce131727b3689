"""RIAD (V. Zavrtanik, M. Kristan, D. Skočaj, "Reconstruction by inpainting for visual anomaly
detection", Pattern Recognition 112, 2021).

A U-Net learns, from normal images only, to inpaint randomly masked k×k grid cells. The
cells are split into n = 3 disjoint sets; each set is masked out in turn and inpainted, and
the n outputs are reassembled into one reconstruction. Training draws k from K = {2, 4, 8,
16} per batch and minimises L2 + MSGMS + SSIM. At test time the anomaly map is 1 − MSGMS
between the image and its reconstruction, mean-filtered and averaged over every k in K; the
image score is its maximum. See the plugin README for defaults and deviations.
"""

from __future__ import annotations

from collections.abc import Iterable

from typing import Any, ClassVar

import attrs
import torch
import torch.nn.functional as F

from adcore.config import in_range, odd, positive_int, positive_ints, schedule_field
from adcore.detector import Detector, DetectorConfig, Fitting
from adcore.ops import crop_windows
from adcore.state import load_modules_state, modules_state
from adcore.training import cache_features, train

from adcore_plugin_riad.losses import GMS_C, msgms_loss, msgms_map, ssim_loss
from adcore_plugin_riad.network import UNet, disjoint_masks, inpaint

#: Epochs of the official code / paper setting.
PAPER_EPOCHS = 300


#: Named training schedules: "cpu" is the default (the field defaults); "paper" the
#: paper's / official code's. Parameters set explicitly override either.
SCHEDULES: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {"base_width": 64, "epochs": PAPER_EPOCHS, "train_crop": None, "train_batch_size": 4},
}


@attrs.define(kw_only=True)
class RIADConfig(DetectorConfig):
    """RIAD parameters; defaults follow the paper unless noted.

    Attributes:
        schedule: "cpu" (default: sized for a 2-core CPU, see README) or "paper"; it
            sets every parameter of the schedule that is not set explicitly.
        base_width: width of the first U-Net level (levels w, 2w, 4w, 8w, 8w). The RIAD
            reimplementations use 64; the default 8 is sized for a CPU (see README).
        cell_sizes: the set K of cell sizes k (paper: 2, 4, 8, 16).
        n_masks: number n of disjoint cell sets / inpainting passes (paper: 3).
        loss_weight_gms: λ_G, weight of the MSGMS loss (paper: 1).
        loss_weight_ssim: λ_S, weight of the SSIM loss (paper: 1).
        gms_c: stability constant of the gradient magnitude similarity (code: 0.0026).
        lr: Adam learning rate (paper: 1e-4).
        weight_decay: Adam weight decay (reimplementations: 1e-5).
        epochs: passes over the training images; the paper's setting is 300
            (``--set epochs=300``). The default is sized for a CPU (see README).
        train_batch_size: images per training step (each step runs n·B inpainting passes).
        time_budget_s: stop training after this many seconds (None: no limit).
        train_crop: train on random crop × crop windows of the training images (a fresh
            window per image and step, drawn from the seeded generator) instead of whole
            images; None trains on whole images as the paper. The U-Net is fully
            convolutional, so it still predicts on whole images. Default 128: 4× cheaper
            steps at 256 px on a CPU (see README).
        smoothing: side of the mean filter on the anomaly map; None scales the paper's
            21 (at 256 px) with the image: round(21·min(H, W)/256), odd, at least 3.
        batch_size: images per prediction batch.
    """

    SCHEDULES: ClassVar[dict[str, dict[str, Any]]] = SCHEDULES
    schedule: str = schedule_field(SCHEDULES)

    batch_size: int = attrs.field(default=8, validator=positive_int)
    base_width: int = attrs.field(default=8, validator=positive_int)
    cell_sizes: tuple[int, ...] = attrs.field(default=(2, 4, 8, 16), validator=positive_ints)
    n_masks: int = attrs.field(default=3, validator=in_range(2))
    loss_weight_gms: float = attrs.field(default=1.0, validator=in_range(0))
    loss_weight_ssim: float = attrs.field(default=1.0, validator=in_range(0))
    gms_c: float = attrs.field(default=GMS_C, validator=in_range(0, low_open=True))
    lr: float = attrs.field(default=1e-4, validator=in_range(0, low_open=True))
    weight_decay: float = attrs.field(default=1e-5, validator=in_range(0))
    epochs: int = attrs.field(default=10, validator=positive_int)
    train_batch_size: int = attrs.field(default=8, validator=positive_int)
    time_budget_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(in_range(0, low_open=True)))
    train_crop: int | None = attrs.field(default=128, validator=attrs.validators.optional(positive_int))
    smoothing: int | None = attrs.field(default=None, validator=attrs.validators.optional(odd))


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range of the reimplementations (Normalize(0.5, 0.5)): an erased
    cell (zero) is then mid-grey, not black, and the tanh output can reach every value."""
    return images * 2 - 1


def smoothing_size(height: int, width: int) -> int:
    """The paper's 21-pixel mean filter at 256 px, scaled to the image: odd, at least 3."""
    size = round(21 * min(height, width) / 256)
    if size % 2 == 0:
        size += 1
    return max(3, size)


def reconstruction_loss(images: torch.Tensor, reconstruction: torch.Tensor, weight_gms: float = 1.0,
                        weight_ssim: float = 1.0, c: float = GMS_C) -> torch.Tensor:
    """RIAD loss: L2 + λ_G·MSGMS + λ_S·(1 − SSIM)."""
    return (F.mse_loss(reconstruction, images) + weight_gms * msgms_loss(images, reconstruction, c)
            + weight_ssim * ssim_loss(images, reconstruction))


class RIAD(Detector):
    """RIAD anomaly detector.

    Fitted attributes:
        network_: the inpainting U-Net.
        loss_history_: mean training loss of every epoch run (list of floats).
    """

    name = "riad"
    Config = RIADConfig
    tags = {"trainable": True}


    # -- estimator API ---------------------------------------------------
    def _fit(self, batches: Iterable[torch.Tensor], count: int, fitting: Fitting) -> None:
        c = self.config
        # No frozen backbone: the training data are the images themselves, decoded once, in [-1, 1].
        data = cache_features(to_signed, batches, count, fitting.progress, desc="riad images")
        height, width = data.tensors[0].shape[-2:]
        crop_h, crop_w = min(height, c.train_crop or height), min(width, c.train_crop or width)
        self.network_ = UNet(c.base_width).to(c.device)
        optimiser = torch.optim.Adam(self.network_.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        generator = torch.Generator().manual_seed(c.seed + 1)  # cell sizes and masks

        def step(images: torch.Tensor) -> float:
            if (crop_h, crop_w) != (height, width):
                tops = torch.randint(height - crop_h + 1, (len(images),), generator=generator).tolist()
                lefts = torch.randint(width - crop_w + 1, (len(images),), generator=generator).tolist()
                images = crop_windows(images, tops, lefts, (crop_h, crop_w))
            k = c.cell_sizes[int(torch.randint(len(c.cell_sizes), (1,), generator=generator))]
            masks = disjoint_masks(crop_h, crop_w, k, c.n_masks, generator).to(c.device)
            reconstruction = inpaint(self.network_, images, masks)
            loss = reconstruction_loss(images, reconstruction, c.loss_weight_gms, c.loss_weight_ssim, c.gms_c)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            return loss.item()

        self.network_.train()
        self.loss_history_ = train(step, data, c.epochs, c.train_batch_size, c.seed, c.time_budget_s,
                                   desc="riad train", progress=fitting.progress, checkpoint=fitting.checkpoint,
                                   saved={"network": self.network_, "optimiser": optimiser},
                                   rngs={"masks": generator})
        self.network_.eval()

    def test_masks(self, height: int, width: int, cell: int) -> torch.Tensor:
        """The fixed masks used at test time for cell size ``cell``: seeded, same for every image.

        Drawn once per size and kept: later batches reuse them, and an ONNX export
        (which cannot trace a random generator) finds them as constants.
        """
        cache = self.__dict__.setdefault("_test_masks", {})
        key = (height, width, cell)
        if key not in cache:
            generator = torch.Generator().manual_seed(self.config.seed * 7919 + cell)
            cache[key] = disjoint_masks(height, width, cell, self.config.n_masks, generator).to(self.config.device)
        return cache[key]

    def reconstruct(self, images: torch.Tensor, cell: int) -> torch.Tensor:
        """Inpainting reconstruction of (B, 3, H, W) images in [0, 1] with cells of size ``cell``."""
        return (self._inpaint(to_signed(images), cell) + 1) / 2

    def _inpaint(self, signed: torch.Tensor, cell: int) -> torch.Tensor:
        masks = self.test_masks(signed.shape[-2], signed.shape[-1], cell)
        with torch.no_grad():
            return inpaint(self.network_, signed, masks, together=False)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        height, width = images.shape[-2:]
        size = c.smoothing or smoothing_size(height, width)
        total = torch.zeros(images.shape[0], height, width, device=images.device)
        signed = to_signed(images)
        for cell in c.cell_sizes:
            distance = 1 - msgms_map(signed, self._inpaint(signed, cell), c.gms_c)
            total += F.avg_pool2d(distance.unsqueeze(1), size, stride=1, padding=size // 2,
                                  count_include_pad=False).squeeze(1)
        maps = total / len(c.cell_sizes)
        return maps.flatten(1).max(dim=1).values, maps

    def _get_state(self) -> dict[str, torch.Tensor]:
        return modules_state({"network": self.network_})

    def _state_modules(self) -> dict[str, torch.nn.Module]:
        return {"network": UNet(self.config.base_width)}

    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.network_ = UNet(self.config.base_width)
        load_modules_state({"network": self.network_}, tensors)
        self.network_.to(self.config.device).eval()
