"""The category result record: metrics.json is exactly its serialisation, and reads back as the same record."""

from __future__ import annotations

import json

import pytest

from adcore.errors import DataError
from adcore.results import QUANTITIES, SORT_KEYS, CategoryResult, Counts, Metrics, Thresholds, Timings, read_result

#: The keys of metrics.json in the order adcore run has always written them.
KEYS = ["image_auroc", "pixel_auroc", "aupro", "image_f1_max", "image_f1_max_threshold_on_test", "image_precision",
        "image_recall", "image_f1", "detector", "category", "backbone", "image_size", "framing", "eval_size",
        "image_threshold", "pixel_threshold", "threshold_source", "n_train", "n_calibration", "n_test",
        "n_test_defective", "fit_seconds", "resumed_from_epoch", "predict_seconds", "images_per_second",
        "peak_rss_mb", "seed", "config", "adcore_version", "command"]


def _result() -> CategoryResult:
    return CategoryResult(
        detector="padim", category="tire", seed=3, backbone="resnet18", image_size=256,
        framing={"resize": "squash", "tile": None, "tile_overlap": 0.0, "tile_scale": 1.0}, eval_size="working",
        metrics=Metrics(image_auroc=0.9, pixel_auroc=0.95, aupro=0.8, image_f1_max=0.7,
                        image_f1_max_threshold_on_test=1.5, image_precision=0.6, image_recall=0.5, image_f1=0.55),
        thresholds=Thresholds(image=1.2, pixel=2.3, source="validation/good (3 images)"),
        counts=Counts(n_train=10, n_calibration=3, n_test=8, n_test_defective=4),
        timings=Timings(fit_seconds=1.5, resumed_from_epoch=None, predict_seconds=0.4, images_per_second=20.0),
        peak_rss_mb=512.5, config={"seed": 3, "batch_size": 32}, adcore_version="0.1.0", command="adcore run")


def test_metrics_json_keeps_its_keys_and_reads_back(tmp_path):
    result = _result()
    document = result.to_json()
    assert list(document) == KEYS
    assert document["image_threshold"] == 1.2 and document["threshold_source"].startswith("validation")
    folder = tmp_path / "padim" / "tire"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(document))
    assert read_result(folder / "metrics.json") == result


def test_an_older_metrics_json_reads_with_missing_values_as_none(tmp_path):
    result = CategoryResult.from_json({"detector": "padim", "category": "tire", "image_auroc": 0.5, "extra": 1})
    assert result.seed == 0 and result.metrics.image_auroc == 0.5 and result.metrics.aupro is None
    assert result.framing is None and result.config == {} and result.ms_per_image is None


def test_a_foreign_metrics_json_is_refused_naming_the_file(tmp_path):
    folder = tmp_path / "padim" / "tire"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"detector": "spade", "category": "tire"}))
    with pytest.raises(DataError, match="not adcore's metrics of padim/tire"):
        read_result(folder / "metrics.json")


def test_quantities_read_the_record_and_name_the_sort_keys():
    result = _result()
    assert result.value("ms_per_image") == pytest.approx(50.0) and result.value("peak_mb") == 512.5
    assert set(SORT_KEYS) <= set(QUANTITIES) and SORT_KEYS["fit_seconds"] == ("fit s", False)
