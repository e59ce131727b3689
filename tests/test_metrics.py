"""Tests for adcore.metrics with hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from adcore.metrics import (
    aupro,
    f1_max,
    image_auroc,
    pixel_auroc,
    roc_points,
    threshold_metrics,
)


# ---------------------------------------------------------------------------
# image_auroc
# ---------------------------------------------------------------------------


def test_image_auroc_hand_case() -> None:
    # pos {0.35, 0.8} vs neg {0.1, 0.4}: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4,
    # lost 0.35<0.4 -> 3/4.
    assert image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_image_auroc_float32_path_matches_float64_path() -> None:
    # Same ranking as above, once as float32 (packed-key sort) once as
    # float64 values that float32 cannot represent (argsort fallback).
    labels = np.array([0, 0, 1, 1])
    s32 = np.array([0.1, 0.4, 0.35, 0.8], dtype=np.float32)
    s64 = np.array([0.1, 0.4, 0.35, 0.8], dtype=np.float64)
    assert image_auroc(labels, s32) == pytest.approx(0.75)
    assert image_auroc(labels, s64) == pytest.approx(0.75)


def test_image_auroc_ties_count_half() -> None:
    # pos {0.5, 0.9} vs neg {0.5, 0.2}: 0.5~0.5 tie -> 0.5, 0.5>0.2 -> 1,
    # 0.9 beats both -> 2; total 3.5 / 4 = 0.875.
    labels = [0, 1, 0, 1]
    for dtype in (np.float32, np.float64):
        scores = np.array([0.5, 0.5, 0.2, 0.9], dtype=dtype)
        assert image_auroc(labels, scores) == pytest.approx(0.875)


def test_image_auroc_all_tied_is_half() -> None:
    assert image_auroc([0, 1, 0, 1, 1], [3.0] * 5) == pytest.approx(0.5)


def test_image_auroc_negative_and_signed_zero() -> None:
    # -0.0 and +0.0 are equal scores and must tie: pos 0.0 vs neg -0.0 -> 0.5.
    assert image_auroc([0, 1], np.array([-0.0, 0.0], dtype=np.float32)) == 0.5
    # Negative scores rank correctly: pos {-1, 2} vs neg {-3, -2}: all 4 won.
    scores = np.array([-3.0, -2.0, -1.0, 2.0], dtype=np.float32)
    assert image_auroc([0, 0, 1, 1], scores) == 1.0
    # Reversed labels -> 0.
    assert image_auroc([1, 1, 0, 0], scores) == 0.0


def test_image_auroc_integer_and_bool_inputs() -> None:
    # Integer scores: pos {2, 3} vs neg {1, 2}: 2>1, 2~2 (0.5), 3>1, 3>2 -> 3.5/4.
    assert image_auroc(np.array([True, False, True, False]), [2, 1, 3, 2]) == pytest.approx(0.875)


def test_image_auroc_single_class_is_none() -> None:
    assert image_auroc([1, 1, 1], [0.1, 0.2, 0.3]) is None
    assert image_auroc([0, 0], [0.1, 0.2]) is None


def test_image_auroc_rejects_nan_and_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError):
        image_auroc([0, 1, 1], [0.1, 0.2])


# ---------------------------------------------------------------------------
# pixel_auroc
# ---------------------------------------------------------------------------


def test_pixel_auroc_hand_case() -> None:
    # Anomalous pixels {0.9, 0.3}, normal {0.5, 0.1}:
    # 0.9 beats both (2), 0.3 beats 0.1 only (1) -> 3/4.
    masks = np.array([[[True, False]], [[True, False]]])
    maps = np.array([[[0.9, 0.5]], [[0.3, 0.1]]], dtype=np.float32)
    assert pixel_auroc(masks, maps) == pytest.approx(0.75)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_auroc_matches_sklearn_random(dtype: type) -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 32, 32)) < 0.1
    # Rounded scores create many ties; the signal makes AUROC non-trivial.
    maps = np.round(rng.random((4, 32, 32)) + masks * 0.3, 2).astype(dtype)
    expected = sk_metrics.roc_auc_score(masks.ravel(), maps.ravel())
    assert 0.6 < expected < 0.99
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_matches_sklearn_continuous_float64() -> None:
    rng = np.random.default_rng(1)
    masks = rng.random((2, 50, 50)) < 0.3
    maps = rng.normal(size=(2, 50, 50)) + masks
    expected = sk_metrics.roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_none_cases() -> None:
    maps = np.zeros((1, 2, 2), dtype=np.float32)
    assert pixel_auroc(np.zeros((1, 2, 2), bool), maps) is None
    assert pixel_auroc(np.ones((1, 2, 2), bool), maps) is None


# ---------------------------------------------------------------------------
# roc_points
# ---------------------------------------------------------------------------


def test_roc_points_hand_case() -> None:
    # Descending: 0.8(pos) -> (0, .5); 0.4(neg) -> (.5, .5);
    # 0.35(pos) -> (.5, 1); 0.1(neg) -> (1, 1); plus the origin.
    fpr, tpr = roc_points([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])


def test_roc_points_ties_form_one_point() -> None:
    # Tied 0.5 pair (one pos, one neg) is a single diagonal step.
    fpr, tpr = roc_points([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 0.5, 1.0, 1.0])


def test_roc_points_subsampled_keeps_ends_and_area() -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(5000) < 0.5
    scores = rng.random(5000).astype(np.float32) + labels * 0.5
    full_fpr, full_tpr = roc_points(labels, scores, max_points=10**9)
    fpr, tpr = roc_points(labels, scores, max_points=50)
    assert full_fpr.size > 1000
    assert fpr.size <= 50
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    # Exact curve integrates to the AUROC.
    area = np.sum(np.diff(full_fpr) * (full_tpr[1:] + full_tpr[:-1]) / 2)
    assert area == pytest.approx(image_auroc(labels, scores), abs=1e-12)


def test_roc_points_single_class_raises() -> None:
    with pytest.raises(ValueError):
        roc_points([1, 1], [0.1, 0.2])


# ---------------------------------------------------------------------------
# aupro
# ---------------------------------------------------------------------------


def _two_region_case() -> tuple[np.ndarray, np.ndarray]:
    """One image: region A (1 px, top-left), region B (2x2 px, bottom-right)."""
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 0, 0] = True  # region A, size 1
    masks[0, 4:6, 4:6] = True  # region B, size 4
    maps = np.full((1, 6, 6), 0.5, dtype=np.float32)  # normals
    maps[0, 0, 0] = 1.0  # A detected before any false positive
    maps[0, 4:6, 4:6] = 0.0  # B only after all normals (FPR = 1)
    return masks, maps


def test_aupro_perfect_map_is_one() -> None:
    masks, _ = _two_region_case()
    assert aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)


def test_aupro_two_regions_half() -> None:
    # Curve: (0,0) -> (0, 0.5) [A found] -> (1, 0.5) [all normals] -> (1, 1).
    # Area up to 0.3 = 0.5 * 0.3 -> normalised 0.5.  Equal region weight: the
    # 4-px region B would dominate a pixel-weighted score.
    masks, maps = _two_region_case()
    assert aupro(masks, maps) == pytest.approx(0.5)


def test_aupro_inverted_map_near_zero() -> None:
    masks, _ = _two_region_case()
    inverted = 1.0 - masks.astype(np.float32)
    # All normals outrank all anomalies: PRO stays 0 until FPR = 1.
    assert aupro(masks, inverted) < 0.01


def test_aupro_hand_case_with_step() -> None:
    # One region of 2 px (scores 0.9, 0.3); 10 normals: one 0.5, nine 0.1.
    # Curve: (0,0),(0,.5),(.1,.5),(.1,1),(1,1).
    # Area to 0.3: 0.1*0.5 + 0.2*1.0 = 0.25 -> 0.25/0.3 = 0.8333...
    masks = np.zeros((1, 3, 4), dtype=bool)
    masks[0, 0, :2] = True
    maps = np.full((1, 3, 4), 0.1, dtype=np.float32)
    maps[0, 0, 0], maps[0, 0, 1], maps[0, 1, 0] = 0.9, 0.3, 0.5
    assert aupro(masks, maps) == pytest.approx(0.25 / 0.3)


def test_aupro_ties_and_interpolation_at_limit() -> None:
    # Two 1-px regions: A scored 0.9; B tied at 0.1 with all 10 normals.
    # Curve: (0,0),(0,.5),(1,1) -- the tie is one threshold.  Interpolating at
    # FPR 0.3 gives PRO 0.5 + 0.5*0.3 = 0.65; area = 0.3*(0.5+0.65)/2 = 0.1725;
    # normalised 0.1725/0.3 = 0.575.
    masks = np.zeros((1, 3, 4), dtype=bool)
    masks[0, 0, 0] = True
    masks[0, 2, 3] = True
    maps = np.full((1, 3, 4), 0.1, dtype=np.float32)
    maps[0, 0, 0] = 0.9
    assert aupro(masks, maps) == pytest.approx(0.575)
    # fpr_limit=1 integrates the whole curve: (0.5+1)/2 = 0.75.
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75)


def test_aupro_uses_8_connectivity() -> None:
    # Diagonal pixels (0,0),(1,1) form ONE region D (size 2); (3,3) is region E.
    # (0,0) and E scored 0.9, (1,1) scored 0.0, normals 0.5.
    # 8-conn: PRO at 0.9 = (1/2 + 1)/2 = 0.75, flat until FPR 1 -> 0.75.
    # (4-conn would give 3 regions and 2/3.)
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 3, 3] = True
    maps = np.full((1, 4, 4), 0.5, dtype=np.float32)
    maps[0, 0, 0] = maps[0, 3, 3] = 0.9
    maps[0, 1, 1] = 0.0
    assert aupro(masks, maps) == pytest.approx(0.75)


def test_aupro_regions_are_per_image() -> None:
    # Same pixel position in two images = two regions, equal weight.
    # Image 0 region (2 px, both 0.9); image 1 region (1 px, 0.0); normals 0.5.
    # PRO at 0.9 = 0.5, flat until FPR 1 -> 0.5.
    masks = np.zeros((2, 3, 3), dtype=bool)
    masks[0, 0, :2] = True
    masks[1, 0, 0] = True
    maps = np.full((2, 3, 3), 0.5, dtype=np.float32)
    maps[0, 0, :2] = 0.9
    maps[1, 0, 0] = 0.0
    assert aupro(masks, maps) == pytest.approx(0.5)


def test_aupro_all_normal_images_add_false_positives() -> None:
    # Image 0: one anomalous px scored 0.4, 3 normals at 0.0 -> alone: 1.0.
    # Image 1: all-normal, 4 px at 0.5 -> FPR jumps to 4/7 > 0.3 before the
    # anomaly is found, so PRO = 0 on [0, 0.3] -> 0.0.
    img_mask = np.array([[[True, False], [False, False]]])
    img_map = np.array([[[0.4, 0.0], [0.0, 0.0]]], dtype=np.float32)
    assert aupro(img_mask, img_map) == pytest.approx(1.0)
    masks = np.concatenate([img_mask, np.zeros((1, 2, 2), bool)])
    maps = np.concatenate([img_map, np.full((1, 2, 2), 0.5, np.float32)])
    assert aupro(masks, maps) == pytest.approx(0.0)


def test_aupro_float64_fallback_matches_float32() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 20, 20), dtype=bool)
    masks[0, 2:6, 2:9] = True
    masks[1, 10:12, 15:19] = True
    masks[1, 0, 0] = True
    maps64 = rng.random((3, 20, 20)) + masks * 0.4
    maps32 = maps64.astype(np.float32)
    a64, a32 = aupro(masks, maps64), aupro(masks, maps32)
    assert 0.0 < a64 < 1.0
    assert a64 == pytest.approx(a32, abs=1e-3)


def test_aupro_none_cases_and_bad_limit() -> None:
    maps = np.zeros((1, 2, 2), dtype=np.float32)
    assert aupro(np.zeros((1, 2, 2), bool), maps) is None  # no regions
    assert aupro(np.ones((1, 2, 2), bool), maps) is None  # no normal pixels
    with pytest.raises(ValueError):
        aupro(np.ones((1, 2, 2), bool), maps, fpr_limit=0.0)


# ---------------------------------------------------------------------------
# f1_max / threshold_metrics
# ---------------------------------------------------------------------------

F1_LABELS = [0, 0, 1, 1, 1]
F1_SCORES = [0.1, 0.6, 0.35, 0.8, 0.2]


def test_f1_max_hand_case() -> None:
    # F1 = 2TP/(TP+FP+P), P=3, by threshold:
    # 0.8: 2/4=.5; 0.6: 2/5=.4; 0.35: 4/6=.667; 0.2: 6/7=.857; 0.1: 6/8=.75
    f1, thr = f1_max(F1_LABELS, F1_SCORES)
    assert f1 == pytest.approx(6 / 7)
    assert thr == pytest.approx(0.2)
    # The returned threshold reproduces the F1 via threshold_metrics.
    assert threshold_metrics(F1_LABELS, F1_SCORES, thr)["f1"] == pytest.approx(6 / 7)


def test_f1_max_ties_and_none() -> None:
    # Tie at 0.5 (one pos, one neg) is one threshold. P=2:
    # 0.9: TP1 FP0 -> 2/3; 0.5: TP2 FP1 -> 4/5; 0.2: TP2 FP2 -> 4/6.
    f1, thr = f1_max([0, 1, 0, 1], np.array([0.5, 0.5, 0.2, 0.9], np.float32))
    assert f1 == pytest.approx(0.8)
    assert thr == 0.5
    assert f1_max([0, 0], [0.1, 0.2]) is None


def test_threshold_metrics_hand_case() -> None:
    # score >= 0.35 -> predicted {0.6(neg), 0.35(pos), 0.8(pos)}: TP=2, FP=1,
    # FN=1 -> precision 2/3, recall 2/3, f1 2/3.
    m = threshold_metrics(F1_LABELS, F1_SCORES, 0.35)
    assert m == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})


def test_threshold_metrics_degenerate_cases_are_zero_not_nan() -> None:
    # Nothing predicted: precision 0 (documented), recall 0, f1 0.
    assert threshold_metrics(F1_LABELS, F1_SCORES, 0.95) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
    }
    # Everything predicted: precision 3/5, recall 1, f1 = 2*.6/(1.6) = 0.75.
    m = threshold_metrics(F1_LABELS, F1_SCORES, 0.0)
    assert m == pytest.approx({"precision": 0.6, "recall": 1.0, "f1": 0.75})
    # No positives at all: recall 0.0 rather than NaN.
    m = threshold_metrics([0, 0], [0.5, 0.7], 0.6)
    assert m == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def _aupro_brute_force(masks: np.ndarray, maps: np.ndarray, limit: float) -> float:
    """Threshold-by-threshold reference built from explicit region masks."""
    from scipy import ndimage

    regions = []
    for m, s in zip(masks, maps):
        lab, n = ndimage.label(m, structure=np.ones((3, 3)))
        regions += [s[lab == k] for k in range(1, n + 1)]
    normal = maps[~masks]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(np.mean(normal >= t))
        ys.append(np.mean([np.mean(r >= t) for r in regions]))
    xs, ys = np.array(xs), np.array(ys)
    keep = xs <= limit
    x, y = list(xs[keep]), list(ys[keep])
    if not keep.all():
        k = np.argmax(~keep)
        x.append(limit)
        y.append(np.interp(limit, xs[k - 1 : k + 1], ys[k - 1 : k + 1]))
    return float(np.trapezoid(y, x) / limit)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_matches_brute_force(limit: float) -> None:
    rng = np.random.default_rng(4)
    masks = rng.random((3, 12, 12)) < 0.15  # many small, irregular regions
    masks[2] = False  # one all-normal image
    maps = np.round(rng.random((3, 12, 12)) + masks * 0.3, 1).astype(np.float32)
    expected = _aupro_brute_force(masks, maps, limit)
    assert 0.0 < expected < 1.0
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, abs=1e-9)
