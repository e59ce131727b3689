"""Tables and the HTML report of a benchmark (or of a plain ``adcore run``) results folder.

Everything here is rebuilt from the files on disk (``metrics.json``,
``predictions.csv``, panels, the optional ``roc_pixel.json`` and
``training_log.json`` of each cell, and ``benchmark.json``/``failures.json``
of the grid), so ``adcore report DIR`` never reruns anything. Missing values
are shown as ``n/a``; nothing is filled in. A corrupt or foreign
``metrics.json`` is named in a warning and skipped, never counted as finished.

Layout read::

    DIR/benchmark.json                      grid and commands (written by adcore benchmark)
    DIR/failures.json                       failed cells, if any
    DIR/cells/seed<N>/<detector>/<category>/metrics.json ...
    (or DIR/<detector>/<category>/metrics.json for the output of ``adcore run``)

Written::

    DIR/tables/{image_auroc,pixel_auroc,aupro,summary}.{md,csv,json}
    DIR/report.html                         plots embedded; panels linked relatively

Each file is written atomically. DIR must carry adcore's marker (a benchmark
folder does from its creation) before an existing report.html is overwritten;
a results folder without one is marked on its first report, when neither
report.html nor tables/ exists yet.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import numpy as np

from adcore import fs
from adcore.errors import DataError, OutputError

METRICS: tuple[tuple[str, str], ...] = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"),
                                        ("aupro", "AUPRO"))
#: --sort keys: title, and whether larger is better.
SORT_KEYS: dict[str, tuple[str, bool]] = {
    "image_auroc": ("image AUROC", True), "pixel_auroc": ("pixel AUROC", True), "aupro": ("AUPRO", True),
    "fit_seconds": ("fit s", False), "ms_per_image": ("ms / image", False), "peak_mb": ("peak MB", False),
}
NA = "n/a"
PARTIAL = "†"
#: A folder of `adcore run` results that `adcore report` has written into.
RESULTS = fs.Kind("a results folder", "adcore-results")
TABLES = fs.Kind("a tables folder of adcore report", "adcore-tables")


@attrs.frozen
class Stat:
    """A value over seeds: mean, sample standard deviation, how many seeds had it and how many should."""

    mean: float
    std: float | None
    n: int
    expected: int

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "n_expected": self.expected}


def stat(values: Sequence[float | None], expected: int) -> Stat | None:
    """Mean ± std of the values that exist; None when there are none."""
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return None
    std = float(np.std(present, ddof=1)) if len(present) > 1 else None
    return Stat(float(np.mean(present)), std, len(present), expected)


def fmt_stat(value: Stat | None, digits: int = 3) -> str:
    if value is None:
        return NA
    text = f"{value.mean:.{digits}f}"
    if value.std is not None:
        text += f" ± {value.std:.{digits}f}"
    if value.n < value.expected:
        text += PARTIAL
    return text


# --------------------------------------------------------------------------- reading a results folder
@attrs.define
class Results:
    """What a results folder holds."""

    root: Path
    cells: dict[tuple[str, str, int], dict[str, Any]]  # (detector, category, seed) -> metrics + "_folder"
    detectors: list[str]
    categories: list[str]
    seeds: list[int]
    grid: dict[str, Any]
    failures: dict[tuple[str, str, int], dict[str, Any]]

    def value(self, detector: str, category: str, seed: int, key: str) -> Any:
        cell = self.cells.get((detector, category, seed))
        return None if cell is None else cell.get(key)

    def folder(self, detector: str, category: str, seed: int) -> Path | None:
        cell = self.cells.get((detector, category, seed))
        return None if cell is None else cell["_folder"]

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
    paths = sorted((root / "cells").glob("seed*/*/*/metrics.json")) if (root / "cells").is_dir() else []
    if not paths:
        paths = sorted(root.glob("*/*/metrics.json"))
    paths = [p for p in paths if not any(part.startswith(".") for part in p.relative_to(root).parts)]  # staging
    cells: dict[tuple[str, str, int], dict[str, Any]] = {}
    for path in paths:
        try:
            metrics = read_metrics(path)
        except DataError as exc:
            print(f"Warning: {exc}; skipped", file=sys.stderr, flush=True)
            continue
        metrics["_folder"] = path.parent
        cells[(metrics["detector"], metrics["category"], int(metrics.get("seed", 0) or 0))] = metrics
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
    return Results(root, cells, detectors, categories, seeds, grid, failures)


def read_metrics(path: Path) -> dict[str, Any]:
    """A cell's metrics.json, if it is adcore's for that very cell; else DataError naming the file."""
    folder = Path(path).parent
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({' '.join(str(exc).split())})") from None
    if (not isinstance(metrics, dict) or metrics.get("detector") != folder.parent.name
            or metrics.get("category") != folder.name or not isinstance(metrics.get("seed", 0), int)):
        raise DataError(f"{path}: not adcore's metrics of {folder.parent.name}/{folder.name}")
    return metrics


def _ordered(first: Sequence[Any], more: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys([*first, *sorted(set(more) - set(first), key=str)]))


# --------------------------------------------------------------------------- tables
def metric_table(results: Results, key: str) -> dict[str, Any]:
    """Category × detector table of one metric, with a mean row and column (mean ± std over seeds)."""
    r = results
    n_seeds = len(r.seeds)

    def seed_mean(pairs: Sequence[tuple[str, str]], seed: int) -> float | None:
        values = [r.value(d, c, seed, key) for d, c in pairs]
        return float(np.mean(values)) if values and all(v is not None for v in values) else None

    rows = []
    for category in r.categories:
        values = {d: stat([r.value(d, category, s, key) for s in r.seeds], n_seeds) for d in r.detectors}
        values["mean"] = stat([seed_mean([(d, category) for d in r.detectors], s) for s in r.seeds], n_seeds)
        rows.append({"category": category, "values": values})
    means = {d: stat([seed_mean([(d, c) for c in r.categories], s) for s in r.seeds], n_seeds)
             for d in r.detectors}
    means["mean"] = stat([seed_mean([(d, c) for d in r.detectors for c in r.categories], s) for s in r.seeds],
                         n_seeds)
    rows.append({"category": "mean", "values": means})
    return {"metric": key, "title": dict(METRICS).get(key, key), "columns": [*r.detectors, "mean"],
            "seeds": r.seeds, "rows": rows}


def summary_table(results: Results, sort: str = "image_auroc") -> dict[str, Any]:
    """One row per detector: mean metrics over categories, fit time, speed, peak memory; sorted by ``sort``."""
    if sort not in SORT_KEYS:
        raise DataError(f"unknown sort key '{sort}'; choose one of {', '.join(SORT_KEYS)}")
    r = results
    tables = {key: metric_table(r, key) for key, _ in METRICS}
    rows = []
    for d in r.detectors:
        done = [r.cells[k] for k in r.cells if k[0] == d]
        ms = [1000.0 * c["predict_seconds"] / c["n_test"] for c in done
              if c.get("predict_seconds") is not None and c.get("n_test")]
        peaks = [c["peak_rss_mb"] for c in done if c.get("peak_rss_mb") is not None]
        row: dict[str, Any] = {"detector": d}
        for key, _ in METRICS:
            row[key] = tables[key]["rows"][-1]["values"][d]
        row["fit_seconds"] = stat([c.get("fit_seconds") for c in done], len(done))
        row["ms_per_image"] = stat(ms, len(ms))
        row["peak_mb"] = max(peaks) if peaks else None
        row["cells"] = f"{len(done)}/{len(r.categories) * len(r.seeds)}"
        row["backbone"] = ", ".join(sorted({str(c.get("backbone")) for c in done if c.get("backbone")})) or NA
        rows.append(row)
    larger_better = SORT_KEYS[sort][1]

    def order(row: dict[str, Any]) -> tuple[int, float]:
        value = row[sort]
        number = value.mean if isinstance(value, Stat) else value
        if number is None:
            return (1, 0.0)
        return (0, -number if larger_better else number)

    rows.sort(key=order)
    return {"sort": sort, "rows": rows}


SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("detector", "detector"), ("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"),
    ("fit_seconds", "fit s / category"), ("ms_per_image", "ms / image"), ("peak_mb", "peak MB"),
    ("cells", "cells done"), ("backbone", "backbone"))


def _summary_cell(key: str, value: Any) -> str:
    if value is None:
        return NA
    if key in ("image_auroc", "pixel_auroc", "aupro"):
        return fmt_stat(value)
    if key in ("fit_seconds", "ms_per_image"):
        return fmt_stat(attrs.evolve(value, std=None, expected=value.n), 1 if key == "fit_seconds" else 2)
    if key == "peak_mb":
        return f"{value:.0f}"
    return str(value)


def table_rows(table: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of a metric or summary table."""
    if "metric" in table:
        header = ["category", *table["columns"]]
        rows = [[row["category"], *(fmt_stat(row["values"][c]) for c in table["columns"])] for row in table["rows"]]
    else:
        header = [title for _, title in SUMMARY_COLUMNS]
        rows = [[_summary_cell(key, row[key]) for key, _ in SUMMARY_COLUMNS] for row in table["rows"]]
    return header, rows


