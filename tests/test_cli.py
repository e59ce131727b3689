"""The command line end to end: outputs of `adcore run`, `adcore predict`, and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from adcore.cli.main import cli

FAST = ["--image-size", "64", "--set", "coreset_ratio=0.2"]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(cli, ["run", "--detector", "patchcore", "--data", str(tiny_root), "--out", str(out),
                                      *FAST], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out / "patchcore" / "machined_part", result.output


def test_run_writes_every_output(finished_run):
    folder, output = finished_run
    assert "image AUROC" in output and "machined_part" in output
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("detector", "category", "backbone", "image_size", "image_auroc", "pixel_auroc", "aupro",
                "image_f1_max", "image_threshold", "pixel_threshold", "n_train", "n_test", "fit_seconds",
                "predict_seconds", "images_per_second", "peak_rss_mb", "adcore_version"):
        assert key in metrics, key
    assert metrics["n_train"] == 9 and metrics["n_calibration"] == 1 and metrics["n_test"] == 7
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and metrics["image_threshold"] is not None
    assert (folder / "roc_image.png").is_file() and (folder / "roc_pixel.png").is_file()
    assert json.loads((folder / "roc_image.json").read_text())["auroc"] == metrics["image_auroc"]
    panels = sorted(p.relative_to(folder / "panels").as_posix() for p in (folder / "panels").rglob("*.png"))
    assert len(panels) == 7 and "crack/000.png" in panels
    assert {p.name for p in (folder / "model").iterdir()} == {"model.safetensors", "config.json"}
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_predict_reproduces_the_run_scores(finished_run, tiny_root, tmp_path):
    folder, _ = finished_run
    with open(folder / "predictions.csv") as handle:
        expected = {row["image"].split("/", 1)[1]: float(row["score"]) for row in csv.DictReader(handle)}
    test_dir = tiny_root / "machined_part" / "test"
    result = invoke("predict", folder, test_dir / "good", test_dir / "crack", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(summary["predictions"]) == 4
    for row in summary["predictions"]:
        key = "/".join(row["image"].split("/")[-2:])
        assert row["score"] == pytest.approx(expected[key], rel=1e-4)
        heat = Image.open(tmp_path / "p" / row["heatmap"])
        assert heat.size == (64, 64)  # the input resolution
        assert (tmp_path / "p" / row["mask"]).is_file()


def test_plugins_json_and_list():
    data = json.loads(invoke("plugins", "--json").output)
    assert any("patchcore" in p["provides"].get("detector", []) for p in data)
    assert "patchcore" in invoke("list", "detectors").output


def test_missing_data_folder(tmp_path):
    result = invoke("run", "--detector", "patchcore", "--data", tmp_path / "nope", "--out", tmp_path / "out")
    assert_one_line_error(result, "nope: data folder not found")
    assert not (tmp_path / "out").exists()


def test_unknown_detector_and_backbone(tiny_root, tmp_path):
    assert_one_line_error(invoke("run", "--detector", "patchcor", "--data", tiny_root, "--out", tmp_path / "o"),
                          "Unknown detector 'patchcor'", "Did you mean 'patchcore'")
    assert_one_line_error(invoke("run", "--detector", "patchcore", "--backbone", "resnet19", "--data", tiny_root,
                                 "--out", tmp_path / "o"), "Unknown backbone 'resnet19'")
    assert not (tmp_path / "o").exists()


def test_bad_set_key_and_value(tiny_root, tmp_path):
    assert_one_line_error(invoke("run", "--detector", "patchcore", "--data", tiny_root, "--set", "coreset=0.1"),
                          "PatchCore has no parameter 'coreset'")
    assert_one_line_error(invoke("run", "--detector", "patchcore", "--data", tiny_root, "--set", "coreset_ratio=0"),
                          "The 'coreset_ratio' parameter of PatchCore must be in (0, 1]. Got 0.0 instead.")
    assert_one_line_error(invoke("run", "--detector", "patchcore", "--data", tiny_root, "--set", "oops"),
                          "--set expects key=value")


def test_empty_train_set(tiny_copy, tmp_path):
    for path in (tiny_copy / "machined_part" / "train" / "good").iterdir():
        path.unlink()
    result = invoke("run", "--detector", "patchcore", "--data", tiny_copy, "--out", tmp_path / "out")
    assert_one_line_error(result, "empty train set")
    assert not (tmp_path / "out").exists()


def test_corrupt_image_leaves_no_output(tiny_copy, tmp_path):
    victim = sorted((tiny_copy / "machined_part" / "test" / "good").iterdir())[0]
    victim.write_bytes(b"not an image at all")
    result = invoke("run", "--detector", "patchcore", "--data", tiny_copy, "--out", tmp_path / "out", *FAST)
    assert_one_line_error(result, f"{victim.name}: cannot read image")
    assert not (tmp_path / "out").exists()


def test_mask_size_mismatch(tiny_copy, tmp_path):
    mask = sorted((tiny_copy / "machined_part" / "ground_truth" / "crack").iterdir())[0]
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(mask)
    result = invoke("run", "--detector", "patchcore", "--data", tiny_copy, "--out", tmp_path / "out")
    assert_one_line_error(result, mask.name, "does not match")
    assert not (tmp_path / "out").exists()


def test_predict_bad_model_folder(tmp_path):
    assert_one_line_error(invoke("predict", tmp_path, tmp_path), "no saved model here")
