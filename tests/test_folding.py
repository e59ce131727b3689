"""Batch norms folded into convolutions: same features, and no fold where a norm is not the conv's."""

from __future__ import annotations

import torch
from torch import nn

from adcore.backbones import timm_backbones
from adcore.backbones.folding import fold_batch_norms, folded_copy
from adcore.features import FeatureExtractor


def test_extractor_folds_every_norm_and_keeps_the_features():
    extractor = FeatureExtractor("efficientnet_lite0", (4, 8, 16))
    plain = timm_backbones.create_efficientnet_lite0((4, 8, 16))
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = plain(images)
    got = extractor(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in extractor.network.body.modules())
    for want, have in zip(expected, got, strict=True):
        assert torch.allclose(want, have, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_fold_keeps_the_activation_of_a_norm_with_one():
    import timm

    body = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(1,)).eval()
    folded = folded_copy(body, torch.randn(1, 3, 64, 64))
    assert folded is not body
    # Lite0's stem norm applies ReLU6: the folded stem must still clip at 6.
    assert isinstance(folded.bn1, nn.Sequential) and isinstance(folded.bn1[1], nn.ReLU6)


class _NormNotOnConv(nn.Module):
    """Registers conv then norm, but normalises the input, not the conv's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.norm.running_mean.fill_(0.5)
            self.norm.running_var.fill_(4.0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.conv(x) + self.norm(x)]


def test_fold_that_changes_outputs_is_refused():
    body = _NormNotOnConv().eval()
    assert fold_batch_norms(_NormNotOnConv().eval()) == 1  # the naive pass would fold it ...
    assert folded_copy(body, torch.randn(2, 3, 16, 16)) is body  # ... the checked copy does not
