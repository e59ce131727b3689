"""Reading a results folder: its finished cells, the grid and failures, and each cell's curves and examples."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from adcore.errors import DataError
from adcore.results import METRICS_FILE, CategoryResult, read_result

__all__ = ["Results", "collect", "examples", "image_roc", "pixel_roc", "read_predictions", "training_log"]


@attrs.define
class Results:
    """What a results folder holds."""

    root: Path
    cells: dict[tuple[str, str, int], CategoryResult]  # (detector, category, seed) -> its metrics.json
    folders: dict[tuple[str, str, int], Path]  # (detector, category, seed) -> the cell's folder
    detectors: list[str]
    categories: list[str]
    seeds: list[int]
    grid: dict[str, Any]
    failures: dict[tuple[str, str, int], dict[str, Any]]

    def value(self, detector: str, category: str, seed: int, key: str) -> float | None:
        """One of :data:`adcore.results.QUANTITIES` of a cell; None when the cell did not finish."""
        cell = self.cells.get((detector, category, seed))
        return None if cell is None else cell.value(key)

    def status(self, detector: str, category: str, seed: int) -> str:
        if (detector, category, seed) in self.cells:
            return "finished"
        if (detector, category, seed) in self.failures:
            return "failed"
        return "not run"


def collect(root: Path) -> Results:
    """Read every finished cell (and the grid and failures, when present) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such results folder")
    grid: dict[str, Any] = {}
    try:
        grid = json.loads((root / "benchmark.json").read_text())
    except (OSError, ValueError):
        pass
    paths = sorted((root / "cells").glob(f"seed*/*/*/{METRICS_FILE}")) if (root / "cells").is_dir() else []
    if not paths:
        paths = sorted(root.glob(f"*/*/{METRICS_FILE}"))
    paths = [p for p in paths if not any(part.startswith(".") for part in p.relative_to(root).parts)]  # staging
    cells: dict[tuple[str, str, int], CategoryResult] = {}
    folders: dict[tuple[str, str, int], Path] = {}
    for path in paths:
        try:
            result = read_result(path)
        except DataError as exc:
            print(f"Warning: {exc}; skipped", file=sys.stderr, flush=True)
            continue
        key = (result.detector, result.category, result.seed)
        cells[key], folders[key] = result, path.parent
    failures: dict[tuple[str, str, int], dict[str, Any]] = {}
    try:
        for entry in json.loads((root / "failures.json").read_text()):
            failures[(entry["detector"], entry["category"], int(entry["seed"]))] = entry
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not cells and not failures:
        raise DataError(f"{root}: no results found (expected cells/seed<N>/<detector>/<category>/metrics.json "
                        "from adcore benchmark, or <detector>/<category>/metrics.json from adcore run)")
    keys = list(cells) + list(failures)
    detectors = _ordered(grid.get("detectors", []), [k[0] for k in keys])
    categories = _ordered(grid.get("categories", []), sorted(k[1] for k in keys))
    seeds = sorted(set(grid.get("seeds", [])) | {k[2] for k in keys})
    return Results(root, cells, folders, detectors, categories, seeds, grid, failures)


def _ordered(first: Sequence[Any], more: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys([*first, *sorted(set(more) - set(first), key=str)]))



def read_predictions(folder: Path) -> list[dict[str, Any]]:
    """Rows of a cell's predictions.csv (image, defect, label, score)."""
    rows = []
    try:
        with open(folder / "predictions.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    flagged = (row.get("predicted_defective") or "").strip()
                    rows.append({"image": row["image"], "defect": row["defect"], "label": int(row["label"]),
                                 "score": float(row["score"]),
                                 "flagged": None if flagged == "" else flagged == "1"})
                except (KeyError, ValueError):
                    continue
    except OSError:
        pass
    return rows


def image_roc(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Image ROC points from the cell's roc_image.json; recomputed from predictions.csv for a cell written
    before the runner stored them. None with one class only."""
    from adcore import metrics

    stored = _stored_roc(folder / "roc_image.json")
    if stored is not None:
        return stored
    rows = read_predictions(folder)
    labels = np.array([r["label"] for r in rows])
    if len(np.unique(labels)) < 2:
        return None
    return metrics.roc_points(labels, np.array([r["score"] for r in rows], dtype=np.float64))


def pixel_roc(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixel ROC points from the cell's roc_pixel.json (fpr, tpr arrays), when the runner wrote it."""
    return _stored_roc(folder / "roc_pixel.json")


def _stored_roc(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(fpr, tpr) of a ROC file the runner wrote; None when there is none or it is not readable."""
    try:
        data = json.loads(path.read_text())
        fpr, tpr = np.asarray(data["fpr"], dtype=float), np.asarray(data["tpr"], dtype=float)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (fpr, tpr) if fpr.shape == tpr.shape and fpr.size >= 2 else None


def training_log(folder: Path) -> list[float] | None:
    """The per-epoch mean losses of a cell's training_log.json (what the runner writes), if any."""
    try:
        losses = json.loads((folder / "training_log.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(losses, list) and losses and all(isinstance(v, (int, float)) for v in losses):
        return [float(v) for v in losses]
    return None


def examples(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """Best and worst scored normal and defective test images of a cell."""
    rows = read_predictions(folder)
    normal = sorted((r for r in rows if r["label"] == 0), key=lambda r: r["score"])
    defective = sorted((r for r in rows if r["label"] == 1), key=lambda r: r["score"])
    chosen = []
    if normal:
        chosen.append(("normal, lowest score (best)", normal[0]))
        if len(normal) > 1:
            chosen.append(("normal, highest score (worst)", normal[-1]))
    if defective:
        chosen.append(("defective, highest score (best)", defective[-1]))
        if len(defective) > 1:
            chosen.append(("defective, lowest score (worst)", defective[0]))
    return chosen