def markdown(table: dict[str, Any], n_seeds: int) -> str:
    header, rows = table_rows(table)
    title = (f"{table['title']} per category and detector" if "metric" in table
             else f"Summary per detector (sorted by {SORT_KEYS[table['sort']][0]})")
    escape = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i == 0 or h in ("cells done", "backbone") else "---:"
                            for i, h in enumerate(header)) + "|"]
    for row in rows:
        bold = row[0] == "mean"
        lines.append("| " + " | ".join(f"**{escape(c)}**" if bold and c != NA else escape(c) for c in row) + " |")
    lines += ["", _footnote(table, n_seeds)]
    return "\n".join(lines) + "\n"


def _has_partial(table: dict[str, Any]) -> bool:
    return any(PARTIAL in cell for row in table_rows(table)[1] for cell in row)


def _footnote(table: dict[str, Any], n_seeds: int, partial: bool | None = None) -> str:
    notes = []
    if n_seeds > 1:
        notes.append(f"Mean ± sample standard deviation over {n_seeds} seeds.")
    if "metric" in table:
        notes.append("The mean row/column averages the categories/detectors seed by seed, and only where all "
                     "of them have a value.")
    else:
        notes.append("Metrics are the mean over categories (the mean row of each metric table); fit s and "
                     "ms / image are averaged over finished cells; peak MB is the largest peak resident memory "
                     "of any cell.")
    notes.append(f"{NA}: no value (cell not finished or failed, or the metric is undefined, e.g. no masks).")
    if _has_partial(table) if partial is None else partial:
        notes.append(f"{PARTIAL}: not every seed has a value.")
    return " ".join(notes)


