"""Scoring new images with a saved model: scores, verdicts, heat maps and masks.

The images are scored batch by batch wherever the executor says
(:mod:`adcore.executors`): in this process, in ``--jobs`` local processes or
on a Ray actor pool, each worker loading the model once. The batches are the
ones a local run makes, so every worker scores exactly what this process
would have, and the outputs are written here, the same way in every case.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adcore import fs, visualize
from adcore.detector import load_model
from adcore.errors import ConfigError, DataError, ModelFileError
from adcore.executors import ExecutorOptions, open_executor
from adcore.framing import Framing, Inspection
from adcore.imageio import IMAGE_SUFFIXES, list_images
from adcore.memory import peak_rss_mb, reset_peak_rss
from adcore.positions import load_positions
from adcore.ops import upsample_maps
from adcore.progress import bar

#: What `adcore predict --out` holds; only such a folder is ever replaced by another prediction.
PREDICTIONS = fs.Kind("a predictions folder of adcore predict", "adcore-predictions")
#: What scores images: the saved torch model, or its ONNX export run by onnxruntime.
ENGINES = ("torch", "onnx")


def find_model(folder: Path) -> Path:
    """Accept a run's category folder or the model folder itself."""
    for candidate in (folder, folder / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise ModelFileError(f"{folder}: no saved model here (expected config.json or model/config.json)")


def collect_images(inputs: Sequence[Path]) -> list[Path]:
    """Image files named directly or found directly inside named folders."""
    images: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = list_images(item)
            if not found:
                raise DataError(f"{item}: no images ({'/'.join(IMAGE_SUFFIXES)})")
            images.extend(found)
        elif item.is_file():
            images.append(item)
        else:
            raise DataError(f"{item}: file or folder not found")
    return images


def load_engine(model_dir: Path, engine: str = "torch",
                device: str | None = None) -> tuple[Any, dict[str, Any], int]:
    """The scorer, its metadata and its batch size: a saved model (torch) or an export folder (onnx).

    Both have ``name`` and ``predict(batches, progress)`` returning a Prediction,
    so every output is made the same way whichever engine scored.
    """
    if engine == "onnx":
        from adcore.export import load_exported

        model, meta = load_exported(Path(model_dir))
        return model, meta, model.batch_size
    if engine != "torch":
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    folder = find_model(model_dir)
    detector, meta = load_model(folder, device)
    if Framing.from_metadata(meta).per_position:
        return load_positions(folder, detector, meta, device), meta, detector.config.batch_size
    return detector, meta, detector.config.batch_size


def predict_files(model_dir: Path, inputs: Sequence[Path], out: Path, device: str | None = None,
                  engine: str = "torch", executor: ExecutorOptions | None = None) -> list[dict[str, Any]]:
    """Predict every input image and write heat maps, masks, CSV and JSON under ``out``.

    ``out`` is checked before the model is read: it must not be or overlap an
    input, and may hold only an earlier prediction, which is replaced atomically.
    ``engine`` "onnx" reads an export folder of ``adcore export`` instead of a model.
    The model is loaded here first (a bad one is one line before any worker
    starts), then once by each worker of ``executor``.
    """
    fs.check_output(out, PREDICTIONS, inputs=[model_dir, *inputs])
    reset_peak_rss()
    loaded = load_engine(model_dir, engine, device)
    detector, meta, batch_size = loaded
    paths = collect_images(inputs)
    framing = Framing.from_metadata(meta)  # exactly the resizing or tiling the model was fitted with
    sizes = framing.check_images(paths)  # checks every file before any work
    batches = [paths[start: start + batch_size] for start in range(0, len(paths), batch_size)]
    parts: list[Inspection] = []
    with contextlib.closing(open_executor(executor or ExecutorOptions())) as workers, \
            bar(total=len(paths), desc="predict", unit="img") as progress:
        for part in workers.stream(functools.partial(load_engine, model_dir, engine, device), score_batch,
                                   batches, here=loaded):
            parts.append(part)
            progress.update(len(part.scores))
    prediction = Inspection(np.concatenate([p.scores for p in parts]), [m for p in parts for m in p.maps])
    require_finite(paths, prediction.scores, prediction.maps)
    image_threshold = meta.get("image_threshold")
    pixel_threshold = meta.get("pixel_threshold")
    vmin, vmax = meta.get("display_range") or [min(float(m.min()) for m in prediction.maps),
                                                max(float(m.max()) for m in prediction.maps)]
    names = _unique_stems(paths)
    rows = [{"image": str(path), "score": float(score),
             "anomalous": None if image_threshold is None else bool(score >= image_threshold),
             "heatmap": f"heatmaps/{name}.png",
             "mask": f"masks/{name}.png" if pixel_threshold is not None else None}
            for path, name, score in zip(paths, names, prediction.scores)]

    def write(folder: Path) -> None:
        for name, (width, height), small_map in zip(names, sizes, prediction.maps):
            full = upsample_maps(torch.from_numpy(small_map)[None], (height, width))[0].numpy()
            visualize.save_heatmap(folder / "heatmaps" / f"{name}.png", full, vmin, vmax)
            if pixel_threshold is not None:
                visualize.save_mask(folder / "masks" / f"{name}.png", full >= pixel_threshold)
        with open(folder / "predictions.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        fs.write_json(folder / "predictions.json", {
            "model": str(model_dir), "detector": detector.name, "engine": engine, "image_threshold": image_threshold,
            "pixel_threshold": pixel_threshold, "framing": framing.metadata(), "peak_rss_mb": round(peak_rss_mb(), 1),
            "predictions": rows})

    fs.replace_folder(out, write, PREDICTIONS)
    return rows


def score_batch(loaded: tuple[Any, dict[str, Any], int], paths: Sequence[Path]) -> Inspection:
    """Score one batch of image files with a loaded engine, framed as it was fitted (what every worker runs)."""
    detector, meta, batch_size = loaded
    return Framing.from_metadata(meta).predict(detector, list(paths), batch_size, progress=None)


def require_finite(paths: Sequence[Path], scores: np.ndarray, maps: Sequence[np.ndarray]) -> None:
    """Refuse to turn a NaN or infinite score (or map) into a verdict: name the first such image."""
    if not len(paths):
        return
    maps_finite = np.array([np.isfinite(m).all() for m in maps], dtype=bool)
    bad = ~(np.isfinite(scores) & maps_finite)
    if not bad.any():
        return
    first = int(np.argmax(bad))
    score = float(scores[first])
    what = "anomaly map" if math.isfinite(score) else f"score ({score})"
    more = int(bad.sum()) - 1
    raise DataError(f"{paths[first]}: the detector gave a non-finite {what} for this image"
                    + (f" (and for {more} more images)" if more else "")
                    + "; no verdict is possible and nothing was written")


def _unique_stems(paths: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        count = seen.get(path.stem, 0)
        seen[path.stem] = count + 1
        names.append(path.stem if count == 0 else f"{path.stem}_{count + 1}")
    return names
