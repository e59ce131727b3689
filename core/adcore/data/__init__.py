"""Data set records shared by every reader: categories of train/validation/test samples."""

from __future__ import annotations

from pathlib import Path

import attrs


@attrs.frozen
class Sample:
    """One image: its file, label (1 = defective), defect type and mask file if any."""

    path: Path
    label: int
    defect: str = "good"
    mask_path: Path | None = None


@attrs.frozen
class Category:
    """One category of a data set in MVTec AD terms."""

    name: str
    root: Path
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    validation: tuple[Sample, ...] = ()

    @property
    def has_masks(self) -> bool:
        """Pixel metrics need a mask for every defective test image."""
        return all(s.mask_path is not None for s in self.test if s.label == 1)


__all__ = ["Category", "Sample"]
