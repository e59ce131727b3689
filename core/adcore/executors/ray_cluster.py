"""Work on a Ray cluster (``pip install adcore[ray]``): one Ray task per item, a pool of actors for streams.

Ray places each task or actor on a node with the CPUs, memory and GPU it
reserves (:class:`~adcore.executors.ExecutorOptions`) and runs a task again
when its worker dies (``max_retries``); adcore schedules nothing itself.
Tasks read their inputs and write their results through the file system, so
every node must see the data and ``--out`` at the same paths (a shared file
system); the benchmark checks each finished cell from the driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from adcore.errors import ConfigError, WorkerError
from adcore.executors import ExecutorOptions, Outcome, attempt, one_line

__all__ = ["RayExecutor", "require_ray"]


def require_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install adcore[ray]") from None
    return ray


class RayExecutor:
    """Joins (or starts) a Ray cluster; leaves one it did not start running."""

    def __init__(self, options: ExecutorOptions) -> None:
        self.ray = require_ray()
        self.options = options
        self._started = False
        if not self.ray.is_initialized():  # a caller that connected already keeps its connection
            where = f" at {options.address}" if options.address else ""
            try:
                self.ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                              logging_level=logging.WARNING)
            except Exception as exc:  # Ray's many connection errors: one line, no traceback
                raise ConfigError(f"cannot start or join a Ray cluster{where}: {one_line(exc)}") from None
            self._started = True
        self.resources = self._resources()
        self._check_fits()

    def run_each(self, task: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Outcome]]:
        ray = self.ray
        remote = ray.remote(attempt).options(max_retries=self.options.retries, **self.resources)
        index = {remote.remote(task, item): i for i, item in enumerate(items)}
        pending = list(index)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker or node died, retries used up
                        outcome = Outcome(error=f"WorkerError: lost with its Ray worker: {one_line(exc)}")
                    yield index[ref], outcome
        finally:
            for ref in pending:  # stopped early (Ctrl-C): nothing keeps running for a grid that has ended
                ray.cancel(ref, force=True)

    def stream(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any], items: Iterable[Any],
               here: Any = None) -> Iterator[Any]:
        ray = self.ray
        from ray.util import ActorPool

        worker = ray.remote(StreamWorker).options(max_restarts=self.options.retries,
                                                  max_task_retries=self.options.retries, **self.resources)
        actors = [worker.remote(setup) for _ in range(self._workers())]
        try:
            yield from ActorPool(actors).map(lambda actor, item: actor.run.remote(work, item), items)
        except ray.exceptions.RayTaskError as exc:
            raise exc.cause from None  # the work's own error (bad image, ...), as a local run raises it
        except ray.exceptions.RayError as exc:  # a worker lost more often than it may be restarted
            raise WorkerError(f"a Ray worker was lost: {one_line(exc)}; nothing was written. "
                              "Run the same command again") from None
        finally:
            for actor in actors:
                ray.kill(actor)

    def close(self) -> None:
        """Shut down a Ray instance this executor started; a joined cluster keeps running."""
        if self._started:
            self.ray.shutdown()
            self._started = False

    def _resources(self) -> dict[str, Any]:
        found: dict[str, Any] = {"num_cpus": self.options.cpus, "num_gpus": self.options.gpus}
        if self.options.memory_gb is not None:
            found["memory"] = int(self.options.memory_gb * 2**30)
        return found

    def _check_fits(self) -> None:
        """Refuse, on one line, work that no node could ever take (Ray would wait for it forever)."""
        need = {"CPU": self.options.cpus, "GPU": self.options.gpus,
                "memory": self.resources.get("memory", 0)}
        nodes = [node["Resources"] for node in self.ray.nodes() if node.get("Alive")]
        if not any(all(node.get(key, 0) >= amount for key, amount in need.items()) for node in nodes):
            largest = max(nodes, key=lambda node: node.get("CPU", 0), default={})
            raise ConfigError(
                f"no node of the Ray cluster has {self.options.cpus:g} CPUs, {self.options.gpus} GPUs and "
                f"{need['memory'] / 2**30:.1f} GB memory for one worker (the largest has "
                f"{largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs, "
                f"{largest.get('memory', 0) / 2**30:.1f} GB); lower --worker-cpus or --worker-memory")

    def _workers(self) -> int:
        """How many stream workers: --jobs, else as many as the free CPUs hold (each must be placed)."""
        room = int(self.ray.available_resources().get("CPU", 0) // self.options.cpus)
        if self.options.gpus:
            room = min(room, int(self.ray.available_resources().get("GPU", 0)))
        if self.options.jobs is None:
            return max(1, room)
        if self.options.jobs > room:
            raise ConfigError(f"--jobs {self.options.jobs}: the Ray cluster has room for {room} workers of "
                              f"{self.options.cpus:g} CPUs now; use --jobs {max(1, room)} or fewer")
        return self.options.jobs


class StreamWorker:
    """A Ray actor that makes its state once (loads the model) and then works item after item."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        self.state = setup()

    def run(self, work: Callable[[Any, Any], Any], item: Any) -> Any:
        return work(self.state, item)
