"""DRÆM (V. Zavrtanik, M. Kristan, D. Skočaj, "DRÆM – A discriminatively trained reconstruction
embedding for surface anomaly detection", ICCV 2021).

Anomalies are simulated on normal images (Perlin-noise masks filled with augmented texture).
A reconstructive sub-network learns to restore the normal image (L2 + SSIM); a
discriminative U-Net sees the reconstruction next to the input and learns to segment the
simulated anomaly (focal loss). At test time the anomaly channel of its softmax output is the
map; the image score is the maximum of the 21×21 mean-filtered map. Follows the paper and
the official code (VitjanZ/DRAEM); see the plugin README for defaults and deviations.
"""

from __future__ import annotations

from collections.abc import Iterable

from typing import Any, ClassVar

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from adcore.config import in_range, odd, positive_int, schedule_field
from adcore.detector import Detector, DetectorConfig, Fitting
from adcore.ops import crop_windows, gaussian_blur, pad_to_multiple
from adcore.state import load_modules_state, modules_state
from adcore.training import cache_features, train

from adcore_plugin_draem.losses import focal_loss, reconstruction_loss
from adcore_plugin_draem.network import DIVISOR, DiscriminativeSubNetwork, ReconstructiveSubNetwork, init_weights
from adcore_plugin_draem.simulate import FolderTextures, procedural_textures, rotate_some, simulate

#: Epochs of the paper / official training script.
PAPER_EPOCHS = 700
#: The `cpu` schedule (``epochs`` unset): at least this many epochs, and at least
#: CPU_MIN_STEPS optimiser steps, the 10 epochs of the 210-image tyre set it was measured on.
#: A small category therefore trains as many steps as a 200-image one instead of a few dozen.
CPU_EPOCHS = 10
CPU_MIN_STEPS = 270


#: Named training schedules: "cpu" is the default (the field defaults); "paper" the
#: paper's / official code's. Parameters set explicitly override either.
SCHEDULES: dict[str, dict[str, Any]] = {
    "cpu": {},
    "paper": {"base_width": 128, "disc_base_width": 64, "epochs": PAPER_EPOCHS, "train_crop": None,
              "train_batch_size": 8},
}


@attrs.define(kw_only=True)
class DRAEMConfig(DetectorConfig):
    """DRÆM parameters; defaults are the official code's unless noted.

    Attributes:
        schedule: "cpu" (default: sized for a 2-core CPU, see README) or "paper"; it
            sets every parameter of the schedule that is not set explicitly.
        base_width: width of the reconstructive sub-network (official: 128; default 16 for a CPU).
        disc_base_width: width of the discriminative sub-network (official: 64; default 16 for a CPU).
        epochs: passes over the training images; the paper's setting is 700
            (``schedule=paper``). None (default, the `cpu` schedule): 10 epochs, or more
            when the training set is small, so that training runs at least 270 steps.
        train_batch_size: images per training step (official: 8).
        lr: Adam learning rate (official: 1e-4); ×0.2 after 80 % and 90 % of the epochs.
        focal_gamma: focusing parameter γ of the focal loss (official: 2).
        anomaly_source: folder of anomaly source images (the paper uses DTD); None uses
            procedural textures generated from the seed.
        n_textures: number of procedural textures in the bank (when anomaly_source is None).
        perlin_threshold: threshold of the Perlin noise that makes the mask (official: 0.5).
        anomaly_prob: share of training images that get a simulated anomaly (official: 0.5).
        rotate_prob: share of training images rotated by U(−90°, 90°) before the simulation
            (official: 0.3; the rotated image is also the reconstruction target).
        train_crop: train on random crop × crop windows of the training images (fresh
            window per image and step) instead of whole images; None trains on whole images
            as the paper. Both networks are fully convolutional, so prediction uses whole
            images. Default 128 (4× cheaper steps at 256 px on a CPU, see README).
        time_budget_s: stop training after this many seconds (None: no limit).
        score_filter: side of the mean filter before the image-level maximum (paper: 21).
        sigma: optional Gaussian smoothing of the output map in pixels (official: none).
        batch_size: images per prediction batch.
    """

    SCHEDULES: ClassVar[dict[str, dict[str, Any]]] = SCHEDULES
    schedule: str = schedule_field(SCHEDULES)

    batch_size: int = attrs.field(default=8, validator=positive_int)
    base_width: int = attrs.field(default=16, validator=positive_int)
    disc_base_width: int = attrs.field(default=16, validator=positive_int)
    epochs: int | None = attrs.field(default=None, validator=attrs.validators.optional(positive_int))
    train_batch_size: int = attrs.field(default=8, validator=positive_int)
    lr: float = attrs.field(default=1e-4, validator=in_range(0, low_open=True))
    focal_gamma: float = attrs.field(default=2.0, validator=in_range(0))
    anomaly_source: str | None = None
    n_textures: int = attrs.field(default=64, validator=positive_int)
    perlin_threshold: float = attrs.field(default=0.5, validator=in_range(-1, 1))
    anomaly_prob: float = attrs.field(default=0.5, validator=in_range(0, 1))
    rotate_prob: float = attrs.field(default=0.3, validator=in_range(0, 1))
    train_crop: int | None = attrs.field(default=128, validator=attrs.validators.optional(positive_int))
    time_budget_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(in_range(0, low_open=True)))
    score_filter: int = attrs.field(default=21, validator=odd)
    sigma: float = attrs.field(default=0.0, validator=in_range(0))


