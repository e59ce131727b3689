"""DRAEM's simulator, focal loss, networks and training log."""

import math

import numpy as np
import pytest
import torch

from adcore.errors import DataError
from adcore_plugin_draem.detector import CPU_MIN_STEPS, DRAEM, lr_milestones, training_epochs
from adcore.losses import ssim
from adcore_plugin_draem.losses import focal_loss
from adcore_plugin_draem.network import DiscriminativeSubNetwork, ReconstructiveSubNetwork
from adcore_plugin_draem.simulate import (augment, blend, perlin_mask, perlin_noise, procedural_textures,
                                          simulate)


def test_simulated_anomaly_equals_input_outside_mask():
    rng = np.random.default_rng(0)
    images = torch.rand(6, 3, 48, 64)
    bank = procedural_textures(3, (48, 64), 0)
    augmented, masks = simulate(images, rng, lambda r: bank[int(r.integers(3))], anomaly_prob=1.0)
    assert augmented.shape == images.shape and masks.shape == (6, 1, 48, 64)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    outside = (masks == 0).expand_as(images)
    assert torch.equal(augmented[outside], images[outside])
    assert masks.sum() > 0 and not torch.equal(augmented, images)
    # with anomaly_prob 0 nothing changes
    same, none = simulate(images, rng, lambda r: bank[0], anomaly_prob=0.0)
    assert torch.equal(same, images) and none.sum() == 0


def test_blend_is_the_paper_formula():
    image, source = torch.full((3, 2, 2), 0.2), torch.full((3, 2, 2), 1.0)
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = blend(image, source, mask, beta=0.25)
    assert torch.allclose(out[:, 0, 0], torch.tensor(0.75 * 0.2 + 0.25 * 1.0))
    assert torch.allclose(out[:, 0, 1], torch.tensor(0.2))


def test_perlin_mask_deterministic_by_seed():
    a = perlin_mask((64, 80), np.random.default_rng(5))
    b = perlin_mask((64, 80), np.random.default_rng(5))
    c = [perlin_mask((64, 80), np.random.default_rng(s)) for s in range(6, 12)]
    assert a.dtype == bool and a.shape == (64, 80)
    assert np.array_equal(a, b)
    assert any(not np.array_equal(a, m) for m in c)


def test_perlin_noise_range_and_smoothness():
    noise = perlin_noise((64, 64), (4, 4), np.random.default_rng(0))
    assert np.abs(noise).max() <= math.sqrt(2) and noise.std() > 0.1
    assert np.abs(np.diff(noise, axis=1)).max() < 0.3  # smooth at 16 px per lattice cell


def test_textures_and_augment_deterministic():
    a, b = procedural_textures(4, (32, 48), 1), procedural_textures(4, (32, 48), 1)
    assert a.dtype == torch.uint8 and a.shape == (4, 3, 32, 48) and torch.equal(a, b)
    x = augment(a[0], np.random.default_rng(2))
    y = augment(a[0], np.random.default_rng(2))
    assert x.dtype == torch.uint8 and x.shape == a[0].shape and torch.equal(x, y)


def test_focal_loss_hand_values():
    probs = torch.stack([torch.tensor([[0.9, 0.1]]), torch.tensor([[0.1, 0.9]])]).view(1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])  # p_t = 0.9, 0.1
    expected = (-(0.1 ** 2) * math.log(0.9) - (0.9 ** 2) * math.log(0.1)) / 2
    assert math.isclose(focal_loss(probs, target).item(), expected, rel_tol=1e-5)
    target = torch.tensor([[[1, 1]]])  # p_t = 0.1, 0.9
    assert math.isclose(focal_loss(probs, target).item(), expected, rel_tol=1e-5)
    assert math.isclose(focal_loss(probs, target, gamma=0).item(), -(math.log(0.1) + math.log(0.9)) / 2,
                        rel_tol=1e-5)
    perfect = torch.stack([torch.ones(1, 2), torch.zeros(1, 2)]).view(1, 2, 1, 2)
    assert focal_loss(perfect, torch.zeros(1, 1, 2)).item() == 0


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 32, 32)
    assert torch.isclose(ssim(x, x), torch.tensor(1.0))


def test_networks_shapes():
    rec, disc = ReconstructiveSubNetwork(4).eval(), DiscriminativeSubNetwork(4).eval()
    with torch.no_grad():
        assert rec(torch.rand(1, 3, 64, 96)).shape == (1, 3, 64, 96)
        assert disc(torch.rand(1, 6, 64, 96)).shape == (1, 2, 64, 96)


def test_lr_milestones_official():
    assert lr_milestones(700) == (560, 630)
    assert lr_milestones(10) == (8, 9)


def test_loss_history_kept_and_falls():
    from adcore.testing import conformance_data

    detector = DRAEM(epochs=4, base_width=4, disc_base_width=4, lr=1e-3, anomaly_prob=1.0,
                     n_textures=8).fit(conformance_data()[0])
    history = detector.loss_history_
    assert len(history) == 4 and all(isinstance(v, float) for v in history)
    assert history[-1] < history[0]


def test_anomaly_source_folder(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((20, 30, 3), 60 * i, np.uint8)).save(tmp_path / f"t{i}.png")
    images = torch.rand(2, 3, 32, 32)
    detector = DRAEM(epochs=1, base_width=2, disc_base_width=2, anomaly_source=str(tmp_path),
                     anomaly_prob=1.0).fit(images)
    assert detector.predict(images, progress=None).anomaly_maps.shape == (2, 32, 32)
    with pytest.raises(DataError):
        DRAEM(epochs=1, anomaly_source=str(tmp_path / "missing")).fit(images)


def test_cpu_schedule_trains_small_sets_as_many_steps_as_the_set_it_was_sized_on() -> None:
    assert training_epochs(None, 210, 8) == 10  # the tyre set: 27 steps an epoch, 270 steps
    assert training_epochs(None, 476, 8) == 10  # larger sets keep the 10 epochs
    assert training_epochs(None, 40, 8) * 5 >= CPU_MIN_STEPS > (training_epochs(None, 40, 8) - 1) * 5
    assert training_epochs(3, 40, 8) == 3  # an explicit epoch count is kept as given
    assert DRAEM(schedule="paper").config.epochs == 700
