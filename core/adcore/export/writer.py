"""Exporting a saved model to ONNX, with its score parity measured before the folder is published.

Why parity is part of the export, not a separate step: an exported model that
scores differently from the trained one is the deployment failure that goes
unnoticed, since its thresholds still look right. So export runs the torch
model and onnxruntime on the same images at several batch sizes, writes the
differences to ``parity.json`` and publishes nothing when they exceed the
tolerance. Thresholds and every setting predict needs go to ``export.json``
beside the graph, never into it, so recalibrating never needs a new export.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adcore import __version__, fs
from adcore.data.loading import load_images
from adcore.detector import Detector, Prediction, load_model
from adcore.errors import ConfigError, DataError
from adcore.export.errors import ExportError
from adcore.export.graphs import graph_for
from adcore.export.runtime import (EXPORT_FILE, EXPORT_FORMAT, EXPORT_FORMAT_VERSION, INPUT_NAME, ONNX_FILE,
                                   OUTPUT_NAMES, OnnxModel)
from adcore.imageio import list_images
from adcore.modelfile import CONFIG_FILE

__all__ = ["BATCH_SIZES", "EXPORT", "EXTERNAL_DATA_BYTES", "PARITY_FILE", "RTOL", "export_model",
           "measure_parity", "probe_images"]

PARITY_FILE = "parity.json"
#: Only a folder that ``adcore export`` wrote (its ``export.json`` says so) is ever replaced by another export.
EXPORT = fs.Kind("an ONNX export folder of adcore export", EXPORT_FORMAT, identity=EXPORT_FILE)
#: Largest score or map difference allowed, relative to the largest torch value of the same output.
RTOL = 1e-4
#: Batch sizes the export is checked at: one image, a batch that is not a divisor, a full batch.
BATCH_SIZES = (1, 3, 8)
#: Weights above this size go to ``model.onnx.data`` (a protobuf file cannot exceed 2 GB).
EXTERNAL_DATA_BYTES = 1 << 30
_PROBES = 8


def _require_exporter() -> None:
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"ONNX export needs {module}: pip install adcore[onnx]") from None


def probe_images(size: int, folder: Path | None = None, count: int = _PROBES) -> torch.Tensor:
    """Parity images at the working size: the first ``count`` of ``folder``, else seeded textures.

    The textures mix smooth shading, edges and fine noise, so every part of a
    graph (backbone, search, blur) sees values spread like a photograph's.
    """
    if folder is not None:
        if not folder.is_dir():
            raise DataError(f"{folder}: folder of parity images not found")
        paths = list_images(folder)[:count]
        if not paths:
            raise ExportError(f"{folder}: no images to check parity on")
        return load_images(paths, size)
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, 3, 4, 4, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    edges = (torch.rand(count, 1, 8, 8, generator=generator) > 0.5).float()
    edges = torch.nn.functional.interpolate(edges, size=(size, size), mode="nearest")
    noise = torch.rand(count, 3, size, size, generator=generator)
    return (0.6 * smooth + 0.25 * edges + 0.15 * noise).clamp(0, 1)


def measure_parity(reference: Prediction, model: OnnxModel, images: torch.Tensor,
                   batch_sizes: Sequence[int] = BATCH_SIZES, image_threshold: float | None = None,
                   pixel_threshold: float | None = None) -> dict[str, Any]:
    """Differences between the torch ``reference`` and the export on ``images``, at each batch size.

    Relative differences are taken against the largest magnitude of the torch
    output (scores and maps separately), so a near-zero value cannot inflate them.
    A verdict may differ only for a score within that tolerance of the threshold,
    where either answer is as right as float arithmetic can tell.
    """
    score_scale = max(float(np.abs(reference.scores).max()), 1e-12)
    map_scale = max(float(np.abs(reference.anomaly_maps).max()), 1e-12)
    runs = []
    for size in batch_sizes:
        batches = [images[i: i + size].numpy() for i in range(0, len(images), size)]
        outputs = [model.run(batch) for batch in batches]
        scores = np.concatenate([o[0] for o in outputs])
        maps = np.concatenate([o[1] for o in outputs])
        score_diff = float(np.abs(scores - reference.scores).max())
        map_diff = float(np.abs(maps - reference.anomaly_maps).max())
        run: dict[str, Any] = {"batch_size": size, "max_abs_score_diff": score_diff,
                               "max_rel_score_diff": score_diff / score_scale, "max_abs_map_diff": map_diff,
                               "max_rel_map_diff": map_diff / map_scale}
        if image_threshold is not None:
            flipped = (scores >= image_threshold) != (reference.scores >= image_threshold)
            clear = np.abs(reference.scores - image_threshold) > RTOL * score_scale
            run["verdicts_differing"] = int(flipped.sum())
            run["verdicts_differing_beyond_tolerance"] = int((flipped & clear).sum())
        if pixel_threshold is not None:
            run["mask_pixels_differing"] = int(((maps >= pixel_threshold)
                                                != (reference.anomaly_maps >= pixel_threshold)).sum())
        runs.append(run)
    worst = {key: max(run[key] for run in runs) for key in runs[0] if key != "batch_size"}
    within = (worst["max_rel_score_diff"] <= RTOL and worst["max_rel_map_diff"] <= RTOL
              and worst.get("verdicts_differing_beyond_tolerance", 0) == 0)
    return {"rtol": RTOL, "relative_to": "the largest magnitude of the torch output",
            "images": int(len(images)), "image_size": int(images.shape[-1]), "within_tolerance": within,
            **worst, "runs": runs}


def _trace(graph: torch.nn.Module, example: torch.Tensor) -> Any:
    """The ONNX program of ``graph`` with a dynamic batch axis (the exporter's chatter kept off the terminal)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return torch.onnx.export(graph, (example,), dynamo=True, input_names=[INPUT_NAME],
                                     output_names=list(OUTPUT_NAMES), dynamic_shapes=({0: batch},),
                                     verbose=False)
    except Exception as exc:  # the exporter's errors are many classes, each pages long
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ExportError(f"torch could not export this model's prediction as a graph: {first[:300]}") from None
    finally:
        from adcore import ops

        ops._blur_matrix.cache_clear()  # export may have cached traced matrices; real ones are rebuilt


