"""The model file format (its names and version) and the checks of a saved model folder before anything runs.

``config.json`` is checked against its schema (top-level fields, format, versions,
detector, its parameters, the metadata ``adcore predict`` reads) and every tensor of
``model.safetensors`` against what the detector declares for that config (name,
shape, dtype, finite values). A problem is a :class:`ModelFileError` of one line that
names the file and the field or tensor, so a damaged, foreign or newer model stops
``adcore predict`` with one clear line instead of a traceback or silent garbage (an
all-NaN memory bank would otherwise call every part normal).
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch
from torch import nn

from adcore import __version__
from adcore.config import from_json_dict
from adcore.errors import AdcoreError, ModelFileError
from adcore.state import modules_state

if TYPE_CHECKING:  # annotations only: adcore.detector imports this module, never the other way round
    from adcore.detector import Detector

__all__ = ["CONFIG_FILE", "IMAGE_SIZE_RANGE", "LOSS_HISTORY", "MODEL_FORMAT", "MODEL_FORMAT_VERSION", "TENSORS_FILE",
           "TensorSpec", "module_specs", "open_model"]

MODEL_FORMAT = "adcore-model"
MODEL_FORMAT_VERSION = 1
TENSORS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LOSS_HISTORY = "loss_history"  # reserved tensor name: the training loss per epoch, saved by the core

#: Image sizes a model file may name (``metadata.image_size``), inclusive.
IMAGE_SIZE_RANGE = (32, 8192)
_TOP_LEVEL: dict[str, type] = {"format": str, "format_version": int, "detector": str, "adcore_version": str,
                               "plugin": str, "plugin_version": str, "config": dict, "metadata": dict}
_KIND_NAMES: dict[Any, str] = {type(None): "null", bool: "true or false", int: "an int", float: "a finite number",
                               str: "a string", dict: "an object"}
_VERSION = re.compile(r"(\d+)\.\d+(\.\d+)*([.+-]?[0-9A-Za-z]+)*")
_CHUNK = 1 << 24  # elements checked for finiteness at once (bounds the temporary mask)


@attrs.frozen
class TensorSpec:
    """Shape and dtype a saved tensor must have.

    Attributes:
        shape: one entry per dimension: an int is that exact size; a name (e.g. "N",
            the rows of a memory bank) is any size, but the same name means the same
            size in every tensor of the model.
        dtype: the exact dtype.
    """

    shape: tuple[int | str, ...]
    dtype: torch.dtype = torch.float32


def module_specs(modules: Mapping[str, nn.Module]) -> dict[str, TensorSpec]:
    """Specs of freshly built modules' state dicts, named ``<prefix>.<key>`` as detectors save them."""
    return {key: TensorSpec(tuple(value.shape), value.dtype) for key, value in modules_state(modules).items()}


def open_model(folder: Path, device: str | None = None) -> tuple[Detector, dict[str, torch.Tensor], dict[str, Any]]:
    """Read and check a model folder: the configured detector (state not set), its tensors and metadata.

    ``device`` replaces the saved one: where a model runs is not part of what it learnt.
    """
    config_path = folder / CONFIG_FILE
    document = _read_document(folder, config_path)
    detector = _build_detector(document, config_path, device)
    _check_metadata(document["metadata"], config_path)
    tensors_path = folder / TENSORS_FILE
    tensors = _read_tensors(tensors_path)
    _check_tensors(detector, tensors, config_path, tensors_path)
    return detector, tensors, document["metadata"]


# -- config.json -------------------------------------------------------------
def _read_document(folder: Path, path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"{folder}: no saved model here ({CONFIG_FILE} missing)")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ModelFileError(f"{path}: expected a JSON object at the top level, got {_shown(document)}")
    _check_top_level(document, path)
    return document


def _check_top_level(document: dict[str, Any], path: Path) -> None:
    """Every field present with its JSON type, no unknown ones, then format and versions."""
    for key, kind in _TOP_LEVEL.items():
        if key not in document:
            raise ModelFileError(f"{path}: field '{key}' is missing")
        value = document[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ModelFileError(f"{path}: field '{key}' must be {_KIND_NAMES[kind]}; got {_shown(value)}")
    unknown = [key for key in document if key not in _TOP_LEVEL]
    if unknown:
        raise ModelFileError(f"{path}: unknown field '{unknown[0]}' (a model file has {', '.join(_TOP_LEVEL)})")
    if document["format"] != MODEL_FORMAT:
        raise ModelFileError(f"{path}: field 'format' is {document['format']!r}; an adcore model file has "
                             f"{MODEL_FORMAT!r}")
    if document["format_version"] != MODEL_FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {document['format_version']}; this adcore "
                             f"{__version__} reads format version {MODEL_FORMAT_VERSION}")
    _check_version(document["adcore_version"], path)


