"""Where independent work runs: in this process, in local worker processes (``--jobs N``) or on Ray.

The benchmark grid and batch prediction are written once against
:class:`Executor`; :func:`open_executor` is the one place that picks the
implementation. Two shapes of work cover both commands:

- :meth:`Executor.run_each`: one task per item (a benchmark cell), outcomes in
  the order they finish. A task's exception is caught in the worker and comes
  back as a failed :class:`Outcome`, so one cell never stops the others; a
  worker that dies is retried (``retries``) and then reported the same way.
- :meth:`Executor.stream`: the same function over many items (batches of
  images) in order, with state made once per worker (the loaded model).

No scheduling is done here: the local pool is the standard library's, and
Ray places tasks by the resources they ask for (:class:`ExecutorOptions`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from adcore.errors import ConfigError

__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "Outcome", "attempt", "one_line", "open_executor"]

#: The ``--executor`` choices.
EXECUTORS = ("local", "ray")


@attrs.frozen(kw_only=True)
class ExecutorOptions:
    """How to run: ``--executor``, ``--jobs``, ``--address`` and what each Ray worker reserves.

    Attributes:
        kind: "local" (this machine) or "ray".
        jobs: local worker processes (1: in this process); with Ray, the number
            of prediction workers (None: as many as the cluster's CPUs hold).
        address: the Ray cluster to join (None: RAY_ADDRESS, a cluster started
            on this machine with ``ray start``, else a new local one).
        cpus: CPUs each Ray task or worker reserves (its torch threads).
        memory_gb: memory each Ray task or worker reserves (None: none reserved).
        device: the device the work runs on; a CUDA device makes each Ray task
            or worker reserve one GPU.
        retries: how often work lost with its worker (killed, out of memory,
            node gone) is run again before it counts as failed.
    """

    kind: str = "local"
    jobs: int | None = None
    address: str | None = None
    cpus: float = 1.0
    memory_gb: float | None = None
    device: str | None = None
    retries: int = 1

    def __attrs_post_init__(self) -> None:
        """One line for a bad choice, before anything starts."""
        if self.kind not in EXECUTORS:
            raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}; got {self.kind!r}")
        if self.jobs is not None and (isinstance(self.jobs, bool) or self.jobs < 1):
            raise ConfigError(f"--jobs must be at least 1; got {self.jobs}")
        if self.address is not None and self.kind != "ray":
            raise ConfigError("--address names a Ray cluster; add --executor ray")
        if not self.cpus > 0:
            raise ConfigError(f"--worker-cpus must be positive; got {self.cpus}")
        if self.memory_gb is not None and not self.memory_gb > 0:
            raise ConfigError(f"--worker-memory must be positive (GB); got {self.memory_gb}")
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0; got {self.retries}")
        if self.kind == "ray":
            from adcore.executors.ray_cluster import require_ray

            require_ray()  # a missing extra is one line before any work, not after it

    @property
    def gpus(self) -> int:
        """GPUs each Ray task or worker reserves."""
        return 1 if self.device is not None and self.device.startswith("cuda") else 0


@attrs.frozen
class Outcome:
    """What one task came to: its value, or the one-line error and traceback of its failure."""

    value: Any = None
    error: str | None = None
    traceback: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class Executor(Protocol):
    """Runs independent work; see the module docstring for the two shapes."""

    def run_each(self, task: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Outcome]]:
        """``task(item)`` for every item; yields ``(index, outcome)`` as each finishes."""
        ...

    def stream(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any], items: Iterable[Any],
               here: Any = None) -> Iterator[Any]:
        """``work(state, item)`` for every item, in order; ``state = setup()`` once per worker.

        ``here`` is state already made in this process: an executor that works
        in this process uses it instead of calling ``setup`` again.
        """
        ...

    def close(self) -> None:
        """Stop the workers (work not yet finished is cancelled)."""
        ...


def open_executor(options: ExecutorOptions) -> Executor:
    """The executor ``options`` ask for (the only place that chooses one)."""
    if options.kind == "ray":
        from adcore.executors.ray_cluster import RayExecutor

        return RayExecutor(options)
    from adcore.executors.local import ProcessExecutor, SerialExecutor

    if (options.jobs or 1) == 1:
        return SerialExecutor()
    return ProcessExecutor(options)


def attempt(task: Callable[[Any], Any], item: Any) -> Outcome:
    """Run ``task(item)`` in a worker; any exception becomes a failed Outcome (Ctrl-C still stops)."""
    started = time.perf_counter()
    try:
        value = task(item)
    except Exception as exc:  # one task's failure is recorded by the caller; the others go on
        return Outcome(error=one_line(exc), traceback=traceback.format_exc(),
                       seconds=round(time.perf_counter() - started, 3))
    return Outcome(value=value, seconds=round(time.perf_counter() - started, 3))


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