def write_csv(path: Path, table: dict[str, Any]) -> None:
    """Plain numbers for other tools: mean (and std and n with several seeds); n/a where missing."""
    def num(value: float | None, digits: int = 6) -> str:
        return NA if value is None else f"{value:.{digits}g}"

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if "metric" in table:
        several = len(table["seeds"]) > 1
        header = ["category"]
        for column in table["columns"]:
            header += [column, f"{column}_std", f"{column}_n"] if several else [column]
        writer.writerow(header)
        for row in table["rows"]:
            line = [row["category"]]
            for column in table["columns"]:
                value = row["values"][column]
                line.append(num(value.mean if value else None))
                if several:
                    line += [num(value.std if value else None), str(value.n) if value else "0"]
            writer.writerow(line)
    else:
        keys = ["detector", "image_auroc", "image_auroc_std", "pixel_auroc", "pixel_auroc_std", "aupro",
                "aupro_std", "fit_seconds", "ms_per_image", "peak_mb", "cells", "backbone"]
        writer.writerow(keys)
        for row in table["rows"]:
            line = [row["detector"]]
            for key, _ in METRICS:
                value = row[key]
                line += [num(value.mean if value else None), num(value.std if value else None)]
            line += [num(row["fit_seconds"].mean if row["fit_seconds"] else None),
                     num(row["ms_per_image"].mean if row["ms_per_image"] else None),
                     num(row["peak_mb"]), row["cells"], row["backbone"]]
            writer.writerow(line)
    fs.write_file(path, buffer.getvalue())