def _check_version(version: str, path: Path) -> None:
    match = _VERSION.fullmatch(version)
    if match is None:
        raise ModelFileError(f"{path}: field 'adcore_version' must be a version such as '1.2.3'; got {version!r}")
    running = int(__version__.split(".")[0])
    if int(match.group(1)) > running:
        raise ModelFileError(f"{path}: written by adcore {version}, a newer major version than this adcore "
                             f"{__version__}; upgrade adcore to read it")


def _build_detector(document: dict[str, Any], path: Path, device: str | None = None) -> Detector:
    """The registered detector class, built from ``config`` checked field by field."""
    from adcore.plugins import get_registry

    name = document["detector"]
    try:
        detector_cls = get_registry().load_object("detector", name)
    except AdcoreError as exc:
        raise ModelFileError(f"{path}: model needs detector '{name}' from {document['plugin']} "
                             f"{document['plugin_version']}, which is not available ({exc})") from None
    values = document["config"]
    _check_config_fields(detector_cls, values, path)
    if device is not None:
        values = {**values, "device": device}
    try:
        return detector_cls(from_json_dict(detector_cls.Config, values))
    except AdcoreError as exc:  # attrs validators and the detector's own checks raise ConfigError
        raise ModelFileError(f"{path}: config: {exc}") from None


def _check_config_fields(detector_cls: type[Detector], values: dict[str, Any], path: Path) -> None:
    """Exactly the Config's fields, each of its JSON type: a default could differ from what was fitted."""
    attrs.resolve_types(detector_cls.Config)
    fields = {f.name: f.type for f in attrs.fields(detector_cls.Config)}
    owner = detector_cls.__name__
    for key in values:
        if key not in fields:
            raise ModelFileError(f"{path}: config field '{key}' is not a parameter of {owner}")
    for key, annotation in fields.items():
        if key not in values:
            raise ModelFileError(f"{path}: config field '{key}' of {owner} is missing")
        if not _fits(values[key], annotation):
            raise ModelFileError(f"{path}: config field '{key}' must be {_describe(annotation)}; "
                                 f"got {_shown(values[key])}")


def _check_metadata(metadata: dict[str, Any], path: Path) -> None:
    """The fields ``adcore predict`` reads; each may be absent (a model saved without metadata)."""
    low, high = IMAGE_SIZE_RANGE
    rules = {
        "image_size": (lambda v: _is_int(v) and low <= v <= high, f"an int in [{low}, {high}]"),
        "image_threshold": (lambda v: v is None or _is_number(v), "a finite number or null"),
        "pixel_threshold": (lambda v: v is None or _is_number(v), "a finite number or null"),
        "threshold_source": (lambda v: v is None or isinstance(v, str), "a string or null"),
        "display_range": (lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v))
                          and v[0] <= v[1], "two finite numbers [low, high] with low <= high"),
        "category": (lambda v: isinstance(v, str), "a string"),
        "framing": (lambda v: isinstance(v, dict), "an object"),
        "positions": (lambda v: isinstance(v, dict) and set(v) == {"height", "width", "count"}
                      and all(_is_int(n) and n >= 1 for n in v.values()),
                      "an object of ints >= 1: height, width, count"),
    }
    for key, (fits, rule) in rules.items():
        if key in metadata and not fits(metadata[key]):
            raise ModelFileError(f"{path}: metadata field '{key}' must be {rule}; got {_shown(metadata[key])}")
    if "framing" in metadata:
        _check_framing(metadata["framing"], path)


def _check_framing(framing: dict[str, Any], path: Path) -> None:
    """Resizing and tiling: every field present and in range, so predict applies exactly what was fitted.

    The whole field may be absent: models saved before framings existed were squashed; so may
    ``per_position``, which came later (false).
    """
    from adcore.options import RESIZE_MODES, TILE, TILE_OVERLAP, TILE_SCALE

    rules = {
        "resize": (lambda v: v in RESIZE_MODES, "one of " + ", ".join(RESIZE_MODES)),
        "tile": (lambda v: v is None or (_is_int(v) and TILE.contains(v)), f"null or {TILE.describe()}"),
        "tile_overlap": (lambda v: _is_number(v) and TILE_OVERLAP.contains(v), TILE_OVERLAP.describe()),
        "tile_scale": (lambda v: _is_number(v) and TILE_SCALE.contains(v), TILE_SCALE.describe()),
        "per_position": (lambda v: isinstance(v, bool), "true or false"),
    }
    for key, (fits, rule) in rules.items():
        if key not in framing and key != "per_position":
            raise ModelFileError(f"{path}: metadata field 'framing.{key}' is missing")
        if key in framing and not fits(framing[key]):
            raise ModelFileError(f"{path}: metadata field 'framing.{key}' must be {rule}; "
                                 f"got {_shown(framing[key])}")
    unknown = [key for key in framing if key not in rules]
    if unknown:
        raise ModelFileError(f"{path}: unknown metadata field 'framing.{unknown[0]}' "
                             f"(framing has {', '.join(rules)})")


