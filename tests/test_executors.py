"""Executors: --jobs N and Ray (a local instance, then a simulated two-node cluster) give a local run's results.

A cell's metrics depend on its number of torch threads in the last digits (a
sum over two threads rounds differently from one), so the local baseline runs
with one thread, as each worker here does: then every value must be equal.
Ray is started once for the local tests and once for the cluster test.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from adcore.benchmark import BenchmarkOptions, run_benchmark
from adcore.cli.main import cli
from adcore.executors import ExecutorOptions
from adcore.predicting import predict_files

#: What a cell measures rather than computes; it differs between any two runs.
MEASURED = {"fit_seconds", "predict_seconds", "images_per_second", "peak_rss_mb", "command"}
SUMMARY_MEASURED = {"fit_seconds", "ms_per_image", "peak_mb"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adcore.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("data") / "synthetic", categories=("machined_part",), size=64,
                    n_train=8, n_test_good=3, n_test_defect=2)


def _grid(data: Path, out: Path, executor: ExecutorOptions, seeds: tuple[int, ...] = (0, 1)) -> BenchmarkOptions:
    return BenchmarkOptions(detectors=("patchcore",), data=data, image_size=64, seeds=seeds, out=out,
                            assignments={"backbone_weights": "random", "coreset_ratio": "0.1"},
                            executor=executor)


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def baseline(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid run serially in this process (one torch thread, as each worker has)."""
    out = tmp_path_factory.mktemp("serial") / "bench"
    with _one_thread():
        run_benchmark(_grid(data, out, ExecutorOptions()), echo=lambda line: None)
    return out


@pytest.fixture(scope="module")
def model(baseline: Path) -> Path:
    return baseline / "cells" / "seed0" / "patchcore" / "machined_part"


