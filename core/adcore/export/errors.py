"""The one error of exporting: a model that cannot become a graph that scores like it."""

from __future__ import annotations

from adcore.errors import AdcoreError

__all__ = ["ExportError"]


class ExportError(AdcoreError):
    """A model cannot be exported, or its export would not score as the trained model does."""
