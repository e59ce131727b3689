"""Conformance checks every detector plugin runs in its own tests.

After scikit-learn's ``check_estimator``: each check tests one property, has a
one-line docstring and a failure message that says what to fix. Use::

    from adcore.testing import parametrize_with_checks

    @parametrize_with_checks(lambda **kw: MyDetector(epochs=1, **kw))
    def test_conformance(check):
        check()

The factory must accept keyword overrides of config fields (``seed``,
``batch_size``) and return a fresh, unfitted detector sized for a quick test.
"""

from __future__ import annotations

import atexit
import csv
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from adcore.detector import Detector, load_model
from adcore.errors import ConfigError, DataError, NotFittedError

__all__ = ["CHECKS", "CLI_CHECKS", "SIZE", "Factory", "check_batch_size_one", "check_checkpoint_only_when_given",
           "check_defaults_rank_defects_higher", "check_defects_score_higher", "check_deterministic_by_seed",
           "check_empty_training_set", "check_fit_returns_self", "check_interrupt_keeps_no_model",
           "check_non_square_input", "check_output_shapes_and_dtypes", "check_predict_before_fit",
           "check_resume_after_interrupt", "check_run_then_predict", "check_save_load_roundtrip",
           "check_unknown_parameter", "conformance_data", "detector_checks", "parametrize_with_checks",
           "parametrize_with_cli_checks"]

Factory = Callable[..., Detector]
SIZE = 64


@functools.lru_cache(maxsize=1)
def _synthetic_root() -> Path:
    from adcore.data import synthetic

    scratch = tempfile.mkdtemp(prefix="adcore-checks-")
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # the test process's own scratch data set
    root = Path(scratch) / "synthetic"
    return synthetic.generate(root, categories=("machined_part",), seed=0, size=96,
                              n_train=16, n_test_good=6, n_test_defect=2)


@functools.lru_cache(maxsize=1)
def _data() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Train images, test images, test labels and test masks at SIZE × SIZE."""
    from adcore.data.folder import open_folder
    from adcore.data.loading import load_images, load_masks

    category = open_folder(_synthetic_root())[0]
    train = load_images([s.path for s in category.train], SIZE)
    test = load_images([s.path for s in category.test], SIZE)
    labels = np.array([s.label for s in category.test])
    masks = load_masks([s.mask_path for s in category.test], SIZE)
    return train, test, labels, masks


def conformance_data() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """The kit's small synthetic set: train images, test images, labels and masks at 64 px."""
    return _data()


def _fitted(factory: Factory, **overrides: object) -> Detector:
    train = _data()[0]
    return factory(**overrides).fit(train)


def _same(a: np.ndarray, b: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max())),
                               err_msg=what)


def check_fit_returns_self(factory: Factory) -> None:
    """fit() returns the detector itself, marked fitted."""
    detector = factory()
    result = detector.fit(_data()[0])
    assert result is detector and detector.fitted_, "fit() must return self (scikit-learn convention)"


def check_unknown_parameter(factory: Factory) -> None:
    """An unknown parameter is a ConfigError naming it."""
    try:
        factory(no_such_parameter=1)
    except ConfigError as exc:
        assert "no_such_parameter" in str(exc), f"the error should name the parameter: {exc}"
        return
    raise AssertionError("constructing with an unknown parameter must raise adcore.errors.ConfigError")


def check_predict_before_fit(factory: Factory) -> None:
    """predict() before fit() raises NotFittedError."""
    try:
        factory().predict(_data()[1][:1], progress=None)
    except NotFittedError:
        return
    raise AssertionError("predict() before fit() must raise adcore.errors.NotFittedError")


def check_empty_training_set(factory: Factory) -> None:
    """fit() on no images raises DataError."""
    try:
        factory().fit(torch.zeros(0, 3, SIZE, SIZE))
    except DataError:
        return
    raise AssertionError("fit() on an empty set must raise adcore.errors.DataError")


def check_output_shapes_and_dtypes(factory: Factory) -> None:
    """predict() gives float32 scores (N,) and maps (N, H, W), all finite."""
    test = _data()[1][:3]
    prediction = _fitted(factory).predict(test, progress=None)
    assert prediction.scores.shape == (3,), f"scores must be (N,), got {prediction.scores.shape}"
    assert prediction.anomaly_maps.shape == (3, SIZE, SIZE), (
        f"maps must be (N, H, W) at the input resolution, got {prediction.anomaly_maps.shape}")
    assert prediction.scores.dtype == np.float32 and prediction.anomaly_maps.dtype == np.float32
    assert np.isfinite(prediction.scores).all() and np.isfinite(prediction.anomaly_maps).all(), "non-finite output"


