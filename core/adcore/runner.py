"""The main job: fit, calibrate, evaluate and report one detector on each category.

Each category's results are built in a hidden staging folder and published at
``<out>/<detector>/<category>/`` only when complete (see :mod:`adcore.fs`), so a
failure or Ctrl-C never leaves half-written output; what is already at a
target is replaced only if adcore wrote it, and that is checked before any work.
"""

from __future__ import annotations

import csv
import json
import math
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from adcore import __version__, checkpoints, fs, metrics, visualize
from adcore.config import as_json_dict, parse_assignments
from adcore.data import Category
from adcore.data.loading import ImageBatches, load_images, load_masks
from adcore.detector import Detector, Prediction
from adcore.errors import AdcoreError, ConfigError, PluginError
from adcore.plugins import get_registry
from adcore.predicting import require_finite
from adcore.progress import bar, log_line
from adcore.thresholds import calibrate, split_calibration

__all__ = ["RunOptions", "check_outputs", "format_table", "make_detector", "open_categories", "peak_rss_mb",
           "reset_peak_rss", "run", "run_category"]

#: A category's results, written by `adcore run` or a benchmark cell.
RESULT = fs.Kind("a category result folder of adcore run", "adcore-result")


@attrs.define(kw_only=True)
class RunOptions:
    """What ``adcore run`` was asked to do."""

    detector: str
    data: Path | None = None
    dataset: str | None = None
    categories: tuple[str, ...] = ()
    backbone: str | None = None
    image_size: int = 256
    assignments: Mapping[str, str] = attrs.field(factory=dict)
    seed: int = 0
    out: Path = Path("results")
    holdout: float = 0.1
    image_quantile: float = 0.99
    pixel_quantile: float = 0.999
    panels: bool = True
    command: str = ""

    def __attrs_post_init__(self) -> None:
        """Refuse out-of-range numbers (see :mod:`adcore.options`) before any data is read."""
        from adcore.options import check_options

        check_options(self)


def make_detector(options: RunOptions) -> Detector:
    """Build the detector with ``--set`` values, ``--backbone`` and ``--seed`` applied."""
    detector_cls = get_registry().load_object("detector", options.detector)
    params: dict[str, Any] = parse_assignments(detector_cls.Config, options.assignments)
    params.setdefault("seed", options.seed)
    if options.backbone is not None:
        if "backbone" not in attrs.fields_dict(detector_cls.Config):
            raise ConfigError(f"detector '{options.detector}' does not use a backbone; drop --backbone")
        get_registry().get("backbone", options.backbone)  # unknown names fail before any work
        params["backbone"] = options.backbone
    try:
        return detector_cls(**params)
    except AdcoreError:
        raise
    except Exception as exc:  # a plugin's own bug: name the plugin on one line, not a traceback
        entry = get_registry().get("detector", options.detector)
        raise PluginError(f"detector '{options.detector}' of {entry.plugin} failed to build: "
                          f"{type(exc).__name__}: {exc}") from exc


def open_categories(options: RunOptions) -> list[Category]:
    """Read the data set (``folder`` with --data, else the synthetic default)."""
    name = options.dataset or ("folder" if options.data is not None else "synthetic")
    reader = get_registry().load_object("dataset", name)
    return reader(options.data, list(options.categories) or None)


def run(options: RunOptions, echo=print) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """Run the detector on every category; returns each category's metrics."""
    make_detector(options)  # validates names and parameters before reading any data
    fs.check_apart(options.out, [options.data])
    fs.check_writable(options.out)
    categories = open_categories(options)
    check_outputs(options, categories)
    results = []
    for category in categories:
        echo(f"[{options.detector}] {category.name}: {len(category.train)} train, "
             f"{len(category.validation)} validation, {len(category.test)} test images")
        results.append(run_category(options, category))
    return results


def check_outputs(options: RunOptions, categories: Sequence[Category]) -> None:
    """Refuse, before any fitting, outputs that overlap the data or would replace what adcore did not write."""
    fs.check_apart(options.out, [options.data, *(c.root for c in categories)])
    for category in categories:
        target, checkpoint = _targets(options, category)
        fs.check_output(target, RESULT)
        fs.check_target(checkpoint, checkpoints.KIND)


def _targets(options: RunOptions, category: Category) -> tuple[Path, Path]:
    """A category's result folder and the checkpoint folder of its fit."""
    target = options.out / options.detector / category.name
    return target, target.parent / f".{category.name}.checkpoint"


