"""``adcore run``: fit, calibrate, evaluate and write results for one detector."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from adcore.config import Interval, resolve_device
from adcore.errors import ConfigError
from adcore.options import (EVAL_SIZES, HOLDOUT, IMAGE_SIZE, RESIZE_MODES, SEED, TILE, TILE_OVERLAP, TILE_SCALE,
                            parse_eval_size)

__all__ = ["among", "framing_options", "parse_set", "run", "within"]


def within(interval: Interval) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Click callback refusing a value outside ``interval`` (each one of a repeated option).

    It raises :class:`ConfigError`, not click's BadParameter, so the CLI prints
    one line (no usage block), and it runs while parsing: before any data is read.
    """

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        for item in value if isinstance(value, tuple) else (() if value is None else (value,)):
            if not interval.contains(item):
                raise ConfigError(f"{param.opts[0]} must be {interval.describe()}; got {item!r}")
        return value

    return check


def among(choices: tuple[str, ...]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """Click callback refusing a value not in ``choices`` with one line (click.Choice prints a usage block)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value not in choices:
            raise ConfigError(f"{param.opts[0]} must be one of {', '.join(choices)}; got {value!r}")
        return value

    return check


def parse_set(values: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` strings from ``--set`` as a dict (one clear error for a malformed one)."""
    parsed = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value; got {item!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def framing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--resize, --tile, --tile-overlap, --tile-scale and --eval-size: how images are framed, for run and benchmark."""
    for option in reversed(_FRAMING_OPTIONS):
        command = option(command)
    return command


_FRAMING_OPTIONS = [
    click.option("--resize", default="squash", show_default=True, callback=among(RESIZE_MODES),
                 metavar="|".join(RESIZE_MODES),
                 help="squash: to the square, aspect ratio lost; keep: longest side to --image-size, aspect ratio "
                      "kept, the padding never scored nor counted in metrics."),
    click.option("--tile", default=None, type=int, callback=within(TILE), metavar="SIZE",
                 help="Cut each image (scaled by --tile-scale, aspect ratio kept) into SIZE x SIZE tiles; maps are "
                      f"stitched by maximum and the image score is the worst tile's; {TILE.describe()}. "
                      "--image-size and --resize then do not apply."),
    click.option("--tile-overlap", default=0.0, show_default=True, type=float, callback=within(TILE_OVERLAP),
                 metavar="FRACTION", help=f"Share of a tile overlapping its neighbour; {TILE_OVERLAP.describe()}."),
    click.option("--tile-scale", default=1.0, show_default=True, type=float, callback=within(TILE_SCALE),
                 metavar="S", help=f"Scale applied before tiling (1 = native resolution); {TILE_SCALE.describe()}."),
    click.option("--per-position", is_flag=True,
                 help="With --tile: one model per tile position, for aligned parts (fixed camera, one view per "
                      "category); every image of a category must have the same size."),
    click.option("--eval-size", default="working", show_default=True,
                 callback=lambda ctx, param, value: parse_eval_size(value), metavar="|".join(EVAL_SIZES) + "|N",
                 help="Resolution of pixel metrics: the maps' own (working), each image's file size (native), or a "
                      "longest side N; native and N are streamed one image at a time (exact pixel AUROC and AUPRO)."),
]


@click.command()
@click.option("--detector", "-d", required=True, help="Detector name (see `adcore list detectors`).")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Data set root in MVTec AD layout; default: the built-in synthetic set.")
@click.option("--dataset", default=None, help="Data set reader (default: folder with --data, else synthetic).")
@click.option("--category", "-c", "categories", multiple=True, help="Category to run (repeatable; default all).")
@click.option("--backbone", default=None, help="Backbone name (see `adcore list backbones`).")
@click.option("--backbone-weights", default=None, type=click.Path(path_type=Path),
              help="Weights file for the backbone (offline use of timm backbones).")
@click.option("--image-size", default=256, show_default=True, type=int, callback=within(IMAGE_SIZE),
              help=f"Images are resized to this square (see --resize); {IMAGE_SIZE.describe()}.")
@framing_options
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help="Detector parameter (repeatable).")
@click.option("--seed", default=0, show_default=True, type=int, callback=within(SEED),
              help=f"Seed of every random choice; {SEED.describe()}.")
@click.option("--holdout", default=0.1, show_default=True, type=float, callback=within(HOLDOUT),
              help="Share of train/good held out for thresholds when there is no validation/good (0 disables); "
                   f"{HOLDOUT.describe()}.")
@click.option("--out", default=Path("results"), show_default=True, type=click.Path(path_type=Path))
@click.option("--no-panels", is_flag=True, help="Skip the per-image panel PNGs.")
@click.option("--device", default=None, metavar="cpu|cuda[:N]|mps|auto",
              help="Device to fit and predict on (auto: a GPU when there is one); default: each detector's own (cpu).")
def run(detector: str, data: Path | None, dataset: str | None, categories: tuple[str, ...], backbone: str | None,
        backbone_weights: Path | None, image_size: int, resize: str, tile: int | None, tile_overlap: float,
        tile_scale: float, per_position: bool, eval_size: str | int, assignments: tuple[str, ...], seed: int,
        holdout: float, out: Path, no_panels: bool, device: str | None) -> None:
    """Fit DETECTOR on train/good, calibrate thresholds, evaluate on test and write results."""
    from adcore.options import RunOptions
    from adcore.report.terminal import format_table
    from adcore.runner import run as run_job

    values = parse_set(assignments)
    if backbone_weights is not None:
        values["backbone_weights"] = str(backbone_weights)
    if device is not None:
        values["device"] = resolve_device(device)
    options = RunOptions(detector=detector, data=data, dataset=dataset, categories=categories, backbone=backbone,
                         image_size=image_size, resize=resize, tile=tile, tile_overlap=tile_overlap,
                         tile_scale=tile_scale, per_position=per_position, eval_size=eval_size, assignments=values,
                         seed=seed, out=out, holdout=holdout, panels=not no_panels, command=shlex.join(["adcore", *sys.argv[1:]]))
    results = run_job(options, echo=click.echo)
    click.echo("")
    click.echo(format_table(results))
    click.echo(f"\nResults in {out / detector}/")
