"""Nothing lost, nothing wrong in silence: what --out may be, atomic replacement, signals, damaged inputs.

Real files and real processes: the commands run as `adcore` subprocesses, with a
sentinel file in every place that must survive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from adcore import checkpoints, fs
from adcore.benchmark import Cell, is_finished
from adcore.cli.main import cli
from adcore.training import train

ADCORE = str(Path(sys.executable).with_name("adcore"))
PATCHCORE = ["--detector", "patchcore", "--image-size", "32", "--set", "coreset_ratio=0.2", "--no-panels"]
SENTINEL = "keep-me.txt"


def adcore(*args: object, cwd: Path | None = None, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADCORE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=_env(), preexec_fn=None if umask is None else (lambda: os.umask(umask)))


def _env() -> dict[str, str]:
    return {**os.environ, "ADCORE_PROGRESS": "0"}


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (proc.returncode,
                                                                                         proc.stderr)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def plant(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SENTINEL).write_text("mine")
    return folder / SENTINEL


def staging_folders(root: Path) -> list[Path]:
    return list(root.rglob(f"{fs.STAGING_PREFIX}*"))


@pytest.fixture(scope="module")
def trained(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run's results folder (results/patchcore/machined_part holds the model)."""
    out = tmp_path_factory.mktemp("trained") / "results"
    proc = adcore("run", *PATCHCORE, "--data", tiny_root, "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out


class Workspace(NamedTuple):
    work: Path  # the user's current directory
    images: Path
    model: Path  # a run's category folder, as MODEL_DIR
    sentinels: list[Path]

    def intact(self) -> None:
        for sentinel in self.sentinels:
            assert sentinel.read_text() == "mine", sentinel


@pytest.fixture
def workspace(trained: Path, tiny_root: Path, tmp_path: Path) -> Workspace:
    """A user's folder with images, a model and a sentinel in each of them."""
    work = tmp_path / "work"
    images = work / "images"
    shutil.copytree(tiny_root / "machined_part" / "test" / "good", images)
    shutil.copytree(trained, work / "results")
    model = work / "results" / "patchcore" / "machined_part"
    return Workspace(work, images, model, [plant(work), plant(images), plant(model), plant(model / "model")])


# --------------------------------------------------------------------------- what --out may be
@pytest.mark.parametrize("out, fragment", [
    (".", "contains the input"), ("images", "is the input images"),
    ("images/sub", "lies inside the input images"), ("results/patchcore/machined_part", "is the input"),
    ("results/patchcore/machined_part/model", "lies inside the input"),
])
def test_predict_refuses_an_out_that_is_or_touches_an_input(workspace, out, fragment):
    before = sorted(p.relative_to(workspace.work) for p in workspace.work.rglob("*"))
    proc = adcore("predict", "results/patchcore/machined_part", "images", "--out", out, cwd=workspace.work)
    one_line_error(proc, f"--out {out} ", fragment, "nothing was written")
    workspace.intact()
    assert sorted(p.relative_to(workspace.work) for p in workspace.work.rglob("*")) == before


def test_predict_refuses_a_user_folder_and_a_file(workspace):
    user = workspace.work / "mine"
    sentinel = plant(user)
    one_line_error(adcore("predict", workspace.model, workspace.images, "--out", user),
                   str(user), "was not written by adcore", "choose another --out or remove it yourself")
    assert sentinel.read_text() == "mine"
    one_line_error(adcore("predict", workspace.model, workspace.images, "--out", sentinel),
                   "is a file and was not written by adcore")
    assert sentinel.read_text() == "mine"
    workspace.intact()


def test_run_refuses_a_user_folder_at_the_result_before_fitting(tiny_root, tmp_path):
    results = tmp_path / "results"
    sentinel = plant(results / "patchcore" / "machined_part")
    proc = adcore("run", *PATCHCORE, "--data", tiny_root, "--out", results)
    one_line_error(proc, "patchcore/machined_part: exists and was not written by adcore")
    assert proc.stdout == ""  # stopped before the first category started
    assert sentinel.read_text() == "mine"
    assert sorted(p.name for p in (results / "patchcore").iterdir()) == ["machined_part"]


def test_out_that_is_a_file_or_not_writable_fails_before_fitting(tiny_root, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    one_line_error(adcore("run", *PATCHCORE, "--data", tiny_root, "--out", a_file / "results"),
                   f"{a_file} is a file, not a folder")
    if os.geteuid() == 0:  # root writes anywhere: chmod cannot make a folder read-only for it
        one_line_error(adcore("run", *PATCHCORE, "--data", tiny_root, "--out", a_file), "is a file")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        try:
            one_line_error(adcore("run", *PATCHCORE, "--data", tiny_root, "--out", locked / "results"),
                           f"cannot write in {locked} (permission denied)")
        finally:
            locked.chmod(0o755)
    assert a_file.read_text() == "mine"


def test_benchmark_refuses_a_user_folder(tiny_root, tmp_path):
    sentinel = plant(tmp_path / "mine")
    proc = adcore("benchmark", *PATCHCORE, "--data", tiny_root, "--out", tmp_path / "mine")
    one_line_error(proc, "was not written by adcore")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [SENTINEL] and sentinel.read_text() == "mine"


# --------------------------------------------------------------------------- replacing adcore's own results
def test_replacing_a_prediction_and_removing_stale_staging(workspace, tmp_path):
    out = tmp_path / "preds"
    proc = adcore("predict", workspace.model, workspace.images, "--out", out, umask=0o022)
    assert proc.returncode == 0, proc.stderr
    for path, mode in ((out, 0o755), (out / "heatmaps", 0o755), (out / "predictions.json", 0o644)):
        assert path.stat().st_mode & 0o777 == mode, path  # the umask, not mkdtemp's 0700
    first = json.loads((out / "predictions.json").read_text())["predictions"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{fs.STAGING_PREFIX}new-{dead.pid}-0000-preds"
    plant(stale)
    (stale / fs.MARKER).write_text(json.dumps({"format": "adcore-predictions", "pid": dead.pid,
                                               "host": socket.gethostname()}))
    lookalike = plant(tmp_path / f"{fs.STAGING_PREFIX}not-adcores")  # no marker: not adcore's
    hidden = plant(tmp_path / ".someone-elses")
    extra = tmp_path / "extra.png"
    shutil.copy(sorted(workspace.images.glob("*.png"))[0], extra)
    proc = adcore("predict", workspace.model, workspace.images, extra, "--out", out)
    assert proc.returncode == 0, proc.stderr
    second = json.loads((out / "predictions.json").read_text())["predictions"]
    assert len(second) == len(first) + 1
    assert len(list((out / "heatmaps").iterdir())) == len(second)  # replaced, not merged
    assert not stale.exists(), "the staging folder of a dead adcore process stays"
    assert lookalike.read_text() == "mine" and hidden.read_text() == "mine"
    assert staging_folders(tmp_path) == [lookalike.parent]


def test_an_unmarked_staging_folder_goes_only_if_empty_and_its_named_process_is_dead_here(tmp_path):
    """A writer killed between mkdir and its marker leaves an empty or half-marked folder.

    Seen in CI: the killed-worker grid's second worker, stopped by the broken pool.
    """
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = fs._host_tag()
    killed = tmp_path / f"{fs.STAGING_PREFIX}new-{here}-{dead.pid}-0000-out"
    running = tmp_path / f"{fs.STAGING_PREFIX}new-{here}-{os.getppid()}-0001-out"
    elsewhere = tmp_path / f"{fs.STAGING_PREFIX}new-{here}x-{dead.pid}-0002-out"  # another host's
    for folder in (killed, running, elsewhere):
        folder.mkdir()
    not_empty = plant(tmp_path / f"{fs.STAGING_PREFIX}new-{here}-{dead.pid}-0003-out")
    half_marked = tmp_path / f"{fs.STAGING_PREFIX}new-{here}-{dead.pid}-0004-out"  # killed writing its marker
    half_marked.mkdir()
    (half_marked / f".adcore-tmp-{dead.pid}-0000-{fs.MARKER}").write_text('{"format": "adc')
    kind = fs.Kind(label="a test folder", format="adcore-test")
    fs.replace_folder(tmp_path / "out", lambda staging: (staging / "result.txt").write_text("new"), kind)
    assert not killed.exists() and not half_marked.exists()
    assert running.is_dir() and elsewhere.is_dir() and not_empty.read_text() == "mine"
    assert (tmp_path / "out" / "result.txt").read_text() == "new"


def test_rerunning_replaces_the_result_and_keeps_the_rest(trained, tiny_root, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(trained, results)
    sentinel = plant(results)
    beside = plant(results / "patchcore" / "notes")
    metrics = results / "patchcore" / "machined_part" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    proc = adcore("run", *PATCHCORE, "--data", tiny_root, "--out", results)
    assert proc.returncode == 0, proc.stderr
    assert metrics.stat().st_mtime_ns != before and json.loads(metrics.read_text())["n_test"] == 7
    assert sentinel.read_text() == "mine" and beside.read_text() == "mine"
    assert not staging_folders(results)


# --------------------------------------------------------------------------- concurrency
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from adcore import fs

    target, me, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    if sys.argv[4] == "rename-aside":
        fs._exchange = lambda a, b: False  # as where renameat2 is missing
    kind = fs.Kind("a test folder", "adcore-test")
    while not go.exists():
        time.sleep(0.001)
    def write(folder):
        for name in ("a.txt", "b.txt", "c.txt"):
            (folder / name).write_text(me)
    for _ in range(15):
        fs.replace_folder(target, write, kind)
""")


@pytest.mark.parametrize("publish", ["exchange", "rename-aside"])
def test_two_processes_replacing_one_folder_both_finish(tmp_path, publish):
    target, go = tmp_path / "target", tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), name, str(go), publish],
                                stderr=subprocess.PIPE, text=True) for name in ("first", "second")]
    time.sleep(1.5)  # both have imported adcore and wait
    go.touch()
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    contents = {p.name: p.read_text() for p in target.iterdir() if p.name != fs.MARKER}
    assert sorted(contents) == ["a.txt", "b.txt", "c.txt"] and len(set(contents.values())) == 1
    assert not staging_folders(tmp_path)


def test_two_predicts_into_one_out_leave_one_complete_result(workspace, tmp_path):
    out = tmp_path / "preds"
    command = [ADCORE, "predict", str(workspace.model), str(workspace.images), "--out", str(out)]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    rows = json.loads((out / "predictions.json").read_text())["predictions"]
    assert len(rows) == 3 and all((out / row["heatmap"]).is_file() for row in rows)
    assert not staging_folders(tmp_path)


# --------------------------------------------------------------------------- signals
@pytest.mark.parametrize("signum, times, status, message", [
    (signal.SIGTERM, 1, 143, "Stopped by SIGTERM; no partial output was kept"),
    (signal.SIGHUP, 1, 129, "Stopped by SIGHUP; no partial output was kept"),
    (signal.SIGINT, 4, 130, "Interrupted; no partial output was kept"),  # Ctrl-C pressed again during cleanup
], ids=["SIGTERM", "SIGHUP", "SIGINT-repeated"])
def test_signals_stop_cleanly(tiny_root, tmp_path, signum, times, status, message):
    out = tmp_path / "run"
    command = [ADCORE, "run", "--detector", "riad", "--data", str(tiny_root), "--image-size", "32", "--no-panels",
               "--set", "epochs=100000", "--set", "base_width=4", "--set", "cell_sizes=8,16", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "ADCORE_PROGRESS": "1"},
                               preexec_fn=_default_signals)
    try:
        started = _read_until(process, b"epoch/s", 240)
        assert b"epoch/s" in started, started.decode(errors="replace")[-2000:]
        for _ in range(times):
            process.send_signal(signum)
            time.sleep(0.05)
        rest = process.communicate(timeout=300)[1]  # generous: a loaded CI machine is slow to clean up
    finally:
        process.kill()
        process.wait()
    stderr = (started + rest).decode(errors="replace")
    assert process.returncode == status, stderr[-2000:]
    last = stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert message in last and "Traceback" not in stderr, stderr[-2000:]
    left = [p for p in out.rglob("*")] if out.exists() else []
    assert not staging_folders(tmp_path) and not [p for p in left if p.name == "metrics.json"], left
    assert all(".checkpoint" in p.as_posix() or p.is_dir() for p in left), left


def _default_signals() -> None:
    """The child's signals at their defaults: a suite started with nohup or `&` inherits SIGHUP or
    SIGINT as ignored, and adcore rightly keeps a signal the user's shell chose to ignore."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout_s: float) -> bytes:
    import selectors

    assert process.stderr is not None
    text = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while marker not in text and time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=0.5):
                text += os.read(process.stderr.fileno(), 65536)
    return text


# --------------------------------------------------------------------------- wrong values, damaged files
def test_a_non_finite_score_is_an_error_not_a_verdict(workspace, tmp_path, monkeypatch):
    from adcore.detector import Detector, Prediction

    real = Detector.predict

    def poisoned(self, images, progress="predict"):  # type: ignore[no-untyped-def]
        prediction = real(self, images, progress)
        scores = prediction.scores.copy()
        scores[1] = np.nan
        return Prediction(scores, prediction.anomaly_maps)

    monkeypatch.setattr(Detector, "predict", poisoned)
    out = tmp_path / "preds"
    result = CliRunner().invoke(cli, ["predict", str(workspace.model), str(workspace.images), "--out", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    second = sorted(workspace.images.glob("*.png"))[1]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith(f"Error: {second}: the detector gave a non-finite score (nan)"), lines[0]
    assert not out.exists()


def test_report_warns_about_corrupt_or_foreign_metrics_and_skips_them(trained, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(trained, results)
    broken = results / "patchcore" / "broken" / "metrics.json"
    foreign = results / "other" / "thing" / "metrics.json"
    for path, text in ((broken, '{"detector": "patchcore", "categ'), (foreign, '["not", "metrics"]')):
        path.parent.mkdir(parents=True)
        path.write_text(text)
    proc = adcore("report", results)
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 2 and all(w.startswith("Warning: ") and "skipped" in w for w in warnings), warnings
    assert str(broken) in warnings[0] + warnings[1] and str(foreign) in warnings[0] + warnings[1]
    summary = json.loads((results / "tables" / "summary.json").read_text())
    assert [row["detector"] for row in summary["rows"]] == ["patchcore"]
    assert "broken" not in (results / "report.html").read_text()
    bench = tmp_path / "bench"
    cell = Cell("patchcore", "broken", 0)
    cell.folder(bench).mkdir(parents=True)
    (cell.folder(bench) / "metrics.json").write_text("{")
    assert not is_finished(bench, cell)


def test_report_never_overwrites_a_report_html_that_may_not_be_adcores(trained, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(trained, results)
    (results / "report.html").write_text("my own page")
    one_line_error(adcore("report", results), "report.html: exists", "carries no adcore marker")
    assert (results / "report.html").read_text() == "my own page" and not (results / "tables").exists()


EPOCHS = 4


def _fit(folder: Path, width: int = 8) -> tuple[list[float], nn.Module, int]:
    """A small training with checkpoints; returns its history, its model and how many steps it ran."""
    steps = []
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    data = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))

    def step(batch: torch.Tensor) -> float:
        steps.append(1)
        loss = model(batch).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss.item()

    history = train(step, data, EPOCHS, 4, seed=1, checkpoint=checkpoints.Place(folder, "fit"),
                    saved={"model": model, "optimiser": optimiser})
    return history, model, len(steps)


@pytest.mark.parametrize("damage", ["json", "safetensors", "shapes"])
def test_a_damaged_checkpoint_is_discarded_with_a_warning(tmp_path, capsys, damage):
    expected, reference, all_steps = _fit(tmp_path / "clean")
    folder = tmp_path / "damaged"
    if damage == "shapes":
        _fit(folder, width=5)  # a finished checkpoint of the same fingerprint, other module shapes
    else:
        _fit(folder)
        name = checkpoints.META_FILE if damage == "json" else checkpoints.TENSORS_FILE
        (folder / name).write_bytes(b"\x00garbage")
    capsys.readouterr()
    history, model, steps = _fit(folder)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(f"Warning: {folder}: training checkpoint discarded")
    assert "training starts over" in warnings[0]
    assert history == expected and steps == all_steps  # started over, from the same initial state
    for want, got in zip(reference.state_dict().values(), model.state_dict().values()):
        assert torch.equal(want, got)


def test_only_checkpoint_folders_are_removed(tmp_path):
    user = plant(tmp_path / ".machined_part.checkpoint")
    checkpoints.remove(user.parent)
    assert user.read_text() == "mine"
