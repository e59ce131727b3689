"""Real-world images: modes, bit depths, formats; corrupt files name themselves."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adcore.errors import DataError
from adcore.imageio import read_mask, read_rgb


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".tif"])
def test_formats_read_as_rgb(tmp_path, suffix):
    array = np.full((20, 30, 3), (200, 100, 50), np.uint8)
    path = tmp_path / f"a{suffix}"
    Image.fromarray(array).save(path)
    out = read_rgb(path)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - array).max() <= 3  # JPEG is lossy


def test_grey_is_repeated_on_three_channels(tmp_path):
    Image.fromarray(np.full((8, 9), 77, np.uint8), mode="L").save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (8, 9, 3) and (out == 77).all()


def test_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((5, 5, 4), np.uint8)
    rgba[..., 0] = 180
    rgba[..., 3] = 0  # fully transparent: colour must still be kept
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_rgb(tmp_path / "a.png")
    assert out.shape == (5, 5, 3) and (out[..., 0] == 180).all()


def test_sixteen_bit_is_scaled_by_its_range(tmp_path):
    values = np.array([[0, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = read_rgb(tmp_path / "d.png")[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_resize_to_square(tmp_path):
    Image.fromarray(np.zeros((40, 100, 3), np.uint8)).save(tmp_path / "w.png")
    assert read_rgb(tmp_path / "w.png", 32).shape == (32, 32, 3)


def test_corrupt_image_error_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        read_rgb(path)


def test_mask_resized_with_nearest_neighbour(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png", 4)
    assert out.dtype == bool and out[:2].all() and not out[2:].any()
