"""adcore report: tables and report.html rebuilt from a results folder alone (no detector runs here)."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from adcore.cli.main import cli

DETECTORS = ("alpha", "beta")
CATEGORIES = ("cat_a", "cat_b")
SEEDS = (0, 1)
MISSING = ("beta", "cat_b", 1)  # a cell of the grid that never finished


def _value(detector: str, category: str, seed: int) -> float:
    return 0.5 + 0.1 * DETECTORS.index(detector) + 0.2 * CATEGORIES.index(category) + 0.01 * seed


def _write_cell(root: Path, detector: str, category: str, seed: int) -> None:
    folder = root / "cells" / f"seed{seed}" / detector / category
    predictions = [("test/good/000.png", "good", 0, 0.1), ("test/good/001.png", "good", 0, 0.4),
                   ("test/crack/000.png", "crack", 1, 0.3), ("test/crack/001.png", "crack", 1, 0.9)]
    for image, defect, _, _ in predictions:
        panel = folder / "panels" / defect / f"{Path(image).stem}.png"
        panel.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (60, 20), (0, 0, 200)).save(panel)
    with open(folder / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "defect", "label", "score", "predicted_defective"])
        writer.writerows([[*row, ""] for row in predictions])
    value = _value(detector, category, seed)
    metrics = {"detector": detector, "category": category, "seed": seed, "image_size": 64,
               "backbone": "resnet18" if detector == "alpha" else None,
               "image_auroc": value, "pixel_auroc": None if category == "cat_b" else value, "aupro": value / 2,
               "image_threshold": 0.35, "pixel_threshold": 0.5, "threshold_source": "validation/good (3 images)",
               "n_test": 4, "fit_seconds": 2.0, "predict_seconds": 0.02, "peak_rss_mb": 321.0,
               "config": {"seed": seed, "epochs": 3}, "adcore_version": "0.1.0",
               "command": "adcore benchmark -d alpha,beta --out X"}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if detector == "alpha":
        (folder / "training_log.json").write_text(json.dumps([1.0, 0.6, 0.4]))
    if category == "cat_a" and seed == 0:
        (folder / "roc_pixel.json").write_text(json.dumps({"fpr": [0, 0.2, 1], "tpr": [0, 0.8, 1]}))


@pytest.fixture()
def results(tmp_path) -> Path:
    root = tmp_path / "bench"
    for seed in SEEDS:
        for detector in DETECTORS:
            for category in CATEGORIES:
                if (detector, category, seed) != MISSING:
                    _write_cell(root, detector, category, seed)
    (root / "benchmark.json").write_text(json.dumps({
        "detectors": list(DETECTORS), "categories": list(CATEGORIES), "seeds": list(SEEDS),
        "command": "adcore benchmark -d alpha,beta --out X", "versions": {"adcore": "0.1.0"}}))
    return root


def _report(root: Path, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["report", str(root), *extra])
    assert result.exit_code == 0, result.output
    return (root / "report.html").read_text()


def test_report_has_every_cell_and_nothing_external(results):
    page = _report(results)
    for seed in SEEDS:
        for detector in DETECTORS:
            for category in CATEGORIES:
                if (detector, category, seed) != MISSING:
                    assert f"cells/seed{seed}/{detector}/{category}/" in page
    assert "not run" in page  # the missing cell is listed, not hidden
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for link in re.findall(r"(?:src|href)='([^'#]+)'", page):  # every local link resolves
        if not link.startswith("data:"):
            assert (results / link.replace("%20", " ")).exists(), link
    assert page.count("data:image/png;base64,") >= 2 * len(CATEGORIES)  # image and pixel ROC per category
    assert "training loss" in page  # alpha has training_log.json
    assert "validation/good (3 images)" in page and "adcore benchmark -d alpha,beta --out X" in page
    assert page.count("panels/") >= 4


def test_tables_have_means_and_mark_missing_values(results):
    _report(results)
    table = json.loads((results / "tables" / "image_auroc.json").read_text())
    assert table["columns"] == ["alpha", "beta", "mean"]
    rows = {row["category"]: row["values"] for row in table["rows"]}
    assert list(rows) == ["cat_a", "cat_b", "mean"]
    assert rows["cat_a"]["alpha"]["mean"] == pytest.approx(0.505)
    assert rows["cat_a"]["alpha"]["n"] == 2 and rows["cat_a"]["alpha"]["std"] == pytest.approx(0.00707, abs=1e-4)
    assert rows["cat_b"]["beta"]["n"] == 1  # one seed only, never filled in
    assert rows["mean"]["alpha"]["mean"] == pytest.approx((0.5 + 0.7 + 0.51 + 0.71) / 4)
    assert rows["mean"]["beta"]["n"] == 1  # seed 1 lacks a category: its mean is not made up
    assert rows["mean"]["mean"]["n"] == 1
    md = (results / "tables" / "image_auroc.md").read_text()
    assert "| **mean** |" in md and "0.505 ± 0.007" in md and "†" in md
    pixel = (results / "tables" / "pixel_auroc.csv").read_text().splitlines()
    assert pixel[0].startswith("category,alpha,alpha_std,alpha_n")
    assert pixel[2].startswith("cat_b,n/a") and pixel[3].startswith("mean,n/a")
    summary = (results / "tables" / "summary.md").read_text()
    assert "| alpha |" in summary and "resnet18" in summary
    for name in ("image_auroc", "pixel_auroc", "aupro", "summary"):
        for ext in ("md", "csv", "json"):
            assert (results / "tables" / f"{name}.{ext}").is_file()


def test_sort_orders_summary(results):
    _report(results, "--sort", "image_auroc")
    rows = json.loads((results / "tables" / "summary.json").read_text())["rows"]
    assert [r["detector"] for r in rows] == ["beta", "alpha"]  # beta scores higher
    _report(results, "--sort", "pixel_auroc")  # beta's pixel mean is n/a (cat_b has none) -> last
    rows = json.loads((results / "tables" / "summary.json").read_text())["rows"]
    assert rows[-1]["pixel_auroc"] is None


def test_report_of_plain_run_folder_and_errors(tmp_path):
    run_out = tmp_path / "run"
    _write_cell(tmp_path / "tmp", "alpha", "cat_a", 0)
    shutil.copytree(tmp_path / "tmp" / "cells" / "seed0", run_out)  # adcore run layout: <detector>/<category>
    page = _report(run_out)
    assert "alpha/cat_a/" in page
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and missing.output.startswith("Error:")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(cli, ["report", str(empty)]).output.startswith("Error: ")


CHROMIUM = Path("/usr/bin/chromium")


def test_report_renders_in_headless_chromium_without_console_errors(results):
    if not CHROMIUM.exists():
        pytest.skip("headless-browser check skipped: /usr/bin/chromium is absent (apt-get install chromium)")
    _report(results)
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--enable-logging=stderr", "--v=0", "--dump-dom",
         (results / "report.html").as_uri()], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "All cells" in proc.stdout  # the page was parsed and rendered to the end
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console


def test_the_image_roc_is_read_as_the_runner_stored_it(results):
    """The report plots the runner's own image ROC points; predictions.csv is the fallback for older cells."""
    from adcore.report.collect import image_roc

    folder = results / "cells" / "seed0" / "alpha" / "cat_a"
    recomputed = image_roc(folder)
    assert recomputed is not None and recomputed[0].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    (folder / "roc_image.json").write_text(json.dumps({"fpr": [0, 0.25, 1], "tpr": [0, 0.75, 1], "auroc": 0.8}))
    stored = image_roc(folder)
    assert stored is not None and stored[0].tolist() == [0, 0.25, 1] and stored[1].tolist() == [0, 0.75, 1]