def training_epochs(epochs: int | None, n_images: int, batch_size: int) -> int:
    """Epochs to train: ``epochs`` when set; otherwise the `cpu` schedule's 10 epochs, raised
    until they hold CPU_MIN_STEPS optimiser steps."""
    if epochs is not None:
        return epochs
    steps_per_epoch = -(-n_images // batch_size)
    return max(CPU_EPOCHS, -(-CPU_MIN_STEPS // steps_per_epoch))


def lr_milestones(epochs: int) -> tuple[int, int]:
    """Epoch counts after which the learning rate drops ×0.2 (official: 80 % and 90 % of the epochs)."""
    return int(0.8 * epochs), int(0.9 * epochs)


class DRAEM(Detector):
    """DRÆM anomaly detector.

    Fitted attributes:
        reconstructive_: the reconstructive sub-network.
        discriminative_: the discriminative sub-network.
        loss_history_: mean training loss of every epoch run (list of floats).
    """

    name = "draem"
    Config = DRAEMConfig
    tags = {"trainable": True}


    def _build(self) -> None:
        c = self.config
        # channels_last: CPU convolutions (forward and backward) run ~1.35x faster (measured:
        # one training step, batch 8 at 128 px, one thread: 2.1 s vs 2.85 s).
        self.reconstructive_ = ReconstructiveSubNetwork(c.base_width).to(c.device, memory_format=torch.channels_last)
        self.discriminative_ = DiscriminativeSubNetwork(c.disc_base_width).to(
            c.device, memory_format=torch.channels_last)

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (B, 3, H, W) and class probabilities (B, 2, H, W) of any-size images."""
        height, width = images.shape[-2:]
        padded = pad_to_multiple(images, DIVISOR).contiguous(memory_format=torch.channels_last)
        reconstruction = self.reconstructive_(padded)
        logits = self.discriminative_(torch.cat([reconstruction, padded], dim=1))  # official order
        return reconstruction[..., :height, :width], logits.softmax(dim=1)[..., :height, :width]

    # -- estimator API ---------------------------------------------------
    def _fit(self, batches: Iterable[torch.Tensor], count: int, fitting: Fitting) -> None:
        c = self.config
        # No frozen backbone: the training data are the images themselves, decoded once.
        data = cache_features(lambda images: images, batches, count, fitting.progress, desc="draem images")
        height, width = data.tensors[0].shape[-2:]
        crop = (min(height, c.train_crop or height), min(width, c.train_crop or width))
        rng = np.random.default_rng(c.seed)
        if c.anomaly_source is None:
            bank = procedural_textures(c.n_textures, crop, c.seed)

            def source(r: np.random.Generator) -> torch.Tensor:
                return bank[int(r.integers(len(bank)))]
        else:
            folder = FolderTextures(c.anomaly_source)

            def source(r: np.random.Generator) -> torch.Tensor:
                return folder.get(int(r.integers(len(folder))), crop)

        self._build()
        init_weights(self.reconstructive_)
        init_weights(self.discriminative_)
        optimiser = torch.optim.Adam([{"params": self.reconstructive_.parameters()},
                                      {"params": self.discriminative_.parameters()}], lr=c.lr)
        epochs = training_epochs(c.epochs, len(data), c.train_batch_size)
        milestones = lr_milestones(epochs)

        def step(images: torch.Tensor) -> float:
            if crop != (height, width):
                tops = rng.integers(0, height - crop[0] + 1, size=len(images))
                lefts = rng.integers(0, width - crop[1] + 1, size=len(images))
                images = crop_windows(images, tops, lefts, crop)
            images = rotate_some(images, rng, c.rotate_prob)
            augmented, masks = simulate(images, rng, source, c.perlin_threshold, anomaly_prob=c.anomaly_prob)
            reconstruction, probabilities = self._forward(augmented)
            loss = (reconstruction_loss(reconstruction, images)
                    + focal_loss(probabilities, masks, c.focal_gamma))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            return loss.item()

        def on_epoch_end(epoch: int, loss: float) -> None:
            if epoch + 1 in milestones:  # MultiStepLR(milestones=[0.8·epochs, 0.9·epochs], gamma=0.2)
                for group in optimiser.param_groups:
                    group["lr"] *= 0.2

        self.reconstructive_.train()
        self.discriminative_.train()
        self.loss_history_ = train(step, data, epochs, c.train_batch_size, c.seed, c.time_budget_s,
                                   desc="draem train", on_epoch_end=on_epoch_end, progress=fitting.progress,
                                   checkpoint=fitting.checkpoint,
                                   saved={"reconstructive": self.reconstructive_,
                                          "discriminative": self.discriminative_, "optimiser": optimiser},
                                   rngs={"simulation": rng})
        self.reconstructive_.eval()
        self.discriminative_.eval()

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Output of the reconstructive sub-network for (B, 3, H, W) images."""
        with torch.no_grad():
            return self._forward(images)[0]

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        maps = self._forward(images)[1][:, 1]
        pooled = F.avg_pool2d(maps.unsqueeze(1), c.score_filter, stride=1, padding=c.score_filter // 2)
        scores = pooled.flatten(1).max(dim=1).values
        return scores, gaussian_blur(maps, c.sigma)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return modules_state(self._networks())

    def _networks(self) -> dict[str, torch.nn.Module]:
        return {"reconstructive": self.reconstructive_, "discriminative": self.discriminative_}

    def _state_modules(self) -> dict[str, torch.nn.Module]:
        c = self.config
        return {"reconstructive": ReconstructiveSubNetwork(c.base_width),
                "discriminative": DiscriminativeSubNetwork(c.disc_base_width)}

    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self._build()
        load_modules_state(self._networks(), tensors)
        for module in self._networks().values():
            module.eval()
