"""report.html: one self-contained page (plots embedded, panels linked), one function per section."""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from adcore.report.collect import Results, examples, image_roc, pixel_roc, training_log
from adcore.report.tables import METRICS, NA, PARTIAL, footnote, has_partial, table_rows
from adcore.results import SORT_KEYS

__all__ = ["render_html"]

_CSS = resources.files("adcore.report").joinpath("report.css").read_text(encoding="utf-8")

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
    sections = [("summary", "Summary"), ("tables", "Tables"), ("curves", "ROC curves"),
                ("examples", "Examples"), ("thresholds", "Thresholds"), ("cells", "All cells"),
                ("setup", "Setup")]
    if r.failures:
        sections.insert(1, ("failures", "Failures"))
    title = f"adcore benchmark: {', '.join(r.detectors)} on {len(r.categories)} categor" + (
        "y" if len(r.categories) == 1 else "ies")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{_e(title)}</h1>", _overview(r),
             "<nav>" + "".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t in sections) + "</nav>",
             *_summary(r, summary), *_failures(r), *_metric_tables(r, tables), *_curves(r), *_examples(r),
             *_thresholds(r), *_all_cells(r), *_setup(r), "</body></html>\n"]
    return "\n".join(parts)


def _first_seed(r: Results, detector: str, category: str) -> int | None:
    """The lowest seed with a finished cell: its curves and examples stand for the detector."""
    return next((s for s in r.seeds if (detector, category, s) in r.cells), None)


def _overview(r: Results) -> str:
    n_cells = len(r.detectors) * len(r.categories) * len(r.seeds)
    n_done = sum(1 for k in r.cells if k[0] in r.detectors and k[1] in r.categories and k[2] in r.seeds)
    return (f"<p class='note'>{n_done} of {n_cells} cells finished, {len(r.failures)} failed"
            f" &middot; seeds {_e(', '.join(map(str, r.seeds)))} &middot; generated "
            f"{_e(datetime.now(timezone.utc).astimezone().strftime('%Y-%m-%d %H:%M %Z'))} from {_e(r.root)}</p>")


def _summary(r: Results, summary: dict[str, Any]) -> list[str]:
    return [f"<h2 id='summary'>Summary</h2><p class='note'>Sorted by {_e(SORT_KEYS[summary['sort']][0])}. "
            f"{_e(footnote(summary, len(r.seeds)))}</p>", _html_table(*table_rows(summary), mean_first_col=False)]


def _failures(r: Results) -> list[str]:
    if not r.failures:
        return []
    parts = ["<h2 id='failures'>Failures</h2><p class='note'>These cells failed; the rest of the grid went on. "
             "Run the same benchmark command again to retry them.</p>"]
    for (d, c, s), entry in sorted(r.failures.items()):
        parts.append(f"<details><summary><b>{_e(d)} / {_e(c)} / seed {s}</b>: {_e(entry.get('error', '?'))}"
                     f"</summary><pre>{_e(entry.get('traceback', ''))}</pre></details>")
    return parts


def _metric_tables(r: Results, tables: Mapping[str, dict[str, Any]]) -> list[str]:
    parts = ["<h2 id='tables'>Tables</h2>"]
    for key, title in METRICS:
        parts += [f"<h3>{_e(title)}</h3>", _html_table(*table_rows(tables[key]))]
    partial = any(has_partial(t) for t in tables.values())
    parts.append(f"<p class='note'>{_e(footnote(tables['image_auroc'], len(r.seeds), partial))} The same tables "
                 f"are in <a href='tables/'>tables/</a> as Markdown, CSV and JSON.</p>")
    return parts


