"""Tests for adcore.data.synthetic: layout, determinism, exact masks and caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adcore.data import synthetic
from adcore.errors import ConfigError, OutputError

SIZE = 64
COUNTS = {"n_train": 3, "n_test_good": 2, "n_test_defect": 2}


def _generate(root: Path, seed: int = 0, **kwargs) -> Path:
    return synthetic.generate(root, seed=seed, **{"size": SIZE, **COUNTS, **kwargs})


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("syn") / "data")


def test_layout_and_counts(dataset: Path):
    assert (dataset / ".complete").is_file()
    assert sorted(p.name for p in dataset.iterdir() if p.is_dir()) == sorted(synthetic.CATEGORIES)
    for category in synthetic.CATEGORIES:
        base = dataset / category
        assert len(list((base / "train" / "good").glob("*.png"))) == COUNTS["n_train"]
        assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *synthetic.DEFECTS])
        assert len(list((base / "test" / "good").glob("*.png"))) == COUNTS["n_test_good"]
        assert sorted(p.name for p in (base / "ground_truth").iterdir()) == sorted(synthetic.DEFECTS)
        for defect in synthetic.DEFECTS:
            images = sorted(p.name for p in (base / "test" / defect).iterdir())
            masks = sorted(p.name for p in (base / "ground_truth" / defect).iterdir())
            assert images == ["000.png", "001.png"]
            assert masks == ["000_mask.png", "001_mask.png"]


def test_modes_and_sizes(dataset: Path):
    for category in synthetic.CATEGORIES:
        expected = "L" if category == "machined_part" else "RGB"
        for path in (dataset / category / "test").rglob("*.png"):
            with Image.open(path) as image:
                assert (image.mode, image.size) == (expected, (SIZE, SIZE)), path


def test_masks_binary_nonempty_and_sized(dataset: Path):
    low, high = synthetic._AREA_RANGE
    for path in dataset.glob("*/ground_truth/*/*_mask.png"):
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (SIZE, SIZE)
            mask = np.asarray(image)
        assert set(np.unique(mask)) == {0, 255}, path
        assert low <= (mask > 0).mean() <= high, path


def test_same_arguments_give_identical_bytes(dataset: Path, tmp_path: Path):
    again = _files(_generate(tmp_path / "again"))
    assert again == _files(dataset)


def test_different_seeds_differ(dataset: Path, tmp_path: Path):
    other = _files(_generate(tmp_path / "other", seed=1))
    original = _files(dataset)
    assert other.keys() == original.keys()
    pngs = [name for name in original if name.endswith(".png")]
    assert all(other[name] != original[name] for name in pngs)


def test_normal_images_vary_within_a_category(dataset: Path):
    for category in synthetic.CATEGORIES:
        paths = sorted((dataset / category).glob("*/good/*.png"))
        images = [np.asarray(Image.open(p), dtype=np.float32) for p in paths]
        assert len(images) == COUNTS["n_train"] + COUNTS["n_test_good"]
        for i in range(len(images)):
            for j in range(i + 1, len(images)):
                # Not just different bytes: visibly different (mean change > 1 grey level).
                assert np.abs(images[i] - images[j]).mean() > 1.0, (category, paths[i], paths[j])


@pytest.mark.parametrize("category", synthetic.CATEGORIES)
@pytest.mark.parametrize("defect", synthetic.DEFECTS)
def test_mask_is_exactly_the_changed_pixels(category: str, defect: str):
    for index in range(3):
        rng = synthetic._rng(7, category, f"test/{defect}", index)
        clean, image, mask = synthetic._sample(category, defect, rng, SIZE)
        changed = np.any(clean != image, axis=-1)
        np.testing.assert_array_equal(mask[..., 0] == 255, changed)
        assert changed.any()
        # Visible, not a faint tint: the strongest change is at least ~10% of the range.
        diff = np.abs(clean.astype(int) - image.astype(int)).max()
        assert diff >= 25, (category, defect, index, diff)


def test_normal_sample_has_no_defect():
    clean, image, mask = synthetic._sample("woven_fabric", None, synthetic._rng(0, "woven_fabric", "x", 0), SIZE)
    assert image is clean and not mask.any()


def test_saved_defect_matches_rendering(dataset: Path):
    rng = synthetic._rng(0, "machined_part", "test/crack", 1)
    _, image, mask = synthetic._sample("machined_part", "crack", rng, SIZE)
    base = dataset / "machined_part"
    np.testing.assert_array_equal(np.asarray(Image.open(base / "test/crack/001.png")), image[..., 0])
    np.testing.assert_array_equal(np.asarray(Image.open(base / "ground_truth/crack/001_mask.png")), mask[..., 0])


def test_category_subset_and_replacing_existing_root(tmp_path: Path):
    root = tmp_path / "data"
    _generate(root)
    (root / "stale.txt").write_text("old")
    _generate(root, categories=("woven_fabric",), n_train=1, n_test_good=1, n_test_defect=1)
    assert sorted(p.name for p in root.iterdir()) == [".complete", "woven_fabric"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary folders left


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def fail(folder: Path, *args, **kwargs) -> None:
        folder.mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_write_category", fail)
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs", [{"categories": ("marble",)}, {"size": 8}, {"seed": -1}, {"n_train": -1}]
)
def test_invalid_arguments_raise(tmp_path: Path, kwargs: dict):
    with pytest.raises(ConfigError):
        _generate(tmp_path / "data", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_default_root_follows_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ADCORE_CACHE_DIR", str(tmp_path))
    assert synthetic.default_root(3) == tmp_path / "synthetic" / "v1-seed3"
    monkeypatch.delenv("ADCORE_CACHE_DIR")
    assert synthetic.default_root() == Path.home() / ".cache" / "adcore" / "synthetic" / "v1-seed0"


def test_ensure_generates_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ADCORE_CACHE_DIR", str(tmp_path))
    calls: list[tuple[Path, int]] = []

    def fake_generate(root: Path, *, seed: int = 0) -> Path:
        calls.append((root, seed))
        root.mkdir(parents=True)
        (root / ".complete").write_text("{}")
        return root

    monkeypatch.setattr(synthetic, "generate", fake_generate)
    expected = tmp_path / "synthetic" / "v1-seed5"
    assert synthetic.ensure(5) == expected
    assert synthetic.ensure(5) == expected
    assert calls == [(expected, 5)]


def test_ensure_reuses_a_complete_folder_and_never_replaces_a_foreign_one(tmp_path: Path):
    complete = _generate(tmp_path / "complete")
    before = _files(complete)
    assert synthetic.ensure(0, root=complete) == complete
    assert _files(complete) == before

    foreign = tmp_path / "foreign"
    (foreign / "brushed_metal").mkdir(parents=True)
    (foreign / "brushed_metal" / "keep.txt").write_text("user data")
    with pytest.raises(OutputError, match="not written by adcore"):
        synthetic.generate(foreign, seed=0, size=SIZE, **COUNTS)
    assert (foreign / "brushed_metal" / "keep.txt").read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["complete", "foreign"]  # no staging left
