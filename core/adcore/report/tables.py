"""The tables of a results folder: per-metric category × detector tables and the summary, as Markdown, CSV, JSON."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from adcore import fs
from adcore.errors import DataError
from adcore.report.collect import Results
from adcore.results import METRIC_KEYS, QUANTITIES, SORT_KEYS

__all__ = ["METRICS", "NA", "PARTIAL", "SORT_KEYS", "Stat", "fmt_stat", "footnote", "has_partial", "jsonable",
           "markdown", "metric_table", "stat", "summary_table", "table_rows", "write_csv"]


#: The metrics with a table of their own: key and title (both from :data:`adcore.results.QUANTITIES`).
METRICS: tuple[tuple[str, str], ...] = tuple((key, QUANTITIES[key].title) for key in METRIC_KEYS)
NA = "n/a"
PARTIAL = "†"


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
        ms = [v for c in done if (v := c.value("ms_per_image")) is not None]
        peaks = [v for c in done if (v := c.value("peak_mb")) is not None]
        row: dict[str, Any] = {"detector": d}
        for key, _ in METRICS:
            row[key] = tables[key]["rows"][-1]["values"][d]
        row["fit_seconds"] = stat([c.value("fit_seconds") for c in done], len(done))
        row["ms_per_image"] = stat(ms, len(ms))
        row["peak_mb"] = max(peaks) if peaks else None
        row["cells"] = f"{len(done)}/{len(r.categories) * len(r.seeds)}"
        row["backbone"] = ", ".join(sorted({str(c.backbone) for c in done if c.backbone})) or NA
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
    ("detector", "detector"), *METRICS, ("fit_seconds", f"{QUANTITIES['fit_seconds'].title} / category"),
    *((key, QUANTITIES[key].title) for key in ("ms_per_image", "peak_mb")),
    ("cells", "cells done"), ("backbone", "backbone"))


def _summary_cell(key: str, value: Any) -> str:
    if value is None:
        return NA
    if key in METRIC_KEYS:
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
    lines += ["", footnote(table, n_seeds)]
    return "\n".join(lines) + "\n"


def has_partial(table: dict[str, Any]) -> bool:
    return any(PARTIAL in cell for row in table_rows(table)[1] for cell in row)


def footnote(table: dict[str, Any], n_seeds: int, partial: bool | None = None) -> str:
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
    if has_partial(table) if partial is None else partial:
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


def jsonable(value: Any) -> Any:
    if isinstance(value, Stat):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    return value