def _jsonable(value: Any) -> Any:
    if isinstance(value, Stat):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- build
def build(root: Path, sort: str = "image_auroc") -> dict[str, Any]:
    """Write ``tables/`` and ``report.html`` for the results folder ``root``; returns their paths."""
    results = collect(Path(root))
    _claim(results.root)
    tables_dir = fs.prepare_folder(results.root / "tables", TABLES)
    tables = {key: metric_table(results, key) for key, _ in METRICS}
    summary = summary_table(results, sort)
    n_seeds = len(results.seeds)
    texts = {}
    for name, table in [*tables.items(), ("summary", summary)]:
        texts[name] = markdown(table, n_seeds)
        fs.write_file(tables_dir / f"{name}.md", texts[name])
        write_csv(tables_dir / f"{name}.csv", table)
        fs.write_json(tables_dir / f"{name}.json", _jsonable(table))
    report_path = results.root / "report.html"
    fs.write_file(report_path, render_html(results, tables, summary))
    return {"report": report_path, "tables": tables_dir, "summary_text": texts["summary"],
            "markdown": texts}


def _claim(root: Path) -> None:
    """Let the report overwrite its files in ``root`` only if adcore's marker says the folder is adcore's."""
    from adcore.benchmark import BENCHMARK

    if RESULTS.owns(root) or BENCHMARK.owns(root):
        return
    for path in (root / "report.html", root / "tables"):
        if os.path.lexists(path):
            raise OutputError(f"{path}: exists and {root} carries no adcore marker, so it may not be adcore's; "
                              "move it away or remove it yourself, then run adcore report again")
    fs.mark(root, RESULTS)


# --------------------------------------------------------------------------- curves and examples
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
    """Image ROC points recomputed from predictions.csv; None with one class only."""
    from adcore import metrics

    rows = read_predictions(folder)
    labels = np.array([r["label"] for r in rows])
    if len(np.unique(labels)) < 2:
        return None
    return metrics.roc_points(labels, np.array([r["score"] for r in rows], dtype=np.float64))


def pixel_roc(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixel ROC points from the cell's roc_pixel.json (fpr, tpr arrays), when the runner wrote it."""
    try:
        data = json.loads((folder / "roc_pixel.json").read_text())
        fpr, tpr = np.asarray(data["fpr"], dtype=float), np.asarray(data["tpr"], dtype=float)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (fpr, tpr) if fpr.shape == tpr.shape and fpr.size >= 2 else None


def training_log(folder: Path) -> dict[str, list[float]] | None:
    """Loss series from training_log.json: a list of per-epoch losses, a list of per-epoch dicts, or a dict."""
    try:
        data = json.loads((folder / "training_log.json").read_text())
    except (OSError, ValueError):
        return None

    def numbers(values: Any) -> list[float] | None:
        if isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values):
            return [float(v) for v in values]
        return None

    series: dict[str, list[float]] = {}
    if numbers(data):
        series["loss"] = numbers(data)  # type: ignore[assignment]
    elif isinstance(data, list) and all(isinstance(e, dict) for e in data):
        for key in dict.fromkeys(k for e in data for k in e):
            if key in ("epoch", "step"):
                continue
            values = [e.get(key) for e in data]
            if all(isinstance(v, (int, float)) for v in values):
                series[key] = [float(v) for v in values]
    elif isinstance(data, dict):
        for key, values in data.items():
            if numbers(values):
                series[key] = numbers(values)  # type: ignore[assignment]
    return series or None


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


