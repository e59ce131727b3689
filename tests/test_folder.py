"""The MVTec AD layout reader and the calibration split."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from adcore.data.folder import open_folder
from adcore.errors import DataError
from adcore.thresholds import split_calibration


def test_reads_layout_with_masks(tiny_root):
    [category] = open_folder(tiny_root)
    assert category.name == "machined_part"
    assert len(category.train) == 10
    defective = [s for s in category.test if s.label == 1]
    assert len(defective) == 4 and all(s.mask_path is not None for s in defective)
    assert category.has_masks and not category.validation


def test_single_category_folder_and_unknown_category(tiny_root):
    assert open_folder(tiny_root / "machined_part")[0].name == "machined_part"
    with pytest.raises(DataError, match="no category 'tyre'"):
        open_folder(tiny_root, ["tyre"])


def test_defect_without_masks_disables_pixel_metrics(tiny_copy):
    shutil.rmtree(tiny_copy / "machined_part" / "ground_truth" / "crack")
    [category] = open_folder(tiny_copy)
    assert not category.has_masks


def test_missing_single_mask_is_an_error(tiny_copy):
    next((tiny_copy / "machined_part" / "ground_truth" / "crack").iterdir()).unlink()
    with pytest.raises(DataError, match="no mask .*_mask.png"):
        open_folder(tiny_copy)


def test_mask_size_mismatch(tiny_copy):
    mask = next((tiny_copy / "machined_part" / "ground_truth" / "spot").iterdir())
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    with pytest.raises(DataError, match="mask size 10x10 does not match image"):
        open_folder(tiny_copy)


def test_empty_train_set(tiny_copy):
    for path in (tiny_copy / "machined_part" / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(DataError, match="empty train set"):
        open_folder(tiny_copy)


def test_calibration_prefers_validation_then_holds_out_deterministically(tiny_copy):
    [category] = open_folder(tiny_copy)
    train, held, source = split_calibration(category, 0.2, seed=1)
    assert len(train) == 8 and len(held) == 2 and "held-out 20%" in source
    assert split_calibration(category, 0.2, seed=1)[1] == held
    assert not set(held) & set(train)
    assert split_calibration(category, 0.0, seed=1)[1] == []
    validation = tiny_copy / "machined_part" / "validation" / "good"
    validation.mkdir(parents=True)
    shutil.copy(category.train[0].path, validation / "v.png")
    [category] = open_folder(tiny_copy)
    train, held, source = split_calibration(category, 0.2, seed=1)
    assert len(train) == 10 and len(held) == 1 and source.startswith("validation/good")