def run_category(options: RunOptions, category: Category) -> dict[str, Any]:
    """Fit, calibrate, test and write every output for one category."""
    size = options.image_size
    reset_peak_rss()
    detector = make_detector(options)
    batch = detector.config.batch_size
    train, calibration, source = split_calibration(category, options.holdout, options.seed)

    target, checkpoint = _targets(options, category)
    started = time.perf_counter()
    log_line(f"{options.detector}/{category.name}: fitting on {len(train)} images")
    with checkpoints.checkpointing(checkpoint, _fingerprint(options, detector, train)) as place:
        detector.fit(ImageBatches([s.path for s in train], size, batch))
    fit_seconds = time.perf_counter() - started
    log_line(f"{options.detector}/{category.name}: fitted in {fit_seconds:.0f} s; "
             f"predicting {len(calibration)} calibration + {len(category.test)} test images")

    image_threshold = pixel_threshold = None
    if calibration:
        normal = detector.predict(ImageBatches([s.path for s in calibration], size, batch), progress="calibrate")
        require_finite([s.path for s in calibration], normal)
        image_threshold, pixel_threshold = calibrate(normal.scores, normal.anomaly_maps,
                                                     options.image_quantile, options.pixel_quantile)

    test = list(category.test)
    started = time.perf_counter()
    prediction = detector.predict(ImageBatches([s.path for s in test], size, batch), progress="test")
    predict_seconds = time.perf_counter() - started
    require_finite([s.path for s in test], prediction)

    labels = np.array([s.label for s in test])
    masks = load_masks([s.mask_path for s in test], size) if category.has_masks else None
    result = _metrics(labels, masks, prediction, image_threshold)
    result.update({
        "detector": options.detector,
        "category": category.name,
        "backbone": getattr(detector.config, "backbone", None),
        "image_size": size,
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "threshold_source": source,
        "n_train": len(train),
        "n_calibration": len(calibration),
        "n_test": len(test),
        "n_test_defective": int(labels.sum()),
        "fit_seconds": round(fit_seconds, 3),
        "resumed_from_epoch": place.resumed_from,
        "predict_seconds": round(predict_seconds, 3),
        "images_per_second": round(len(test) / predict_seconds, 3) if predict_seconds > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "seed": options.seed,
        "config": as_json_dict(detector.config),
        "adcore_version": __version__,
        "command": options.command,
    })
    _write_atomically(target, lambda folder: _write_outputs(folder, detector, category, result, prediction,
                                                            labels, masks, options))
    checkpoints.remove(checkpoint)
    return result


