"""SimpleNet (Liu et al., "SimpleNet: A Simple Network for Image Anomaly Detection and
Localization", CVPR 2023).

Locally aggregated features of two middle backbone levels (as in PatchCore), a
linear feature adaptor, and a small discriminator trained to tell adapted normal
features from the same features plus i.i.d. Gaussian noise (truncated L1 loss).
At test time the negated discriminator output is the anomaly score of every
position. Follows the paper and the official code (DonaldRR/SimpleNet, run.sh
settings); see the plugin README for deviations.
"""

from __future__ import annotations

from collections.abc import Iterable

from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from adcore.config import in_range, positive_int, schedule_field, strides
from adcore.detector import Fitting
from adcore.features import BackboneConfig, BackboneDetector, embedding_width, patch_embedding
from adcore.ops import gaussian_blur, upsample_maps
from adcore.state import load_modules_state, modules_state
from adcore.training import CachedData, cache_features, train

#: Epochs of the paper / official run (meta_epochs 40 x gan_epochs 4 passes over the training set).
PAPER_EPOCHS = 160



#: Named training schedules: "cpu" is the default (the field defaults); "paper" the
#: paper's / official code's. Parameters set explicitly override either.
SCHEDULES: dict[str, dict[str, Any]] = {"cpu": {}, "paper": {"epochs": PAPER_EPOCHS}}


@attrs.define(kw_only=True)
class SimpleNetConfig(BackboneConfig):
    """SimpleNet parameters; defaults are the official code's unless noted.

    Attributes:
        schedule: "cpu" (default: sized for a 2-core CPU, see README) or "paper"; it
            sets every parameter of the schedule that is not set explicitly.
        backbone: feature backbone (``adcore list backbones``); paper: WRN50.
        backbone_weights: weights file instead of the backbone's default weights.
        layers: feature strides (official: layer2 + layer3 = strides 8, 16).
        patch_size: neighbourhood aggregated around each position (official: 3).
        pretrain_embed_dimension: per-level dimension after channel pooling (official: 1536).
        target_embed_dimension: feature dimension D (official: 1536); a backbone whose
            levels have fewer channels in total keeps its native width.
        noise_std: σ of the Gaussian noise making anomalous features (official: 0.015, for
            WRN50's features; the default 0.6 was measured for EfficientNet-Lite0, see README).
        dsc_hidden: discriminator hidden width (official: 1024).
        dsc_margin: truncation thresholds th+ = margin, th- = -margin (official: 0.5).
        adaptor_lr: AdamW learning rate of the feature adaptor (official: 1e-4).
        dsc_lr: Adam learning rate of the discriminator (official: 2e-4).
        dsc_weight_decay: Adam weight decay of the discriminator (official: 1e-5).
        epochs: passes over the training set; the paper's setting is 160 (``--set epochs=160``).
            The default is sized for a CPU (see README).
        train_batch_size: images per training step; every position of those images
            is in the step, as in the official code (official: 8).
        time_budget_s: stop training after this many seconds (None: no limit).
        sigma: Gaussian smoothing of the anomaly map, in pixels (official: 4).
    """

    SCHEDULES: ClassVar[dict[str, dict[str, Any]]] = SCHEDULES
    schedule: str = schedule_field(SCHEDULES)

    layers: tuple[int, ...] = attrs.field(default=(8, 16), validator=strides())
    patch_size: int = attrs.field(default=3, validator=positive_int)
    pretrain_embed_dimension: int = attrs.field(default=1536, validator=positive_int)
    target_embed_dimension: int = attrs.field(default=1536, validator=positive_int)
    noise_std: float = attrs.field(default=0.6, validator=in_range(0, low_open=True))
    dsc_hidden: int = attrs.field(default=1024, validator=positive_int)
    dsc_margin: float = attrs.field(default=0.5, validator=in_range(0))
    adaptor_lr: float = attrs.field(default=1e-4, validator=in_range(0, low_open=True))
    dsc_lr: float = attrs.field(default=2e-4, validator=in_range(0, low_open=True))
    dsc_weight_decay: float = attrs.field(default=1e-5, validator=in_range(0))
    epochs: int = attrs.field(default=30, validator=positive_int)
    train_batch_size: int = attrs.field(default=8, validator=positive_int)
    time_budget_s: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(in_range(0, low_open=True)))
    sigma: float = attrs.field(default=4.0, validator=in_range(0))


def truncated_l1_loss(true_scores: torch.Tensor, fake_scores: torch.Tensor, margin: float) -> torch.Tensor:
    """Paper eq. 6: mean(max(0, th+ - D(q))) + mean(max(0, -th- + D(q-))), th± = ±margin."""
    return (margin - true_scores).clamp_min(0).mean() + (fake_scores + margin).clamp_min(0).mean()


