"""adcore benchmark: the grid runs through runner.run_category, resumes, records failures, writes tables/report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from adcore import outputs, runner
from adcore.cli.main import cli
from adcore.config import as_json_dict
from adcore.results import CategoryResult


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("ADCORE_PROGRESS", "0")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from adcore.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic", categories=("machined_part",), size=64,
                    n_train=8, n_test_good=3, n_test_defect=1)


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["benchmark", "--detector", "patchcore", "--data", str(data), "--image-size", "64",
            "--set", "patchcore.coreset_ratio=0.1", "--out", str(out), *extra]


def _fake_run_category(options, category, detector=None):  # type: ignore[no-untyped-def]
    """Writes what run_category writes (without fitting anything), with deterministic scores."""
    rng = np.random.default_rng(options.seed)
    test = list(category.test)
    labels = np.array([s.label for s in test])
    scores = rng.random(len(test)) + labels * 0.5
    from adcore import metrics

    result = {"detector": options.detector, "category": category.name, "seed": options.seed,
              "image_size": options.image_size, "backbone": "efficientnet_lite0",
              "image_auroc": metrics.image_auroc(labels, scores), "pixel_auroc": 0.9 + 0.01 * options.seed,
              "aupro": 0.7, "image_threshold": 1.0, "pixel_threshold": 2.0,
              "threshold_source": "held-out 10% of train/good (1 images)", "n_test": len(test),
              "fit_seconds": 1.0, "predict_seconds": 0.07, "peak_rss_mb": 500.0,
              "config": as_json_dict((detector or runner.make_detector(options)).config), "command": options.command}

    def write(folder: Path) -> None:
        (folder / "metrics.json").write_text(json.dumps(result))
        with open(folder / "predictions.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "defect", "label", "score", "predicted_defective"])
            for sample, score in zip(test, scores):
                writer.writerow([sample.path.relative_to(category.root).as_posix(), sample.defect, sample.label,
                                 f"{score:.6g}", ""])
                panel = folder / "panels" / sample.defect / f"{sample.path.stem}.png"
                panel.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (40, 10), (200, 0, 0)).save(panel)

    outputs.publish(options.out / options.detector / category.name, write)
    return CategoryResult.from_json(result)


def test_resume_after_interrupt_does_not_repeat_finished_cells(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    real = runner.run_category
    calls: list[int] = []

    def interrupted_on_second_cell(options, category, detector=None):  # type: ignore[no-untyped-def]
        calls.append(options.seed)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(options, category, detector)

    monkeypatch.setattr(runner, "run_category", interrupted_on_second_cell)
    first = CliRunner().invoke(cli, _args(tiny_data, out, "--seed", "0", "--seed", "1"))
    assert first.exit_code == 130, first.output
    assert "1 of 2 cells are finished" in first.output
    cell0 = out / "cells" / "seed0" / "patchcore" / "machined_part"
    assert (cell0 / "metrics.json").is_file() and (cell0 / "roc_image.png").is_file()
    assert not (out / "cells" / "seed1" / "patchcore").exists()  # nothing half-written
    assert json.loads((cell0 / "metrics.json").read_text())["config"]["coreset_ratio"] == 0.1
    before = (cell0 / "metrics.json").stat().st_mtime_ns

    calls.clear()

    def counting(options, category, detector=None):  # type: ignore[no-untyped-def]
        calls.append(options.seed)
        return real(options, category, detector)

    monkeypatch.setattr(runner, "run_category", counting)
    second = CliRunner().invoke(cli, _args(tiny_data, out, "--seed", "0", "--seed", "1"))
    assert second.exit_code == 0, second.output
    assert calls == [1]  # only the unfinished cell ran
    assert (cell0 / "metrics.json").stat().st_mtime_ns == before
    assert "finished before, skipped" in second.output
    assert (out / "cells" / "seed1" / "patchcore" / "machined_part" / "metrics.json").is_file()

    report = (out / "report.html").read_text()
    for seed in (0, 1):
        assert f"cells/seed{seed}/patchcore/machined_part" in report
    table = json.loads((out / "tables" / "image_auroc.json").read_text())
    assert table["rows"][-1]["category"] == "mean" and table["rows"][-1]["values"]["patchcore"]["n"] == 2
    assert "**mean**" in (out / "tables" / "image_auroc.md").read_text()
    assert "±" in (out / "tables" / "summary.md").read_text()


def test_failing_cell_is_recorded_grid_goes_on_and_exit_is_nonzero(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "bench"

    def failing_seed_1(options, category, detector=None):  # type: ignore[no-untyped-def]
        if options.seed == 1:
            raise RuntimeError("boom in cell")
        return _fake_run_category(options, category, detector)

    monkeypatch.setattr(runner, "run_category", failing_seed_1)
    args = _args(tiny_data, out, "--seed", "0", "--seed", "1", "--seed", "2")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "1 of 3 cells failed" in result.output and "boom in cell" in result.output
    failures = json.loads((out / "failures.json").read_text())
    assert [(f["seed"], f["error"]) for f in failures] == [(1, "RuntimeError: boom in cell")]
    assert "Traceback" in failures[0]["traceback"]
    for seed in (0, 2):  # the grid went on after the failure
        assert (out / "cells" / f"seed{seed}" / "patchcore" / "machined_part" / "metrics.json").is_file()
    report = (out / "report.html").read_text()
    assert "boom in cell" in report and "id='failures'" in report
    image = (out / "tables" / "image_auroc.md").read_text()
    assert "†" in image  # two of three seeds: marked, not filled in

    calls: list[int] = []

    def fixed(options, category, detector=None):  # type: ignore[no-untyped-def]
        calls.append(options.seed)
        return _fake_run_category(options, category, detector)

    monkeypatch.setattr(runner, "run_category", fixed)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert calls == [1]
    assert not (out / "failures.json").exists()
    assert "id='failures'" not in (out / "report.html").read_text()


def test_force_reruns_and_other_settings_are_refused(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "bench"
    calls: list[int] = []

    def fake(options, category, detector=None):  # type: ignore[no-untyped-def]
        calls.append(options.seed)
        return _fake_run_category(options, category, detector)

    monkeypatch.setattr(runner, "run_category", fake)
    assert CliRunner().invoke(cli, _args(tiny_data, out, "--no-panels")).exit_code == 0
    changed = CliRunner().invoke(cli, [*_args(tiny_data, out), "--set", "patchcore.coreset_ratio=0.2"])
    assert changed.exit_code == 1 and "other settings" in changed.output and "coreset_ratio" in changed.output
    assert CliRunner().invoke(cli, [*_args(tiny_data, out), "--force"]).exit_code == 0
    assert calls == [0, 0]


def test_set_prefixes_and_unknown_names():
    from adcore.benchmark import resolve_detectors, split_assignments
    from adcore.errors import ConfigError, UnknownNameError

    assert resolve_detectors(["patchcore,patchcore"]) == ("patchcore",)
    assert "patchcore" in resolve_detectors("all")
    with pytest.raises(UnknownNameError, match="Did you mean 'patchcore'"):
        resolve_detectors("patchcor")
    split = split_assignments({"patchcore.coreset_ratio": "0.05", "batch_size": "4"}, ["patchcore"])
    assert split == {"patchcore": {"coreset_ratio": "0.05", "batch_size": "4"}}
    with pytest.raises(ConfigError, match="no detector of this benchmark has a parameter 'nope'"):
        split_assignments({"nope": "1"}, ["patchcore"])
    with pytest.raises(UnknownNameError):
        split_assignments({"nosuchdetector.k": "1"}, ["patchcore"])


def test_bad_parameter_fails_before_any_cell(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run_category", lambda *a: pytest.fail("no cell should run"))
    result = CliRunner().invoke(cli, [*_args(tiny_data, tmp_path / "b"), "--set", "patchcore.coreset_ratio=2"])
    assert result.exit_code == 1 and result.output.startswith("Error:")


def test_each_detector_is_built_once_per_run_and_per_cell(tiny_data, tmp_path, monkeypatch):
    """adcore run builds its detector once; a benchmark builds one per detector and seed to check the parameters,
    which its first cell to run fits, and none more to compare finished cells with."""
    real = runner.make_detector
    built: list[str] = []

    def counting(options):  # type: ignore[no-untyped-def]
        built.append(options.detector)
        return real(options)

    monkeypatch.setattr(runner, "make_detector", counting)
    run = CliRunner().invoke(cli, ["run", "--detector", "patchcore", "--data", str(tiny_data), "--image-size", "64",
                                   "--set", "coreset_ratio=0.1", "--no-panels", "--out", str(tmp_path / "run")])
    assert run.exit_code == 0, run.output
    assert built == ["patchcore"]
    built.clear()
    out = tmp_path / "bench"
    first = CliRunner().invoke(cli, _args(tiny_data, out, "--no-panels"))
    assert first.exit_code == 0, first.output
    assert len(built) == 1  # the check before any data is read, which the cell then fits
    built.clear()
    again = CliRunner().invoke(cli, _args(tiny_data, out, "--no-panels"))
    assert again.exit_code == 0 and "finished before, skipped" in again.output
    assert len(built) == 1  # the check only: the finished cell is compared with the config it gave, not run
