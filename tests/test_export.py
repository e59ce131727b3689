"""ONNX export: score parity with torch as a contract, and the folder and CLI rules around it.

Parity: every exportable detector, exported at a working size, must give the
torch scores and maps within a relative 1e-4 (of the largest torch value) at
batch sizes 1, 3 and 8, and identical verdicts. All six are checked at 64 px
and PatchCore (with its bank in ONNX external data) at 96 px too; with
ADCORE_FULL_PARITY=1 every detector is checked at both sizes. Exports take
10-20 s each on a loaded 2-core machine, which is what bounds this file's run
time. Measured differences (plugin READMEs) are at most 7.3e-6 relative.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime", reason="ONNX export needs pip install adcore[onnx]")

from adcore.cli.main import cli  # noqa: E402
from adcore.data.folder import open_folder  # noqa: E402
from adcore.data.loading import load_images  # noqa: E402
from adcore.errors import OutputError  # noqa: E402
from adcore.export import (EXPORT_FILE, ONNX_FILE, PARITY_FILE, RTOL, ExportError, export_model,  # noqa: E402
                           load_exported)
from adcore.data import synthetic  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from adcore.plugins import get_registry  # noqa: E402

#: Tiny settings per detector: seconds to fit on 8 images at 64 px, random backbone weights.
QUICK: dict[str, dict[str, Any]] = {
    "patchcore": {"backbone_weights": "random"},
    "padim": {"backbone_weights": "random"},
    "simplenet": {"backbone_weights": "random", "epochs": 1},
    "reverse_distillation": {"backbone_weights": "random", "epochs": 1},
    "draem": {"epochs": 1, "base_width": 4, "disc_base_width": 8},
    "riad": {"epochs": 1, "base_width": 8, "cell_sizes": (16,), "n_masks": 2},
}
#: ADCORE_FULL_PARITY=1 checks every detector at both working sizes (a few more minutes).
FULL = os.environ.get("ADCORE_FULL_PARITY") == "1"
CASES = [(name, 64) for name in QUICK] + [(name, 96) for name in QUICK if FULL or name == "patchcore"]
BATCH_SIZES = (1, 3, 8)


def _images(store: dict[Any, Any], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test images of the module's synthetic set at ``size`` (8 test images: a full batch)."""
    category = open_folder(store["data"])[0]
    return (load_images([s.path for s in category.train], size),
            load_images([s.path for s in category.test], size))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[Any, Any]:
    """A synthetic set, and the saved models and exports made once per module as the tests ask for them."""
    root = tmp_path_factory.mktemp("export")
    data = synthetic.generate(root / "data", categories=("machined_part",), seed=0, size=96, n_train=16,
                              n_test_good=6, n_test_defect=2)
    return {"root": root, "data": data}


