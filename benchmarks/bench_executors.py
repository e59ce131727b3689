"""Wall time of one small benchmark grid run serially, with ``--jobs 2``, and on Ray with two simulated nodes.

The grid is PatchCore (random backbone weights, so nothing is downloaded) on
two categories of the synthetic set at 96 px, over two seeds: four cells.
Every run starts from an empty ``--out``; each parallel run's metrics are
compared with the serial run's (the last digits may differ where the number
of torch threads per cell differs, see docs/scale-out.md). The Ray times
include starting the simulated cluster; the --jobs time includes starting
the worker processes.

    python benchmarks/bench_executors.py [--node-cpus 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from adcore.benchmark import BenchmarkOptions, run_benchmark
from adcore.data.synthetic import generate
from adcore.executors import ExecutorOptions

METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_threshold", "pixel_threshold")


def grid(data: Path, out: Path, executor: ExecutorOptions) -> BenchmarkOptions:
    return BenchmarkOptions(detectors=("patchcore",), data=data, image_size=96, seeds=(0, 1), out=out,
                            assignments={"backbone_weights": "random", "coreset_ratio": "0.1"}, panels=False,
                            executor=executor)


def timed(label: str, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    print(f"{label:<34} {seconds:7.1f} s", flush=True)
    return seconds


def largest_difference(out: Path, reference: Path) -> float:
    """The largest absolute difference of any metric between two grids' cells."""
    worst = 0.0
    for path in (reference / "cells").rglob("metrics.json"):
        ours, theirs = (json.loads(p.read_text()) for p in (out / path.relative_to(reference), path))
        worst = max([worst, *(abs(ours[k] - theirs[k]) for k in METRICS if ours[k] is not None)])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs of each simulated Ray node")
    args = parser.parse_args()
    os.environ.setdefault("ADCORE_PROGRESS", "0")
    quiet = lambda line: None  # noqa: E731 - the grid's own summary is not the point here
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = generate(root / "data", categories=("machined_part", "woven_fabric"), size=96, n_train=16,
                        n_test_good=4, n_test_defect=2)
        print(f"grid: patchcore x 2 categories x 2 seeds = 4 cells at 96 px; {os.cpu_count()} CPUs here")
        timed("local, serial", lambda: run_benchmark(grid(data, root / "serial", ExecutorOptions()), quiet))
        timed("local, --jobs 2", lambda: run_benchmark(grid(data, root / "jobs", ExecutorOptions(jobs=2)), quiet))

        def on_two_nodes() -> None:
            import ray
            from ray.cluster_utils import Cluster

            node = {"num_cpus": args.node_cpus, "object_store_memory": 100 * 2**20}
            cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
            cluster.add_node(**node)
            ray.init(address=cluster.address, log_to_driver=False)
            try:
                run_benchmark(grid(data, root / "ray", ExecutorOptions(kind="ray")), quiet)
            finally:
                ray.shutdown()
                cluster.shutdown()

        timed(f"ray, 2 simulated nodes x {args.node_cpus} CPU", on_two_nodes)
        for name in ("jobs", "ray"):
            difference = largest_difference(root / name, root / "serial")
            print(f"largest metric difference, {name} vs serial: {difference:.2e}")


if __name__ == "__main__":
    main()
