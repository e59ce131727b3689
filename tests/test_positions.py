"""One model per tile position (``--tile SIZE --per-position``), for aligned parts (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adcore.errors import ModelFileError
from adcore.predicting import load_engine
from adcore.positions import PositionModels
from cli_helpers import invoke, one_line_error

SIDE, TILE = 128, 64  # 2 x 2 tile positions


def _part(rng: np.random.Generator, defect: bool) -> tuple[np.ndarray, np.ndarray]:
    """A grainy aligned part with a bright boss at the centre of its top-left tile.

    The defect is the same boss at the centre of the bottom-right tile: normal in
    one place, a defect in another, which only a model of each place can tell.
    """
    grey = 0.4 + 0.05 * rng.normal(size=(SIDE, SIDE))
    yy, xx = np.ogrid[:SIDE, :SIDE]
    grey = np.where((yy - 32) ** 2 + (xx - 32) ** 2 <= 144, 0.9, grey)
    mask = ((yy - 96) ** 2 + (xx - 96) ** 2 <= 144) if defect else np.zeros((SIDE, SIDE), bool)
    grey = np.where(mask, 0.9, grey)
    return (np.clip(grey, 0, 1) * 255).astype(np.uint8), mask


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aligned") / "parts"
    for split, count, defect in (("train/good", 8, False), ("test/good", 4, False), ("test/moved", 4, True)):
        (root / "boss" / split).mkdir(parents=True)
        for i in range(count):
            grey, mask = _part(np.random.default_rng([len(split), i]), defect)
            Image.fromarray(grey).convert("RGB").save(root / "boss" / split / f"{i}.png")
            if defect:
                truth = root / "boss" / "ground_truth" / "moved"
                truth.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(truth / f"{i}_mask.png")
    return root


@pytest.fixture(scope="module")
def runs(aligned: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PaDiM with one model for every tile, and with one model per tile position."""
    out = tmp_path_factory.mktemp("runs")
    folders = {}
    for kind, extra in (("shared", []), ("per-position", ["--per-position"])):
        result = invoke("run", "-d", "padim", "--data", aligned, "--out", out / kind, "--tile", TILE, "--holdout", "0",
                        "--no-panels", *extra)
        assert result.exit_code == 0, result.output
        folders[kind] = out / kind / "padim" / "boss"
    return folders


def test_one_model_per_position_finds_what_is_normal_only_elsewhere(runs):
    """Measured (PaDiM, EfficientNet-Lite0, 8 train, 4 + 4 test): image AUROC 1.0 per position, 0.0 shared.

    Shared, a boss tile is normal wherever it is, and a defective part has one fewer
    grainy tile to take the maximum over, so it scores lower still.
    """
    auroc = {kind: json.loads((folder / "metrics.json").read_text())["image_auroc"] for kind, folder in runs.items()}
    print(f"image AUROC: per position {auroc['per-position']:.4f}, shared {auroc['shared']:.4f}")
    assert auroc["per-position"] >= 0.9
    assert auroc["shared"] <= 0.6


def test_a_per_position_model_saves_every_position_and_predicts_as_it_ran(runs, aligned, tmp_path):
    model = runs["per-position"] / "model"
    meta = json.loads((model / "config.json").read_text())["metadata"]
    assert meta["framing"]["per_position"] is True
    assert meta["positions"] == {"height": SIDE, "width": SIDE, "count": 4}
    assert sorted(p.name for p in (model / "positions").iterdir()) == ["001", "002", "003"]
    scorer, _, _ = load_engine(runs["per-position"])
    assert isinstance(scorer, PositionModels) and len(scorer.detectors) == 4
    predicted = invoke("predict", runs["per-position"], aligned / "boss" / "test" / "moved", "--out", tmp_path / "p")
    assert predicted.exit_code == 0, predicted.output
    scores = {Path(row["image"]).name: row["score"]
              for row in json.loads((tmp_path / "p" / "predictions.json").read_text())["predictions"]}
    ran = {line.split(",")[0].split("/")[-1]: float(line.split(",")[3])
           for line in (runs["per-position"] / "predictions.csv").read_text().splitlines()[1:] if "moved" in line}
    assert scores == pytest.approx(ran, rel=1e-5)


def test_a_per_position_model_refuses_an_image_of_another_size(runs, tmp_path):
    odd = tmp_path / "wide.png"
    Image.fromarray(np.zeros((SIDE, SIDE + 64, 3), np.uint8)).save(odd)
    message = one_line_error(invoke("predict", runs["per-position"], odd, "--out", tmp_path / "p"))
    assert "wide.png: 192x128 at the working resolution, but this per-position model was fitted on 128x128" in message
    assert not (tmp_path / "p").exists()


def test_per_position_needs_one_image_size(aligned, tmp_path):
    data = tmp_path / "data"
    for source in (aligned / "boss").rglob("*.png"):
        target = data / "boss" / source.relative_to(aligned / "boss")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    Image.fromarray(np.zeros((SIDE, SIDE + 8, 3), np.uint8)).save(data / "boss" / "train" / "good" / "9.png")
    message = one_line_error(invoke("run", "-d", "padim", "--data", data, "--out", tmp_path / "out", "--tile", TILE,
                                    "--per-position"))
    assert "--per-position needs every image of a category at one size" in message and "9.png is 136x128" in message
    assert not (tmp_path / "out").exists()


def test_a_missing_position_is_a_one_line_model_error(runs, tmp_path):
    copy = tmp_path / "model"
    for source in (runs["per-position"] / "model").rglob("*"):
        if source.is_file() and "002" not in source.parts:
            target = copy / source.relative_to(runs["per-position"] / "model")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    with pytest.raises(ModelFileError, match=r"positions/002: the model of tile position 3 of 4 is missing"):
        load_engine(copy)


def test_export_refuses_a_per_position_model_by_name(runs, tmp_path):
    pytest.importorskip("onnx")
    message = one_line_error(invoke("export", runs["per-position"], "--out", tmp_path / "export"))
    assert "a per-position model (--per-position)" in message
    assert not (tmp_path / "export").exists()


def test_serve_scores_a_per_position_model_as_it_ran(runs, aligned, tmp_path):
    from adcore.serve.scoring import Scorer

    model, meta, _ = load_engine(runs["per-position"])
    scorer = Scorer(model, meta, "torch", tmp_path)
    scorer.warm_up()  # every position's detector
    answer = scorer.score((aligned / "boss" / "test" / "moved" / "0.png").read_bytes())
    ran = next(float(line.split(",")[3]) for line in (runs["per-position"] / "predictions.csv").read_text().splitlines()
               if line.startswith("test/moved/0.png"))
    assert answer["score"] == pytest.approx(ran, rel=1e-5) and answer["map_size"] == [SIDE, SIDE]