def _weights_bytes(graph: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*graph.parameters(), *graph.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _describe(model_dir: Path, detector: Detector, meta: dict[str, Any], size: int) -> dict[str, Any]:
    saved = json.loads((model_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    return {
        "format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "detector": detector.name,
        "model": {key: saved.get(key) for key in ("adcore_version", "plugin", "plugin_version")},
        "exported_by": {"adcore": __version__, "torch": torch.__version__, "onnx": metadata.version("onnx"),
                        "onnxruntime": metadata.version("onnxruntime")},
        "image_size": size, "batch_size": int(detector.config.batch_size),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, size, size], "dtype": "float32",
                  "values": "RGB in [0, 1], already resized to image_size x image_size (adcore reads images "
                            "with Pillow, bilinear)"},
        "outputs": {"scores": ["batch"], "maps": ["batch", size, size]},
        "config": saved.get("config", {}), "metadata": meta,
    }


def export_model(model_dir: Path, out: Path, images: Path | None = None,
                 external_data_bytes: int = EXTERNAL_DATA_BYTES) -> dict[str, Any]:
    """Export the saved model in ``model_dir`` to ``out`` (model.onnx, export.json, parity.json).

    ``out`` is checked before any work: new, empty, or an earlier export, never
    an input. Nothing is published when parity fails (ExportError with the numbers).
    Returns the parity report.
    """
    from adcore.predicting import find_model

    fs.check_output(out, EXPORT, inputs=[model_dir, images])
    _require_exporter()
    model_dir = find_model(Path(model_dir))
    detector, meta = load_model(model_dir, "cpu")
    if meta.get("framing", {}).get("per_position"):
        raise ConfigError(f"{model_dir}: a per-position model (--per-position) holds one detector per tile "
                          "position; adcore export writes one graph and does not export it")
    size = int(meta.get("image_size", 256))
    graph = graph_for(detector)
    probes = probe_images(size, images)
    reference = detector.predict(probes, progress=None)  # also fills the caches the trace reads
    report: dict[str, Any] = {}

    def write(staging: Path) -> None:
        program = _trace(graph, probes[:2])
        program.save(str(staging / ONNX_FILE), external_data=_weights_bytes(graph) > external_data_bytes)
        fs.write_json(staging / EXPORT_FILE, _describe(model_dir, detector, meta, size))
        report.update(measure_parity(reference, OnnxModel(staging), probes, BATCH_SIZES,
                                     meta.get("image_threshold"), meta.get("pixel_threshold")))
        if not report["within_tolerance"]:
            raise ExportError(f"the exported {detector.name} model does not score like the trained one "
                              f"(max relative score difference {report['max_rel_score_diff']:.3g}, map "
                              f"{report['max_rel_map_diff']:.3g}, tolerance {RTOL:g}; verdicts differing beyond it: "
                              f"{report.get('verdicts_differing_beyond_tolerance', 'n/a')}); nothing was written")
        fs.write_json(staging / PARITY_FILE, report)

    fs.replace_folder(Path(out), write, EXPORT)
    return report
