"""adcore: visual anomaly detection and localization with pluggable methods.

Importing this package stays light (no torch): the CLI's ``--help`` and
``adcore plugins`` must answer instantly. Heavy names are imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Detector": "adcore.detector",
    "DetectorConfig": "adcore.detector",
    "Prediction": "adcore.detector",
    "FeatureExtractor": "adcore.features",
    "hookimpl": "adcore.hookspecs",
    "get_registry": "adcore.plugins",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from adcore.detector import Detector, DetectorConfig, Prediction
    from adcore.features import FeatureExtractor
    from adcore.hookspecs import hookimpl
    from adcore.plugins import get_registry


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'adcore' has no attribute {name!r}")
