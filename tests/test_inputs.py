"""Inputs and options (issue 11): every bad value fails on one line before any data is read.

Options and ``--set`` values through the installed ``adcore`` script; images,
masks and file names through real PNG, JPEG and TIFF files written with Pillow.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import attrs
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from adcore.benchmark import BenchmarkOptions
from adcore.cli.main import cli
from adcore.config import available_devices, in_range, parse_assignments
from adcore.data.folder import open_folder
from adcore.detector import DetectorConfig
from adcore.errors import ConfigError, DataError
from adcore.imageio import MAX_IMAGE_PIXELS_ENV, check_file_name, image_size, list_images, read_mask, read_rgb
from adcore.predicting import collect_images
from adcore.runner import RunOptions

ORIENTATION = 0x0112


@pytest.fixture(autouse=True)
def _restore_pillow_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """adcore sets Pillow's global pixel limit on every read; tests with tiny limits must not leak it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def adcore(*args: str) -> subprocess.CompletedProcess:
    script = shutil.which("adcore", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-c", "from adcore.cli.main import cli; cli()"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def save(path: Path, image: Image.Image, **params) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def grey(width: int = 8, height: int = 8, value: int = 128) -> Image.Image:
    return Image.new("L", (width, height), value)


def exif(orientation: int) -> Image.Exif:
    tags = Image.Exif()
    tags[ORIENTATION] = orientation
    return tags


def category(root: Path, width: int = 8, height: int = 8) -> Path:
    """A minimal MVTec-layout category of tiny grey PNGs (no defects yet)."""
    for name in ("train/good/0.png", "train/good/1.png", "test/good/0.png"):
        save(root / "part" / name, grey(width, height))
    return root / "part"


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A real 1x1 PNG whose IHDR is patched to declare width x height (CRC recomputed): a decompression bomb."""
    save(path, Image.new("1", (1, 1)))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC of the chunk type and data
    path.write_bytes(bytes(data))
    return path


def bad_name(folder: Path) -> Path:
    """A real PNG named with the byte 0xff, which is not UTF-8 (any bytes are legal on Linux)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = os.path.join(os.fsencode(folder), b"\xff.png")
    grey().save(raw, format="PNG")
    return Path(os.fsdecode(raw))


# --------------------------------------------------------------------------- options through the real CLI
CLI_CASES = [
    (["run", "-d", "patchcore", "--image-size", "10"], "--image-size must be an int in [32, 4096]; got 10"),
    (["run", "-d", "patchcore", "--image-size", "5000"], "--image-size must be an int in [32, 4096]; got 5000"),
    (["run", "-d", "patchcore", "--holdout", "1"], "--holdout must be a number in [0, 1); got 1.0"),
    (["run", "-d", "patchcore", "--holdout", "nan"], "--holdout must be a number in [0, 1); got nan"),
    (["run", "-d", "patchcore", "--seed", "-1"], "--seed must be an int in [0, 4294967295]; got -1"),
    (["run", "-d", "patchcore", "--seed", str(2**32)], "--seed must be an int in [0, 4294967295]; got 4294967296"),
    (["benchmark", "-d", "patchcore", "--seed", "0", "--seed", "-1"], "--seed must be an int in [0, 4294967295]"),
    (["benchmark", "-d", "patchcore", "--image-size", "10"], "--image-size must be an int in [32, 4096]"),
    (["run", "-d", "patchcore", "--set", "coreset_ratio=nan"],
     "The 'coreset_ratio' parameter of PatchCore must be a finite number. Got 'nan' instead."),
    (["run", "-d", "patchcore", "--set", "sigma=inf"],
     "The 'sigma' parameter of PatchCore must be a finite number. Got 'inf' instead."),
    (["run", "-d", "patchcore", "--set", "device=cuda:99"],
     "The 'device' parameter of PatchCore must be a device of this machine (cpu"),
]


@pytest.mark.parametrize(("args", "message"), CLI_CASES, ids=[" ".join([c[0][0], *c[0][3:]]) for c in CLI_CASES])
def test_bad_option_fails_on_one_line_before_reading_data(tmp_path, args, message):
    result = adcore(*args, "--data", str(tmp_path / "no-such-folder"), "--out", str(tmp_path / "out"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and not result.stdout.strip()
    line = one_line_error(result.stderr)
    assert message in line, line  # not "data folder not found": options are checked first
    assert not (tmp_path / "out").exists()


def test_help_documents_the_ranges():
    text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    assert "[32, 4096]" in text and "[0, 1)" in text and "[0, 4294967295]" in text


# --------------------------------------------------------------------------- the same rules for library users
@pytest.mark.parametrize(("field", "value", "rule"), [
    ("image_size", 10, "an int in [32, 4096]"),
    ("image_size", 64.0, "an int in [32, 4096]"),
    ("holdout", 1.0, "in [0, 1)"),
    ("holdout", float("nan"), "in [0, 1)"),
    ("seed", -1, "an int in [0, 4294967295]"),
    ("image_quantile", 1.5, "in [0, 1]"),
    ("pixel_quantile", float("inf"), "in [0, 1]"),
])
def test_run_options_refuse_out_of_range(field, value, rule):
    with pytest.raises(ConfigError) as info:
        RunOptions(detector="patchcore", **{field: value})
    assert str(info.value) == f"The '{field}' parameter of RunOptions must be {rule}. Got {value!r} instead."


def test_benchmark_options_check_every_seed():
    with pytest.raises(ConfigError, match=r"'seeds' parameter of BenchmarkOptions .* Got -1 instead"):
        BenchmarkOptions(detectors=("patchcore",), seeds=(0, -1))
    with pytest.raises(ConfigError, match="'image_size'"):
        BenchmarkOptions(detectors=("patchcore",), image_size=8000)


def test_unbounded_range_refuses_infinity():
    @attrs.define
    class GainConfig:
        gain: float = attrs.field(default=1.0, validator=in_range(0))

    with pytest.raises(ConfigError, match=r"must be in \[0, inf\)\. Got inf instead\."):
        GainConfig(gain=float("inf"))


def test_set_refuses_non_finite_numbers():
    @attrs.define
    class BudgetConfig:
        ratio: float = 0.5
        budget: float | None = None

    for text in ("nan", "inf", "-inf", "1e999"):
        with pytest.raises(ConfigError, match=f"'ratio' parameter of Budget must be a finite number. Got '{text}'"):
            parse_assignments(BudgetConfig, {"ratio": text})
    with pytest.raises(ConfigError, match="must be a finite number or None. Got 'nan' instead."):
        parse_assignments(BudgetConfig, {"budget": "nan"})
    assert parse_assignments(BudgetConfig, {"budget": "none", "ratio": "0.25"}) == {"budget": None, "ratio": 0.25}


def test_device_must_exist_here():
    assert available_devices()[0] == "cpu"
    assert DetectorConfig(device="cpu").device == "cpu"
    for name in ("cuda:99", "auto", "gpu"):
        with pytest.raises(ConfigError, match=f"must be a device of this machine \\(cpu.*Got '{name}' instead"):
            DetectorConfig(device=name)


def test_gpu_devices_are_those_counted(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert available_devices()[:4] == ("cpu", "cuda", "cuda:0", "cuda:1")
    assert DetectorConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match=r"\(cpu, cuda, cuda:0, cuda:1.*Got 'cuda:2' instead"):
        DetectorConfig(device="cuda:2")


# --------------------------------------------------------------------------- decompression bombs
def test_bomb_header_names_the_file_and_the_limit(tmp_path):
    bomb = png_declaring(tmp_path / "bomb.png", 30000, 30000)
    for read in (image_size, read_rgb, read_mask):
        with pytest.raises(DataError) as info:
            read(bomb)
        message = str(info.value)
        assert message.startswith(f"{bomb}: image has more than 200,000,000 pixels") and MAX_IMAGE_PIXELS_ENV in message


def test_pixel_limit_is_adjustable(tmp_path, monkeypatch):
    bomb = png_declaring(tmp_path / "big.png", 30000, 30000)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, str(30000 * 30000))
    assert image_size(bomb) == (30000, 30000)  # the header alone: nothing is decoded
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "100")
    save(tmp_path / "ok.png", grey(10, 10))
    assert read_rgb(tmp_path / "ok.png").shape == (10, 10, 3)
    save(tmp_path / "over.png", grey(12, 10))  # between the limit and twice it: Pillow only warns
    with pytest.raises(DataError, match="over.png: image has more than 100 pixels"):
        read_rgb(tmp_path / "over.png")
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=f"{MAX_IMAGE_PIXELS_ENV} must be a positive integer"):
        image_size(tmp_path / "ok.png")


