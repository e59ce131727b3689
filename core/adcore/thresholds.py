"""Decision thresholds, calibrated on normal images that neither training nor testing sees.

The test set is never used: thresholds come from ``validation/good`` when a
category has it, else from a deterministic held-out share of ``train/good``.
"""

from __future__ import annotations

import numpy as np

from adcore.data import Category, Sample
from adcore.errors import DataError

__all__ = ["calibrate", "normal_quantile", "split_calibration"]


def split_calibration(category: Category, holdout: float, seed: int) -> tuple[list[Sample], list[Sample], str]:
    """Training samples, calibration samples and a sentence saying where the latter came from."""
    train = list(category.train)
    if category.validation:
        return train, list(category.validation), f"validation/good ({len(category.validation)} images)"
    if holdout <= 0:
        return train, [], "none (hold-out disabled)"
    count = int(round(len(train) * holdout))
    if count == 0 or count >= len(train):
        return train, [], f"none (too few training images to hold out {holdout:.0%})"
    order = np.random.default_rng(seed).permutation(len(train))
    held = sorted(order[:count].tolist())
    kept = sorted(order[count:].tolist())
    if not kept:
        raise DataError(f"{category.root}: empty train set after holding out calibration images")
    return ([train[i] for i in kept], [train[i] for i in held],
            f"held-out {holdout:.0%} of train/good ({count} images)")


def normal_quantile(values: np.ndarray, quantile: float) -> float | None:
    """A high quantile of scores of normal data; None without data."""
    if values.size == 0:
        return None
    return float(np.quantile(values.astype(np.float64, copy=False).ravel(), quantile))


def calibrate(scores: np.ndarray, maps: np.ndarray, image_quantile: float,
              pixel_quantile: float) -> tuple[float | None, float | None]:
    """Image and pixel thresholds from the scores and maps of normal calibration images."""
    return normal_quantile(scores, image_quantile), normal_quantile(maps, pixel_quantile)

