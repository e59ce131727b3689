"""The main job: fit, calibrate, predict and evaluate one detector on each category.

This module orchestrates and nothing more: the options are :mod:`adcore.options`'
records, the metrics come from :mod:`adcore.evaluation`, a category's result is
a :class:`~adcore.results.CategoryResult`, and :mod:`adcore.outputs` writes and
publishes its folder at ``<out>/<detector>/<category>/`` only when complete (what
is already at a target is replaced only if adcore wrote it, and that is checked
before any work). Each category's detector is built once: the first is built
before any data is read, so a bad parameter fails first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from adcore import __version__, checkpoints, fs, outputs
from adcore.config import as_json_dict, parse_assignments
from adcore.data import Category, Sample
from adcore.detector import Detector
from adcore.errors import AdcoreError, ConfigError, PluginError
from adcore.evaluation import evaluate, flat
from adcore.framing import Framing
from adcore.memory import peak_rss_mb, reset_peak_rss
from adcore.options import JobOptions, RunOptions
from adcore.outputs import RESULT
from adcore.plugins import get_registry
from adcore.positions import PositionModels
from adcore.predicting import require_finite
from adcore.progress import log_line, terminal
from adcore.results import CategoryResult, Counts, Thresholds, Timings
from adcore.thresholds import calibrate, split_calibration

# RESULT, RunOptions and the memory functions are re-exported: benchmarks and scripts import them from here.
__all__ = ["RESULT", "RunOptions", "check_outputs", "make_detector", "open_categories", "peak_rss_mb",
           "reset_peak_rss", "run", "run_category"]


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


def open_categories(options: JobOptions) -> list[Category]:
    """Read the data set (``folder`` with --data, else the synthetic default)."""
    reader = get_registry().load_object("dataset", options.dataset_name())
    return reader(options.data, list(options.categories) or None)


def run(options: RunOptions, echo=print) -> list[CategoryResult]:  # type: ignore[no-untyped-def]
    """Run the detector on every category; returns each category's result."""
    unused: Detector | None = make_detector(options)  # names and parameters fail here, before any data is read
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
        results.append(run_category(options, category, unused))
        unused = None  # each further category builds its own
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


def run_category(options: RunOptions, category: Category, detector: Detector | None = None) -> CategoryResult:
    """Fit, calibrate, test, evaluate and publish one category; returns its result.

    Args:
        options: the job (a benchmark cell's too).
        category: the category to run.
        detector: an unfitted detector built from ``options`` by :func:`make_detector`; built here when None.
    """
    framing = options.framing()
    reset_peak_rss()
    detector = make_detector(options) if detector is None else detector
    batch = detector.config.batch_size
    train, calibration, source = split_calibration(category, options.holdout, options.seed)
    test = list(category.test)
    framing.check_images([s.path for s in train] + [s.path for s in calibration])  # before any fitting
    native_sizes = framing.check_images([s.path for s in test])

    target, checkpoint = _targets(options, category)
    started = time.perf_counter()
    log_line(f"{options.detector}/{category.name}: fitting on {len(train)} images")
    fitted: Detector | PositionModels = detector
    resumed_from = None
    if framing.per_position:  # one detector per tile position; their fits are short and not checkpointed
        built = [detector]
        fitted = framing.fit_positions(lambda: built.pop() if built else make_detector(options),
                                       [s.path for s in train], batch, progress=terminal)
    else:
        place = checkpoints.Place(checkpoint, _fingerprint(options, detector, train))
        detector.fit(framing.fit_images([s.path for s in train], batch), checkpoint=place, progress=terminal)
        resumed_from = place.resumed_from
    fit_seconds = time.perf_counter() - started
    log_line(f"{options.detector}/{category.name}: fitted in {fit_seconds:.0f} s; "
             f"predicting {len(calibration)} calibration + {len(category.test)} test images")

    image_threshold, pixel_threshold = _thresholds(options, framing, fitted, calibration)
    started = time.perf_counter()
    prediction = framing.predict(fitted, [s.path for s in test], batch, progress="test")
    predict_seconds = time.perf_counter() - started
    require_finite([s.path for s in test], prediction.scores, prediction.maps)

    evaluation = evaluate(framing, test, prediction, has_masks=category.has_masks, eval_size=options.eval_size,
                          native_sizes=native_sizes, image_threshold=image_threshold)
    result = CategoryResult(
        detector=options.detector,
        category=category.name,
        seed=options.seed,
        backbone=getattr(detector.config, "backbone", None),
        image_size=options.image_size,
        framing=framing.metadata(),
        eval_size=options.eval_size,
        metrics=evaluation.metrics,
        thresholds=Thresholds(image=image_threshold, pixel=pixel_threshold, source=source),
        counts=Counts(n_train=len(train), n_calibration=len(calibration), n_test=len(test),
                      n_test_defective=sum(int(s.label) for s in test)),
        timings=Timings(fit_seconds=round(fit_seconds, 3), resumed_from_epoch=resumed_from,
                        predict_seconds=round(predict_seconds, 3),
                        images_per_second=round(len(test) / predict_seconds, 3) if predict_seconds > 0 else None),
        peak_rss_mb=round(peak_rss_mb(), 1),
        config=as_json_dict(detector.config),
        adcore_version=__version__,
        command=options.command,
    )
    outputs.publish(target, lambda folder: outputs.write_category(folder, result, fitted, category, prediction,
                                                                  evaluation, framing, options.panels))
    checkpoints.remove(checkpoint)
    return result


def _thresholds(options: RunOptions, framing: Framing, detector: Detector | PositionModels,
                calibration: Sequence[Sample]) -> tuple[float | None, float | None]:
    """Image and pixel thresholds from the calibration images' scores; (None, None) without any."""
    if not calibration:
        return None, None
    paths = [s.path for s in calibration]
    normal = framing.predict(detector, paths, detector.config.batch_size, progress="calibrate")
    require_finite(paths, normal.scores, normal.maps)
    return calibrate(normal.scores, flat(normal.maps), options.image_quantile, options.pixel_quantile)


def _fingerprint(options: RunOptions, detector: Detector, train: Sequence[Any]) -> str:
    """What makes two fits the same: detector, its parameters, image size, training files, version."""
    import hashlib

    identity = {"detector": options.detector, "config": as_json_dict(detector.config),
                "image_size": options.image_size, "framing": options.framing().metadata(),
                "train": [str(s.path) for s in train],
                "adcore": __version__}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