def _curves(r: Results) -> list[str]:
    """Per category, every detector's image ROC in one plot, and its pixel ROC (from stored points)."""
    from adcore import visualize

    n_seeds = len(r.seeds)
    parts = ["<h2 id='curves'>ROC curves</h2>"]
    if n_seeds > 1:
        parts.append("<p class='note'>Each detector's curve is from its lowest finished seed.</p>")
    for category in r.categories:
        parts.append(f"<h3>{_e(category)}</h3><div class='plots'>")
        curves, pixel_curves, pixel_pngs = {}, {}, []
        for d in r.detectors:
            seed = _first_seed(r, d, category)
            if seed is None:
                continue
            folder = r.folders[(d, category, seed)]
            label = d if n_seeds == 1 else f"{d} (seed {seed})"
            points = image_roc(folder)
            if points is not None:
                curves[label] = (*points, r.value(d, category, seed, "image_auroc"))
            pixel = pixel_roc(folder)
            if pixel is not None:
                pixel_curves[label] = (*pixel, r.value(d, category, seed, "pixel_auroc"))
            elif (folder / "roc_pixel.png").is_file():
                pixel_pngs.append((label, folder / "roc_pixel.png"))
        if curves:
            uri = _png(lambda p: visualize.save_roc(p, curves, f"{category}: image ROC"))
            parts.append(f"<img alt='{_e(category)} image ROC' src='{uri}'>")
        else:
            parts.append("<div class='missing'>No image ROC: no finished cell with both normal and defective "
                         "test images.</div>")
        if pixel_curves:
            uri = _png(lambda p: visualize.save_roc(p, pixel_curves, f"{category}: pixel ROC"))
            parts.append(f"<img alt='{_e(category)} pixel ROC' src='{uri}'>")
        if not pixel_curves and not pixel_pngs:
            parts.append("<div class='missing'>No pixel ROC (no masks, or no finished cell).</div>")
        parts.append("</div>")
        if pixel_pngs:  # fallback: the runner's own per-detector plots
            parts.append("<p class='note'>Pixel ROC per detector, as plotted by each run (the runs stored no "
                         "pixel ROC points, so these curves cannot share one plot):</p><div class='plots small'>")
            for label, png in pixel_pngs:
                parts.append(f"<figure><img alt='{_e(label)} pixel ROC' src='{_file_uri(png)}'>"
                             f"<figcaption>{_e(label)}</figcaption></figure>")
            parts.append("</div>")
    return parts


def _examples(r: Results) -> list[str]:
    """Per detector and category: the best and worst scored images' panels, and the training loss."""
    from adcore import visualize

    n_seeds = len(r.seeds)
    parts = ["<h2 id='examples'>Examples</h2><p class='note'>Per detector and category: the normal test image "
             "with the lowest and the highest score, and the defective one with the highest and the lowest "
             "score. Panels: image | ground truth | heat map | predicted mask (pixel threshold) | overlay. "
             "Click a panel to open it at full size; panels are linked from the cells/ folder, so keep "
             "report.html next to it.</p>"]
    for d in r.detectors:
        for category in r.categories:
            seed = _first_seed(r, d, category)
            head = f"{d} / {category}" + (f" / seed {seed}" if n_seeds > 1 and seed is not None else "")
            parts.append(f"<h3 id='ex-{_e(d)}-{_e(category)}'>{_e(head)}</h3>")
            if seed is None:
                parts.append(f"<p class='note'>No finished cell ({_e(r.status(d, category, r.seeds[0]))}).</p>")
                continue
            folder = r.folders[(d, category, seed)]
            parts.append("<div class='strip'>")
            chosen = examples(folder)
            if not chosen:
                parts.append("<div class='missing'>No predictions.csv.</div>")
            parts += [_example_figure(r.root, folder, what, row) for what, row in chosen]
            parts.append("</div>")
            logs = {f"seed {s}" if n_seeds > 1 else "": training_log(r.folders[(d, category, s)])
                    for s in r.seeds if (d, category, s) in r.cells}
            series = {f"loss {label}".strip(): losses for label, losses in logs.items() if losses}
            if series:
                uri = _png(lambda p: visualize.save_curve(p, series, f"{d} / {category}: training loss",
                                                          "epoch", "loss"))
                parts.append(f"<div class='plots'><img alt='training loss' src='{uri}'></div>")
    return parts


def _example_figure(root: Path, folder: Path, what: str, row: dict[str, Any]) -> str:
    png = folder / "panels" / row["defect"] / f"{Path(row['image']).stem}.png"
    verdict = {None: "", True: ", flagged defective", False: ", passed as normal"}[row["flagged"]]
    caption = f"{what}: {row['image']}, score {row['score']:.4g}{verdict}"
    if not png.is_file():
        return (f"<figure><div class='missing'>no panel (run without --no-panels)</div>"
                f"<figcaption>{_e(caption)}</figcaption></figure>")
    href = _href(root, png)
    width = _png_width(png)
    size = f" width='{min(2 * width, 640)}'" if width and width < 480 else ""  # enlarge small panels
    return (f"<figure><a href='{href}'><img alt='{_e(row['image'])}' src='{href}'{size} "
            f"loading='lazy'></a><figcaption>{_e(caption)}</figcaption></figure>")