def check_batch_size_one(factory: Factory) -> None:
    """Predicting one image at a time gives the same outputs as one batch."""
    test = _data()[1][:3]
    detector = _fitted(factory)
    whole = detector.predict(test, progress=None)
    single = detector.predict([test[i: i + 1] for i in range(3)], progress=None)
    _same(whole.scores, single.scores, "scores depend on the batch composition")
    _same(whole.anomaly_maps, single.anomaly_maps, "maps depend on the batch composition")


def check_non_square_input(factory: Factory) -> None:
    """Non-square images give maps of the same non-square size."""
    train = torch.nn.functional.interpolate(_data()[0], size=(SIZE, SIZE + 32), mode="bilinear")
    detector = factory().fit(train)
    test = torch.nn.functional.interpolate(_data()[1][:2], size=(SIZE, SIZE + 32), mode="bilinear")
    maps = detector.predict(test, progress=None).anomaly_maps
    assert maps.shape == (2, SIZE, SIZE + 32), f"expected maps (2, {SIZE}, {SIZE + 32}), got {maps.shape}"


def check_deterministic_by_seed(factory: Factory) -> None:
    """Two fits with the same seed give identical outputs."""
    test = _data()[1][:4]
    first = _fitted(factory, seed=3).predict(test, progress=None)
    second = _fitted(factory, seed=3).predict(test, progress=None)
    _same(first.scores, second.scores, "same seed, different scores: seed every random draw from config.seed")
    _same(first.anomaly_maps, second.anomaly_maps, "same seed, different maps")


