"""Shared tensor operations against scipy's reference implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from adcore.ops import gaussian_blur


@pytest.mark.parametrize("shape", [(3, 64, 48), (2, 40, 41), (1, 17, 300)])
def test_gaussian_blur_matches_scipy_mirror_mode(shape):
    maps = torch.rand(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigma = 4.0  # radius 16, smaller than every side here
    expected = np.stack([ndimage.gaussian_filter(m, sigma, mode="mirror", truncate=4.0) for m in maps.numpy()])
    np.testing.assert_allclose(gaussian_blur(maps, sigma).numpy(), expected, atol=1e-12)


def test_gaussian_blur_replicates_along_a_side_shorter_than_the_radius():
    maps = torch.rand(2, 10, 40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = np.stack([
        ndimage.gaussian_filter1d(ndimage.gaussian_filter1d(m, 4.0, axis=0, mode="nearest", truncate=4.0),
                                  4.0, axis=1, mode="mirror", truncate=4.0) for m in maps.numpy()])
    np.testing.assert_allclose(gaussian_blur(maps, 4.0).numpy(), expected, atol=1e-12)


def test_gaussian_blur_keeps_constant_maps_and_skips_sigma_zero():
    maps = torch.full((1, 30, 30), 2.5)
    assert torch.allclose(gaussian_blur(maps, 2.0), maps)
    assert gaussian_blur(maps, 0.0) is maps
