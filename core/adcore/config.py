"""Detector parameters: attrs validators with one-sentence errors, and ``--set`` parsing.

Messages follow scikit-learn: "The 'coreset_ratio' parameter of PatchCore must
be in (0, 1]. Got 0.0 instead." (attrs' own messages carry an internal repr).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from adcore.errors import ConfigError

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _owner(instance: Any) -> str:
    name = type(instance).__name__
    return name[: -len("Config")] if name.endswith("Config") and name != "Config" else name


def _fail(instance: Any, attribute: attrs.Attribute, rule: str, value: Any) -> None:
    raise ConfigError(f"The '{attribute.name}' parameter of {_owner(instance)} must be {rule}. Got {value!r} instead.")


def in_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False) -> Validator:
    """Validator for a number inside an interval (bounds inclusive unless open)."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    rule = f"in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(instance, attribute, f"a number {rule}", value)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high or value != value:
            _fail(instance, attribute, rule, value)

    return check


def positive_int(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Validator for an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(instance, attribute, "an int >= 1", value)


def strides(allowed: tuple[int, ...] = (4, 8, 16, 32)) -> Validator:
    """Validator for a non-empty tuple of distinct, increasing feature strides."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        ok = (isinstance(value, tuple) and value and all(v in allowed for v in value)
              and list(value) == sorted(set(value)))
        if not ok:
            _fail(instance, attribute, f"increasing distinct strides from {allowed}", value)

    return check


def build(config_cls: type, params: Mapping[str, Any]) -> Any:
    """Instantiate a config class, turning unknown names and type errors into ConfigError."""
    names = [f.name for f in attrs.fields(config_cls)]
    unknown = [key for key in params if key not in names]
    if unknown:
        raise ConfigError(f"{_owner_cls(config_cls)} has no parameter '{unknown[0]}'; "
                          f"parameters: {', '.join(names)}.")
    try:
        return config_cls(**params)
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
    if annotation in (int, float, str):
        return annotation(text.strip())
    if origin is typing.Literal:
        if text in args:
            return text
        raise ValueError(text)
    return text


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
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
