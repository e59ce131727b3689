"""High-resolution inspection (issue 15): tiles, aspect ratio kept, native-size pixel metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adcore import metrics
from adcore.detector import Detector, load_model
from adcore.errors import ConfigError
from adcore.evaluation import streamed_pixel_roc
from adcore.framing import Framing
from adcore.ops import upsample_maps
from adcore.tiling import cut_tiles, stitch_maps, tile_grid
from cli_helpers import invoke, one_line_error


# -- tiles -------------------------------------------------------------------------
def test_tiles_cover_the_image_and_stitch_back_exactly():
    grid = tile_grid(100, 70, 32, 0.25)
    assert grid.rows.tolist() == [0, 24, 48, 68] and grid.cols.tolist() == [0, 24, 38]  # last ones flush
    images = torch.rand(2, 3, 100, 70)
    tiles = cut_tiles(images, grid)
    assert tiles.shape == (2 * 12, 3, 32, 32)
    assert torch.equal(tiles[12 + 5], images[1, :, 24:56, 38:70])  # image 1, row 1, column 2
    assert torch.equal(stitch_maps(tiles[:, 0], grid), images[:, 0])


def test_overlapping_tiles_keep_the_maximum_so_a_defect_is_not_diluted():
    grid = tile_grid(64, 64, 32, 0.5)  # 3 x 3 tiles; pixel (40, 40) lies in four of them
    tile_maps = torch.zeros(grid.count, 32, 32)
    tile_maps[4, 24, 24] = 5.0  # tile (1, 1) starts at (16, 16) and sees a defect at (40, 40)
    stitched = stitch_maps(tile_maps, grid)[0]
    assert stitched[40, 40] == 5.0 and stitched.sum() == 5.0  # a mean of the four tiles would give 1.25


@pytest.mark.parametrize(("args", "fragment"), [
    (["--tile", "16"], "--tile must be an int in [32, 4096]; got 16"),
    (["--tile", "32", "--tile-overlap", "1"], "--tile-overlap must be a number in [0, 1); got 1.0"),
    (["--tile", "32", "--tile-scale", "0"], "--tile-scale must be a number in (0, 4]; got 0.0"),
    (["--tile-overlap", "0.5"], "--tile-overlap and --tile-scale apply to tiles; add --tile SIZE"),
    (["--eval-size", "big"], "--eval-size must be working or native or an int"),
    (["--resize", "crop"], "--resize"),
    (["--tile", "128"], "--tile 128 is larger than"),  # the tiny set's images are 64 px
    (["--per-position"], "--per-position applies to tiles; add --tile SIZE"),
], ids=["tile-small", "overlap-one", "scale-zero", "overlap-without-tile", "eval-size", "resize", "tile-too-large",
        "positions-without-tile"])
def test_bad_tiling_options_are_one_line_errors(tiny_root, tmp_path, args, fragment):
    result = invoke("run", "--detector", "patchcore", "--data", tiny_root, "--out", tmp_path / "out", *args)
    assert fragment in one_line_error(result)
    assert not (tmp_path / "out").exists()


# -- keep: padding is never scored -----------------------------------------------------
class _RowDetector(Detector):
    """Map = absolute row index + brightness, so padding (the bottom rows) scores highest; own score huge."""

    name = "rows"

    def _fit(self, batches, count, fitting):
        pass

    def _predict_batch(self, images):
        rows = torch.arange(images.shape[2], dtype=torch.float32)[None, :, None]
        maps = rows + images.mean(dim=1)
        return torch.full((images.shape[0],), 1e9), maps

    def _get_state(self):
        return {}

    def _set_state(self, tensors):
        pass


def test_keep_never_lets_padding_change_a_score_or_a_metric(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height) in enumerate([(128, 64), (96, 120), (80, 80)]):  # landscape, portrait, square
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(paths[-1])
    framing = Framing(image_size=64, resize="keep")
    detector = _RowDetector().fit(torch.zeros(1, 3, 64, 64))
    inspection = framing.predict(detector, paths, batch_size=2, progress=None)

    assert [m.shape for m in inspection.maps] == [(32, 64), (64, 51), (64, 64)]  # the images' own pixels only
    for path, image_map, score in zip(paths, inspection.maps, inspection.scores):
        unpadded = torch.from_numpy(framing.read(path).copy()).permute(2, 0, 1)[None].float() / 255
        alone = detector.predict(unpadded, progress=None)  # the same image with no padding at all
        np.testing.assert_array_equal(image_map, alone.anomaly_maps[0])
        assert score == image_map.max() < 64  # not the detector's 1e9, not a padding row's larger value

    masks = [m > np.median(m) for m in inspection.maps]
    in_memory = metrics.pixel_auroc(np.concatenate([m.ravel() for m in masks]),
                                    np.concatenate([m.ravel() for m in inspection.maps]))
    alone_maps = [detector.predict(torch.from_numpy(framing.read(p).copy()).permute(2, 0, 1)[None].float() / 255,
                                   progress=None).anomaly_maps[0] for p in paths]
    assert in_memory == metrics.pixel_auroc(np.concatenate([m.ravel() for m in masks]),
                                            np.concatenate([m.ravel() for m in alone_maps]))


# -- native-size pixel metrics ---------------------------------------------------------
@pytest.mark.parametrize("fpr_limit", [0.3, 0.01, 1.0])
def test_streamed_pixel_roc_and_aupro_equal_the_in_memory_ones(fpr_limit):
    rng = np.random.default_rng(1)
    masks = [rng.random(shape) < 0.1 for shape in [(30, 40), (17, 5), (64, 64)]]  # many regions of 1-6 pixels
    masks.append(np.zeros((9, 9), bool))  # a normal image
    maps = [np.round(rng.random(m.shape) * 20).astype(np.float32) / 20 + m * 0.1 for m in masks]  # many ties
    streamed = metrics.pixel_roc_streamed(list(zip(masks, maps)), fpr_limit)
    flat_masks, flat_maps = np.concatenate([m.ravel() for m in masks]), np.concatenate([m.ravel() for m in maps])
    assert streamed.auroc == metrics.pixel_auroc(flat_masks, flat_maps)
    assert (streamed.n_pos, streamed.n_neg) == (int(flat_masks.sum()), int((~flat_masks).sum()))
    # the same curve summed in another order: equal to rounding (measured difference <= 2e-15)
    assert streamed.aupro == pytest.approx(metrics.aupro(masks, maps, fpr_limit), rel=1e-12, abs=0)
    nothing = metrics.pixel_roc_streamed([(np.zeros((3, 3), bool), np.ones((3, 3), np.float32))])
    assert nothing.auroc is None and nothing.aupro is None


def test_native_pixel_metrics_equal_those_computed_in_memory(tmp_path):
    rng = np.random.default_rng(2)
    natives = [(50, 37), (40, 40), (61, 33)]  # (width, height) of the files
    maps, mask_paths, in_memory_masks, in_memory_maps = [], [], [], []
    for i, (width, height) in enumerate(natives):
        maps.append(rng.random((16, 24)).astype(np.float32))
        mask = np.zeros((height, width), bool)
        mask[5:15, 7:20] = i != 1  # the second image is normal
        mask[30:, 35:] = i == 2  # a second region
        mask_paths.append(None if i == 1 else tmp_path / f"{i}_mask.png")
        if i != 1:
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_paths[-1])
        in_memory_masks.append(mask)
        in_memory_maps.append(upsample_maps(torch.from_numpy(maps[-1])[None], (height, width))[0].numpy())
    streamed = streamed_pixel_roc(maps, mask_paths, [(h, w) for w, h in natives])
    assert streamed.auroc == metrics.pixel_auroc(np.concatenate([m.ravel() for m in in_memory_masks]),
                                                 np.concatenate([m.ravel() for m in in_memory_maps]))
    assert streamed.aupro == pytest.approx(metrics.aupro(in_memory_masks, in_memory_maps), rel=1e-12, abs=0)


# -- end to end: the model file records the framing, predict applies it -------------------
@pytest.mark.parametrize("framing_args", [["--resize", "keep", "--eval-size", "native"],
                                          ["--tile", "32", "--tile-overlap", "0.5", "--eval-size", "256"],
                                          ["--tile", "32", "--tile-overlap", "0.5", "--per-position"]],
                         ids=["keep", "tiles", "per-position"])
def test_predict_applies_the_saved_framing_exactly(tiny_root, tmp_path, framing_args):
    data = tmp_path / "data"
    for source in tiny_root.rglob("*.png"):  # a landscape copy of the tiny set: 64 x 40 images
        target = data / source.relative_to(tiny_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).crop((0, 0, 64, 40)).save(target)
    result = invoke("run", "--detector", "patchcore", "--data", data, "--out", tmp_path / "out", "--image-size", "64",
                    "--set", "coreset_ratio=0.2", *framing_args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "patchcore" / "machined_part"
    if "256" in framing_args:  # panels at the evaluation size (256 x 160), not the working one (64 x 40)
        panels = list((folder / "panels").rglob("*.png"))
        assert panels and all(5 * 256 <= Image.open(p).width < 5 * 256 + 40 for p in panels)
    saved = json.loads((folder / "model" / "config.json").read_text())["metadata"]["framing"]
    result_json = json.loads((folder / "metrics.json").read_text())
    assert saved == result_json["framing"] and saved["resize" if "--resize" in framing_args else "tile"] in ("keep", 32)
    assert result_json["pixel_auroc"] is not None
    run_scores = {row["image"]: float(row["score"]) for row in csv.DictReader(open(folder / "predictions.csv"))}
    predicted = invoke("predict", folder, data / "machined_part" / "test" / "good", "--out", tmp_path / "p")
    assert predicted.exit_code == 0, predicted.output
    for row in json.loads((tmp_path / "p" / "predictions.json").read_text())["predictions"]:
        name = "test/good/" + Path(row["image"]).name
        assert row["score"] == pytest.approx(run_scores[name], rel=1e-5)


def test_a_tile_larger_than_an_image_is_refused_by_name(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((40, 300, 3), np.uint8)).save(path)
    with pytest.raises(ConfigError, match=r"--tile 64 is larger than .*small.png \(300x40, 300x40 at --tile-scale 1\)"):
        Framing(tile=64).check_images([path])


# -- the done-when test: small defects in 2048 px parts ------------------------------------
LENGTH, WIDTH = 2048, 512  # a long part (a shaft, a rail) photographed at 2048 x 512 px


def _part(rng: np.random.Generator, defect: bool) -> tuple[np.ndarray, np.ndarray]:
    """A grainy surface; a defect is a 8-16 px spot of fine pitting (a 2 px checker added on top).

    The pitting has zero mean, so squashing 2048 px to 256 px averages it away: the
    squashed image of a defective part is that of the same part without the defect.
    """
    coarse = rng.normal(0.0, 1.0, (WIDTH // 2, LENGTH // 2)).astype(np.float32)
    grey = 0.5 + 0.08 * np.repeat(np.repeat(coarse, 2, 0), 2, 1)
    grey += 0.04 * rng.normal(0.0, 1.0, (WIDTH, LENGTH)).astype(np.float32)
    mask = np.zeros((WIDTH, LENGTH), bool)
    diameter = int(rng.integers(8, 17))
    cy, cx = int(rng.integers(32, WIDTH - 32)), int(rng.integers(32, LENGTH - 32))
    if defect:
        yy, xx = np.ogrid[:WIDTH, :LENGTH]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2
        grey = grey + mask * np.where((yy // 2 + xx // 2) % 2 == 0, 0.4, -0.4)
    return np.clip(grey * 255 + 0.5, 0, 255).astype(np.uint8), mask


def _write_parts(root: Path) -> None:
    for split, count, defect in (("train/good", 4, False), ("test/good", 4, False), ("test/pitting", 4, True)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            grey, mask = _part(np.random.default_rng([15, len(split), i]), defect)
            Image.fromarray(grey).convert("RGB").save(root / split / f"{i}.bmp")
            if defect:  # the same part without the defect, to show what squashing leaves of it
                (root / "twins").mkdir(exist_ok=True)
                clean, _ = _part(np.random.default_rng([15, len(split), i]), False)
                Image.fromarray(clean).convert("RGB").save(root / "twins" / f"{i}.bmp")


def test_tiles_at_native_resolution_find_small_defects_that_squashing_erases(tmp_path):
    """Measured (PaDiM, EfficientNet-Lite0, 4 train, 4 + 4 test): image AUROC 1.0 tiled, 0.5 squashed.

    0.5 squashed is chance, not bad luck: squashing erases the defect, which moves a
    squashed score by 7e-6 of the spread of normal scores (checked below), so the
    ranking is the surfaces' own noise.
    """
    root = tmp_path / "parts" / "shaft"
    _write_parts(root)
    auroc = {}
    for kind, args in (("tiled", ["--tile", "256"]), ("squashed", ["--image-size", "256"])):
        out = tmp_path / kind
        result = invoke("run", "--detector", "padim", "--data", root.parent, "--out", out, "--holdout", "0",
                        "--no-panels", *args)
        assert result.exit_code == 0, result.output
        auroc[kind] = json.loads((out / "padim" / "shaft" / "metrics.json").read_text())["image_auroc"]
    print(f"image AUROC: tiled {auroc['tiled']:.4f}, squashed {auroc['squashed']:.4f}")
    assert auroc["tiled"] >= 0.9
    assert auroc["squashed"] < 0.9

    detector, meta = load_model(tmp_path / "squashed" / "padim" / "shaft" / "model")
    framing = Framing.from_metadata(meta)
    defective = framing.predict(detector, sorted((root / "test" / "pitting").glob("*.bmp")), 4, None).scores
    twins = framing.predict(detector, sorted((root / "twins").glob("*.bmp")), 4, None).scores
    normal = framing.predict(detector, sorted((root / "test" / "good").glob("*.bmp")), 4, None).scores
    assert np.abs(defective - twins).max() < 0.01 * (normal.max() - normal.min())  # measured: 7e-6
