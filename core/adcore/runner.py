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
from adcore.detector import Detector
from adcore.errors import AdcoreError, ConfigError, PluginError
from adcore.evaluation import eval_shape, streamed_pixel_roc
from adcore.framing import Framing, Inspection
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
    resize: str = "squash"
    tile: int | None = None
    tile_overlap: float = 0.0
    tile_scale: float = 1.0
    eval_size: str | int = "working"
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
        from adcore.options import check_options, parse_eval_size

        check_options(self)
        if self.tile is None and (self.tile_overlap != 0.0 or self.tile_scale != 1.0):
            raise ConfigError("--tile-overlap and --tile-scale apply to tiles; add --tile SIZE")
        self.eval_size = parse_eval_size(self.eval_size)

    def framing(self) -> Framing:
        """How images are framed for the detector (squash, keep, or tiles)."""
        return Framing(image_size=self.image_size, resize=self.resize, tile=self.tile,
                       tile_overlap=self.tile_overlap, tile_scale=self.tile_scale)


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
    framing = options.framing()
    for category in categories:  # a tile larger than an image fails here, before the first category is fitted
        framing.check_images([s.path for s in (*category.train, *category.validation, *category.test)])
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
    framing = options.framing()
    reset_peak_rss()
    detector = make_detector(options)
    batch = detector.config.batch_size
    train, calibration, source = split_calibration(category, options.holdout, options.seed)
    test = list(category.test)
    framing.check_images([s.path for s in train] + [s.path for s in calibration])  # before any fitting
    native_sizes = framing.check_images([s.path for s in test])

    target, checkpoint = _targets(options, category)
    started = time.perf_counter()
    log_line(f"{options.detector}/{category.name}: fitting on {len(train)} images")
    with checkpoints.checkpointing(checkpoint, _fingerprint(options, detector, train)) as place:
        detector.fit(framing.fit_images([s.path for s in train], batch))
    fit_seconds = time.perf_counter() - started
    log_line(f"{options.detector}/{category.name}: fitted in {fit_seconds:.0f} s; "
             f"predicting {len(calibration)} calibration + {len(category.test)} test images")

    image_threshold = pixel_threshold = None
    if calibration:
        normal = framing.predict(detector, [s.path for s in calibration], batch, progress="calibrate")
        require_finite([s.path for s in calibration], normal.scores, normal.maps)
        image_threshold, pixel_threshold = calibrate(normal.scores, _flat(normal.maps),
                                                     options.image_quantile, options.pixel_quantile)
        del normal

    started = time.perf_counter()
    prediction = framing.predict(detector, [s.path for s in test], batch, progress="test")
    predict_seconds = time.perf_counter() - started
    require_finite([s.path for s in test], prediction.scores, prediction.maps)

    labels = np.array([s.label for s in test])
    in_memory = category.has_masks and options.eval_size == "working"
    masks = [framing.read_mask(s.mask_path, m.shape) for s, m in zip(test, prediction.maps)] if in_memory else None
    result, pixel_roc = _metrics(labels, masks, prediction, image_threshold)
    del masks
    if category.has_masks and not in_memory:
        pixel_roc = _pixel_at_eval_size(result, test, prediction, native_sizes, options.eval_size)
    result.update({
        "detector": options.detector,
        "category": category.name,
        "backbone": getattr(detector.config, "backbone", None),
        "image_size": options.image_size,
        "framing": framing.metadata(),
        "eval_size": options.eval_size,
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
                                                            labels, pixel_roc, options))
    checkpoints.remove(checkpoint)
    return result


