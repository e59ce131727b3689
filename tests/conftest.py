"""Shared fixtures: a tiny synthetic data set and quiet progress bars."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adcore.data import synthetic


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADCORE_PROGRESS", "0")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small category of the synthetic set, generated once per session."""
    root = tmp_path_factory.mktemp("data") / "tiny"
    return synthetic.generate(root, categories=("machined_part",), size=64, n_train=10, n_test_good=3,
                              n_test_defect=1)


@pytest.fixture
def tiny_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny set that a test may damage."""
    target = tmp_path / "data"
    shutil.copytree(tiny_root, target)
    return target