def _thresholds(r: Results) -> list[str]:
    rows = [[d, category, str(s), _num(cell.thresholds.image), _num(cell.thresholds.pixel),
             str(cell.thresholds.source or NA)]
            for d in r.detectors for category in r.categories for s in r.seeds
            if (cell := r.cells.get((d, category, s))) is not None]
    return ["<h2 id='thresholds'>Thresholds</h2><p class='note'>Decision thresholds used for the predicted "
            "verdicts and masks, calibrated on normal images that neither training nor testing used "
            "(never on the test set).</p>",
            _html_table(["detector", "category", "seed", "image threshold", "pixel threshold", "source"], rows,
                        mean_first_col=False) if rows else "<p>No finished cells.</p>"]


def _all_cells(r: Results) -> list[str]:
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
                ms = cell.value("ms_per_image")
                where = _href(r.root, r.folders[(d, category, s)])
                link = f"<a href='{where}/'>{_e(where)}</a>"
                rows.append([d, category, str(s), status, _num(cell.value("image_auroc")),
                             _num(cell.value("pixel_auroc")), _num(cell.value("aupro")),
                             _num(cell.value("fit_seconds"), 3), _num(ms, 3),
                             NA if cell.peak_rss_mb is None else f"{cell.peak_rss_mb:.0f}", link])
    return ["<h2 id='cells'>All cells</h2>",
            _html_table(["detector", "category", "seed", "status", "image AUROC", "pixel AUROC", "AUPRO", "fit s",
                         "ms / image", "peak MB", "folder / error"], rows, mean_first_col=False, raw=True)]


def _setup(r: Results) -> list[str]:
    """Commands, backbones, image sizes, data, versions and each detector's parameters."""
    grid = r.grid
    parts = ["<h2 id='setup'>Setup</h2><dl>"]
    commands = list(dict.fromkeys([*([grid["command"]] if grid.get("command") else []),
                                   *(c.command for c in r.cells.values() if c.command)]))
    parts.append("<dt>command</dt><dd>" + ("".join(f"<pre>{_e(c)}</pre>" for c in commands) or NA) + "</dd>")
    if len(commands) > 1:
        parts.append("<dt></dt><dd class='note'>The first is the latest benchmark command; the others produced "
                     "some of the finished cells.</dd>")
    backbones = {d: sorted({str(c.backbone) for k, c in r.cells.items() if k[0] == d}) for d in r.detectors}
    parts.append("<dt>backbone</dt><dd>" + _e("; ".join(f"{d}: {', '.join(b) or NA}" for d, b in backbones.items()))
                 + "</dd>")
    sizes = sorted({c.image_size for c in r.cells.values() if c.image_size})
    parts.append(f"<dt>image size</dt><dd>{_e(', '.join(map(str, sizes)) or grid.get('image_size', NA))}</dd>")
    data = grid.get("data") or grid.get("dataset")
    if data:
        parts.append(f"<dt>data</dt><dd>{_e(data)}</dd>")
    if grid.get("set"):
        parts.append("<dt>--set</dt><dd>" + _e("; ".join(
            f"{d}: " + (", ".join(f"{k}={v}" for k, v in vals.items()) or "-") for d, vals in grid["set"].items()))
            + "</dd>")
    versions = dict(grid.get("versions") or {})
    cell_versions = sorted({str(c.adcore_version) for c in r.cells.values() if c.adcore_version})
    if cell_versions:
        versions["adcore (cells)"] = ", ".join(cell_versions)
    for key, value in versions.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        parts.append(f"<dt>{_e(key)}</dt><dd>{_e(value)}</dd>")
    parts.append("</dl><h3>Detector parameters</h3>")
    for d in r.detectors:
        configs: dict[str, list[str]] = {}  # parameters without the seed -> where they were used
        for k, c in sorted(r.cells.items(), key=lambda item: (item[0][2], item[0][1])):
            if k[0] == d:
                params = {name: v for name, v in c.config.items() if name != "seed"}
                configs.setdefault(json.dumps(params, indent=2), []).append(f"{k[1]}/seed {k[2]}")
        for config, where in configs.items():
            used = "" if len(configs) == 1 else f" ({', '.join(where)})"
            parts.append(f"<details><summary>{_e(d)}{_e(used)}</summary><pre>{_e(config)}</pre>"
                         "<p class='note'>seed: the cell's seed</p></details>")
    return parts
