"""RIAD's masks, reassembly, losses and training log."""

import torch

from adcore_plugin_riad.detector import RIAD, reconstruction_loss, smoothing_size
from adcore.losses import ssim
from adcore_plugin_riad.losses import msgms_loss, msgms_map
from adcore_plugin_riad.network import UNet, disjoint_masks, inpaint


def test_disjoint_masks_cover_every_cell_once():
    generator = torch.Generator().manual_seed(0)
    for height, width, cell in [(64, 64, 2), (64, 64, 16), (50, 70, 8), (32, 48, 4)]:
        masks = disjoint_masks(height, width, cell, 3, generator)
        assert masks.shape == (3, height, width) and masks.dtype == torch.bool
        assert (masks.sum(dim=0) == 1).all(), "every pixel in exactly one mask"
        for mask in masks:  # each mask is a union of whole cells
            assert mask.any()
            for top in range(0, height, cell):
                for left in range(0, width, cell):
                    block = mask[top: top + cell, left: left + cell]
                    assert block.all() or not block.any()
        # balanced split of the cells
        cells = torch.tensor([mask[::cell, ::cell].sum() for mask in masks])
        assert cells.max() - cells.min() <= 1


def test_inpaint_takes_each_pixel_from_its_masked_pass():
    masks = disjoint_masks(16, 24, 4, 3, torch.Generator().manual_seed(1))
    images = torch.rand(2, 3, 16, 24) + 1.0  # no zeros of its own
    for together in (True, False):
        calls = []

        def network(x):
            passes = x.shape[0] // 2
            calls.append(passes)
            outputs = []
            for j in range(passes):  # identify the pass by which pixels it hid
                rows = x[2 * j: 2 * j + 2]
                hidden = (rows == 0).all(dim=1).all(dim=0)
                index = next(i for i in range(3) if torch.equal(hidden, masks[i]))
                outputs.append(torch.full_like(rows, float(index)))
            return torch.cat(outputs)

        result = inpaint(network, images, masks, together=together)
        expected = torch.argmax(masks.long(), dim=0).float().expand(2, 3, 16, 24)
        assert torch.equal(result, expected)
        assert calls == ([3] if together else [1, 1, 1])


def test_msgms_of_identical_images_is_one():
    images = torch.rand(2, 3, 40, 56)
    assert torch.allclose(msgms_map(images, images), torch.ones(2, 40, 56))
    assert msgms_loss(images, images).abs() < 1e-6
    assert torch.isclose(ssim(images, images), torch.tensor(1.0))
    assert reconstruction_loss(images, images).abs() < 1e-5
    other = images.flip(-1)
    assert msgms_map(images, other).mean() < 0.9 and reconstruction_loss(images, other) > 0.1


def test_smoothing_size_scales_with_image():
    assert smoothing_size(256, 256) == 21
    assert smoothing_size(512, 512) == 43
    assert smoothing_size(64, 96) == 5
    assert smoothing_size(16, 16) == 3


def test_unet_keeps_any_size():
    net = UNet(4).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 40, 72)).shape == (1, 3, 40, 72)


def test_loss_history_kept_and_falls():
    from adcore.testing import conformance_data

    detector = RIAD(epochs=3, base_width=8, train_batch_size=8, lr=1e-3).fit(conformance_data()[0])
    history = detector.loss_history_
    assert len(history) == 3 and all(isinstance(v, float) for v in history)
    assert history[-1] < history[0]


def test_train_crop_is_used_and_predicts_whole_images():
    images = torch.rand(4, 3, 48, 64)
    detector = RIAD(epochs=1, base_width=4, train_batch_size=4, train_crop=32, cell_sizes=(8,)).fit(images)
    prediction = detector.predict(images, progress=None)
    assert prediction.anomaly_maps.shape == (4, 48, 64)
