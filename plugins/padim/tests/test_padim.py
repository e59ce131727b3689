"""PaDiM's own pieces: streaming covariance, Mahalanobis map, channel subset, grid checks."""

import pytest
import torch

from adcore.errors import ConfigError, DataError
from adcore_plugin_padim.detector import (GaussianAccumulator, PaDiM, channel_subset, inverse_spd, mahalanobis,
                                          resolve_n_features)


def test_streaming_covariance_matches_torch_cov():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(23, 5, 4, generator=generator, dtype=torch.float64) * 3 + 10  # (N, P, D), offset mean
    accumulator = GaussianAccumulator()
    for chunk in x.split([7, 1, 10, 5]):  # uneven batches, one of a single image
        accumulator.update(chunk)
    assert accumulator.count == 23
    torch.testing.assert_close(accumulator.mean, x.mean(dim=0))
    cov = accumulator.covariance(eps=0.01)
    for p in range(x.shape[1]):
        expected = torch.cov(x[:, p].T) + 0.01 * torch.eye(4, dtype=torch.float64)
        torch.testing.assert_close(cov[p], expected)


def test_inverse_spd():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(3, 6, 6, generator=generator, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.1 * torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(inverse_spd(spd, chunk=2), torch.linalg.inv(spd).float(), rtol=1e-4, atol=1e-4)


def test_mahalanobis_matches_naive_per_position():
    generator = torch.Generator().manual_seed(2)
    batch, positions, dim = 3, 4, 5
    x = torch.randn(batch, positions, dim, generator=generator)
    mean = torch.randn(positions, dim, generator=generator)
    a = torch.randn(positions, dim, dim, generator=generator)
    inv = a @ a.transpose(1, 2) + torch.eye(dim)
    got = mahalanobis(x, mean, inv)
    assert got.shape == (batch, positions)
    for b in range(batch):
        for p in range(positions):
            d = (x[b, p] - mean[p]).double()
            expected = torch.sqrt(d @ inv[p].double() @ d)
            torch.testing.assert_close(got[b, p].double(), expected, rtol=1e-5, atol=1e-5)


def test_channel_subset_deterministic_by_seed():
    first = channel_subset(176, 100, seed=3)
    assert torch.equal(first, channel_subset(176, 100, seed=3))
    assert not torch.equal(first, channel_subset(176, 100, seed=4))
    assert first.numel() == 100 and first.unique().numel() == 100
    assert int(first.min()) >= 0 and int(first.max()) < 176


def test_default_n_features():
    assert resolve_n_features("resnet18", 448, None) == 100
    assert resolve_n_features("wide_resnet50_2", 1792, None) == 550
    assert resolve_n_features("efficientnet_lite0", 176, None) == 100
    assert resolve_n_features("efficientnet_lite0", 64, None) == 64
    with pytest.raises(ConfigError, match="n_features"):
        resolve_n_features("efficientnet_lite0", 176, 200)


def test_invalid_parameters():
    with pytest.raises(ConfigError, match="covariance_eps"):
        PaDiM(covariance_eps=0.0)
    with pytest.raises(ConfigError, match="n_features"):
        PaDiM(n_features=0)


def test_fitted_state_and_grid_mismatch():
    images = torch.rand(4, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    detector = PaDiM(backbone_weights="random", n_features=20).fit(images)
    assert detector.grid_ == (16, 24)
    assert detector.mean_.shape == (16 * 24, 20) and detector.mean_.dtype == torch.float32
    assert detector.inv_covariance_.shape == (16 * 24, 20, 20)
    with pytest.raises(DataError, match="16x24"):
        detector.predict(torch.rand(1, 3, 64, 64), progress=None)


def test_single_training_image_is_an_error():
    with pytest.raises(DataError, match="at least 2"):
        PaDiM(backbone_weights="random").fit(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (72, 100)])  # whole and fractional level ratios
def test_embedding_matches_channel_first_concatenation(size):
    import torch.nn.functional as F

    detector = PaDiM(backbone_weights="random")
    channels = channel_subset(176, 100, seed=0)
    images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
    levels = detector.extractor(images)
    grid = tuple(levels[0].shape[-2:])
    parts, offset = [], 0
    for features in levels:
        local = channels[(channels >= offset) & (channels < offset + features.shape[1])] - offset
        offset += features.shape[1]
        parts.append(F.interpolate(features.index_select(1, local), size=grid, mode="nearest"))
    expected = torch.cat(parts, dim=1).permute(0, 2, 3, 1).reshape(2, grid[0] * grid[1], -1)
    embedding, got_grid = detector.embed(images, channels)
    assert got_grid == grid and torch.equal(embedding, expected)
