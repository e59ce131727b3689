"""Exceptions that the CLI turns into one clear line and a non-zero exit code."""

from __future__ import annotations

__all__ = ["AdcoreError", "ConfigError", "DataError", "ModelFileError", "NotFittedError", "OutputError",
           "PluginError", "UnknownNameError", "WeightsError", "WorkerError"]


class AdcoreError(Exception):
    """Base class: its message is shown to the user as it is, on one line."""


class ConfigError(AdcoreError, ValueError):
    """A parameter, option or ``--set`` value is invalid."""


class DataError(AdcoreError):
    """Input data is missing, corrupt or inconsistent (names the file)."""


class NotFittedError(AdcoreError, RuntimeError):
    """A detector was asked to predict or save before ``fit``."""


class PluginError(AdcoreError):
    """A plugin failed to load or registered a clashing name."""


class UnknownNameError(AdcoreError, LookupError):
    """A detector, backbone or data set name is not registered."""


class WeightsError(AdcoreError):
    """Pretrained weights are missing or do not fit the architecture."""


class ModelFileError(AdcoreError):
    """A saved model folder is missing, incomplete or from an unknown plugin."""


class OutputError(AdcoreError):
    """An output path is not safe to write: an input, a file, not writable, or not written by adcore."""


class WorkerError(AdcoreError):
    """A worker process or cluster node was lost and the work it held could not be finished."""
