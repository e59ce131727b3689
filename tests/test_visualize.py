"""Tests for adcore.visualize: shapes, dtypes, panel layout and written files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adcore import visualize as viz

H, W = 48, 64


def _blob_map(h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-(((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (2 * 6.0**2))).astype(np.float32)


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    grey_f = rng.random((H, W), dtype=np.float32)
    return {
        "grey_float": grey_f,
        "grey_uint8": (grey_f * 255).astype(np.uint8),
        "rgb_float": rng.random((H, W, 3)),
        "rgb_uint8": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    }


# --------------------------------------------------------------------------- colorize
def test_colorize_shape_dtype_and_extremes():
    amap = np.linspace(-1.0, 2.0, H * W, dtype=np.float32).reshape(H, W)
    out = viz.colorize(amap, 0.0, 1.0)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    lut = viz._lut("jet")
    # Values outside [vmin, vmax] are clipped to the end colours.
    np.testing.assert_array_equal(out[0, 0], lut[0])
    np.testing.assert_array_equal(out[-1, -1], lut[255])
    # jet: low is blue-ish, high is red-ish.
    assert out[0, 0, 2] > out[0, 0, 0] and out[-1, -1, 0] > out[-1, -1, 2]


def test_colorize_degenerate_range_and_nan_do_not_crash():
    amap = np.full((4, 5), 3.0)
    amap[0, 0] = np.nan
    out = viz.colorize(amap, 3.0, 3.0)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8


def test_colorize_lut_is_cached():
    assert viz._lut("viridis") is viz._lut("viridis")


# --------------------------------------------------------------------------- overlay
@pytest.mark.parametrize("kind", list(_images()))
def test_overlay_shape_dtype_and_tint(kind):
    image = _images()[kind]
    mask = np.zeros((H, W), bool)
    mask[10:30, 20:40] = True
    out = viz.overlay(image, mask)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    base = viz._to_rgb_uint8(image)
    # Outside the mask the image is unchanged.
    np.testing.assert_array_equal(out[~mask], base[~mask])
    # Outline is pure red, interior is tinted (not pure red, redder than before).
    np.testing.assert_array_equal(out[10, 25], [255, 0, 0])
    np.testing.assert_array_equal(out[29, 39], [255, 0, 0])
    interior = out[12:28, 22:38].astype(int)
    assert not np.all(interior == [255, 0, 0])
    assert (interior[..., 0] - interior[..., 1]).mean() > (
        base[12:28, 22:38, 0].astype(int) - base[12:28, 22:38, 1]
    ).mean()


def test_overlay_empty_mask_returns_copy():
    image = _images()["rgb_uint8"]
    out = viz.overlay(image, np.zeros((H, W), bool))
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_outline_is_one_pixel_ring():
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    ring = viz._outline(mask)
    assert ring.sum() == 6 * 4 - 4
    assert not ring[3:7, 3:7].any()


def test_heat_overlay_shape_dtype():
    for image in _images().values():
        out = viz.heat_overlay(image, _blob_map(), 0.0, 1.0)
        assert out.shape == (H, W, 3) and out.dtype == np.uint8


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        viz.overlay(np.zeros((H, W, 3), np.uint8), np.zeros((H + 1, W), bool))


# --------------------------------------------------------------------------- panel
# Tiles narrower than _MIN_TILE are enlarged by a whole factor (each pixel repeated).
F = -(-viz._MIN_TILE // W)


def _tile(p: np.ndarray, i: int, h: int = H, w: int = W) -> np.ndarray:
    """Tile i of a panel (tiles are bottom-aligned), back at the input resolution."""
    x0 = i * (w * F + viz._GAP)
    return p[-h * F:, x0 : x0 + w * F][::F, ::F]


@pytest.mark.parametrize("kind", list(_images()))
@pytest.mark.parametrize("title", ["", "test/crack/003.png  score 2.31  -> DEFECTIVE"])
def test_panel_shape_dtype(kind, title):
    gt = _blob_map() > 0.5
    p = viz.panel(_images()[kind], _blob_map(), gt_mask=gt, threshold=0.5, vmin=0, vmax=1, title=title)
    assert p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3
    assert p.shape[1] == 5 * W * F + 4 * viz._GAP and W * F >= viz._MIN_TILE
    assert p.shape[0] > H * F  # caption bar (and title) above the tiles
    # Gaps between tiles are white.
    gap_col = p[-H * F:, W * F : W * F + viz._GAP]
    assert np.all(gap_col == 255)
    # The first tile is the (converted) image itself.
    np.testing.assert_array_equal(_tile(p, 0), viz._to_rgb_uint8(_images()[kind]))


def test_panel_title_adds_height():
    img = _images()["rgb_uint8"]
    kw = dict(gt_mask=None, threshold=None, vmin=0.0, vmax=1.0)
    assert viz.panel(img, _blob_map(), title="x", **kw).shape[0] > viz.panel(img, _blob_map(), **kw).shape[0]


def test_panel_predicted_mask_tile_threshold_extremes():
    amap = _blob_map()
    img = _images()["grey_uint8"]
    above = viz.panel(img, amap, gt_mask=None, threshold=float(amap.max()) + 1, vmin=0, vmax=1)
    below = viz.panel(img, amap, gt_mask=None, threshold=float(amap.min()) - 1, vmin=0, vmax=1)
    assert np.all(_tile(above, 3) == 0)  # nothing predicted: all black
    assert (_tile(below, 3) == 255).mean() > 0.95  # everything predicted: white


def test_panel_placeholders_and_gt_outline():
    amap = _blob_map()
    img = _images()["rgb_uint8"]
    p = viz.panel(img, amap, gt_mask=None, threshold=None, vmin=0, vmax=1)
    # Grey placeholder tiles ("no mask", "no threshold"): mostly the grey colour.
    for i in (1, 3):
        assert (np.all(_tile(p, i) == viz._EMPTY_TILE, axis=-1)).mean() > 0.8
    # With ground truth: gt tile is black/white and overlay carries a green outline.
    gt = amap > 0.5
    p = viz.panel(img, amap, gt_mask=gt, threshold=None, vmin=0, vmax=1)
    np.testing.assert_array_equal(_tile(p, 1)[..., 0], gt.astype(np.uint8) * 255)
    seg = _tile(p, 4)
    assert np.all(seg[viz._outline(gt)] == viz._GT_COLOR)


# --------------------------------------------------------------------------- files
def test_save_image_panel_heatmap_mask(tmp_path):
    amap = _blob_map()
    img = _images()["rgb_float"]
    gt = amap > 0.5

    viz.save_image(tmp_path / "img.png", img)
    viz.save_image(tmp_path / "grey.png", _images()["grey_float"])
    viz.save_heatmap(tmp_path / "sub" / "heat.png", amap, 0.0, 1.0)
    viz.save_mask(tmp_path / "mask.png", gt)
    viz.save_panel(tmp_path / "panel.png", img, amap, gt_mask=gt, threshold=0.5, vmin=0, vmax=1, title="t")

    with Image.open(tmp_path / "img.png") as im:
        assert im.format == "PNG" and im.size == (W, H) and im.mode == "RGB"
    with Image.open(tmp_path / "grey.png") as im:
        assert im.size == (W, H) and im.mode == "L"
    with Image.open(tmp_path / "sub" / "heat.png") as im:
        assert im.size == (W, H) and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), viz.colorize(amap, 0.0, 1.0))
    with Image.open(tmp_path / "mask.png") as im:
        arr = np.asarray(im)
        assert im.size == (W, H) and im.mode == "L"
        assert set(np.unique(arr)) <= {0, 255}
        np.testing.assert_array_equal(arr == 255, gt)
    expected = viz.panel(img, amap, gt_mask=gt, threshold=0.5, vmin=0, vmax=1, title="t")
    with Image.open(tmp_path / "panel.png") as im:
        np.testing.assert_array_equal(np.asarray(im), expected)


def test_save_roc_and_curve(tmp_path):
    fpr = np.linspace(0, 1, 20)
    curves = {"image": (fpr, np.sqrt(fpr), 0.953), "pixel": (fpr, fpr, None)}
    viz.save_roc(tmp_path / "roc.png", curves, "bottle")
    viz.save_curve(tmp_path / "loss.png", {"train": [1.0, 0.5, 0.3], "val": [1.1, 0.7, 0.6]}, "loss", "epoch", "loss")
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # figures are closed
    with Image.open(tmp_path / "roc.png") as im:
        assert im.format == "PNG" and im.size == (500, 500)
    with Image.open(tmp_path / "loss.png") as im:
        assert im.format == "PNG" and im.size == (600, 400)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, adcore.visualize; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_large_images_are_not_enlarged():
    amap = _blob_map(200, 180)
    p = viz.panel(np.zeros((200, 180, 3)), amap, gt_mask=None, threshold=None, vmin=0, vmax=1)
    assert p.shape[1] == 5 * 180 + 4 * viz._GAP
