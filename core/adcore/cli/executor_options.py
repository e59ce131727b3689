"""The options that say where work runs (``--executor``, ``--jobs``, ...), shared by benchmark and predict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from adcore.executors import EXECUTORS, ExecutorOptions

__all__ = ["executor_options", "where_to_run"]


def executor_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the executor options to a command (they arrive as keyword arguments; see :func:`where_to_run`)."""
    options = [
        click.option("--executor", default="local", show_default=True, type=click.Choice(EXECUTORS),
                     help="local: this machine (see --jobs); ray: a Ray cluster (pip install adcore[ray])."),
        click.option("--jobs", "-j", default=None, type=int, metavar="N",
                     help="local: N worker processes sharing the cores (default 1: in this process); "
                          "ray: N prediction workers (default: as many as the cluster's free CPUs hold)."),
        click.option("--address", default=None, metavar="HOST:PORT",
                     help="Ray cluster to join (default: RAY_ADDRESS, one started here by `ray start`, "
                          "else a new local one)."),
        click.option("--worker-cpus", default=1.0, show_default=True, type=float,
                     help="CPUs each Ray task or worker reserves (and its torch threads)."),
        click.option("--worker-memory", default=None, type=float, metavar="GB",
                     help="Memory each Ray task or worker reserves (default: none reserved)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def where_to_run(executor: str, jobs: int | None, address: str | None, worker_cpus: float,
                 worker_memory: float | None, device: str | None) -> ExecutorOptions:
    """The :class:`ExecutorOptions` of the parsed options (a CUDA ``device`` reserves a GPU per Ray worker)."""
    return ExecutorOptions(kind=executor, jobs=jobs, address=address, cpus=worker_cpus,
                           memory_gb=worker_memory, device=device)
