"""Progress bars: on for a terminal, off in logs and tests, forced with ADCORE_PROGRESS=1/0."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm


def _disabled() -> bool | None:
    value = os.environ.get("ADCORE_PROGRESS")
    if value is None:
        return None  # tqdm decides: disabled when stderr is not a terminal
    return value.strip().lower() in ("0", "false", "no", "off")


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
