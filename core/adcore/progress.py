"""Progress bars: on for a terminal, off in logs and tests, forced with ADCORE_PROGRESS=1/0.

Where stderr is a log file rather than a terminal, bars are off but :func:`log_line`
still writes one plain line per milestone (epoch, benchmark cell), so a redirected
run of half an hour is not silent.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

__all__ = ["bar", "log_line", "track_batches"]


def _disabled() -> bool | None:
    value = os.environ.get("ADCORE_PROGRESS")
    if value is None:
        return None  # tqdm decides: disabled when stderr is not a terminal
    return value.strip().lower() in ("0", "false", "no", "off")


def log_line(message: str) -> None:
    """Write ``message`` to stderr when bars are off only because stderr is not a terminal."""
    if _disabled() is None and not sys.stderr.isatty():
        print(message, file=sys.stderr, flush=True)


def bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar with adcore's defaults (cleared when done, below any outer bar)."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=True if not enabled else _disabled(), **kwargs)


def track_batches(batches: Iterable[Any], total: int, desc: str) -> Iterator[Any]:
    """Yield batches while counting images (the first dimension) on a bar."""
    with bar(total=total, desc=desc, unit="img") as progress:
        for batch in batches:
            yield batch
            progress.update(len(batch))
