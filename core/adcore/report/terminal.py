"""The table ``adcore run`` prints: a row per category and a mean row, columns named by ``results.QUANTITIES``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from adcore.results import QUANTITIES, CategoryResult

__all__ = ["format_table"]

#: (quantity key, format) of each column after the category.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("image_auroc", "{:.4f}"), ("pixel_auroc", "{:.4f}"), ("aupro", "{:.4f}"), ("image_f1_max", "{:.4f}"),
    ("fit_seconds", "{:.1f}"), ("images_per_second", "{:.1f}"), ("peak_mb", "{:.0f}"))


def format_table(results: Sequence[CategoryResult]) -> str:
    """The per-category results as an aligned text table with a mean row."""
    def cell(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else fmt.format(value)

    rows = [[r.category, *(cell(r.value(key), fmt) for key, fmt in COLUMNS)] for r in results]
    if len(results) > 1:
        mean_row = ["mean"]
        for key, fmt in COLUMNS:
            values = [v for r in results if (v := r.value(key)) is not None]
            mean_row.append(fmt.format(float(np.mean(values))) if len(values) == len(results) else "n/a")
        rows.append(mean_row)
    headers = ["category", *(QUANTITIES[key].title for key, _ in COLUMNS)]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)
