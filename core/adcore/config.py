"""Detector parameters: attrs validators with one-sentence errors, and ``--set`` parsing.

Messages follow scikit-learn: "The 'coreset_ratio' parameter of PatchCore must
be in (0, 1]. Got 0.0 instead." (attrs' own messages carry an internal repr).
Numbers must be finite: nan and inf are refused even where a range is open.
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from adcore.errors import ConfigError

__all__ = ["Interval", "Validator", "as_json_dict", "available_devices", "build", "existing_device",
           "from_json_dict", "in_range", "odd", "one_of", "parameter_error", "parse_assignments", "positive_int",
           "positive_ints", "resolve_device", "schedule_field", "strides"]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _owner(instance: Any) -> str:
    name = type(instance).__name__
    return name[: -len("Config")] if name.endswith("Config") and name != "Config" else name


def parameter_error(owner: str, name: str, rule: str, value: Any) -> ConfigError:
    """The one sentence every bad parameter gets, for checks that no field validator can make.

    >>> str(parameter_error("PaDiM", "n_features", "at most 160", 200))
    "The 'n_features' parameter of PaDiM must be at most 160. Got 200 instead."
    """
    return ConfigError(f"The '{name}' parameter of {owner} must be {rule}. Got {value!r} instead.")


def _fail(instance: Any, attribute: attrs.Attribute, rule: str, value: Any) -> None:
    raise parameter_error(_owner(instance), attribute.name, rule, value)


@attrs.frozen
class Interval:
    """Allowed finite numbers between two bounds; one object serves validators and CLI checks alike."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def __str__(self) -> str:
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{'-inf' if self.low is None else self.low}, {'inf' if self.high is None else self.high}{right}"

    def describe(self) -> str:
        """What is allowed, as error messages and ``--help`` say it: "an int in [32, 4096]"."""
        return f"{'an int' if self.integer else 'a number'} in {self}"

    def is_number(self, value: Any) -> bool:
        """Of the right type (bools are not numbers here)."""
        return not isinstance(value, bool) and isinstance(value, numbers.Integral if self.integer else numbers.Real)

    def contains(self, value: Any) -> bool:
        """A number of the right type, finite, inside the bounds."""
        if not self.is_number(value) or not math.isfinite(value):
            return False
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (too_low or too_high)

    def check(self, instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        """The attrs validator."""
        if not self.contains(value):
            rule = self.describe() if self.integer or not self.is_number(value) else f"in {self}"
            _fail(instance, attribute, rule, value)


def in_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Validator:
    """Validator for a finite number inside an interval (bounds inclusive unless open)."""
    return Interval(low, high, low_open=low_open, high_open=high_open).check


def available_devices() -> tuple[str, ...]:
    """The torch devices of this machine, spelled as the ``device`` parameter accepts them."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += ["cuda", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]
    if torch.backends.mps.is_available():
        found.append("mps")
    return tuple(found)


def resolve_device(name: str) -> str:
    """``auto`` -> the best device of this machine (cuda, then mps, then cpu); other names as they are."""
    if name != "auto":
        return name
    found = available_devices()
    return "cuda" if "cuda" in found else "mps" if "mps" in found else "cpu"


def existing_device(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator for a device that exists here, so a typo or a missing GPU fails before any work."""
    allowed = available_devices()
    if value not in allowed:
        _fail(instance, attribute, f"a device of this machine ({', '.join(allowed)})", value)


def positive_int(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator for an int >= 1."""
    if not (_is_int(value) and value >= 1):
        _fail(instance, attribute, "an int >= 1", value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def odd(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator for an odd int >= 1 (a filter size with a centre)."""
    if not (_is_int(value) and value >= 1 and value % 2 == 1):
        _fail(instance, attribute, "an odd int >= 1", value)


def positive_ints(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator for a non-empty tuple of ints >= 1."""
    if not (isinstance(value, tuple) and value and all(_is_int(v) and v >= 1 for v in value)):
        _fail(instance, attribute, "a non-empty tuple of ints >= 1", value)


def strides(allowed: tuple[int, ...] = (4, 8, 16, 32)) -> Validator:
    """Validator for a non-empty tuple of distinct, increasing feature strides."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        ok = (isinstance(value, tuple) and value and all(v in allowed for v in value)
              and list(value) == sorted(set(value)))
        if not ok:
            _fail(instance, attribute, f"increasing distinct strides from {allowed}", value)

    return check


def one_of(*allowed: Any) -> Validator:
    """Validator for a value out of a fixed set."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) is not any(isinstance(a, bool) for a in allowed) or value not in allowed:
            _fail(instance, attribute, "one of " + ", ".join(repr(a) for a in allowed), value)

    return check


def schedule_field(schedules: Mapping[str, Mapping[str, Any]], default: str = "cpu") -> Any:
    """The ``schedule`` parameter of a trained detector: a name out of ``schedules``.

    A config class that has one also sets ``SCHEDULES`` (name -> parameter values);
    :func:`build` fills every parameter not given explicitly from the chosen schedule,
    so ``--set schedule=paper --set epochs=50`` is the paper's schedule with 50 epochs.
    """
    return attrs.field(default=default, validator=one_of(*schedules))


def _with_schedule(config_cls: type, params: Mapping[str, Any]) -> dict[str, Any]:
    schedules: Mapping[str, Mapping[str, Any]] | None = getattr(config_cls, "SCHEDULES", None)
    if not schedules:
        return dict(params)
    name = params.get("schedule", attrs.fields_dict(config_cls)["schedule"].default)
    if name not in schedules:
        raise ConfigError(f"The 'schedule' parameter of {_owner_cls(config_cls)} must be one of "
                          f"{', '.join(repr(k) for k in schedules)}. Got {name!r} instead.")
    return {**schedules[name], **params}


def build(config_cls: type, params: Mapping[str, Any]) -> Any:
    """Instantiate a config class, turning unknown names and type errors into ConfigError.

    Parameters not given come from the config's schedule (see :func:`schedule_field`), then
    from the field defaults.
    """
    names = [f.name for f in attrs.fields(config_cls)]
    unknown = [key for key in params if key not in names]
    if unknown:
        raise ConfigError(f"{_owner_cls(config_cls)} has no parameter '{unknown[0]}'; "
                          f"parameters: {', '.join(names)}.")
    try:
        return config_cls(**_with_schedule(config_cls, params))
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid parameters for {_owner_cls(config_cls)}: {exc}") from None


def _owner_cls(config_cls: type) -> str:
    name = config_cls.__name__
    return name[: -len("Config")] if name.endswith("Config") and name != "Config" else name


def parse_assignments(config_cls: type, assignments: Mapping[str, str]) -> dict[str, Any]:
    """Convert ``--set key=value`` strings to typed values using the config's field types."""
    attrs.resolve_types(config_cls)
    fields = {f.name: f for f in attrs.fields(config_cls)}
    values: dict[str, Any] = {}
    for key, text in assignments.items():
        if key not in fields:
            raise ConfigError(f"{_owner_cls(config_cls)} has no parameter '{key}'; "
                              f"parameters: {', '.join(fields)}.")
        try:
            values[key] = _parse(text, fields[key].type)
        except ValueError:
            raise ConfigError(f"The '{key}' parameter of {_owner_cls(config_cls)} must be "
                              f"{_type_name(fields[key].type)}. Got {text!r} instead.") from None
    return values


def _parse(text: str, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _parse(text, arg)
            except ValueError:
                continue
        raise ValueError(text)
    if origin is tuple:
        item = args[0] if args else str
        return tuple(_parse(part.strip(), item) for part in text.split(",") if part.strip())
    if annotation is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if annotation is float:
        value = float(text.strip())
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if annotation in (int, str):
        return annotation(text.strip())
    if origin is typing.Literal:
        if text in args:
            return text
        raise ValueError(text)
    return text


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is float:
        return "a finite number"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def as_json_dict(config: Any) -> dict[str, Any]:
    """Config as plain JSON values (tuples become lists)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in attrs.asdict(config, recurse=False).items()}


def from_json_dict(config_cls: type, values: Mapping[str, Any]) -> Any:
    """Inverse of :func:`as_json_dict`: lists back to tuples where the field is a tuple."""
    attrs.resolve_types(config_cls)
    fixed = {}
    for f in attrs.fields(config_cls):
        if f.name in values:
            value = values[f.name]
            fixed[f.name] = tuple(value) if isinstance(value, list) else value
    return build(config_cls, fixed)
