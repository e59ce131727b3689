"""A saved model is checked before anything runs.

Each corruption of ``config.json`` or ``model.safetensors`` must end ``adcore predict``
with exit status 1, exactly one stderr line "Error: <file>: ..." naming the field or
tensor, no traceback and no output folder. Every case runs through the CLI in-process
(click's runner: the real command and error boundary); a subprocess costs 3-7 s here
(torch and timm imports), so a sample of the cases also runs as ``adcore predict``
in a child process.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from adcore.cli.main import cli
from adcore.detector import load_model
from adcore.errors import ModelFileError
from adcore.modelfile import CONFIG_FILE, LOSS_HISTORY, TENSORS_FILE
from adcore.plugins import get_registry

ADCORE = Path(sys.executable).with_name("adcore")
SIZE = 32
METADATA = {"image_size": SIZE, "image_threshold": 1.0, "pixel_threshold": 2.0, "threshold_source": "holdout",
            "display_range": [0.0, 3.0], "category": "tiny"}
#: A tiled model's framing (metadata.framing), for the cases that damage it.
FRAMING = {"resize": "squash", "tile": 64, "tile_overlap": 0.25, "tile_scale": 1.0}
DELETE = object()
Mutation = Callable[[Path], None]


def _images(count: int, size: int) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PaDiM model (4 tensors: mean, inv_covariance, channels, grid) and three copies of an image beside it, made once."""
    from adcore_plugin_padim.detector import PaDiM

    root = tmp_path_factory.mktemp("saved")
    detector = PaDiM(backbone_weights="random", n_features=8, layers=(8, 16), batch_size=1)
    detector.fit(_images(3, SIZE)).save(root / "model", metadata=METADATA)
    pixels = (np.random.default_rng(0).random((SIZE, SIZE, 3)) * 255).astype(np.uint8)
    for name in ("a", "b", "c"):
        Image.fromarray(pixels).save(root / f"{name}.png")
    return root


