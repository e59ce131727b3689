"""Running an exported model with onnxruntime, with the interface of ``Detector.predict``.

Why its own loader: a deployment machine needs only the export folder (graph,
thresholds, working size) and onnxruntime, not the plugin or torch's model file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adcore.detector import Prediction
from adcore.errors import ConfigError, DataError, ModelFileError
from adcore.features import CPU_FORWARD_BATCH
from adcore.progress import terminal, track_batches

__all__ = ["EXPORT_FILE", "EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "ONNX_FILE", "OnnxModel", "find_export",
           "import_onnxruntime", "load_exported", "open_session"]

ONNX_FILE = "model.onnx"
EXPORT_FILE = "export.json"
EXPORT_FORMAT = "adcore-onnx-export"
EXPORT_FORMAT_VERSION = 1
INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps")


def import_onnxruntime() -> Any:
    """onnxruntime, or a one-line ConfigError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("the ONNX engine needs onnxruntime: pip install adcore[onnx]") from None
    return onnxruntime


def open_session(path: Path) -> Any:
    """An onnxruntime CPU session on ``path`` (external data is found beside it), quiet below errors."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def find_export(folder: Path) -> Path:
    """The export folder itself; a one-line ModelFileError when ``folder`` holds no export."""
    if not (folder / EXPORT_FILE).is_file() or not (folder / ONNX_FILE).is_file():
        raise ModelFileError(f"{folder}: no ONNX export here (expected {EXPORT_FILE} and {ONNX_FILE}); "
                             f"make one with: adcore export MODEL_DIR --format onnx --out {folder}")
    return folder


def _read_document(folder: Path) -> dict[str, Any]:
    path = folder / EXPORT_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ModelFileError(f"{path}: not an adcore ONNX export (format is not '{EXPORT_FORMAT}')")
    if document.get("format_version") != EXPORT_FORMAT_VERSION:
        raise ModelFileError(f"{path}: export format version {document.get('format_version')!r}; this adcore "
                             f"reads version {EXPORT_FORMAT_VERSION}")
    for key, kind in (("detector", str), ("image_size", int), ("batch_size", int), ("metadata", dict)):
        if not isinstance(document.get(key), kind) or isinstance(document.get(key), bool):
            raise ModelFileError(f"{path}: field '{key}' is missing or not {kind.__name__}")
    return document


class OnnxModel:
    """An exported detector: scores and maps from its graph, thresholds and settings from ``export.json``.

    Attributes:
        name: the detector's name.
        document: the whole ``export.json``.
        image_size: the working size the graph takes (images are resized to it first).
        batch_size: images per run (the trained model's prediction batch size).
    """

    def __init__(self, folder: Path) -> None:
        folder = find_export(Path(folder))
        self.document = _read_document(folder)
        self.name: str = self.document["detector"]
        self.image_size: int = self.document["image_size"]
        self.batch_size: int = self.document["batch_size"]
        import_onnxruntime()  # a missing package is its own one line, not a damaged graph
        try:
            self.session = open_session(folder / ONNX_FILE)
        except Exception as exc:  # onnxruntime raises its own classes for a damaged graph
            raise ModelFileError(f"{folder / ONNX_FILE}: onnxruntime cannot load it "
                                 f"({' '.join(str(exc).split())[:300]})") from None

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (B,) and maps (B, H, W) of one (B, 3, H, W) float32 batch at the working size."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != (self.image_size, self.image_size):
            raise DataError(f"the {self.name} export takes (N, 3, {self.image_size}, {self.image_size}) images; "
                            f"got {tuple(images.shape)}")
        # A few images per session run, as the torch path slices its backbone: onnxruntime's memory grows
        # with the batch (its arena keeps the peak), and a tiled PatchCore batch of 32 took 8.9 GB.
        parts = [self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(part, np.float32)})
                 for part in np.split(images, range(CPU_FORWARD_BATCH, len(images), CPU_FORWARD_BATCH))]
        scores, maps = (np.concatenate([p[k] for p in parts]) for k in (0, 1))
        return scores.astype(np.float32, copy=False), maps.astype(np.float32, copy=False)

    def predict(self, images: torch.Tensor | Iterable[torch.Tensor], progress: str | None = "predict") -> Prediction:
        """As ``Detector.predict``: a (N, 3, H, W) tensor in [0, 1] or an iterable of such batches."""
        if isinstance(images, torch.Tensor):
            batches: Iterable[torch.Tensor] = images.split(self.batch_size)
            count = images.shape[0]
        else:
            batches = images
            count = len(images) if hasattr(images, "__len__") else 0  # type: ignore[arg-type]
        if progress is not None:
            batches = track_batches(terminal, batches, count, progress)
        scores, maps = [], []
        for batch in batches:
            batch_scores, batch_maps = self.run(batch.detach().cpu().float().numpy())
            scores.append(batch_scores)
            maps.append(batch_maps)
        if not scores:
            return Prediction(np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32))
        return Prediction(np.concatenate(scores), np.concatenate(maps))


def load_exported(folder: Path) -> tuple[OnnxModel, dict[str, Any]]:
    """An export and the metadata ``adcore predict`` reads (thresholds, display range, working size)."""
    model = OnnxModel(folder)
    return model, {**model.document["metadata"], "image_size": model.image_size}