@pytest.fixture(scope="module")
def local_prediction(model: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "serial"
    with _one_thread():
        predict_files(model, _images(data), out, "cpu")
    return out


def _images(data: Path) -> list[Path]:
    return sorted((data / "machined_part" / "test").iterdir())


def _metrics(out: Path) -> dict[str, dict]:
    found = {}
    for path in sorted((out / "cells").rglob("metrics.json")):
        values = json.loads(path.read_text())
        found[str(path.relative_to(out))] = {k: v for k, v in values.items() if k not in MEASURED}
    return found


def _tables(out: Path) -> dict[str, object]:
    tables = {name: json.loads((out / "tables" / f"{name}.json").read_text())
              for name in ("image_auroc", "pixel_auroc", "aupro")}
    with open(out / "tables" / "summary.csv", newline="") as handle:
        tables["summary"] = [{k: v for k, v in row.items() if k not in SUMMARY_MEASURED}
                             for row in csv.DictReader(handle)]
    return tables


def assert_same_grid(out: Path, baseline: Path) -> None:
    expected = _metrics(baseline)
    assert len(expected) == 2 and _metrics(out) == expected
    assert _tables(out) == _tables(baseline)
    assert (out / "report.html").is_file() and not (out / "failures.json").exists()
    assert not list(out.rglob(".adcore-staging-*"))


def assert_same_prediction(out: Path, expected: Path) -> None:
    assert (out / "predictions.csv").read_text() == (expected / "predictions.csv").read_text()
    ours, theirs = (json.loads((folder / "predictions.json").read_text()) for folder in (out, expected))
    for document in (ours, theirs):  # this process's memory peak differs from run to run
        assert document.pop("peak_rss_mb") > 0
    assert ours == theirs and len(ours["predictions"]) == 11
    maps = sorted(p.relative_to(expected) for p in expected.rglob("*.png"))
    assert maps and sorted(p.relative_to(out) for p in out.rglob("*.png")) == maps
    assert all((out / m).read_bytes() == (expected / m).read_bytes() for m in maps)


def _run_killing_one_writer(options: BenchmarkOptions) -> dict:
    """Run the grid, SIGKILL the first worker seen writing a cell (before it publishes), return the summary."""
    seed0 = options.out / "cells" / "seed0" / "patchcore"
    results: list[dict] = []
    grid = threading.Thread(target=lambda: results.append(run_benchmark(options, echo=lambda line: None)))
    grid.start()
    killed = False
    deadline = time.monotonic() + 120
    while grid.is_alive() and not killed and time.monotonic() < deadline:
        for marker in seed0.glob(".adcore-staging-*/.adcore.json") if seed0.is_dir() else ():
            try:
                pid = json.loads(marker.read_text())["pid"]
            except (OSError, ValueError):
                continue  # published meanwhile: then the assertion below says so
            os.kill(pid, signal.SIGKILL)  # the worker that is writing the cell
            killed = True
            assert not (seed0 / "machined_part").exists(), "published before the kill: not killed mid-cell"
            assert list(seed0.glob(".adcore-staging-*")), "the killed worker's staging folder is there"
            break
        time.sleep(0.005)
    grid.join(timeout=180)
    assert killed and not grid.is_alive() and len(results) == 1
    return results[0]


# --------------------------------------------------------------------------- this machine
def test_jobs_grid_equals_serial_grid_with_a_worker_killed_mid_cell(baseline, data, tmp_path):
    out = tmp_path / "bench"
    jobs = ExecutorOptions(jobs=max(2, os.cpu_count() or 1))  # one torch thread each, as in the baseline
    summary = _run_killing_one_writer(_grid(data, out, jobs))
    assert summary == {"cells": 2, "ran": 2, "skipped": 0, "failed": []}  # the broken pool's cells ran again
    assert_same_grid(out, baseline)  # also: the retry removed the dead worker's staging folder


def test_missing_ray_is_one_line_before_any_work(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    result = CliRunner().invoke(cli, ["benchmark", "-d", "patchcore", "--data", str(data), "--image-size", "64",
                                      "--out", str(tmp_path / "b"), "--executor", "ray"])
    assert result.exit_code == 1
    assert result.output == "Error: --executor ray needs Ray: pip install adcore[ray]\n"
    assert not (tmp_path / "b").exists()


def test_bad_executor_options_are_one_line(model, data, tmp_path):
    for extra, message in ((["--address", "1.2.3.4:6379"], "--address names a Ray cluster; add --executor ray"),
                           (["--jobs", "0"], "--jobs must be at least 1; got 0")):
        result = CliRunner().invoke(cli, ["predict", str(model), str(data / "machined_part" / "test" / "good"),
                                          "--out", str(tmp_path / "p"), *extra])
        assert result.exit_code == 1 and result.output == f"Error: {message}\n"
    assert not (tmp_path / "p").exists()


# --------------------------------------------------------------------------- Ray, one local instance
def _ray():  # type: ignore[no-untyped-def]
    try:
        import ray
    except ImportError:
        pytest.fail("ray is not installed: pip install adcore[ray] (the test extra has it)")
    return ray


@pytest.fixture(scope="module")
def local_ray(baseline, local_prediction):  # the baselines first: they must not share the cores with Ray
    ray = _ray()
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Ray could not start a local instance here: {exc}")
    yield ray
    ray.shutdown()


def test_ray_grid_equals_local_grid_with_a_worker_killed_mid_cell(local_ray, baseline, data, tmp_path):
    """A worker killed while it writes a cell leaves only its staging folder; the cell runs again, the grid ends."""
    out = tmp_path / "bench"
    summary = _run_killing_one_writer(_grid(data, out, ExecutorOptions(kind="ray", retries=1)))
    assert summary == {"cells": 2, "ran": 2, "skipped": 0, "failed": []}  # the killed cell ran again
    assert_same_grid(out, baseline)  # also: the retry removed the dead worker's staging folder
    again = run_benchmark(_grid(data, out, ExecutorOptions(kind="ray")), echo=lambda line: None)
    assert again == {"cells": 2, "ran": 0, "skipped": 2, "failed": []}  # resume: finished cells are skipped


# --------------------------------------------------------------------------- Ray, two simulated nodes
@pytest.fixture
def two_nodes(baseline, local_prediction):
    """A head and a worker node of one CPU each (a local instance is shut down first: one Ray per driver)."""
    ray = _ray()
    from ray.cluster_utils import Cluster

    ray.shutdown()
    node = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
    try:
        cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
        cluster.add_node(**node)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"Ray could not start a simulated two-node cluster here: {exc}")
    yield ray
    ray.shutdown()
    cluster.shutdown()


def test_two_node_grid_and_predict_equal_local(two_nodes, baseline, model, data, local_prediction, tmp_path):
    assert [n["Resources"]["CPU"] for n in two_nodes.nodes() if n["Alive"]] == [1.0, 1.0]
    out = tmp_path / "bench"
    result = CliRunner().invoke(cli, ["benchmark", "-d", "patchcore", "--data", str(data), "--image-size", "64",
                                      "--set", "backbone_weights=random", "--set", "coreset_ratio=0.1",
                                      "--seed", "0", "--seed", "1", "--out", str(out), "--executor", "ray"])
    assert result.exit_code == 0, result.output
    assert "2 cells run, 0 skipped as finished, 0 failed." in result.output
    assert_same_grid(out, baseline)
    result = CliRunner().invoke(cli, ["predict", str(model), *map(str, _images(data)), "--out",
                                      str(tmp_path / "pred"), "--device", "cpu", "--executor", "ray"])
    assert result.exit_code == 0, result.output
    assert_same_prediction(tmp_path / "pred", local_prediction)
    too_big = CliRunner().invoke(cli, ["predict", str(model), str(_images(data)[0]), "--out", str(tmp_path / "p"),
                                       "--executor", "ray", "--worker-cpus", "2"])
    assert too_big.exit_code == 1 and "no node of the Ray cluster has 2 CPUs" in too_big.output
