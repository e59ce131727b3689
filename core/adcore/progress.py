"""Progress as a callback the caller supplies: algorithm code reports, its caller decides how that shows.

A :class:`Progress` opens one task (``with progress("coreset", total, "pick") as task``)
and the code doing the work tells the :class:`Task` how far it got. Two are provided:

* :func:`silent`, the default of :meth:`adcore.Detector.fit`: a library call prints nothing;
* :func:`terminal`, which the command line passes: a tqdm bar in a terminal; where stderr
  is a log rather than a terminal, no bar but one plain line per milestone (epoch,
  fit/predict phase, benchmark cell), so a redirected run of half an hour is not silent.
  ``ADCORE_PROGRESS=1`` forces bars, ``ADCORE_PROGRESS=0`` silences both.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from tqdm.auto import tqdm

__all__ = ["Progress", "Task", "bar", "log_line", "silent", "terminal", "track_batches"]


class Task(Protocol):
    """One task's progress, as the code doing the work reports it."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units done."""

    def note(self, text: str) -> None:
        """The latest state (e.g. epoch and running loss), shown beside the count."""

    def milestone(self, text: str) -> None:
        """A step worth one line in a log (an epoch finished)."""


class Progress(Protocol):
    """Opens a task of ``total`` units (None: unknown), ``initial`` of them already done."""

    def __call__(self, desc: str, total: int | None, unit: str = "it",
                 initial: int = 0) -> contextlib.AbstractContextManager[Task]: ...


class _Quiet:
    def advance(self, n: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def milestone(self, text: str) -> None:
        pass


@contextlib.contextmanager
def silent(desc: str, total: int | None, unit: str = "it", initial: int = 0) -> Iterator[Task]:
    """Shows nothing."""
    yield _Quiet()


class _Bar:
    def __init__(self, shown: tqdm) -> None:
        self.shown = shown

    def advance(self, n: int = 1) -> None:
        self.shown.update(n)

    def note(self, text: str) -> None:
        self.shown.set_postfix_str(text, refresh=False)

    def milestone(self, text: str) -> None:
        log_line(text)


@contextlib.contextmanager
def terminal(desc: str, total: int | None, unit: str = "it", initial: int = 0) -> Iterator[Task]:
    """A bar in a terminal, a line per milestone in a log (see the module docstring)."""
    with bar(total=total, desc=desc, unit=unit, initial=initial) as shown:
        yield _Bar(shown)


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


def track_batches(progress: Progress, batches: Iterable[Any], total: int, desc: str) -> Iterator[Any]:
    """Yield batches while counting images (the first dimension) on a task of ``progress``."""
    with progress(desc, total, "img") as task:
        for batch in batches:
            yield batch
            task.advance(len(batch))
