"""The benchmark grid: every detector on every category (and seed), through the same code as ``adcore run``.

Each cell is one :func:`adcore.runner.run_category` call with its own
:class:`~adcore.options.RunOptions`, writing to ``<out>/cells/seed<N>/`` so that
the usual ``<detector>/<category>/`` layout is kept inside. A cell's folder
appears atomically when the cell is complete, so a cell is *finished* exactly
when it holds adcore's ``metrics.json`` for that cell (a corrupt one does not
count): running the same command again skips finished cells and continues
where an interrupted run stopped. A cell that fails is recorded in
``<out>/failures.json`` and the grid goes on. ``<out>`` carries adcore's marker
from its creation; a folder that does not is refused before any work.

Cells run where ``options.executor`` says (:mod:`adcore.executors`): in this
process, in ``--jobs`` local processes, or as Ray tasks. Every cell publishes
its own folder, so the layout, the tables and the report are the same
whichever ran it; this module only decides which cells to run and records
how each ended. A cell's outcome is its :class:`~adcore.results.CategoryResult`.
"""

from __future__ import annotations

import contextlib
import json
import platform
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from adcore import __version__, fs
from adcore.config import as_json_dict
from adcore.errors import AdcoreError, ConfigError, DataError
from adcore.executors import Outcome, open_executor
from adcore.options import BenchmarkOptions, RunOptions
from adcore.results import BENCHMARK, METRICS_FILE, CategoryResult, read_result

if TYPE_CHECKING:
    from adcore.data import Category
    from adcore.detector import Detector

GRID_FILE = "benchmark.json"
FAILURES_FILE = "failures.json"
CELLS_DIR = "cells"


class CellsFailed(AdcoreError):
    """Some cells of the grid failed (the others finished and are reported)."""


@attrs.frozen
class Cell:
    """One (detector, category, seed) run."""

    detector: str
    category: str
    seed: int

    def folder(self, out: Path) -> Path:
        return cell_root(out, self.seed) / self.detector / self.category

    def label(self) -> str:
        return f"{self.detector} / {self.category} / seed {self.seed}"

    def key(self) -> str:
        return f"{self.detector}/{self.category}/seed{self.seed}"


@attrs.frozen
class CellJob:
    """What a worker needs to run one cell: everything ``adcore run`` would get for it.

    ``detector`` is the unfitted detector built to check the parameters, handed to the first cell of its
    (detector, seed) to run, as ``adcore run`` hands its first to the first category; None: the cell builds one.
    """

    label: str
    options: RunOptions
    category: Category
    detector: Detector | None = None


def run_cell(job: CellJob) -> CategoryResult:
    """Run one cell (in whichever process the executor chose); its folder appears only when complete."""
    from adcore import runner
    from adcore.progress import log_line

    log_line(f"{job.label}: running")
    return runner.run_category(job.options, job.category, job.detector)


def cell_root(out: Path, seed: int) -> Path:
    """The ``--out`` given to the runner for the cells of one seed."""
    return Path(out) / CELLS_DIR / f"seed{seed}"


# --------------------------------------------------------------------------- names and --set
def resolve_detectors(spec: Sequence[str] | str) -> tuple[str, ...]:
    """``all`` or comma-separated names (repeatable) -> registered detector names, in the given order."""
    from adcore.plugins import get_registry

    registry = get_registry()
    parts = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for part in parts:
        for name in (p.strip() for p in part.split(",")):
            if not name:
                continue
            if name == "all":
                found = registry.names("detector")
                if not found:
                    raise ConfigError("--detector all: no detectors are installed (see `adcore plugins`)")
                names.extend(found)
            else:
                names.append(registry.get("detector", name).name)  # unknown names fail with suggestions
    if not names:
        raise ConfigError("--detector needs at least one name, or 'all'")
    return tuple(dict.fromkeys(names))