def _fingerprint(options: RunOptions, detector: Detector, train: Sequence[Any]) -> str:
    """What makes two fits the same: detector, its parameters, image size, training files, version."""
    import hashlib

    identity = {"detector": options.detector, "config": as_json_dict(detector.config),
                "image_size": options.image_size, "train": [str(s.path) for s in train],
                "adcore": __version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _metrics(labels: np.ndarray, masks: np.ndarray | None, prediction: Prediction,
             image_threshold: float | None) -> dict[str, Any]:
    scores = prediction.scores
    best = metrics.f1_max(labels, scores)
    at_threshold = (metrics.threshold_metrics(labels, scores, image_threshold)
                    if image_threshold is not None else {"precision": None, "recall": None, "f1": None})
    has_pixels = masks is not None and masks.any()
    values = {
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": metrics.pixel_auroc(masks, prediction.anomaly_maps) if has_pixels else None,
        "aupro": metrics.aupro(masks, prediction.anomaly_maps) if has_pixels else None,
        "image_f1_max": best[0] if best else None,
        "image_f1_max_threshold_on_test": best[1] if best else None,
        "image_precision": at_threshold["precision"],
        "image_recall": at_threshold["recall"],
        "image_f1": at_threshold["f1"],
    }
    return {key: _defined(value) for key, value in values.items()}


def _defined(value: Any) -> Any:
    """None for a metric that is undefined here (NaN or infinite), so metrics.json stays valid JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _write_outputs(folder: Path, detector: Detector, category: Category, result: dict[str, Any],
                   prediction: Prediction, labels: np.ndarray, masks: np.ndarray | None,
                   options: RunOptions) -> None:
    maps = prediction.anomaly_maps
    vmin, vmax = (float(v) for v in np.percentile(maps[:, ::4, ::4], [1.0, 99.9]))
    detector.save(folder / "model", metadata={
        "image_size": options.image_size,
        "image_threshold": result["image_threshold"],
        "pixel_threshold": result["pixel_threshold"],
        "threshold_source": result["threshold_source"],
        "display_range": [vmin, vmax],
        "category": category.name,
    })
    fs.write_json(folder / "metrics.json", result)
    losses = getattr(detector, "loss_history_", None)
    if losses:
        fs.write_json(folder / "training_log.json", [float(v) for v in losses])
    test = list(category.test)
    with open(folder / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "defect", "label", "score", "predicted_defective"])
        for sample, score in zip(test, prediction.scores):
            flagged = "" if result["image_threshold"] is None else int(score >= result["image_threshold"])
            writer.writerow([_relative(sample.path, category.root), sample.defect, sample.label,
                             f"{score:.6g}", flagged])
    if len(np.unique(labels)) == 2:
        fpr, tpr = metrics.roc_points(labels, prediction.scores)
        visualize.save_roc(folder / "roc_image.png", {options.detector: (fpr, tpr, result["image_auroc"])},
                           f"{category.name}: image ROC")
    if masks is not None and result["pixel_auroc"] is not None:
        fpr, tpr = metrics.roc_points(masks.ravel(), maps.ravel())
        visualize.save_roc(folder / "roc_pixel.png", {options.detector: (fpr, tpr, result["pixel_auroc"])},
                           f"{category.name}: pixel ROC")
        # The report overlays every detector's pixel ROC; recomputing it would need all maps again.
        fs.write_json(folder / "roc_pixel.json",
                      {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist(), "auroc": result["pixel_auroc"]})
    if options.panels:
        _write_panels(folder / "panels", category, prediction, masks, result, vmin, vmax, options)


def _write_panels(folder: Path, category: Category, prediction: Prediction, masks: np.ndarray | None,
                  result: dict[str, Any], vmin: float, vmax: float, options: RunOptions) -> None:
    test = list(category.test)
    image_threshold, pixel_threshold = result["image_threshold"], result["pixel_threshold"]
    with bar(total=len(test), desc="panels", unit="img") as progress:
        for start in range(0, len(test), 32):
            chunk = test[start: start + 32]
            images = (load_images([s.path for s in chunk], options.image_size).permute(0, 2, 3, 1).numpy() * 255
                      ).round().astype(np.uint8)
            for offset, (sample, image) in enumerate(zip(chunk, images)):
                i = start + offset
                score = float(prediction.scores[i])
                verdict = "" if image_threshold is None else (
                    "  -> DEFECTIVE" if score >= image_threshold else "  -> normal")
                title = (f"{_relative(sample.path, category.root)}  score {score:.4g}"
                         + ("" if image_threshold is None else f"  threshold {image_threshold:.4g}") + verdict)
                gt = masks[i] if masks is not None else (np.zeros(image.shape[:2], bool) if sample.label == 0
                                                         else None)
                visualize.save_panel(folder / sample.defect / f"{sample.path.stem}.png", image,
                                     prediction.anomaly_maps[i], gt_mask=gt, threshold=pixel_threshold,
                                     vmin=vmin, vmax=vmax, title=title)
                progress.update(1)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Publish a category's result folder built by ``write(folder)``; only an earlier result is replaced."""
    fs.replace_folder(target, write, RESULT)


def reset_peak_rss() -> None:
    """Start a new peak-memory count (Linux), so each category reports its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # elsewhere peak_rss_mb() reports the process peak so far


def peak_rss_mb() -> float:
    """Peak resident memory in MB since the last reset_peak_rss() (Linux) or process start."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def format_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The per-category results as an aligned text table with a mean row."""
    columns = [("category", "category", "{}"), ("image AUROC", "image_auroc", "{:.4f}"),
               ("pixel AUROC", "pixel_auroc", "{:.4f}"), ("AUPRO", "aupro", "{:.4f}"),
               ("F1-max (test)", "image_f1_max", "{:.4f}"), ("fit s", "fit_seconds", "{:.1f}"),
               ("img/s", "images_per_second", "{:.1f}"), ("peak MB", "peak_rss_mb", "{:.0f}")]
    rows = [[fmt.format(r[key]) if r.get(key) is not None else "n/a" for _, key, fmt in columns] for r in results]
    if len(results) > 1:
        mean_row = ["mean"]
        for _, key, fmt in columns[1:]:
            values = [r[key] for r in results if r.get(key) is not None]
            mean_row.append(fmt.format(float(np.mean(values))) if len(values) == len(results) else "n/a")
        rows.append(mean_row)
    headers = [title for title, _, _ in columns]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