def test_bomb_fails_the_run_before_any_work(tmp_path):
    part = category(tmp_path / "data")
    bomb = png_declaring(part / "test" / "good" / "1.png", 30000, 30000)
    with pytest.raises(DataError, match="1.png: image has more than"):
        open_folder(tmp_path / "data")
    result = CliRunner().invoke(cli, ["run", "-d", "patchcore", "--data", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and f"{bomb}: image has more than" in one_line_error(result.output)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- file names that are not UTF-8
def test_non_utf8_name_is_refused_when_listed(tmp_path):
    bad = bad_name(tmp_path / "images")
    expected = f"{os.fsencode(tmp_path).decode()}/images/\\xff.png: file name is not valid UTF-8; rename the file"
    for call in (lambda: list_images(tmp_path / "images"), lambda: check_file_name(bad), lambda: image_size(bad),
                 lambda: collect_images([tmp_path / "images"])):
        with pytest.raises(DataError) as info:
            call()
        assert str(info.value) == expected


def test_non_utf8_name_fails_the_run_before_any_work(tmp_path):
    bad_name(category(tmp_path / "data") / "train" / "good")
    with pytest.raises(DataError, match=r"\\xff.png: file name is not valid UTF-8"):
        open_folder(tmp_path / "data")
    result = CliRunner().invoke(cli, ["run", "-d", "patchcore", "--data", str(tmp_path / "data"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "\\xff.png: file name is not valid UTF-8" in one_line_error(result.output)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- EXIF orientation
def test_jpeg_orientation_6_is_applied(tmp_path):
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:10, :, 0] = 255  # top half red
    stored[10:, :, 2] = 255  # bottom half blue
    path = save(tmp_path / "turned.jpg", Image.fromarray(stored), exif=exif(6), quality=95)
    assert image_size(path) == (20, 30)
    upright = read_rgb(path)
    assert upright.shape == (30, 20, 3)
    assert (upright[:, -4:, 0] > 200).all() and (upright[:, :4, 2] > 200).all()  # 90 degrees clockwise


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_mask_orientation_8_is_applied(tmp_path, suffix):
    stored = np.zeros((20, 30), np.uint8)
    stored[:5] = 255  # top rows
    path = save(tmp_path / f"mask{suffix}", Image.fromarray(stored), exif=exif(8))
    assert image_size(path) == (20, 30)
    mask = read_mask(path)
    assert mask.shape == (30, 20) and mask[:, :5].all() and not mask[:, 5:].any()  # 90 degrees anticlockwise


def test_mask_size_is_checked_against_the_upright_image(tmp_path):
    part = category(tmp_path / "data", 20, 30)
    save(part / "test" / "crack" / "0.jpg", Image.new("RGB", (30, 20)), exif=exif(6))
    save(part / "ground_truth" / "crack" / "0_mask.png", grey(20, 30, 255))
    [read] = open_folder(tmp_path / "data")
    assert [s.mask_path.name for s in read.test if s.label == 1] == ["0_mask.png"]
    save(part / "ground_truth" / "crack" / "0_mask.png", grey(30, 20, 255))  # the stored, not upright, size
    with pytest.raises(DataError, match="mask size 30x20 does not match image 0.jpg \\(20x30\\)"):
        open_folder(tmp_path / "data")


# --------------------------------------------------------------------------- masks
def palette_mask() -> Image.Image:
    image = Image.new("P", (2, 2))
    image.putdata([1, 0, 2, 1])
    image.putpalette([255, 255, 255, 0, 0, 0, 200, 0, 0])  # index 0 is white: the colour decides
    return image


MASKS = {
    "16-bit 0/1": (lambda: Image.fromarray(np.array([[0, 1], [0, 0]], np.uint16)), ".png"),
    "mode I": (lambda: Image.fromarray(np.array([[0, 1], [0, 0]], np.int32)), ".tif"),
    "mode F": (lambda: Image.fromarray(np.array([[0, 0.25], [0, 0]], np.float32)), ".tif"),
    "mode 1": (lambda: Image.fromarray(np.array([[0, 1], [0, 0]], bool)), ".png"),
    "RGB": (lambda: Image.fromarray(np.array([[[0, 0, 0], [0, 0, 1]], [[0, 0, 0], [0, 0, 0]]], np.uint8)), ".png"),
    "RGBA": (lambda: Image.fromarray(np.array([[[0, 0, 0, 255], [3, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 255]]],
                                              np.uint8)), ".png"),
    "LA": (lambda: Image.merge("LA", [Image.fromarray(np.array([[0, 9], [0, 0]], np.uint8)),
                                      Image.fromarray(np.array([[255, 0], [0, 255]], np.uint8))]), ".png"),
}


@pytest.mark.parametrize("kind", MASKS)
def test_any_non_zero_pixel_is_a_defect(tmp_path, kind):
    make, suffix = MASKS[kind]
    path = save(tmp_path / f"mask{suffix}", make())
    assert read_mask(path).tolist() == [[False, True], [False, False]]


def test_palette_mask_goes_by_colour(tmp_path):
    path = save(tmp_path / "mask.png", palette_mask())
    assert Image.open(path).mode == "P"
    assert read_mask(path).tolist() == [[False, True], [True, False]]


def test_mask_names_match_in_any_case(tmp_path):
    part = category(tmp_path / "data")
    masks = {"000.png": "000_mask.PNG", "001.png": "001_MASK.Tif", "002.png": "002.png", "003.PNG": "003_mask.png",
             "004.png": "004_Mask.tif"}
    for image, mask in masks.items():
        save(part / "test" / "crack" / image, grey())
        save(part / "ground_truth" / "crack" / mask, grey(value=255))
    save(part / "ground_truth" / "crack" / "004_mask.png", grey(value=255))  # .png wins over .tif
    [read] = open_folder(tmp_path / "data")
    found = {s.path.name: s.mask_path.name for s in read.test if s.label == 1}
    assert found == {**masks, "004.png": "004_mask.png"}

