"""What a category's result folder holds, and writing it: metrics.json, predictions, ROC files, panels, model.

The runner hands over what it computed (the :class:`~adcore.results.CategoryResult`,
the test predictions and their :class:`~adcore.evaluation.Evaluation`, whose curves
and masks are reused here rather than computed or read again); :func:`publish`
builds the folder in a staging folder and moves it into place (see :mod:`adcore.fs`),
so a failure or Ctrl-C never leaves half-written output. Layout::

    metrics.json            CategoryResult.to_json()
    predictions.csv         image, defect, label, score, predicted_defective
    roc_image.png, .json    with both classes in the test set (the report overlays the stored points)
    roc_pixel.png, .json    with defect pixels
    training_log.json       a trained detector's loss per epoch
    panels/<defect>/<stem>.png  at the evaluation size (--eval-size)
    model/                  model.safetensors + config.json
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from adcore import fs, visualize
from adcore.data import Category
from adcore.detector import Detector
from adcore.evaluation import Evaluation, eval_shape, flat
from adcore.framing import Framing, Inspection
from adcore.imageio import image_size, read_rgb
from adcore.ops import upsample_maps
from adcore.positions import PositionModels
from adcore.progress import bar
from adcore.results import METRICS_FILE, CategoryResult

__all__ = ["RESULT", "publish", "write_category"]

#: A category's results, written by `adcore run` or a benchmark cell.
RESULT = fs.Kind("a category result folder of adcore run", "adcore-result")


def publish(target: Path, write: Callable[[Path], None]) -> None:
    """Publish a category's result folder built by ``write(folder)``; only an earlier result is replaced."""
    fs.replace_folder(target, write, RESULT)


def write_category(folder: Path, result: CategoryResult, detector: Detector | PositionModels, category: Category,
                   prediction: Inspection, evaluation: Evaluation, framing: Framing, panels: bool) -> None:
    """Every output of one category into ``folder`` (a staging folder of :func:`publish`)."""
    vmin, vmax = (float(v) for v in np.percentile(flat([m[::4, ::4] for m in prediction.maps]), [1.0, 99.9]))
    thresholds = result.thresholds
    detector.save(folder / "model", metadata={
        "image_size": framing.input_size,
        "framing": framing.metadata(),
        "image_threshold": thresholds.image,
        "pixel_threshold": thresholds.pixel,
        "threshold_source": thresholds.source,
        "display_range": [vmin, vmax],
        "category": category.name,
    })
    fs.write_json(folder / METRICS_FILE, result.to_json())
    losses = getattr(detector, "loss_history_", None)
    if losses:
        fs.write_json(folder / "training_log.json", [float(v) for v in losses])
    _write_predictions(folder / "predictions.csv", category, prediction.scores, thresholds.image)
    # The report overlays every detector's curves from these points: the pixel ROC could not be recomputed
    # without all maps, and the image ROC from predictions.csv only from its rounded scores.
    for kind, points, auroc in (("image", evaluation.image_roc, result.metrics.image_auroc),
                                ("pixel", evaluation.pixel_roc, result.metrics.pixel_auroc)):
        if points is not None:
            fpr, tpr = points
            visualize.save_roc(folder / f"roc_{kind}.png", {result.detector: (fpr, tpr, auroc)},
                               f"{category.name}: {kind} ROC")
            fs.write_json(folder / f"roc_{kind}.json",
                          {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist(), "auroc": auroc})
    if panels:
        _write_panels(folder / "panels", category, prediction, evaluation.masks, result, framing, vmin, vmax)


def _write_predictions(path: Path, category: Category, scores: np.ndarray, image_threshold: float | None) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "defect", "label", "score", "predicted_defective"])
        for sample, score in zip(category.test, scores):
            flagged = "" if image_threshold is None else int(score >= image_threshold)
            writer.writerow([relative(sample.path, category.root), sample.defect, sample.label,
                             f"{score:.6g}", flagged])


def _write_panels(folder: Path, category: Category, prediction: Inspection, masks: Sequence[np.ndarray] | None,
                  result: CategoryResult, framing: Framing, vmin: float, vmax: float) -> None:
    """One panel per test image at the evaluation size (the working resolution by default, the image unpadded).

    The masks the metrics read are reused; otherwise each image, map and mask is made at its evaluation
    size one at a time (at native resolution all of them would not fit).
    """
    test = list(category.test)
    image_threshold, pixel_threshold = result.thresholds.image, result.thresholds.pixel
    with bar(total=len(test), desc="panels", unit="img") as progress:
        for i, sample in enumerate(test):
            image_map = prediction.maps[i]
            shape = eval_shape(result.eval_size, image_size(sample.path), image_map.shape)
            image = read_rgb(sample.path, (shape[1], shape[0]))  # as framing.read at the working size
            if shape != image_map.shape:
                image_map = upsample_maps(torch.from_numpy(np.ascontiguousarray(image_map))[None], shape)[0].numpy()
            score = float(prediction.scores[i])
            verdict = "" if image_threshold is None else (
                "  -> DEFECTIVE" if score >= image_threshold else "  -> normal")
            title = (f"{relative(sample.path, category.root)}  score {score:.4g}"
                     + ("" if image_threshold is None else f"  threshold {image_threshold:.4g}") + verdict)
            if masks is not None:
                gt: np.ndarray | None = masks[i]
            elif category.has_masks or sample.label == 0:
                gt = framing.read_mask(sample.mask_path, shape)
            else:
                gt = None
            visualize.save_panel(folder / sample.defect / f"{sample.path.stem}.png", image, image_map, gt_mask=gt,
                                 threshold=pixel_threshold, vmin=vmin, vmax=vmax, title=title)
            progress.update(1)


def relative(path: Path, root: Path) -> str:
    """``path`` relative to the category's root, as predictions.csv and panels name it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name