class Discriminator(nn.Module):
    """Official discriminator: Linear(D, hidden) + BatchNorm1d + LeakyReLU(0.2), then Linear(hidden, 1)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2))
        self.tail = nn.Linear(hidden, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(x)).squeeze(1)


def _init_xavier(module: nn.Module, generator: torch.Generator) -> None:
    """Official init (xavier_normal_ on Linear weights), drawn from a seeded generator."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            fan_out, fan_in = m.weight.shape
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
                if m.bias is not None:
                    bound = 1.0 / fan_in ** 0.5
                    m.bias.copy_((torch.rand(m.bias.shape, generator=generator) * 2 - 1) * bound)


class SimpleNet(BackboneDetector):
    """SimpleNet anomaly detector.

    Fitted attributes:
        adaptor_: the linear feature adaptor (D -> D).
        discriminator_: the discriminator MLP.
        loss_history_: mean training loss of every epoch run (list of floats).
    """

    name = "simplenet"
    Config = SimpleNetConfig
    tags = {"trainable": True}


    # -- embedding -------------------------------------------------------
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Locally aware features (B, h, w, D) on the finest level's grid."""
        c = self.config
        embedding = patch_embedding(self.extractor(images), c.patch_size, c.pretrain_embed_dimension,
                                    c.target_embed_dimension)
        return embedding.permute(0, 2, 3, 1).contiguous()

    # -- estimator API ---------------------------------------------------
    def _fit(self, batches: Iterable[torch.Tensor], count: int, fitting: Fitting) -> None:
        self.fit_features(cache_features(self.embed, batches, count, fitting.progress, desc="simplenet features"),
                          fitting)

    def fit_features(self, features: CachedData, fitting: Fitting) -> None:
        """Train adaptor and discriminator on cached embeddings (N, h, w, D)."""
        c = self.config
        dim = features.tensors[0].shape[-1]
        generator = torch.Generator().manual_seed(c.seed)
        self.adaptor_ = nn.Linear(dim, dim).to(c.device)
        self.discriminator_ = Discriminator(dim, c.dsc_hidden).to(c.device)
        _init_xavier(self.adaptor_, generator)
        _init_xavier(self.discriminator_, generator)
        # Official optimisers: AdamW(lr 1e-4) for the adaptor ("pre_projection"),
        # Adam(lr 2e-4, weight decay 1e-5) for the discriminator; no schedule (cos_lr off).
        adaptor_opt = torch.optim.AdamW(self.adaptor_.parameters(), lr=c.adaptor_lr)
        dsc_opt = torch.optim.Adam(self.discriminator_.parameters(), lr=c.dsc_lr, weight_decay=c.dsc_weight_decay)
        noise_generator = torch.Generator(device=c.device).manual_seed(c.seed + 1)

        def step(batch: torch.Tensor) -> float:
            true = self.adaptor_(batch.reshape(-1, dim).to(c.device))
            noise = torch.randn(true.shape, generator=noise_generator, device=c.device) * c.noise_std
            scores = self.discriminator_(torch.cat([true, true + noise]))
            loss = truncated_l1_loss(scores[: len(true)], scores[len(true):], c.dsc_margin)
            adaptor_opt.zero_grad()
            dsc_opt.zero_grad()
            loss.backward()
            adaptor_opt.step()
            dsc_opt.step()
            return loss.item()

        self.adaptor_.train()
        self.discriminator_.train()
        self.loss_history_ = train(step, features, c.epochs, c.train_batch_size, c.seed, c.time_budget_s,
                                   desc="simplenet train", progress=fitting.progress, checkpoint=fitting.checkpoint,
                                   saved={"adaptor": self.adaptor_, "discriminator": self.discriminator_,
                                          "adaptor_opt": adaptor_opt, "dsc_opt": dsc_opt},
                                   rngs={"noise": noise_generator})
        self.adaptor_.eval()
        self.discriminator_.eval()

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(images)
        b, h, w, d = embedding.shape
        patch_scores = -self.discriminator_(self.adaptor_(embedding.reshape(-1, d))).reshape(b, h, w)
        scores = patch_scores.reshape(b, -1).max(dim=1).values  # official: maximum patch score
        maps = upsample_maps(patch_scores, tuple(images.shape[-2:]))
        return scores, gaussian_blur(maps, self.config.sigma)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return modules_state({"adaptor": self.adaptor_, "discriminator": self.discriminator_})

    def _state_modules(self) -> dict[str, nn.Module]:
        dim = embedding_width(self.feature_levels(), self.config.target_embed_dimension)
        return {"adaptor": nn.Linear(dim, dim), "discriminator": Discriminator(dim, self.config.dsc_hidden)}

    def _set_state(self, tensors: dict[str, torch.Tensor]) -> None:
        c = self.config
        dim = tensors["adaptor.weight"].shape[0]
        self.adaptor_ = nn.Linear(dim, dim)
        self.discriminator_ = Discriminator(dim, tensors["discriminator.body.0.weight"].shape[0])
        load_modules_state({"adaptor": self.adaptor_, "discriminator": self.discriminator_}, tensors)
        self.adaptor_.to(c.device).eval()
        self.discriminator_.to(c.device).eval()
