"""The allowed values of the job options (``--image-size``, ``--seed``, ``--holdout``, quantiles).

One table serves the CLI (which checks while parsing the command line) and
:class:`~adcore.runner.RunOptions` / :class:`~adcore.benchmark.BenchmarkOptions`
(which check when built), so a bad value fails on one line before any data is
read, whether it comes from a shell or from Python.
"""

from __future__ import annotations

from typing import Any

import attrs

from adcore.config import Interval

__all__ = ["HOLDOUT", "IMAGE_SIZE", "QUANTILE", "RULES", "SEED", "check_options"]

#: Side of the square images are resized to: below 32 the backbones' coarsest
#: stride leaves no feature map; above 4096 one image's features outgrow memory.
IMAGE_SIZE = Interval(32, 4096, integer=True)
#: Seeds of torch and numpy generators (numpy's legacy seeding stops at 2**32 - 1).
SEED = Interval(0, 2**32 - 1, integer=True)
#: Share of train/good held out for thresholds; 1 would leave nothing to train on.
HOLDOUT = Interval(0, 1, high_open=True)
#: Quantile of normal scores taken as a threshold.
QUANTILE = Interval(0, 1)

RULES: dict[str, Interval] = {"image_size": IMAGE_SIZE, "seed": SEED, "seeds": SEED, "holdout": HOLDOUT,
                              "image_quantile": QUANTILE, "pixel_quantile": QUANTILE}


def check_options(options: Any) -> None:
    """Refuse any field of an attrs options object that breaks its rule (each item of a tuple such as seeds)."""
    for attribute in attrs.fields(type(options)):
        rule = RULES.get(attribute.name)
        if rule is None:
            continue
        value = getattr(options, attribute.name)
        for item in value if isinstance(value, tuple) else (value,):
            rule.check(options, attribute, item)
