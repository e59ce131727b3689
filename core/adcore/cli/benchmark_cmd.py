"""``adcore benchmark``: every detector on every category (and seed), then tables and an HTML report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from adcore.cli.executor_options import executor_options, where_to_run
from adcore.cli.run_cmd import framing_options, parse_set, within
from adcore.config import resolve_device
from adcore.options import HOLDOUT, IMAGE_SIZE, SEED
from adcore.results import SORT_KEYS

__all__ = ["benchmark"]


@click.command()
@click.option("--detector", "-d", "detectors", required=True, multiple=True, metavar="all|NAME[,NAME...]",
              help="Detectors to compare: 'all' installed ones, or names separated by commas (repeatable).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Data set root in MVTec AD layout; default: the built-in synthetic set.")
@click.option("--dataset", default=None, help="Data set reader (default: folder with --data, else synthetic).")
@click.option("--category", "-c", "categories", multiple=True, help="Category to run (repeatable; default all).")
@click.option("--backbone", default=None,
              help="Backbone for the detectors that use one (see `adcore list backbones`).")
@click.option("--image-size", default=256, show_default=True, type=int, callback=within(IMAGE_SIZE),
              help=f"Images are resized to this square (see --resize); {IMAGE_SIZE.describe()}.")
@framing_options
@click.option("--set", "assignments", multiple=True, metavar="[DETECTOR.]KEY=VALUE",
              help="Detector parameter (repeatable). 'patchcore.coreset_ratio=0.05' sets it for patchcore only; "
                   "without a prefix it applies to every detector that has the parameter.")
@click.option("--seed", "seeds", multiple=True, type=int, callback=within(SEED),
              help=f"Seed (repeatable; default 0; {SEED.describe()}). With several seeds the tables show mean ± std.")
@click.option("--holdout", default=0.1, show_default=True, type=float, callback=within(HOLDOUT),
              help="Share of train/good held out for thresholds when there is no validation/good (0 disables); "
                   f"{HOLDOUT.describe()}.")
@click.option("--out", default=Path("benchmark"), show_default=True, type=click.Path(path_type=Path),
              help="Results folder; cells go to OUT/cells/seed<N>/<detector>/<category>/.")
@click.option("--force", is_flag=True, help="Rerun cells that are already finished.")
@click.option("--no-panels", is_flag=True, help="Skip the per-image panel PNGs.")
@click.option("--device", default=None, metavar="cpu|cuda[:N]|mps|auto",
              help="Device to fit and predict on (auto: a GPU when there is one); default: each detector's own (cpu).")
@click.option("--sort", default="image_auroc", show_default=True, type=click.Choice(list(SORT_KEYS)),
              help="Metric the report's summary table is sorted by.")
@executor_options
def benchmark(detectors: tuple[str, ...], data: Path | None, dataset: str | None, categories: tuple[str, ...],
              backbone: str | None, image_size: int, resize: str, tile: int | None, tile_overlap: float,
              tile_scale: float, per_position: bool, eval_size: str | int, assignments: tuple[str, ...],
              seeds: tuple[int, ...], holdout: float, out: Path, force: bool, no_panels: bool, sort: str,
              device: str | None, executor: str, jobs: int | None, address: str | None, worker_cpus: float,
              worker_memory: float | None) -> None:
    """Run each detector on each category (and seed) like `adcore run`.

    Cells run one at a time in this process unless --jobs N runs N at once on
    this machine or --executor ray runs each as a Ray task on a cluster; the
    results, tables and report are the same either way.

    Finished cells are skipped when the command is run again (use --force to
    redo them), so an interrupted benchmark continues where it stopped. A cell
    that fails is recorded in OUT/failures.json and the others go on; the exit
    status is then non-zero. Tables go to OUT/tables/ and the report to
    OUT/report.html.
    """
    from adcore.benchmark import resolve_detectors, run_benchmark
    from adcore.options import BenchmarkOptions

    values = parse_set(assignments)
    if device is not None:
        values["device"] = resolve_device(device)  # every detector has the parameter
    options = BenchmarkOptions(
        detectors=resolve_detectors(detectors), data=data, dataset=dataset, categories=categories,
        backbone=backbone, image_size=image_size, resize=resize, tile=tile, tile_overlap=tile_overlap,
        tile_scale=tile_scale, per_position=per_position, eval_size=eval_size, assignments=values,
        seeds=tuple(dict.fromkeys(seeds)) or (0,), out=out, holdout=holdout, force=force, panels=not no_panels,
        sort=sort, command=shlex.join(["adcore", *sys.argv[1:]]),
        executor=where_to_run(executor, jobs, address, worker_cpus, worker_memory, values.get("device")))
    run_benchmark(options, echo=click.echo)