def check_save_load_roundtrip(factory: Factory) -> None:
    """save() then load_model() predicts identically, without unpickling anything."""
    test = _data()[1][:3]
    detector = _fitted(factory)
    before = detector.predict(test, progress=None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = detector.save(Path(tmp) / "model", metadata={"note": "check"})
        assert {p.name for p in folder.iterdir()} == {"model.safetensors", "config.json"}, (
            "a model folder holds only model.safetensors and config.json")
        loaded, meta = load_model(folder)
    assert meta == {"note": "check"}, "metadata must survive save/load"
    after = loaded.predict(test, progress=None)
    _same(before.scores, after.scores, "scores differ after save/load: put all fitted state in _get_state()")
    _same(before.anomaly_maps, after.anomaly_maps, "maps differ after save/load")


def check_defects_score_higher(factory: Factory, min_auroc: float = 0.7,
                               min_image_auroc: float | None = None,
                               overrides: dict[str, object] | None = None) -> None:
    """Planted defects score higher than normal images on the synthetic set."""
    from adcore import metrics

    _, test, labels, masks = _data()
    prediction = _fitted(factory, **(overrides or {})).predict(test, progress=None)
    image = metrics.image_auroc(labels, prediction.scores)
    pixel = metrics.pixel_auroc(masks, prediction.anomaly_maps)
    image_bar = min_auroc if min_image_auroc is None else min_image_auroc
    assert image is not None and image >= image_bar, f"image AUROC {image} < {image_bar} on planted defects"
    assert pixel is not None and pixel >= min_auroc, f"pixel AUROC {pixel} < {min_auroc} on planted defects"


def check_defaults_rank_defects_higher(factory: Factory, min_auroc: float = 0.5) -> None:
    """At its default schedule (no quick-test settings), a trained detector scores planted
    defects above normal images: the bar a student that cannot match its teacher fails."""
    from adcore import metrics

    train, test, labels, _ = _data()
    defaults = type(factory())(seed=0)
    scores = defaults.fit(train).predict(test, progress=None).scores
    image = metrics.image_auroc(labels, scores)
    assert image is not None and image >= min_auroc, (
        f"at the default schedule normal images outscore planted defects: image AUROC {image:.3f} < {min_auroc} "
        f"(normal mean {scores[labels == 0].mean():.4g}, defect mean {scores[labels == 1].mean():.4g})")


def check_checkpoint_only_when_given(factory: Factory) -> None:
    """A trained detector's plain fit() never touches a checkpoint; given one, fit saves it and resumes from it."""
    from unittest import mock

    from adcore import checkpoints

    train = _data()[0]
    refused = AssertionError("fit() without a checkpoint read or wrote one")
    with mock.patch.object(checkpoints, "load", side_effect=refused), \
            mock.patch.object(checkpoints, "save", side_effect=refused):
        factory().fit(train)
    with tempfile.TemporaryDirectory() as tmp:
        place = checkpoints.Place(Path(tmp) / "checkpoint", "check")
        factory().fit(train, checkpoint=place)
        assert (place.folder / checkpoints.META_FILE).is_file(), (
            "fit(checkpoint=...) saved nothing: pass fitting.checkpoint to train(checkpoint=...)")
        again = checkpoints.Place(place.folder, "check")
        factory().fit(train, checkpoint=again)
    assert again.resumed_from is not None, "a second fit given the same checkpoint did not resume from it"


CHECKS = (check_unknown_parameter, check_predict_before_fit, check_empty_training_set, check_fit_returns_self,
          check_output_shapes_and_dtypes, check_batch_size_one, check_non_square_input,
          check_deterministic_by_seed, check_save_load_roundtrip, check_defects_score_higher)


def detector_checks(factory: Factory, min_auroc: float = 0.7, min_image_auroc: float | None = None,
                    defect_overrides: dict[str, object] | None = None,
                    min_default_auroc: float = 0.5) -> Iterator[Callable[[], None]]:
    """Yield every check bound to ``factory``, each named after its check.

    Args:
        factory: builds a fresh, unfitted detector from keyword overrides.
        min_auroc: the bar of the planted-defect check (image and pixel AUROC).
        min_image_auroc: a separate image-AUROC bar, for methods whose image score
            cannot see defects at the kit's 64 px (say why where you lower it).
        defect_overrides: parameters for the planted-defect check only, e.g. a longer
            schedule for a method that needs more steps than the other checks.
        min_default_auroc: the bar of the default-schedule check, which detectors tagged
            ``trainable`` also get (say why where you lower it), with the checkpoint check.
    """
    checks: list[Callable[..., None]] = list(CHECKS)
    if factory().tags.get("trainable"):
        checks += [check_checkpoint_only_when_given, check_defaults_rank_defects_higher]
    for check in checks:
        if check is check_defects_score_higher:
            bound = functools.partial(check, factory, min_auroc, min_image_auroc, defect_overrides)
        elif check is check_defaults_rank_defects_higher:
            bound = functools.partial(check, factory, min_default_auroc)
        else:
            bound = functools.partial(check, factory)
        functools.update_wrapper(bound, check)
        yield bound


def parametrize_with_checks(factory: Factory, min_auroc: float = 0.7,  # type: ignore[no-untyped-def]
                            min_image_auroc: float | None = None,
                            defect_overrides: dict[str, object] | None = None, min_default_auroc: float = 0.5):
    """A pytest parametrize decorator over :func:`detector_checks`, ids = check names."""
    import pytest

    checks = list(detector_checks(factory, min_auroc, min_image_auroc, defect_overrides, min_default_auroc))
    return pytest.mark.parametrize("check", checks, ids=[c.__name__ for c in checks])


# -- command-line checks, by registered detector name -----------------------
def _set_options(assignments: Sequence[str]) -> list[str]:
    return [part for a in assignments for part in ("--set", a)]


def check_run_then_predict(name: str, assignments: Sequence[str] = ()) -> None:
    """The model `adcore run` saves gives the run's own test scores under `adcore predict`."""
    from click.testing import CliRunner

    from adcore.cli.main import cli

    root = _synthetic_root()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run = CliRunner().invoke(cli, ["run", "--detector", name, "--data", str(root), "--image-size", str(SIZE),
                                       "--no-panels", "--out", str(out / "run"), *_set_options(assignments)])
        assert run.exit_code == 0, f"adcore run failed:\n{run.output}"
        (folder,) = [p.parent for p in (out / "run").rglob("model") if p.is_dir()]
        with open(folder / "predictions.csv") as handle:
            expected = {row["image"]: float(row["score"]) for row in csv.DictReader(handle)}
        test_dirs = sorted(p for p in (root / "machined_part" / "test").iterdir() if p.is_dir())
        predict = CliRunner().invoke(cli, ["predict", str(folder), *map(str, test_dirs), "--out", str(out / "p")])
        assert predict.exit_code == 0, f"adcore predict failed:\n{predict.output}"
        rows = json.loads((out / "p" / "predictions.json").read_text())["predictions"]
    got = {"/".join(Path(row["image"]).parts[-2:]): row["score"] for row in rows}
    assert len(got) == len(expected), f"predicted {len(got)} images, the run tested {len(expected)}"
    keys = sorted(expected)
    _same(np.array([expected[k] for k in keys]), np.array([got[k.split("/", 1)[1]] for k in keys]),
          "`adcore predict` scores differ from the run's: save every fitted tensor in _get_state()")


def check_interrupt_keeps_no_model(name: str, assignments: Sequence[str] = (), timeout_s: float = 120) -> None:
    """Ctrl-C (SIGINT) during training exits with status 130 and leaves no model, only a checkpoint."""
    root = _synthetic_root()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        command = [sys.executable, "-c", "from adcore.cli.main import cli; cli()", "run", "--detector", name,
                   "--data", str(root), "--image-size", str(SIZE), "--out", str(out), *_set_options(assignments)]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   env={**os.environ, "ADCORE_PROGRESS": "1"}, preexec_fn=_ctrl_c_enabled)
        stderr = _read_until(process, "epoch/s", timeout_s)  # tqdm draws the training bar
        try:
            assert "epoch/s" in stderr, f"training never started (give enough epochs):\n{stderr[-2000:]}"
            process.send_signal(signal.SIGINT)
            _, rest = process.communicate(timeout=timeout_s)
        finally:
            process.kill()
            process.wait()
        stderr += rest.decode(errors="replace")
        assert process.returncode == 130, f"exit status {process.returncode} after SIGINT:\n{stderr[-2000:]}"
        assert "Interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
        files = [p.relative_to(out) for p in out.rglob("*") if p.is_file()] if out.exists() else []
        left = [p.as_posix() for p in files if not any(part.endswith(".checkpoint") for part in p.parts)]
        assert not left, f"an interrupted run left {left} (only its training checkpoint may stay)"


