"""The job options: what ``adcore run`` and ``adcore benchmark`` are asked to do, and their allowed values.

:class:`JobOptions` holds what both commands share (data, framing, detector
parameters, calibration, outputs); :class:`RunOptions` adds one detector and
seed, :class:`BenchmarkOptions` the grid's detectors, seeds and where cells
run. One table of ranges (``--image-size``, ``--tile``, ``--seed``,
``--holdout``, quantiles) serves the CLI (which checks while parsing the
command line) and these records (which check when built), so a bad value
fails on one line before any data is read, whether it comes from a shell or
from Python. The records sit below the runner and the benchmark, so that
neither needs the other to describe a job.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from adcore.config import Interval
from adcore.errors import ConfigError
from adcore.executors import ExecutorOptions

if TYPE_CHECKING:
    from adcore.framing import Framing

__all__ = ["EVAL_SIZES", "HOLDOUT", "IMAGE_SIZE", "QUANTILE", "RESIZE_MODES", "RULES", "SEED", "TILE", "TILE_OVERLAP",
           "TILE_SCALE", "BenchmarkOptions", "FramingFields", "JobOptions", "RunOptions", "check_options",
           "parse_eval_size"]

#: Side of the square images are resized to: below 32 the backbones' coarsest
#: stride leaves no feature map; above 4096 one image's features outgrow memory.
IMAGE_SIZE = Interval(32, 4096, integer=True)
#: Side of the square tiles of --tile: as --image-size, since a tile is what a detector sees.
TILE = IMAGE_SIZE
#: Share of a tile that overlaps its neighbour; 1 would never advance.
TILE_OVERLAP = Interval(0, 1, high_open=True)
#: Scale applied before tiling (1 = native resolution); above 4 only invents pixels.
TILE_SCALE = Interval(0, 4, low_open=True)
#: How an image becomes the detector's square: squashed (aspect ratio lost) or kept and padded.
RESIZE_MODES = ("squash", "keep")
#: Named evaluation sizes; an int is the longest side instead.
EVAL_SIZES = ("working", "native")
#: Seeds of torch and numpy generators (numpy's legacy seeding stops at 2**32 - 1).
SEED = Interval(0, 2**32 - 1, integer=True)
#: Share of train/good held out for thresholds; 1 would leave nothing to train on.
HOLDOUT = Interval(0, 1, high_open=True)
#: Quantile of normal scores taken as a threshold.
QUANTILE = Interval(0, 1)

RULES: dict[str, Interval] = {"image_size": IMAGE_SIZE, "seed": SEED, "seeds": SEED, "holdout": HOLDOUT,
                              "image_quantile": QUANTILE, "pixel_quantile": QUANTILE, "tile": TILE,
                              "tile_overlap": TILE_OVERLAP, "tile_scale": TILE_SCALE}


def check_options(options: Any) -> None:
    """Refuse any field of an attrs options object that breaks its rule (each item of a tuple such as seeds).

    None is "not asked for" (no --tile) and passes; the resize mode and the evaluation size are checked too.
    """
    for attribute in attrs.fields(type(options)):
        rule = RULES.get(attribute.name)
        value = getattr(options, attribute.name)
        if rule is None or value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            rule.check(options, attribute, item)
    resize = getattr(options, "resize", "squash")
    if resize not in RESIZE_MODES:
        raise ConfigError(f"--resize must be one of {', '.join(RESIZE_MODES)}; got {resize!r}")
    parse_eval_size(getattr(options, "eval_size", "working"))


def parse_eval_size(value: str | int) -> str | int:
    """``--eval-size``: "working" (the maps' own resolution), "native" (each image's), or a longest side."""
    if isinstance(value, str) and value in EVAL_SIZES:
        return value
    text = str(value).strip()
    if text.isdigit() and IMAGE_SIZE.low <= int(text) <= 8192:
        return int(text)
    raise ConfigError(f"--eval-size must be {' or '.join(EVAL_SIZES)} or an int in [{int(IMAGE_SIZE.low)}, 8192] "
                      f"(the longest side); got {value!r}")


@attrs.define(kw_only=True)
class FramingFields:
    """How images are framed for a detector: the fields of :class:`~adcore.framing.Framing`, which a job takes too.

    Attributes:
        image_size: side of the square images are resized to (--image-size).
        resize: "squash" or "keep" (--resize).
        tile: side of the square tiles, None for no tiles (--tile).
        tile_overlap: share of a tile overlapping its neighbour (--tile-overlap).
        tile_scale: scale applied before tiling, 1 = native (--tile-scale).
        per_position: one detector per tile position (--per-position).
    """

    image_size: int = 256
    resize: str = "squash"
    tile: int | None = None
    tile_overlap: float = 0.0
    tile_scale: float = 1.0
    per_position: bool = False


@attrs.define(kw_only=True)
class JobOptions(FramingFields):
    """What ``adcore run`` and ``adcore benchmark`` share: the data, its framing, parameters and outputs."""

    data: Path | None = None
    dataset: str | None = None
    categories: tuple[str, ...] = ()
    backbone: str | None = None
    eval_size: str | int = "working"
    assignments: Mapping[str, str] = attrs.field(factory=dict)
    holdout: float = 0.1
    panels: bool = True
    command: str = ""

    def __attrs_post_init__(self) -> None:
        """Refuse out-of-range numbers (see :data:`RULES`) before any data is read."""
        check_options(self)
        if self.tile is None and (self.tile_overlap != 0.0 or self.tile_scale != 1.0):
            raise ConfigError("--tile-overlap and --tile-scale apply to tiles; add --tile SIZE")
        if self.tile is None and self.per_position:
            raise ConfigError("--per-position applies to tiles; add --tile SIZE")
        self.eval_size = parse_eval_size(self.eval_size)

    def framing(self) -> Framing:
        """How images are framed for the detector (squash, keep, or tiles)."""
        from adcore.framing import Framing

        return Framing(**{field.name: getattr(self, field.name) for field in attrs.fields(FramingFields)})

    def dataset_name(self) -> str:
        """The data set reader: ``--dataset``, else ``folder`` with ``--data``, else the synthetic default."""
        return self.dataset or ("folder" if self.data is not None else "synthetic")

    def shared(self) -> dict[str, Any]:
        """This job's :class:`JobOptions` fields, to build another kind of job from (a benchmark's cell)."""
        return {f.name: getattr(self, f.name) for f in attrs.fields(JobOptions)}


@attrs.define(kw_only=True)
class RunOptions(JobOptions):
    """What ``adcore run`` was asked to do (a benchmark cell is one, too)."""

    detector: str
    seed: int = 0
    out: Path = Path("results")
    image_quantile: float = 0.99
    pixel_quantile: float = 0.999


@attrs.define(kw_only=True)
class BenchmarkOptions(JobOptions):
    """What ``adcore benchmark`` was asked to do."""

    detectors: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    out: Path = Path("benchmark")
    force: bool = False
    sort: str = "image_auroc"
    executor: ExecutorOptions = attrs.field(factory=ExecutorOptions)
