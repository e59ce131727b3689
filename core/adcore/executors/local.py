"""Work on this machine: in this process (the default), or in ``--jobs N`` worker processes.

The worker processes are the standard library's pool, started with *spawn*
(torch's threads do not survive a fork). Each gets an equal share of the
cores for its torch threads, so N jobs never oversubscribe the machine.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from adcore.errors import WorkerError
from adcore.executors import ExecutorOptions, Outcome, attempt, one_line

__all__ = ["ProcessExecutor", "SerialExecutor"]

_state: Any = None  # a worker process's state for stream(), made by its initializer


class SerialExecutor:
    """One item after another in this process: what adcore always did, and the default."""

    def run_each(self, task: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Outcome]]:
        for index, item in enumerate(items):
            yield index, attempt(task, item)

    def stream(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any], items: Iterable[Any],
               here: Any = None) -> Iterator[Any]:
        state = setup() if here is None else here
        for item in items:
            yield work(state, item)

    def close(self) -> None:
        """Nothing runs outside this process."""


class ProcessExecutor:
    """``jobs`` worker processes; work lost with a dead process is run again ``retries`` times."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.jobs = int(options.jobs or 1)
        self.retries = options.retries
        self.threads = max(1, (os.cpu_count() or 1) // self.jobs)
        self._pool: ProcessPoolExecutor | None = None

    def run_each(self, task: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Outcome]]:
        lost = dict.fromkeys(range(len(items)), 0)
        pending = set(lost)
        while pending:
            pool = self._open(None)
            futures: dict[Future[Outcome], int] = {pool.submit(attempt, task, items[i]): i for i in sorted(pending)}
            broken = False
            for future in as_completed(futures):
                index = futures[future]
                try:
                    outcome = future.result()
                except BrokenProcessPool:  # a worker died: everything that was in the pool is run again
                    broken = True
                    lost[index] += 1
                    if lost[index] <= self.retries:
                        continue
                    outcome = Outcome(error=f"WorkerError: its worker process died {lost[index]} times "
                                            "(killed, or out of memory)")
                except Exception as exc:  # the item or its result could not be sent between processes
                    outcome = Outcome(error=one_line(exc), traceback=traceback.format_exc())
                pending.discard(index)
                yield index, outcome
            if broken:
                self._finish()
        self._finish()

    def stream(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any], items: Iterable[Any],
               here: Any = None) -> Iterator[Any]:
        pool = self._open(setup)
        items = list(items)
        try:
            yield from pool.map(_work_on_state, [work] * len(items), items)
        except BrokenProcessPool:
            self.close()
            raise WorkerError("a worker process died (killed, or out of memory); nothing was written. "
                              "Run the same command again") from None
        except BaseException:
            self.close()
            raise
        self._finish()

    def close(self) -> None:
        """Stop the pool at once, also its running work (a stopped command must not wait for a cell)."""
        if self._pool is None:
            return
        self._pool.shutdown(wait=False, cancel_futures=True)
        # The pool's processes are this process's only multiprocessing children; what they were
        # writing is left in a staging folder that the next write removes (see adcore.fs).
        for child in multiprocessing.active_children():
            child.terminate()
        self._pool = None

    def _finish(self) -> None:
        """All work is done: let the workers exit on their own."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _open(self, setup: Callable[[], Any] | None) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self.threads, setup))
        return self._pool


def _start_worker(threads: int, setup: Callable[[], Any] | None) -> None:
    """A worker's share of the cores, no progress bars (N of them would garble one terminal), its state."""
    global _state
    import torch

    torch.set_num_threads(threads)
    if sys.stderr.isatty():
        os.environ["ADCORE_PROGRESS"] = "0"
    _state = setup() if setup is not None else None


def _work_on_state(work: Callable[[Any, Any], Any], item: Any) -> Any:
    return work(_state, item)
