"""Tables and the HTML report of a benchmark (or of a plain ``adcore run``) results folder.

Everything here is rebuilt from the files on disk (``metrics.json``,
``predictions.csv``, panels, the optional ``roc_image.json``, ``roc_pixel.json`` and
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

import os
from pathlib import Path
from typing import Any

from adcore import fs
from adcore.errors import OutputError
from adcore.report.collect import Results, collect
from adcore.report.page import render_html
from adcore.report.tables import METRICS, jsonable, markdown, metric_table, summary_table, write_csv
from adcore.results import BENCHMARK, SORT_KEYS

__all__ = ["RESULTS", "Results", "SORT_KEYS", "TABLES", "build", "collect"]

#: A folder of `adcore run` results that `adcore report` has written into.
RESULTS = fs.Kind("a results folder", "adcore-results")
TABLES = fs.Kind("a tables folder of adcore report", "adcore-tables")


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
        fs.write_json(tables_dir / f"{name}.json", jsonable(table))
    report_path = results.root / "report.html"
    fs.write_file(report_path, render_html(results, tables, summary))
    return {"report": report_path, "tables": tables_dir, "summary_text": texts["summary"],
            "markdown": texts}


def _claim(root: Path) -> None:
    """Let the report overwrite its files in ``root`` only if adcore's marker says the folder is adcore's."""
    if RESULTS.owns(root) or BENCHMARK.owns(root):
        return
    for path in (root / "report.html", root / "tables"):
        if os.path.lexists(path):
            raise OutputError(f"{path}: exists and {root} carries no adcore marker, so it may not be adcore's; "
                              "move it away or remove it yourself, then run adcore report again")
    fs.mark(root, RESULTS)