def split_assignments(assignments: Mapping[str, str], detectors: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each detector's own ``--set`` values.

    ``patchcore.coreset_ratio=0.05`` goes to patchcore only; a key without a
    detector prefix goes to every detector of the grid that has that parameter
    (it is an error if none has it, so a typo never passes silently). Keys with
    a detector prefix override unprefixed ones.
    """
    from adcore.plugins import get_registry

    registry = get_registry()
    fields = {name: set(attrs.fields_dict(registry.load_object("detector", name).Config)) for name in detectors}
    shared: dict[str, str] = {}
    own: dict[str, dict[str, str]] = {name: {} for name in detectors}
    for key, value in assignments.items():
        prefix, dot, rest = key.partition(".")
        if dot:
            if not rest:
                raise ConfigError(f"--set {key}={value}: missing the parameter name after '{prefix}.'")
            resolved = registry.get("detector", prefix).name
            if resolved not in own:
                raise ConfigError(f"--set {key}={value}: detector '{prefix}' is not in this benchmark "
                                  f"({', '.join(detectors)})")
            own[resolved][rest] = value
        else:
            users = [name for name in detectors if key in fields[name]]
            if not users:
                raise ConfigError(f"--set {key}={value}: no detector of this benchmark has a parameter "
                                  f"'{key}' ({', '.join(detectors)}); use DETECTOR.{key}=... for one detector")
            shared[key] = value
    return {name: {**{k: v for k, v in shared.items() if k in fields[name]}, **own[name]} for name in detectors}


# --------------------------------------------------------------------------- the grid
def cell_options(options: BenchmarkOptions, cell: Cell, assignments: Mapping[str, str]) -> RunOptions:
    """The :class:`RunOptions` of one cell (what ``adcore run`` would get)."""
    from adcore.plugins import get_registry

    backbone = options.backbone
    if backbone is not None:
        config_cls = get_registry().load_object("detector", cell.detector).Config
        if "backbone" not in attrs.fields_dict(config_cls):
            backbone = None  # --backbone applies to the detectors that use one
    shared = {**options.shared(), "categories": (cell.category,), "backbone": backbone,
              "assignments": dict(assignments)}
    return RunOptions(**shared, detector=cell.detector, seed=cell.seed, out=cell_root(options.out, cell.seed))


def is_finished(out: Path, cell: Cell) -> bool:
    """Whether the cell's folder holds its readable metrics (then it is complete: cells appear atomically)."""
    try:
        read_result(cell.folder(out) / METRICS_FILE)
    except DataError:
        return False
    return True


def run_benchmark(options: BenchmarkOptions, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every unfinished cell, then write the tables and the report.

    Returns a summary dict (cells, ran, skipped, failed). Raises
    :class:`CellsFailed` after writing the report when any cell failed;
    ``KeyboardInterrupt`` stops the grid at once (finished cells are kept).
    """
    from adcore import report, runner

    per_detector, checked = _validate(options)
    out = Path(options.out)
    fs.check_output(out, BENCHMARK, inputs=[options.data])
    categories = runner.open_categories(options)
    if not categories:
        raise ConfigError("no categories to run")
    by_name = {c.name: c for c in categories}
    cells = [Cell(d, c.name, s) for s in options.seeds for d in options.detectors for c in categories]

    configs = {key: as_json_dict(detector.config) for key, detector in checked.items()}
    unused = dict(checked)  # each check detector goes to the first cell of its (detector, seed) that runs

    def job(cell: Cell, label: str) -> CellJob:
        return CellJob(label, cell_options(options, cell, per_detector[cell.detector]), by_name[cell.category],
                       unused.pop((cell.detector, cell.seed), None))

    for cell in cells:
        if options.force or not is_finished(out, cell):
            runner.check_outputs(cell_options(options, cell, per_detector[cell.detector]), [by_name[cell.category]])
    if not options.force:
        _check_consistent(out, cells, options, configs)
    fs.prepare_folder(out, BENCHMARK)
    _write_grid(out, options, options.detectors, [c.name for c in categories], per_detector)
    ran, skipped, failed = _run_cells(out, options, cells, job, echo)

    built = report.build(out, sort=options.sort)
    echo("")
    echo(built["summary_text"])
    echo(f"\n{ran} cells run, {skipped} skipped as finished, {len(failed)} failed.")
    echo(f"Tables in {out / 'tables'}/, report in {built['report']}")
    summary = {"cells": len(cells), "ran": ran, "skipped": skipped, "failed": [c.key() for c in failed]}
    if failed:
        raise CellsFailed(f"{len(failed)} of {len(cells)} cells failed ({', '.join(c.key() for c in failed)}); "
                          f"errors in {out / FAILURES_FILE}")
    return summary


def _validate(options: BenchmarkOptions) -> tuple[dict[str, dict[str, str]], dict[tuple[str, int], Detector]]:
    """Each detector's ``--set`` values and each (detector, seed)'s unfitted detector, checked before any data is read.

    Every detector is built once per seed here, as ``adcore run`` builds it to check its parameters; their
    configs are what finished cells are compared with, and each goes on to the first of its cells that runs.
    """
    from adcore import runner

    if not options.seeds:
        raise ConfigError("--seed needs at least one value")
    if options.executor.kind == "ray" and options.executor.jobs is not None:
        raise ConfigError("--jobs is for the local executor; on Ray as many cells run at once as the cluster's "
                          "resources hold (see --worker-cpus, --worker-memory)")
    detectors = options.detectors
    per_detector = split_assignments(options.assignments, detectors)
    if options.backbone is not None and all(
            cell_options(options, Cell(name, "?", 0), {}).backbone is None for name in detectors):
        raise ConfigError(f"--backbone {options.backbone}: no detector of this benchmark uses a backbone "
                          f"({', '.join(detectors)})")
    checked = {(name, seed): runner.make_detector(cell_options(options, Cell(name, "?", seed), per_detector[name]))
               for name in detectors for seed in options.seeds}
    return per_detector, checked


def _run_cells(out: Path, options: BenchmarkOptions, cells: Sequence[Cell], job: Callable[[Cell, str], CellJob],
               echo: Callable[[str], None]) -> tuple[int, int, list[Cell]]:
    """Skip the finished cells, run the others on the executor and record how each ended: (ran, skipped, failed)."""
    from adcore.progress import bar

    failures = _read_failures(out)
    ran = skipped = 0
    failed: list[Cell] = []
    todo: list[tuple[int, Cell]] = []
    with bar(total=len(cells), desc="benchmark", unit="cell", position=0) as progress:
        say = progress.write if not progress.disable else echo
        for index, cell in enumerate(cells, start=1):
            if not options.force and is_finished(out, cell):
                failures.pop(cell.key(), None)
                skipped += 1
                say(f"[{index}/{len(cells)}] {cell.label()}: finished before, skipped")
                progress.update(1)
            else:
                todo.append((index, cell))
        runs = [job(cell, f"[{index}/{len(cells)}] {cell.label()}") for index, cell in todo]
        with contextlib.closing(open_executor(options.executor)) as executor:
            try:
                for position, outcome in executor.run_each(run_cell, runs):
                    cell = todo[position][1]
                    progress.set_postfix_str(f"{cell.detector}/{cell.category}/s{cell.seed}", refresh=False)
                    if _settle(out, cell, outcome, failures, lambda line: say(f"{runs[position].label}: {line}")):
                        ran += 1
                    else:
                        failed.append(cell)
                    _write_failures(out, _in_grid_order(failures, cells))
                    progress.update(1)
            except KeyboardInterrupt:
                done = sum(is_finished(out, c) for c in cells)
                _write_failures(out, _in_grid_order(failures, cells))
                say(f"Interrupted. {done} of {len(cells)} cells are finished and kept; "
                    f"run the same command again to continue.")
                raise
    _write_failures(out, _in_grid_order(failures, cells))
    return ran, skipped, failed


def _settle(out: Path, cell: Cell, outcome: Outcome, failures: dict[str, Any], say: Callable[[str], None]) -> bool:
    """Record how a cell ended (``failures`` is updated) and say so; True when it finished."""
    if outcome.ok and not is_finished(out, cell):
        outcome = attrs.evolve(outcome, error=(f"OutputError: the cell finished on its worker, but {cell.folder(out)} "
                                               "is not visible here; --out must be on storage every node shares"))
    if outcome.ok:
        failures.pop(cell.key(), None)
        result: CategoryResult = outcome.value
        say(f"image AUROC {_fmt(result.value('image_auroc'))}, pixel AUROC {_fmt(result.value('pixel_auroc'))}, "
            f"AUPRO {_fmt(result.value('aupro'))} ({outcome.seconds:.1f} s)")
        return True
    failures[cell.key()] = {"detector": cell.detector, "category": cell.category, "seed": cell.seed,
                            "error": outcome.error, "traceback": outcome.traceback, "time": _now(),
                            "seconds": outcome.seconds}
    say(f"FAILED: {outcome.error}")
    return False


def _check_consistent(out: Path, cells: Sequence[Cell], options: BenchmarkOptions,
                      configs: Mapping[tuple[str, int], Mapping[str, Any]]) -> None:
    """Refuse to mix finished cells made with other settings into this grid (unless --force).

    ``configs`` holds each (detector, seed)'s parameters, as :func:`~adcore.config.as_json_dict` gives them.
    """
    from adcore.framing import Framing

    framing, squashed = options.framing().metadata(), Framing().metadata()
    for cell in cells:
        try:
            old = read_result(cell.folder(out) / METRICS_FILE)
        except DataError:
            continue
        new = json.loads(json.dumps(configs[(cell.detector, cell.seed)]))  # as metrics.json holds it
        differences = [f"{k} {old.config.get(k)!r} -> {v!r}" for k, v in new.items() if old.config.get(k) != v]
        if old.image_size != options.image_size:
            differences.insert(0, f"image size {old.image_size} -> {options.image_size}")
        old_framing = squashed if old.framing is None else old.framing  # a cell written before framings was squashed
        if old_framing != framing:
            differences.insert(0, f"framing {old_framing} -> {framing}")
        old_eval = "working" if old.eval_size is None else old.eval_size
        if old_eval != options.eval_size:
            differences.insert(0, f"eval size {old_eval!r} -> {options.eval_size!r}")
        if differences:
            raise ConfigError(f"{out}: the finished cell {cell.key()} was run with other settings "
                              f"({'; '.join(differences)}). Use --force to rerun every cell, or another --out.")


def _write_grid(out: Path, options: BenchmarkOptions, detectors: Sequence[str], categories: Sequence[str],
                per_detector: Mapping[str, Mapping[str, str]]) -> None:
    """``benchmark.json``: the grid of the latest invocation plus every command that worked on this folder."""
    previous: dict[str, Any] = {}
    try:
        previous = json.loads((out / GRID_FILE).read_text())
    except (OSError, ValueError):
        pass
    invocations = list(previous.get("invocations", []))
    invocations.append({"command": options.command, "time": _now(), "force": options.force})
    grid = {
        "detectors": list(detectors),
        "categories": list(categories),
        "seeds": list(options.seeds),
        "data": str(options.data) if options.data is not None else None,
        "dataset": options.dataset_name(),
        "image_size": options.image_size,
        "framing": options.framing().metadata(),
        "eval_size": options.eval_size,
        "backbone": options.backbone,
        "holdout": options.holdout,
        "panels": options.panels,
        "set": {name: dict(values) for name, values in per_detector.items()},
        "sort": options.sort,
        "command": options.command,
        "versions": versions(),
        "invocations": invocations[-20:],
    }
    fs.write_json(out / GRID_FILE, grid)


def versions() -> dict[str, Any]:
    """Versions of Python, adcore, its plugins and the main libraries."""
    found: dict[str, Any] = {"python": platform.python_version(), "adcore": __version__}
    for module in ("torch", "numpy", "timm"):
        try:
            found[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a version is informative only
            pass
    try:
        from adcore.plugins import get_registry

        found["plugins"] = {p.name: f"{p.distribution} {p.version}" for p in get_registry().plugins
                            if not p.builtin}
    except Exception:  # noqa: BLE001
        pass
    found["platform"] = platform.platform()
    return found


# --------------------------------------------------------------------------- small helpers
def _read_failures(out: Path) -> dict[str, Any]:
    try:
        entries = json.loads((out / FAILURES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {f"{e['detector']}/{e['category']}/seed{e['seed']}": e for e in entries if isinstance(e, dict)}


def _write_failures(out: Path, failures: Mapping[str, Any]) -> None:
    path = out / FAILURES_FILE
    if failures:
        fs.write_json(path, list(failures.values()))
    elif path.exists():
        path.unlink()


def _in_grid_order(failures: Mapping[str, Any], cells: Sequence[Cell]) -> dict[str, Any]:
    """Failures in the grid's order whatever order cells finished in (older ones outside the grid last)."""
    keys = [c.key() for c in cells if c.key() in failures]
    return {key: failures[key] for key in [*keys, *(k for k in failures if k not in keys)]}


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