@pytest.fixture
def model(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved model that a test may damage."""
    return Path(shutil.copytree(saved / "model", tmp_path / "model"))


# -- mutations -----------------------------------------------------------------
def set_field(dotted: str, value: Any) -> Mutation:
    """Set (or with DELETE remove) a field of config.json, e.g. "config.sigma"."""

    def mutate(folder: Path) -> None:
        document = json.loads((folder / CONFIG_FILE).read_text())
        *parents, key = dotted.split(".")
        target = document
        for parent in parents:
            target = target[parent]
        if value is DELETE:
            del target[key]
        else:
            target[key] = value
        (folder / CONFIG_FILE).write_text(json.dumps(document))

    return mutate


def write_file(name: str, text: str) -> Mutation:
    return lambda folder: (folder / name).write_text(text)


def remove_file(name: str) -> Mutation:
    return lambda folder: (folder / name).unlink()


def edit_tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Mutation:
    def mutate(folder: Path) -> None:
        tensors = load_file(str(folder / TENSORS_FILE))
        change(tensors)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / TENSORS_FILE))

    return mutate


def set_tensor(name: str, make: Callable[[Any], torch.Tensor]) -> Mutation:
    """Replace (or add) tensor ``name`` by ``make(old)``; old is None for a new name."""

    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = make(tensors.get(name))

    return edit_tensors(change)


def drop_tensor(name: str) -> Mutation:
    return edit_tensors(lambda tensors: tensors.pop(name))


def rename_tensor(old: str, new: str) -> Mutation:
    return edit_tensors(lambda tensors: tensors.__setitem__(new, tensors.pop(old)))


def poke(value: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The tensor with its first element set to ``value`` (NaN, inf)."""

    def make(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        tensor.view(-1)[0] = value
        return tensor

    return make


C, T = CONFIG_FILE, TENSORS_FILE
NAN, INF = float("nan"), float("inf")
#: (id, mutation, file named, fragment of the message)
CASES: list[tuple[str, Mutation, str, str]] = [
    ("config-not-json", write_file(C, "{"), C, "not valid JSON"),
    ("config-a-list", write_file(C, "[]"), C, "JSON object"),
    ("config-json-missing", remove_file(C), "", "config.json"),
    ("unknown-top-field", set_field("extra", 1), C, "'extra'"),
    *[(f"{key}-missing", set_field(key, DELETE), C, f"'{key}'")
      for key in ("format", "format_version", "detector", "adcore_version", "plugin", "plugin_version", "config",
                  "metadata")],
    *[(f"{key}-{kind}", set_field(key, value), C, f"'{key}'")
      for key, kind, value in [("format", "null", None), ("format", "list", ["adcore-model"]),
                               ("format_version", "string", "1"), ("format_version", "bool", True),
                               ("format_version", "null", None), ("detector", "null", None),
                               ("detector", "list", ["padim"]), ("adcore_version", "number", 0.1),
                               ("plugin", "null", None), ("plugin_version", "number", 1),
                               ("config", "list", []), ("config", "null", None), ("metadata", "list", []),
                               ("metadata", "string", "x")]],
    ("format-other", set_field("format", "onnx"), C, "'format'"),
    ("format-version-newer", set_field("format_version", 2), C, "format version 2"),
    ("adcore-version-garbled", set_field("adcore_version", "latest"), C, "'adcore_version'"),
    ("adcore-version-newer-major", set_field("adcore_version", "99.0.0"), C, "99.0.0"),
    ("detector-unknown", set_field("detector", "nosuch"), C, "'nosuch'"),
    ("detector-other", set_field("detector", "patchcore"), C, "'n_features' is not a parameter of PatchCore"),
    ("config-unknown-key", set_field("config.foo", 1), C, "'foo'"),
    ("config-backbone-unknown", set_field("config.backbone", "nosuch"), C, "Unknown backbone 'nosuch'"),
    *[(f"config-{key}-missing", set_field(f"config.{key}", DELETE), C, f"'{key}'")
      for key in ("seed", "batch_size", "device", "backbone", "backbone_weights", "layers", "n_features",
                  "covariance_eps", "sigma")],
    *[(f"config-{key}-{kind}", set_field(f"config.{key}", value), C, f"'{key}'")
      for key, kind, value in [
          ("seed", "string", "0"), ("seed", "negative", -1), ("seed", "null", None),
          ("batch_size", "zero", 0), ("batch_size", "float", 2.5), ("batch_size", "list", [1]),
          ("device", "number", 5), ("device", "list", []),
          ("backbone", "null", None),
          ("backbone_weights", "number", 3), ("backbone_weights", "list", ["random"]),
          ("layers", "string", "8,16"), ("layers", "bad-stride", [3]), ("layers", "empty", []),
          ("layers", "decreasing", [16, 8]), ("layers", "null", None),
          ("n_features", "zero", 0), ("n_features", "string", "8"), ("n_features", "too-many", 1000),
          ("covariance_eps", "zero", 0), ("covariance_eps", "string", "x"), ("covariance_eps", "inf", INF),
          ("sigma", "negative", -1), ("sigma", "nan", NAN), ("sigma", "null", None)]],
    ("config-n_features-other", set_field("config.n_features", 10), T, "tensor 'mean' has shape (16, 8); "
                                                                        "expected (P, 10)"),
    *[(f"metadata-{key}-{kind}", set_field(f"metadata.{key}", value), C, f"'{key}'")
      for key, kind, value in [
          ("image_size", "string", "32"), ("image_size", "too-small", 16), ("image_size", "too-large", 100000),
          ("image_size", "float", 32.5), ("image_size", "bool", True), ("image_size", "null", None),
          ("image_threshold", "string", "0.5"), ("image_threshold", "list", []), ("image_threshold", "nan", NAN),
          ("pixel_threshold", "inf", INF), ("pixel_threshold", "object", {}),
          ("threshold_source", "number", 3), ("threshold_source", "list", []),
          ("display_range", "one", [1.0]), ("display_range", "reversed", [2.0, 1.0]),
          ("display_range", "string", "0,3"), ("display_range", "nan", [0.0, NAN]), ("display_range", "null", None),
          ("category", "number", 3), ("category", "null", None)]],
    *[(f"metadata-framing-{kind}", set_field("metadata.framing", value), C, fragment)
      for kind, value, fragment in [
          ("string", "tiles", "metadata field 'framing' must be an object"),
          ("no-tile", {"resize": "squash", "tile_overlap": 0.0, "tile_scale": 1.0}, "'framing.tile' is missing"),
          ("resize-other", {**FRAMING, "resize": "crop"}, "'framing.resize' must be one of squash, keep"),
          ("tile-small", {**FRAMING, "tile": 8}, "'framing.tile' must be null or an int in [32, 4096]"),
          ("tile-float", {**FRAMING, "tile": 64.0}, "'framing.tile'"),
          ("overlap-one", {**FRAMING, "tile_overlap": 1.0}, "'framing.tile_overlap'"),
          ("scale-zero", {**FRAMING, "tile_scale": 0}, "'framing.tile_scale'"),
          ("scale-nan", {**FRAMING, "tile_scale": NAN}, "'framing.tile_scale'"),
          ("extra", {**FRAMING, "mode": "x"}, "unknown metadata field 'framing.mode'")]],
    ("tensors-missing", remove_file(T), T, "cannot read"),
    ("tensors-garbage", write_file(T, "not tensors"), T, "cannot read"),
    ("tensor-extra", set_tensor("extra", lambda t: torch.zeros(3)), T, "unexpected tensor 'extra'"),
    *[(f"tensor-{name}-missing", drop_tensor(name), T, f"tensor '{name}' is missing")
      for name in ("mean", "inv_covariance", "channels", "grid")],
    *[(f"tensor-{name}-renamed", rename_tensor(name, name + "s"), T,
       f"tensor '{name}' is missing (found unexpected tensor '{name}s')")
      for name in ("mean", "inv_covariance", "channels", "grid")],
    ("tensor-mean-shape", set_tensor("mean", lambda t: t[:, :5]), T, "tensor 'mean' has shape (16, 5); "
                                                                    "expected (P, 8)"),
    ("tensor-inv_covariance-shape", set_tensor("inv_covariance", lambda t: t[:, :, :5]), T,
     "tensor 'inv_covariance' has shape (16, 8, 5); expected (16, 8, 8) (P = 16 from tensor 'mean')"),
    ("tensor-inv_covariance-rows", set_tensor("inv_covariance", lambda t: t[:9]), T,
     "tensor 'inv_covariance' has shape (9, 8, 8); expected (16, 8, 8)"),
    ("tensor-channels-shape", set_tensor("channels", lambda t: t[:5]), T, "tensor 'channels' has shape (5,)"),
    ("tensor-grid-shape", set_tensor("grid", lambda t: t[None]), T, "tensor 'grid' has shape (1, 2)"),
    *[(f"tensor-{name}-dtype", set_tensor(name, lambda t, d=dtype: t.to(d)), T, f"tensor '{name}' has dtype")
      for name, dtype in [("mean", torch.float64), ("inv_covariance", torch.float16), ("channels", torch.int32),
                          ("grid", torch.float32)]],
    *[(f"tensor-{name}-{kind}", set_tensor(name, poke(value)), T, f"tensor '{name}' has non-finite values (1 {kind} of")
      for name in ("mean", "inv_covariance") for kind, value in (("NaN", NAN), ("infinite", INF))],
    ("tensor-mean-all-nan", set_tensor("mean", lambda t: torch.full_like(t, NAN)), T, "has non-finite values (128 NaN of 128)"),
    ("tensor-grid-values", set_tensor("grid", lambda t: torch.tensor([3, 3])), T, "tensor 'grid' is 3x3"),
    ("tensor-channels-range", set_tensor("channels", lambda t: t + 1000), T, "tensor 'channels'"),
    ("tensor-channels-order", set_tensor("channels", lambda t: t.flip(0)), T, "tensor 'channels'"),
    (f"{LOSS_HISTORY}-2d", set_tensor(LOSS_HISTORY, lambda t: torch.ones(2, 2)), T, f"'{LOSS_HISTORY}'"),
    (f"{LOSS_HISTORY}-dtype", set_tensor(LOSS_HISTORY, lambda t: torch.ones(3, dtype=torch.float64)), T,
     f"'{LOSS_HISTORY}'"),
    (f"{LOSS_HISTORY}-nan", set_tensor(LOSS_HISTORY, lambda t: torch.tensor([1.0, NAN])), T, f"'{LOSS_HISTORY}'"),
]
#: A sample that also runs as a child process: one per kind of check.
IN_SUBPROCESS = ["format_version-string", "detector-other", "config-sigma-nan", "tensor-mean-shape",
                 "tensor-mean-all-nan"]


def _assert_one_error_line(stderr: str, model: Path, file: str, fragment: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"Error: {model / file if file else model}"), lines[0]
    assert fragment in lines[0] and "Traceback" not in stderr, lines[0]


@pytest.mark.parametrize(("mutate", "file", "fragment"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_corrupt_model_is_one_line_through_the_cli(model: Path, saved: Path, tmp_path: Path, mutate: Mutation,
                                                    file: str, fragment: str) -> None:
    mutate(model)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["predict", str(model), str(saved / "a.png"), "--out", str(out)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    _assert_one_error_line(result.stderr, model, file, fragment)
    assert not out.exists()


@pytest.mark.parametrize(("mutate", "file", "fragment"), [c[1:] for c in CASES if c[0] in IN_SUBPROCESS],
                         ids=[c[0] for c in CASES if c[0] in IN_SUBPROCESS])
def test_corrupt_model_is_one_line_from_adcore_predict(model: Path, saved: Path, tmp_path: Path, mutate: Mutation,
                                                        file: str, fragment: str) -> None:
    mutate(model)
    out = tmp_path / "out"
    done = subprocess.run([str(ADCORE), "predict", str(model), str(saved / "a.png"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    _assert_one_error_line(done.stderr, model, file, fragment)
    assert not out.exists()


def test_case_ids_are_unique_and_cover_the_sample() -> None:
    assert set(IN_SUBPROCESS) <= {case[0] for case in CASES}
    assert len({case[0] for case in CASES}) == len(CASES)


def test_intact_model_predicts_and_warns_once_about_random_weights(saved: Path, tmp_path: Path) -> None:
    """Three one-image batches, one warning line; the model file records the random weights."""
    out = tmp_path / "out"
    images = [str(saved / f"{name}.png") for name in ("a", "b", "c")]
    done = subprocess.run([str(ADCORE), "predict", str(saved / "model"), *images, "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line] == [
        "Warning: backbone 'efficientnet_lite0' has random weights (backbone_weights='random'); its features "
        "are noise, fit only for tests"]
    assert len(json.loads((out / "predictions.json").read_text())["predictions"]) == 3
    assert json.loads((saved / "model" / CONFIG_FILE).read_text())["config"]["backbone_weights"] == "random"


@pytest.mark.parametrize("mutate", [set_field("metadata", {}), set_field("metadata.display_range", DELETE),
                                    set_field("metadata.image_threshold", None),
                                    set_tensor(LOSS_HISTORY, lambda t: torch.tensor([2.0, 1.5])),
                                    set_field("adcore_version", "0.9.1.dev3"), set_field("metadata.framing", FRAMING)],
                         ids=["no-metadata", "no-display-range", "no-threshold", "loss-history", "older-minor",
                              "tiled-framing"])
def test_what_a_model_may_leave_out_or_add_still_loads(model: Path, mutate: Mutation) -> None:
    mutate(model)
    detector, _ = load_model(model)
    assert detector.fitted_


def test_detector_load_checks_too(model: Path) -> None:
    from adcore.detector import Detector

    set_tensor("mean", lambda t: t[:, :5])(model)
    with pytest.raises(ModelFileError, match="tensor 'mean' has shape"):
        Detector.load(model)


def test_run_records_random_weights_in_metrics_and_model(tiny_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(cli, ["run", "--detector", "patchcore", "--data", str(tiny_root), "--out", str(out),
                                      "--backbone-weights", "random", "--image-size", str(SIZE), "--no-panels"])
    assert result.exit_code == 0, result.output
    category = out / "patchcore" / "machined_part"
    metrics = json.loads((category / "metrics.json").read_text())
    assert metrics["config"]["backbone_weights"] == "random"
    assert json.loads((category / "model" / CONFIG_FILE).read_text())["config"]["backbone_weights"] == "random"


# -- every plugin ------------------------------------------------------------------
#: The cheapest settings of each detector: random backbone weights, one epoch, narrow networks.
CHEAP: dict[str, dict[str, Any]] = {
    "patchcore": {"backbone_weights": "random"},
    "padim": {"backbone_weights": "random", "n_features": 20},
    "spade": {"backbone_weights": "random", "k_images": 2},
    "simplenet": {"backbone_weights": "random", "epochs": 1, "dsc_hidden": 16},
    "reverse_distillation": {"backbone_weights": "random", "epochs": 1, "train_batch_size": 2},
    "riad": {"epochs": 1, "base_width": 4, "cell_sizes": (8, 16), "train_batch_size": 2},
    "draem": {"epochs": 1, "base_width": 4, "disc_base_width": 4, "n_textures": 2, "train_crop": None,
              "train_batch_size": 2},
}


@pytest.mark.parametrize("name", list(CHEAP))
def test_each_plugin_declares_its_tensors(name: str, tmp_path: Path) -> None:
    """A fresh model loads; a reshaped or NaN tensor (the first float one with two or more values) does not."""
    detector = get_registry().load_object("detector", name)(**CHEAP[name]).fit(_images(4, SIZE))
    folder = detector.save(tmp_path / "model")
    assert load_model(folder)[0].fitted_
    tensors = load_file(str(folder / TENSORS_FILE))
    target = next(k for k, v in tensors.items() if k != LOSS_HISTORY and v.is_floating_point() and v.numel() > 1)
    for make, fragment in ((lambda t: t.reshape(-1)[1:], f"tensor '{target}' has shape"),
                           (poke(NAN), f"tensor '{target}' has non-finite values (1 NaN of")):
        shutil.copytree(folder, tmp_path / "bad", dirs_exist_ok=True)
        set_tensor(target, make)(tmp_path / "bad")
        with pytest.raises(ModelFileError, match=re.escape(fragment)) as info:
            load_model(tmp_path / "bad")
        assert str(info.value).startswith(f"{tmp_path / 'bad' / TENSORS_FILE}: ")


# -- random backbone weights ----------------------------------------------------------
def test_random_weights_warn_once_per_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from adcore import features

    monkeypatch.setattr(features, "_warned_random", set())
    for _ in range(2):
        features.FeatureExtractor("efficientnet_lite0", (8,), weights="random")
    assert capsys.readouterr().err.count("has random weights") == 1


def test_a_timm_backbone_without_pretrained_weights_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm would keep random weights with only a log line; adcore stops instead."""
    import timm

    from adcore.backbones import timm_backbones
    from adcore.errors import WeightsError

    class NoWeights:
        hf_hub_id = None

    monkeypatch.setattr(timm.models, "get_pretrained_cfg", lambda arch: NoWeights())
    with pytest.raises(WeightsError, match="no pretrained weights"):
        timm_backbones.create_resnet18((8,))


def test_the_model_file_format_sits_below_the_detector():
    """adcore.detector imports adcore.modelfile, never the other way round: no import cycle between them."""
    code = "import sys, adcore.modelfile; print('adcore.detector' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "False"