def _png(draw) -> str:  # type: ignore[no-untyped-def]
    """Run a plotting function on a temporary path; return the PNG as a data URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        draw(path)
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _png_width(path: Path) -> int | None:
    """Pixel width from a PNG header (no decoding)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    return int.from_bytes(head[16:20], "big") if head[:8] == b"\x89PNG\r\n\x1a\n" else None


def _href(root: Path, path: Path) -> str:
    return quote(Path(os.path.relpath(path, root)).as_posix())


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1320px;
padding:0 24px 48px;color:#1a1a1a;line-height:1.45}
h1{margin:24px 0 4px}h2{margin-top:36px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{margin:22px 0 8px}nav{background:#f5f5f5;padding:8px 12px;border-radius:6px}
nav a{margin-right:14px}code,pre{font-family:Menlo,Consolas,monospace;font-size:12.5px}
pre{background:#f5f5f5;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
table{border-collapse:collapse;margin:8px 0 4px;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 10px}th{background:#eef1f5;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.mean td{font-weight:600;background:#fafafa}td.na{color:#999}
td.failed{color:#b00020;font-weight:600}td.notrun{color:#999}
.note{color:#555;font-size:13px;max-width:1000px}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.plots img{width:380px;height:auto;border:1px solid #eee}.plots.small img{width:250px}
.plots.small figcaption{text-align:center}
.strip{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:8px}
.strip figure{flex:0 1 calc(50% - 6px);min-width:320px}
figure{margin:0}figure img{max-width:100%;border:1px solid #ddd;image-rendering:auto}
figcaption{font-size:12.5px;color:#333;margin-top:2px}
.missing{width:300px;padding:20px;background:#f0f0f0;color:#666;font-size:13px}
details{margin:4px 0}dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:8px 0}
dt{font-weight:600}dd{margin:0}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], mean_first_col: bool = True,
                raw: bool = False) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for row in rows:
        css = ' class="mean"' if mean_first_col and row and row[0] == "mean" else ""
        out.append(f"<tr{css}>")
        for i, cell in enumerate(row):
            text = str(cell)
            cls = "na" if text == NA else ("num" if i > 0 and _numeric(text) else "")
            if text in ("failed", "not run"):
                cls = "failed" if text == "failed" else "notrun"
            attr = f' class="{cls}"' if cls else ""
            out.append(f"<td{attr}>{text if raw and i == len(row) - 1 else _e(text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _numeric(text: str) -> bool:
    head = text.split(" ")[0].rstrip(PARTIAL)
    try:
        float(head)
    except ValueError:
        return False
    return True


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 or 0 < abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def render_html(results: Results, tables: Mapping[str, dict[str, Any]], summary: dict[str, Any]) -> str:
    """The report as one HTML string (no scripts, no external resources)."""
    r = results
    n_seeds = len(r.seeds)
    grid = r.grid
    first_seed = {(d, c): next((s for s in r.seeds if (d, c, s) in r.cells), None)
                  for d in r.detectors for c in r.categories}
    parts: list[str] = []
    add = parts.append
    title = f"adcore benchmark: {', '.join(r.detectors)} on {len(r.categories)} categor" + (
        "y" if len(r.categories) == 1 else "ies")
    add(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_CSS}</style></head><body>")
    add(f"<h1>{_e(title)}</h1>")
    n_cells = len(r.detectors) * len(r.categories) * n_seeds
    n_done = sum(1 for k in r.cells if k[0] in r.detectors and k[1] in r.categories and k[2] in r.seeds)
    add(f"<p class='note'>{n_done} of {n_cells} cells finished, {len(r.failures)} failed"
        f" &middot; seeds {_e(', '.join(map(str, r.seeds)))} &middot; generated "
        f"{_e(datetime.now(timezone.utc).astimezone().strftime('%Y-%m-%d %H:%M %Z'))} from {_e(r.root)}</p>")
    sections = [("summary", "Summary"), ("tables", "Tables"), ("curves", "ROC curves"),
                ("examples", "Examples"), ("thresholds", "Thresholds"), ("cells", "All cells"),
                ("setup", "Setup")]
    if r.failures:
        sections.insert(1, ("failures", "Failures"))
    add("<nav>" + "".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t in sections) + "</nav>")

    # Summary
    add(f"<h2 id='summary'>Summary</h2><p class='note'>Sorted by {_e(SORT_KEYS[summary['sort']][0])}. "
        f"{_e(_footnote(summary, n_seeds))}</p>")
    add(_html_table(*table_rows(summary), mean_first_col=False))

    if r.failures:
        add("<h2 id='failures'>Failures</h2><p class='note'>These cells failed; the rest of the grid went on. "
            "Run the same benchmark command again to retry them.</p>")
        for (d, c, s), entry in sorted(r.failures.items()):
            add(f"<details><summary><b>{_e(d)} / {_e(c)} / seed {s}</b>: {_e(entry.get('error', '?'))}</summary>"
                f"<pre>{_e(entry.get('traceback', ''))}</pre></details>")

    # Metric tables
    add("<h2 id='tables'>Tables</h2>")
    for key, title_ in METRICS:
        add(f"<h3>{_e(title_)}</h3>")
        add(_html_table(*table_rows(tables[key])))
    partial = any(_has_partial(t) for t in tables.values())
    add(f"<p class='note'>{_e(_footnote(tables['image_auroc'], n_seeds, partial))} The same tables are in "
        f"<a href='tables/'>tables/</a> as Markdown, CSV and JSON.</p>")

    # ROC curves
    add("<h2 id='curves'>ROC curves</h2>")
    if n_seeds > 1:
        add("<p class='note'>Each detector's curve is from its lowest finished seed.</p>")
    from adcore import visualize

    for category in r.categories:
        add(f"<h3>{_e(category)}</h3><div class='plots'>")
        curves, pixel_curves, pixel_pngs, label_of = {}, {}, [], {}
        for d in r.detectors:
            seed = first_seed[(d, category)]
            if seed is None:
                continue
            folder = r.folder(d, category, seed)
            assert folder is not None
            label_of[d] = d if n_seeds == 1 else f"{d} (seed {seed})"
            points = image_roc(folder)
            if points is not None:
                curves[label_of[d]] = (*points, r.value(d, category, seed, "image_auroc"))
            pixel = pixel_roc(folder)
            if pixel is not None:
                pixel_curves[label_of[d]] = (*pixel, r.value(d, category, seed, "pixel_auroc"))
            elif (folder / "roc_pixel.png").is_file():
                pixel_pngs.append((label_of[d], folder / "roc_pixel.png"))
        if curves:
            uri = _png(lambda p: visualize.save_roc(p, curves, f"{category}: image ROC"))
            add(f"<img alt='{_e(category)} image ROC' src='{uri}'>")
        else:
            add("<div class='missing'>No image ROC: no finished cell with both normal and defective "
                "test images.</div>")
        if pixel_curves:
            uri = _png(lambda p: visualize.save_roc(p, pixel_curves, f"{category}: pixel ROC"))
            add(f"<img alt='{_e(category)} pixel ROC' src='{uri}'>")
        if not pixel_curves and not pixel_pngs:
            add("<div class='missing'>No pixel ROC (no masks, or no finished cell).</div>")
        add("</div>")
        if pixel_pngs:  # fallback: the runner's own per-detector plots
            add("<p class='note'>Pixel ROC per detector, as plotted by each run (the runs stored no pixel "
                "ROC points, so these curves cannot share one plot):</p><div class='plots small'>")
            for label, png in pixel_pngs:
                add(f"<figure><img alt='{_e(label)} pixel ROC' src='{_file_uri(png)}'>"
                    f"<figcaption>{_e(label)}</figcaption></figure>")
            add("</div>")

    # Examples and training curves
    add("<h2 id='examples'>Examples</h2><p class='note'>Per detector and category: the normal test image "
        "with the lowest and the highest score, and the defective one with the highest and the lowest score. "
        "Panels: image | ground truth | heat map | predicted mask (pixel threshold) | overlay. Click a panel to "
        "open it at full size; panels are linked from the cells/ folder, so keep report.html next to it.</p>")
    for d in r.detectors:
        for category in r.categories:
            seed = first_seed[(d, category)]
            head = f"{d} / {category}" + (f" / seed {seed}" if n_seeds > 1 and seed is not None else "")
            add(f"<h3 id='ex-{_e(d)}-{_e(category)}'>{_e(head)}</h3>")
            if seed is None:
                add(f"<p class='note'>No finished cell ({_e(r.status(d, category, r.seeds[0]))}).</p>")
                continue
            folder = r.folder(d, category, seed)
            assert folder is not None
            add("<div class='strip'>")
            chosen = examples(folder)
            if not chosen:
                add("<div class='missing'>No predictions.csv.</div>")
            for what, row in chosen:
                png = folder / "panels" / row["defect"] / f"{Path(row['image']).stem}.png"
                verdict = {None: "", True: ", flagged defective", False: ", passed as normal"}[row["flagged"]]
                caption = f"{what}: {row['image']}, score {row['score']:.4g}{verdict}"
                if png.is_file():
                    href = _href(r.root, png)
                    width = _png_width(png)
                    size = f" width='{min(2 * width, 640)}'" if width and width < 480 else ""  # enlarge small panels
                    add(f"<figure><a href='{href}'><img alt='{_e(row['image'])}' src='{href}'{size} "
                        f"loading='lazy'></a><figcaption>{_e(caption)}</figcaption></figure>")
                else:
                    add(f"<figure><div class='missing'>no panel (run without --no-panels)</div>"
                        f"<figcaption>{_e(caption)}</figcaption></figure>")
            add("</div>")
            logs = {f"seed {s}" if n_seeds > 1 else "": training_log(r.folder(d, category, s))  # type: ignore[arg-type]
                    for s in r.seeds if (d, category, s) in r.cells}
            series = {f"{name} {label}".strip(): values for label, log in logs.items() if log
                      for name, values in log.items()}
            if series:
                uri = _png(lambda p: visualize.save_curve(p, series, f"{d} / {category}: training loss",
                                                          "epoch", "loss"))
                add(f"<div class='plots'><img alt='training loss' src='{uri}'></div>")

    # Thresholds
    add("<h2 id='thresholds'>Thresholds</h2><p class='note'>Decision thresholds used for the predicted "
        "verdicts and masks, calibrated on normal images that neither training nor testing used "
        "(never on the test set).</p>")
    rows = []
    for d in r.detectors:
        for category in r.categories:
            for s in r.seeds:
                cell = r.cells.get((d, category, s))
                if cell is None:
                    continue
                rows.append([d, category, str(s), _num(cell.get("image_threshold")),
                             _num(cell.get("pixel_threshold")), str(cell.get("threshold_source") or NA)])
    add(_html_table(["detector", "category", "seed", "image threshold", "pixel threshold", "source"], rows,
                    mean_first_col=False) if rows else "<p>No finished cells.</p>")

    # All cells
    add("<h2 id='cells'>All cells</h2>")
    rows = []
    for d in r.detectors:
        for category in r.categories:
            for s in r.seeds:
                status = r.status(d, category, s)
                cell = r.cells.get((d, category, s))
                if cell is None:
                    error = r.failures.get((d, category, s), {}).get("error", "")
                    rows.append([d, category, str(s), status, *([NA] * 6), _e(error)])
                    continue
                ms = (1000.0 * cell["predict_seconds"] / cell["n_test"]
                      if cell.get("predict_seconds") is not None and cell.get("n_test") else None)
                link = f"<a href='{_href(r.root, cell['_folder'])}/'>{_e(_href(r.root, cell['_folder']))}</a>"
                rows.append([d, category, str(s), status, _num(cell.get("image_auroc")),
                             _num(cell.get("pixel_auroc")), _num(cell.get("aupro")),
                             _num(cell.get("fit_seconds"), 3), _num(ms, 3),
                             NA if cell.get("peak_rss_mb") is None else f"{cell['peak_rss_mb']:.0f}", link])
    add(_html_table(["detector", "category", "seed", "status", "image AUROC", "pixel AUROC", "AUPRO", "fit s",
                     "ms / image", "peak MB", "folder / error"], rows, mean_first_col=False, raw=True))

    # Setup
    add("<h2 id='setup'>Setup</h2><dl>")
    commands = list(dict.fromkeys([*([grid["command"]] if grid.get("command") else []),
                                   *(c.get("command") for c in r.cells.values() if c.get("command"))]))
    add("<dt>command</dt><dd>" + ("".join(f"<pre>{_e(c)}</pre>" for c in commands) or NA) + "</dd>")
    if len(commands) > 1:
        add("<dt></dt><dd class='note'>The first is the latest benchmark command; the others produced "
            "some of the finished cells.</dd>")
    backbones = {d: sorted({str(c.get("backbone")) for k, c in r.cells.items() if k[0] == d}) for d in r.detectors}
    add("<dt>backbone</dt><dd>" + _e("; ".join(f"{d}: {', '.join(b) or NA}" for d, b in backbones.items()))
        + "</dd>")
    sizes = sorted({c.get("image_size") for c in r.cells.values() if c.get("image_size")})
    add(f"<dt>image size</dt><dd>{_e(', '.join(map(str, sizes)) or grid.get('image_size', NA))}</dd>")
    data = grid.get("data") or grid.get("dataset")
    if data:
        add(f"<dt>data</dt><dd>{_e(data)}</dd>")
    if grid.get("set"):
        add("<dt>--set</dt><dd>" + _e("; ".join(f"{d}: " + (", ".join(f"{k}={v}" for k, v in vals.items()) or "-")
                                             for d, vals in grid["set"].items())) + "</dd>")
    versions = dict(grid.get("versions") or {})
    cell_versions = sorted({str(c.get("adcore_version")) for c in r.cells.values() if c.get("adcore_version")})
    if cell_versions:
        versions["adcore (cells)"] = ", ".join(cell_versions)
    for key, value in versions.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        add(f"<dt>{_e(key)}</dt><dd>{_e(value)}</dd>")
    add("</dl><h3>Detector parameters</h3>")
    for d in r.detectors:
        configs: dict[str, list[str]] = {}  # parameters without the seed -> where they were used
        for k, c in sorted(r.cells.items(), key=lambda item: (item[0][2], item[0][1])):
            if k[0] == d:
                params = {name: v for name, v in (c.get("config") or {}).items() if name != "seed"}
                configs.setdefault(json.dumps(params, indent=2), []).append(f"{k[1]}/seed {k[2]}")
        for config, where in configs.items():
            used = "" if len(configs) == 1 else f" ({', '.join(where)})"
            add(f"<details><summary>{_e(d)}{_e(used)}</summary><pre>{_e(config)}</pre>"
                "<p class='note'>seed: the cell's seed</p>"
                "</details>")
    add("</body></html>\n")
    return "\n".join(parts)