def _fits(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a config field's type (tuples are JSON lists)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if origin is tuple and args[-1:] == (Ellipsis,):
        return isinstance(value, list) and all(_fits(item, args[0]) for item in value)
    checks = {type(None): lambda v: v is None, bool: lambda v: isinstance(v, bool), int: _is_int,
              float: _is_number, str: lambda v: isinstance(v, str)}
    return checks.get(annotation, lambda v: True)(value)  # any other type: its validator decides


def _describe(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
    return _KIND_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite JSON number (Python's json reads NaN and Infinity, which no field accepts)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    """A value in a message: JSON spelling, shortened."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- model.safetensors ----------------------------------------------------------
def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise ModelFileError(f"{path}: cannot read model tensors ({exc})") from None


def _check_tensors(detector: Detector, tensors: dict[str, torch.Tensor], config_path: Path,
                   path: Path) -> None:
    """Names, then each tensor's dtype, shape and values, against the detector's declaration."""
    sizes: dict[str, tuple[int, str]] = {}
    if LOSS_HISTORY in tensors:
        _check_tensor(path, LOSS_HISTORY, tensors[LOSS_HISTORY], TensorSpec(("epochs",)), sizes)
    state = {name: value for name, value in tensors.items() if name != LOSS_HISTORY}
    try:
        specs = detector._state_spec()
    except AdcoreError as exc:  # e.g. an unknown backbone or a parameter the backbone cannot meet
        raise ModelFileError(f"{config_path}: config: {exc}") from None
    if specs is None:  # the detector declares nothing: values must still be finite
        for name, value in state.items():
            _check_finite(path, name, value)
        return
    _check_names(path, detector.name, specs, state)
    for name, spec in specs.items():
        _check_tensor(path, name, state[name], spec, sizes)
    try:
        detector._check_state(state)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def _check_names(path: Path, detector: str, specs: Mapping[str, TensorSpec],
                 state: Mapping[str, torch.Tensor]) -> None:
    missing = [name for name in specs if name not in state]
    extra = [name for name in state if name not in specs]
    if missing:
        found = f" (found unexpected tensor '{extra[0]}')" if extra else ""
        raise ModelFileError(f"{path}: tensor '{missing[0]}' is missing{found}")
    if extra:
        raise ModelFileError(f"{path}: unexpected tensor '{extra[0]}' (not part of a {detector} model)")


def _check_tensor(path: Path, name: str, value: torch.Tensor, spec: TensorSpec,
                  sizes: dict[str, tuple[int, str]]) -> None:
    """dtype, then shape (binding named sizes in ``sizes``), then finite values."""
    if value.dtype != spec.dtype:
        raise ModelFileError(f"{path}: tensor '{name}' has dtype {_dtype_name(value.dtype)}; "
                             f"expected {_dtype_name(spec.dtype)}")
    _check_shape(path, name, tuple(value.shape), spec.shape, sizes)
    _check_finite(path, name, value)


def _check_shape(path: Path, name: str, shape: tuple[int, ...], expected: tuple[int | str, ...],
                 sizes: dict[str, tuple[int, str]]) -> None:
    """Exact sizes must match; a named size is bound where first seen and must match after."""
    bound = dict(sizes)
    fits = len(shape) == len(expected)
    for entry, size in zip(expected, shape) if fits else ():
        if isinstance(entry, str):
            fits = bound.setdefault(entry, (size, name))[0] == size
        else:
            fits = entry == size
        if not fits:
            break
    if fits:
        sizes.update(bound)
        return
    known = [e for e in dict.fromkeys(expected) if isinstance(e, str) and e in sizes]
    shown = tuple(sizes[e][0] if e in known else e for e in expected)
    notes = "; ".join(f"{e} = {sizes[e][0]} from tensor '{sizes[e][1]}'" for e in known)
    raise ModelFileError(f"{path}: tensor '{name}' has shape {_shape_text(shape)}; expected {_shape_text(shown)}"
                         + (f" ({notes})" if notes else ""))


def _check_finite(path: Path, name: str, value: torch.Tensor) -> None:
    if not (value.is_floating_point() or value.is_complex()):
        return
    flat = value.reshape(-1)
    if all(bool(torch.isfinite(chunk).all()) for chunk in flat.split(_CHUNK)):
        return
    nan = sum(int(torch.isnan(chunk).sum()) for chunk in flat.split(_CHUNK))
    inf = sum(int(torch.isinf(chunk).sum()) for chunk in flat.split(_CHUNK))
    parts = ", ".join(f"{count} {kind}" for count, kind in ((nan, "NaN"), (inf, "infinite")) if count)
    raise ModelFileError(f"{path}: tensor '{name}' has non-finite values ({parts} of {flat.numel()}); "
                         f"a model's tensors must be finite")


def _shape_text(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
