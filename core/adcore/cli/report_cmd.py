"""``adcore report``: rebuild the tables and report.html of a results folder without rerunning anything."""

from __future__ import annotations

from pathlib import Path

import click

from adcore.results import SORT_KEYS


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--sort", default="image_auroc", show_default=True, type=click.Choice(list(SORT_KEYS)),
              help="Metric the summary table is sorted by.")
def report(results: Path, sort: str) -> None:
    """Write RESULTS/tables/ and RESULTS/report.html from an `adcore benchmark` (or `adcore run`) folder."""
    from adcore.report import build

    built = build(results, sort=sort)
    click.echo(built["summary_text"])
    click.echo(f"Tables in {built['tables']}/, report in {built['report']}")
