"""The ``synthetic`` data set: generated on first use into the cache, read as a folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adcore.data import Category
from adcore.data import synthetic
from adcore.data.folder import open_folder


def open_synthetic(root: Path | str | None, categories: Sequence[str] | None = None,
                   seed: int = 0) -> list[Category]:
    """Open the synthetic set, generating it first if ``root`` (default: the cache) lacks it."""
    return open_folder(synthetic.ensure(seed=seed, root=Path(root) if root else None), categories)