def _fingerprint(options: RunOptions, detector: Detector, train: Sequence[Any]) -> str:
    """What makes two fits the same: detector, its parameters, image size, training files, version."""
    import hashlib

    identity = {"detector": options.detector, "config": as_json_dict(detector.config),
                "image_size": options.image_size, "framing": options.framing().metadata(),
                "train": [str(s.path) for s in train],
                "adcore": __version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Every pixel of maps or masks of possibly different sizes, as one flat array."""
    return np.concatenate([a.reshape(-1) for a in arrays]) if len(arrays) else np.zeros(0, np.float32)


def _metrics(labels: np.ndarray, masks: list[np.ndarray] | None, prediction: Inspection,
             image_threshold: float | None) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray] | None]:
    """Image metrics, and pixel metrics at the working resolution; also the pixel ROC points to plot."""
    scores = prediction.scores
    best = metrics.f1_max(labels, scores)
    at_threshold = (metrics.threshold_metrics(labels, scores, image_threshold)
                    if image_threshold is not None else {"precision": None, "recall": None, "f1": None})
    has_pixels = masks is not None and any(m.any() for m in masks)
    flat_masks, flat_maps = (_flat(masks), _flat(prediction.maps)) if has_pixels else (None, None)
    values = {
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": metrics.pixel_auroc(flat_masks, flat_maps) if has_pixels else None,
        "aupro": metrics.aupro(masks, prediction.maps) if has_pixels else None,
        "image_f1_max": best[0] if best else None,
        "image_f1_max_threshold_on_test": best[1] if best else None,
        "image_precision": at_threshold["precision"],
        "image_recall": at_threshold["recall"],
        "image_f1": at_threshold["f1"],
    }
    result = {key: _defined(value) for key, value in values.items()}
    roc = metrics.roc_points(flat_masks, flat_maps) if result["pixel_auroc"] is not None else None
    return result, roc


def _pixel_at_eval_size(result: dict[str, Any], test: Sequence[Any], prediction: Inspection,
                        native_sizes: Sequence[tuple[int, int]],
                        eval_size: str | int) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixel AUROC at ``--eval-size``, streamed one image at a time (exact); AUPRO is not computed there."""
    shapes = [eval_shape(eval_size, size, m.shape) for size, m in zip(native_sizes, prediction.maps)]
    roc = streamed_pixel_roc(prediction.maps, [s.mask_path for s in test], shapes)
    result["pixel_auroc"] = _defined(roc.auroc)
    result["aupro"] = None  # region overlap needs every region's pixels at once; see docs/architecture.md
    return roc.points() if result["pixel_auroc"] is not None else None


def _defined(value: Any) -> Any:
    """None for a metric that is undefined here (NaN or infinite), so metrics.json stays valid JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _write_outputs(folder: Path, detector: Detector, category: Category, result: dict[str, Any],
                   prediction: Inspection, labels: np.ndarray, pixel_roc: tuple[np.ndarray, np.ndarray] | None,
                   options: RunOptions) -> None:
    vmin, vmax = (float(v) for v in np.percentile(_flat([m[::4, ::4] for m in prediction.maps]), [1.0, 99.9]))
    detector.save(folder / "model", metadata={
        "image_size": options.framing().input_size,
        "framing": options.framing().metadata(),
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
    if pixel_roc is not None:
        fpr, tpr = pixel_roc
        visualize.save_roc(folder / "roc_pixel.png", {options.detector: (fpr, tpr, result["pixel_auroc"])},
                           f"{category.name}: pixel ROC")
        # The report overlays every detector's pixel ROC; recomputing it would need all maps again.
        fs.write_json(folder / "roc_pixel.json",
                      {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist(), "auroc": result["pixel_auroc"]})
    if options.panels:
        _write_panels(folder / "panels", category, prediction, result, vmin, vmax, options)


def _write_panels(folder: Path, category: Category, prediction: Inspection, result: dict[str, Any], vmin: float,
                  vmax: float, options: RunOptions) -> None:
    """One panel per test image at the working resolution (the image as the detector saw it, unpadded).

    Masks are read one at a time: at native resolution all of them would not fit.
    """
    test = list(category.test)
    framing = options.framing()
    image_threshold, pixel_threshold = result["image_threshold"], result["pixel_threshold"]
    with bar(total=len(test), desc="panels", unit="img") as progress:
        for i, sample in enumerate(test):
            image = framing.read(sample.path)
            score = float(prediction.scores[i])
            verdict = "" if image_threshold is None else (
                "  -> DEFECTIVE" if score >= image_threshold else "  -> normal")
            title = (f"{_relative(sample.path, category.root)}  score {score:.4g}"
                     + ("" if image_threshold is None else f"  threshold {image_threshold:.4g}") + verdict)
            has_mask = category.has_masks or sample.label == 0
            gt = framing.read_mask(sample.mask_path, prediction.maps[i].shape) if has_mask else None
            visualize.save_panel(folder / sample.defect / f"{sample.path.stem}.png", image,
                                 prediction.maps[i], gt_mask=gt, threshold=pixel_threshold,
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
