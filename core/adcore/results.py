"""One category's result as a record: what ``adcore run`` returns, a benchmark cell stores and the report reads.

As pytest's ``TestReport`` travels between the process that runs a test and
the one that reports it, a :class:`CategoryResult` travels from the runner
(in whichever worker ran it) to the benchmark and the report; ``metrics.json``
is exactly :meth:`CategoryResult.to_json`, and :func:`read_result` reads one
back. Nothing outside this module indexes a result by string keys: the tables
and ``--sort`` name what they show through :data:`QUANTITIES`.

``metrics.json`` is one flat JSON object (its keys are those of the records'
fields, the thresholds' prefixed); a key an older adcore did not write keeps the
field's default (``None`` for a value, seed 0, an empty config).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from adcore import fs
from adcore.errors import DataError

__all__ = ["BENCHMARK", "METRICS_FILE", "METRIC_KEYS", "QUANTITIES", "SORT_KEYS", "CategoryResult", "Counts",
           "Metrics", "Quantity", "Thresholds", "Timings", "read_result"]

METRICS_FILE = "metrics.json"
#: The ``--out`` of `adcore benchmark`: its grid, cells, tables and report (the report, too, recognises it).
BENCHMARK = fs.Kind("a results folder of adcore benchmark", "adcore-benchmark")


@attrs.frozen(kw_only=True)
class Metrics:
    """Image and pixel metrics on the test set (None where undefined, e.g. no masks or one class only)."""

    image_auroc: float | None = None
    pixel_auroc: float | None = None
    aupro: float | None = None
    image_f1_max: float | None = None
    image_f1_max_threshold_on_test: float | None = None
    image_precision: float | None = None
    image_recall: float | None = None
    image_f1: float | None = None


@attrs.frozen(kw_only=True)
class Thresholds:
    """Decision thresholds, calibrated on normal images held out of training (never the test set)."""

    image: float | None = attrs.field(default=None, metadata={"key": "image_threshold"})
    pixel: float | None = attrs.field(default=None, metadata={"key": "pixel_threshold"})
    source: str | None = attrs.field(default=None, metadata={"key": "threshold_source"})


@attrs.frozen(kw_only=True)
class Counts:
    """How many images each part of the job used."""

    n_train: int | None = None
    n_calibration: int | None = None
    n_test: int | None = None
    n_test_defective: int | None = None


@attrs.frozen(kw_only=True)
class Timings:
    """Fit and predict time (``resumed_from_epoch``: the checkpoint a trained fit went on from, if any)."""

    fit_seconds: float | None = None
    resumed_from_epoch: int | None = None
    predict_seconds: float | None = None
    images_per_second: float | None = None


@attrs.frozen(kw_only=True)
class CategoryResult:
    """Everything ``metrics.json`` holds for one detector on one category with one seed."""

    detector: str
    category: str
    seed: int = 0
    backbone: str | None = None
    image_size: int | None = None
    framing: dict[str, Any] | None = None  # None: written before framings, so squashed
    eval_size: str | int | None = None  # None: written before --eval-size, so "working"
    metrics: Metrics = attrs.field(factory=Metrics)
    thresholds: Thresholds = attrs.field(factory=Thresholds)
    counts: Counts = attrs.field(factory=Counts)
    timings: Timings = attrs.field(factory=Timings)
    peak_rss_mb: float | None = None
    config: dict[str, Any] = attrs.field(factory=dict)
    adcore_version: str | None = None
    command: str | None = None

    @property
    def ms_per_image(self) -> float | None:
        """Prediction time per test image in milliseconds."""
        seconds, count = self.timings.predict_seconds, self.counts.n_test
        return None if seconds is None or not count else 1000.0 * seconds / count

    def value(self, key: str) -> float | None:
        """One of :data:`QUANTITIES` by its key (what tables and ``--sort`` name)."""
        return QUANTITIES[key].of(self)

    def to_json(self) -> dict[str, Any]:
        """The flat mapping ``metrics.json`` holds, in its usual key order."""
        values: dict[str, Any] = _flat(self.metrics)
        values.update({name: getattr(self, name) for name in _IDENTITY})
        for record in (self.thresholds, self.counts, self.timings):
            values.update(_flat(record))
        values.update({name: getattr(self, name) for name in _RUN})
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> CategoryResult:
        """The record of a ``metrics.json`` mapping; missing keys keep their defaults, unknown ones are dropped."""
        parts = {name: _unflat(record_cls, values) for name, record_cls in _PARTS.items()}
        own = {name: values[name] for name in (*_IDENTITY, *_RUN) if name in values}
        if own.get("seed") is None:
            own.pop("seed", None)
        if own.get("config") is None:
            own.pop("config", None)
        return cls(**own, **parts)


_PARTS: dict[str, type] = {"metrics": Metrics, "thresholds": Thresholds, "counts": Counts, "timings": Timings}
_IDENTITY = ("detector", "category", "backbone", "image_size", "framing", "eval_size")
_RUN = ("peak_rss_mb", "seed", "config", "adcore_version", "command")


def _key(field: attrs.Attribute) -> str:
    return field.metadata.get("key", field.name)


def _flat(record: Any) -> dict[str, Any]:
    return {_key(f): getattr(record, f.name) for f in attrs.fields(type(record))}


def _unflat(record_cls: type, values: Mapping[str, Any]) -> Any:
    return record_cls(**{f.name: values[_key(f)] for f in attrs.fields(record_cls) if _key(f) in values})


def read_result(path: Path) -> CategoryResult:
    """A cell's metrics.json, if it is adcore's for that very cell; else DataError naming the file."""
    folder = Path(path).parent
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({' '.join(str(exc).split())})") from None
    if (not isinstance(values, dict) or values.get("detector") != folder.parent.name
            or values.get("category") != folder.name or not isinstance(values.get("seed", 0), int)):
        raise DataError(f"{path}: not adcore's metrics of {folder.parent.name}/{folder.name}")
    try:
        return CategoryResult.from_json(values)
    except TypeError as exc:  # a field of the wrong kind, e.g. a list where a record belongs
        raise DataError(f"{path}: not adcore's metrics of {folder.parent.name}/{folder.name} ({exc})") from None


@attrs.frozen
class Quantity:
    """A number of a result that a table shows and ``--sort`` may order by."""

    title: str
    larger_is_better: bool
    of: Callable[[CategoryResult], float | None] = attrs.field(eq=False, repr=False)


#: Every number the tables show, by the key the tables, their JSON and ``--sort`` use.
QUANTITIES: dict[str, Quantity] = {
    "image_auroc": Quantity("image AUROC", True, lambda r: r.metrics.image_auroc),
    "pixel_auroc": Quantity("pixel AUROC", True, lambda r: r.metrics.pixel_auroc),
    "aupro": Quantity("AUPRO", True, lambda r: r.metrics.aupro),
    "image_f1_max": Quantity("F1-max (test)", True, lambda r: r.metrics.image_f1_max),
    "fit_seconds": Quantity("fit s", False, lambda r: r.timings.fit_seconds),
    "ms_per_image": Quantity("ms / image", False, lambda r: r.ms_per_image),
    "images_per_second": Quantity("img/s", True, lambda r: r.timings.images_per_second),
    "peak_mb": Quantity("peak MB", False, lambda r: r.peak_rss_mb),
}
#: The metrics with a category × detector table of their own.
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro")
#: ``--sort`` keys: title, and whether larger is better.
SORT_KEYS: dict[str, tuple[str, bool]] = {
    key: (QUANTITIES[key].title, QUANTITIES[key].larger_is_better)
    for key in (*METRIC_KEYS, "fit_seconds", "ms_per_image", "peak_mb")}