def _clear_threshold(scores: np.ndarray) -> float:
    """A threshold in the widest gap between the middle scores: no score sits within float error of it."""
    ordered = np.sort(scores)
    middle = range(len(ordered) // 4, len(ordered) - len(ordered) // 4 - 1)
    i = max(middle, key=lambda j: ordered[j + 1] - ordered[j])
    return float((ordered[i] + ordered[i + 1]) / 2)


def _exported(store: dict[Any, Any], name: str, size: int) -> tuple[Path, Path, Any]:
    """(model folder, export folder, torch prediction on the test images) for one case."""
    if (name, size) not in store:
        train, test = _images(store, size)
        detector = get_registry().load_object("detector", name)(**QUICK[name]).fit(train[:8])
        reference = detector.predict(test, progress=None)
        threshold = _clear_threshold(reference.scores)
        root = store["root"] / f"{name}-{size}"
        detector.save(root / "model", metadata={
            "image_size": size, "image_threshold": threshold,
            "pixel_threshold": float(np.quantile(reference.anomaly_maps, 0.99)),
            "display_range": [float(reference.anomaly_maps.min()), float(reference.anomaly_maps.max())]})
        external = 0 if name == "patchcore" and size == 96 else 1 << 30
        export_model(root / "model", root / "onnx", external_data_bytes=external)
        store[(name, size)] = (root / "model", root / "onnx", reference)
    return store[(name, size)]


@pytest.mark.parametrize(("name", "size"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_parity_with_torch(store: dict[Any, Any], name: str, size: int) -> None:
    """Scores and maps within RTOL of torch at batch sizes 1, 3 and 8; the same verdicts."""
    _, folder, reference = _exported(store, name, size)
    model, meta = load_exported(folder)
    test = _images(store, size)[1]
    assert len(test) >= max(BATCH_SIZES)
    threshold = meta["image_threshold"]
    for batch_size in BATCH_SIZES:
        outputs = [model.run(test[i: i + batch_size].numpy()) for i in range(0, len(test), batch_size)]
        scores = np.concatenate([o[0] for o in outputs])
        maps = np.concatenate([o[1] for o in outputs])
        assert maps.shape == reference.anomaly_maps.shape == (len(test), size, size)
        score_rel = np.abs(scores - reference.scores).max() / np.abs(reference.scores).max()
        map_rel = np.abs(maps - reference.anomaly_maps).max() / np.abs(reference.anomaly_maps).max()
        assert score_rel <= RTOL and map_rel <= RTOL, (batch_size, score_rel, map_rel)
        np.testing.assert_array_equal(scores >= threshold, reference.scores >= threshold)
    parity = json.loads((folder / PARITY_FILE).read_text())
    assert parity["within_tolerance"] and [r["batch_size"] for r in parity["runs"]] == list(BATCH_SIZES)
    assert parity["max_rel_score_diff"] <= RTOL and parity["max_rel_map_diff"] <= RTOL
    assert parity["verdicts_differing_beyond_tolerance"] == 0


def test_patchcore_searches_its_bank_in_blocks_with_parity(store: dict[Any, Any], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 16 bank rows (several blocks and a short last one): the export still passes parity."""
    from adcore.export.graphs import PatchCoreGraph

    monkeypatch.setattr(PatchCoreGraph, "bank_block", 16)
    model_dir, _, reference = _exported(store, "patchcore", 64)
    rows = load_file(str(model_dir / "model.safetensors"))["memory_bank"].shape[0]
    assert rows > 2 * 16 and rows % 16, rows  # measured: 51 rows, so 4 blocks, the last of 3
    parity = export_model(model_dir, tmp_path / "blocked")
    assert parity["within_tolerance"] and parity["max_rel_score_diff"] <= RTOL, parity
    model, _ = load_exported(tmp_path / "blocked")
    scores, _ = model.run(_images(store, 64)[1].numpy())
    assert np.abs(scores - reference.scores).max() <= RTOL * np.abs(reference.scores).max()


def test_thresholds_travel_beside_the_graph(store: dict[Any, Any]) -> None:
    """export.json holds thresholds and settings; the graph's only outputs are scores and maps."""
    import onnx

    _, folder, _ = _exported(store, "patchcore", 96)
    document = json.loads((folder / EXPORT_FILE).read_text())
    assert document["detector"] == "patchcore" and document["image_size"] == 96
    assert document["metadata"]["image_threshold"] is not None and document["config"]["num_neighbors"] == 9
    graph = onnx.load(str(folder / ONNX_FILE), load_external_data=False).graph
    assert [o.name for o in graph.output] == ["scores", "maps"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    assert (folder / f"{ONNX_FILE}.data").is_file()  # this case forces the bank into external data


def test_predict_engine_onnx_writes_what_torch_writes(store: dict[Any, Any], tmp_path: Path) -> None:
    """adcore predict --engine onnx: the same files, scores within RTOL and the same verdicts."""
    model_dir, folder, _ = _exported(store, "patchcore", 64)
    images = store["data"] / "machined_part" / "test"
    inputs = sorted(p for p in images.iterdir() if p.is_dir())
    runner = CliRunner()
    for engine, source in (("torch", model_dir), ("onnx", folder)):
        result = runner.invoke(cli, ["predict", str(source), *map(str, inputs), "--out", str(tmp_path / engine),
                                     "--engine", engine, "--device", "cpu"])
        assert result.exit_code == 0, result.output
    listing = [sorted(str(p.relative_to(tmp_path / e)) for p in (tmp_path / e).rglob("*")) for e in ("torch", "onnx")]
    assert listing[0] == listing[1] and "predictions.json" in listing[0]
    rows = [list(csv.DictReader(open(tmp_path / e / "predictions.csv"))) for e in ("torch", "onnx")]
    torch_scores = np.array([float(r["score"]) for r in rows[0]])
    onnx_scores = np.array([float(r["score"]) for r in rows[1]])
    assert np.abs(torch_scores - onnx_scores).max() <= RTOL * np.abs(torch_scores).max()
    assert [r["anomalous"] for r in rows[0]] == [r["anomalous"] for r in rows[1]]
    assert json.loads((tmp_path / "onnx" / "predictions.json").read_text())["engine"] == "onnx"


def test_failed_parity_publishes_nothing(store: dict[Any, Any], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph that scores differently from torch is refused with its numbers; no folder appears."""
    model_dir, _, _ = _exported(store, "draem", 64)

    class Flat(torch.nn.Module):  # a graph that ignores the model: quick to trace, certain to differ
        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            maps = images.mean(dim=1)
            return maps.amax(dim=(1, 2)) + 1.0, maps

    monkeypatch.setattr("adcore.export.writer.graph_for", lambda detector: Flat())
    with pytest.raises(ExportError, match="does not score like the trained one"):
        export_model(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_folder_adcore_did_not_write(store: dict[Any, Any], tmp_path: Path) -> None:
    """--out holding a user's file is refused before any work, the file untouched."""
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError):
        export_model(tmp_path / "no-model-needed", target)
    assert (target / "notes.txt").read_text() == "keep me"


def test_spade_is_refused_with_the_reason(store: dict[Any, Any], tmp_path: Path) -> None:
    """SPADE's per-image gallery search has no graph: one line saying so, nothing written."""
    train, _ = _images(store, 64)
    spade = get_registry().load_object("detector", "spade")(backbone_weights="random", k_images=3)
    spade.fit(train[:6]).save(tmp_path / "model", metadata={"image_size": 64})
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "model"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "spade cannot be exported to ONNX" in result.output and "--engine torch" in result.output
    assert not (tmp_path / "out").exists()


def test_predict_engine_onnx_needs_an_export_folder(store: dict[Any, Any], tmp_path: Path) -> None:
    """Pointing --engine onnx at a torch model folder is one line naming the command that makes an export."""
    model_dir, _, _ = _exported(store, "patchcore", 64)
    result = CliRunner().invoke(cli, ["predict", str(model_dir), str(model_dir), "--engine", "onnx",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "adcore export" in result.output