def check_resume_after_interrupt(name: str, assignments: Sequence[str] = (), timeout_s: float = 300) -> None:
    """A run stopped by SIGINT after a finished epoch resumes from its checkpoint to the uninterrupted scores."""
    root = _synthetic_root()
    with tempfile.TemporaryDirectory() as tmp:
        def command(out: Path) -> list[str]:
            return [sys.executable, "-c", "from adcore.cli.main import cli; cli()", "run", "--detector", name,
                    "--data", str(root), "--image-size", str(SIZE), "--no-panels", "--out", str(out),
                    *_set_options(assignments)]

        whole, split = Path(tmp) / "whole", Path(tmp) / "split"
        subprocess.run(command(whole), check=True, capture_output=True, timeout=timeout_s)
        process = subprocess.Popen(command(split), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   preexec_fn=_ctrl_c_enabled)
        deadline = time.monotonic() + timeout_s
        while process.poll() is None and not list(split.rglob("state.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.wait(timeout=timeout_s)
        assert process.returncode == 130, (f"the run ended ({process.returncode}) before SIGINT; "
                                           "give it more epochs so that it is still training")
        subprocess.run(command(split), check=True, capture_output=True, timeout=timeout_s)
        read = [{row["image"]: float(row["score"])
                 for row in csv.DictReader(next(out.rglob("predictions.csv")).read_text().splitlines())}
                for out in (whole, split)]
        logs = [json.loads(next(out.rglob("training_log.json")).read_text()) for out in (whole, split)]
        resumed = [json.loads(next(out.rglob("metrics.json")).read_text())["resumed_from_epoch"]
                   for out in (whole, split)]
        assert not list(split.rglob("*.checkpoint")), "the checkpoint must be deleted once the model is written"
    assert resumed[0] is None and (resumed[1] or 0) >= 1, f"the second run did not resume ({resumed[1]})"
    assert logs[0] == logs[1], f"loss history differs after resuming: {logs[0]} vs {logs[1]}"
    keys = sorted(read[0])
    _same(np.array([read[0][k] for k in keys]), np.array([read[1][k] for k in keys]),
          "scores after resuming differ from an uninterrupted run: pass every module, optimiser and "
          "random generator of the training to train(saved=..., rngs=...)")


def _ctrl_c_enabled() -> None:
    """Give the child the default SIGINT disposition, as a terminal would.

    A test suite started in the background (``cmd &`` in a script) inherits SIGINT as
    ignored, and Python then never raises KeyboardInterrupt: the checks would time out.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _read_until(process: subprocess.Popen, marker: str, timeout_s: float) -> str:  # type: ignore[type-arg]
    """Read the process's stderr until ``marker`` shows up, it exits, or time runs out."""
    import selectors

    assert process.stderr is not None
    text = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while marker.encode() not in text and time.monotonic() < deadline:
            if not selector.select(timeout=0.5):
                if process.poll() is not None:
                    break
                continue
            chunk = os.read(process.stderr.fileno(), 65536)
            if not chunk:
                break
            text += chunk
    return text.decode(errors="replace")


CLI_CHECKS = (check_run_then_predict, check_interrupt_keeps_no_model)


def parametrize_with_cli_checks(name: str, assignments: Sequence[str] = (),  # type: ignore[no-untyped-def]
                                interrupt_assignments: Sequence[str] = ("epochs=100000",)):
    """A pytest parametrize decorator over the command-line checks of an installed detector.

    Every detector gets the run -> predict check; those tagged ``trainable`` also
    the interrupt check. ``assignments`` are ``--set`` values that keep the run
    quick; the interrupt check adds ``interrupt_assignments`` (enough epochs to
    still be training).
    """
    import pytest

    from adcore.plugins import get_registry

    checks = [functools.partial(check_run_then_predict, name, tuple(assignments))]
    if get_registry().load_object("detector", name).tags.get("trainable"):
        checks.append(functools.partial(check_interrupt_keeps_no_model, name,
                                        (*assignments, *interrupt_assignments)))
    for check, original in zip(checks, CLI_CHECKS):
        functools.update_wrapper(check, original)
    return pytest.mark.parametrize("check", checks, ids=[c.__name__ for c in checks])
