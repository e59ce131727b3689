"""Evaluation metrics for visual anomaly detection.

All metrics are exact (no binning of scores) and work on plain numpy arrays.
Pixel-level metrics routinely see tens of millions of pixels (e.g. a
MVTec-sized test split at full resolution is ~60 million pixels), where
``sklearn.metrics.roc_auc_score`` is slow and memory hungry.  Every curve
here is therefore derived from one shared primitive, :func:`_rank_desc`,
that sorts the scores exactly once:

* For ``float32`` scores (the usual anomaly-map dtype) each score is mapped
  to an order-preserving ``uint32`` and packed with a small integer tag
  (binary label or region id) into one ``uint64`` key.  A plain ``np.sort``
  of those keys is several times faster than ``np.argsort`` and needs no
  separate index array.
* Other dtypes that cannot be represented exactly in ``float32`` fall back
  to ``np.argsort`` so that results stay exact.

Ties are handled by evaluating every curve only at the last element of each
group of equal scores, so tied scores act as a single threshold.  For ROC
this makes the trapezoidal area equal the Mann-Whitney statistic with the
usual half-credit for tied positive/negative pairs.

Conventions:
    * Higher score means "more anomalous"; a sample is predicted defective
      when ``score >= threshold``.
    * Metrics that are undefined for the given input (e.g. AUROC with a
      single class) return ``None`` rather than NaN, so callers must decide
      explicitly how to report them.
    * NaN scores raise ``ValueError``; they have no place in a ranking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "ROC",
    "StreamedROC",
    "aupro",
    "f1_max",
    "image_auroc",
    "pixel_auroc",
    "pixel_roc_streamed",
    "roc_curve",
    "roc_points",
    "threshold_metrics",
]

_SIGN_BIT = np.uint32(0x80000000)
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


# ---------------------------------------------------------------------------
# Shared sorting primitive
# ---------------------------------------------------------------------------


class _Ranked(NamedTuple):
    """Tags ordered by descending score plus the tie-group boundaries.

    Attributes:
        tags: Tags rearranged so that scores are in descending order.
        ends: Index (into ``tags``) of the last element of every group of
            equal scores, ascending; evaluate cumulative sums only here.
        thresholds: Score value of every tie group, strictly decreasing.
    """

    tags: np.ndarray
    ends: np.ndarray
    thresholds: np.ndarray


def _as_scores(scores: np.ndarray | list, name: str = "scores") -> np.ndarray:
    """Return scores as a flat numeric array, rejecting NaN early."""
    arr = np.asarray(scores)
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name} contain NaN")
    return arr


def _as_labels(labels: np.ndarray | list) -> np.ndarray:
    """Return labels as a flat bool array (non-zero means defective)."""
    return np.asarray(labels).reshape(-1).astype(bool, copy=False)


def _check_same_size(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ ({a.shape} vs {b.shape})")


def _to_float32_exact(scores: np.ndarray) -> np.ndarray | None:
    """Return scores as float32 if that loses nothing, else None.

    Exactness matters: rounding float64 scores to float32 could create
    artificial ties and change the metric.
    """
    if scores.dtype == np.float32:
        return scores
    if scores.dtype.itemsize <= 2 or scores.dtype == np.float16:
        return scores.astype(np.float32)
    s32 = scores.astype(np.float32)
    if np.array_equal(s32, scores):
        return s32
    return None


def _float32_to_key(s32: np.ndarray) -> np.ndarray:
    """Map float32 to uint32 so that unsigned order equals float order."""
    # Adding +0.0 turns -0.0 into +0.0 so that the two zeros tie.
    bits = (s32 + np.float32(0.0)).view(np.uint32)
    neg = (bits & _SIGN_BIT).astype(bool)
    return np.where(neg, ~bits, bits | _SIGN_BIT)


def _key_to_float32(key: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_float32_to_key`."""
    key = key.astype(np.uint32)
    pos = (key & _SIGN_BIT).astype(bool)
    bits = np.where(pos, key & ~_SIGN_BIT, ~key)
    return bits.view(np.float32)


def _rank_desc(scores: np.ndarray, tags: np.ndarray, tag_bits: int) -> _Ranked:
    """Sort once by descending score and locate the tie groups.

    Args:
        scores: Flat numeric scores without NaN.
        tags: Flat non-negative integers, ``< 2**tag_bits``, carried along.
        tag_bits: Bits needed for the tags (at most 32).

    Returns:
        A :class:`_Ranked` with tags in descending-score order.
    """
    n = scores.size
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return _Ranked(tags[:0], empty, np.zeros(0, dtype=np.float64))

    s32 = _to_float32_exact(scores)
    if s32 is not None:
        # Fast path: one uint64 sort of (score_key << tag_bits) | tag.
        key = _float32_to_key(s32).astype(np.uint64)
        key <<= np.uint64(tag_bits)
        key |= tags.astype(np.uint64, copy=False)
        key.sort()
        key = key[::-1]  # descending view, no copy
        tag_mask = np.uint64((1 << tag_bits) - 1)
        tags_desc = (key & tag_mask).astype(tags.dtype)
        hi = key >> np.uint64(tag_bits)
        del key
        boundary = np.flatnonzero(hi[1:] != hi[:-1])
        ends = np.append(boundary, n - 1).astype(np.int64, copy=False)
        thresholds = _key_to_float32(hi[ends]).astype(np.float64)
        return _Ranked(tags_desc, ends, thresholds)

    # Exact fallback for e.g. float64 scores that float32 cannot represent.
    order = np.argsort(scores)[::-1]
    s_desc = scores[order]
    tags_desc = tags[order]
    boundary = np.flatnonzero(s_desc[1:] != s_desc[:-1])
    ends = np.append(boundary, n - 1).astype(np.int64, copy=False)
    return _Ranked(tags_desc, ends, s_desc[ends].astype(np.float64))


class _BinaryCurve(NamedTuple):
    """Cumulative counts at every distinct threshold (descending)."""

    tps: np.ndarray  # int64, positives with score >= threshold
    fps: np.ndarray  # int64, negatives with score >= threshold
    thresholds: np.ndarray
    n_pos: int
    n_neg: int


def _binary_curve(labels: np.ndarray, scores: np.ndarray) -> _BinaryCurve:
    """Exact TP/FP counts per distinct threshold from a single sort."""
    labels = _as_labels(labels)
    scores = _as_scores(scores)
    _check_same_size(labels, scores, "labels/scores")
    ranked = _rank_desc(scores, labels.view(np.uint8), tag_bits=1)
    tps = np.cumsum(ranked.tags, dtype=np.int64)[ranked.ends]
    fps = ranked.ends + 1 - tps
    n_pos = int(tps[-1]) if tps.size else 0
    return _BinaryCurve(tps, fps, ranked.thresholds, n_pos, labels.size - n_pos)


def _auroc_from_curve(curve: _BinaryCurve) -> float | None:
    """Trapezoidal ROC area in exact integer arithmetic (= Mann-Whitney U)."""
    if curve.n_pos == 0 or curve.n_neg == 0:
        return None
    tps = np.concatenate(([0], curve.tps))
    fps = np.concatenate(([0], curve.fps))
    # 2 * area * P * N; each term <= 2 * P * N, fits int64 for < ~3e9 pixels.
    twice_area = int(np.dot(np.diff(fps), tps[1:] + tps[:-1]))
    return twice_area / (2.0 * curve.n_pos * curve.n_neg)


# ---------------------------------------------------------------------------
# Public metrics
# ---------------------------------------------------------------------------


def image_auroc(labels: np.ndarray | list, scores: np.ndarray | list) -> float | None:
    """Image-level area under the ROC curve.

    Threshold-free summary of how well image scores rank defective images
    above good ones; ties between a defective and a good image count half.

    Args:
        labels: Shape (N,), bool or int, 1/True means defective.
        scores: Shape (N,), anomaly score per image (higher = more anomalous).

    Returns:
        AUROC in [0, 1], or None when only one class is present (undefined).
    """
    return _auroc_from_curve(_binary_curve(labels, scores))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """Pixel-level AUROC over all pixels of all images.

    Exact and tie-corrected, computed from a single sort so that it scales to
    tens of millions of pixels (~60M in a few seconds and ~2 GB), where
    sklearn is impractical.

    Args:
        masks: Shape (N, H, W), bool ground-truth masks (True = anomalous).
        maps: Shape (N, H, W), anomaly maps; float32 takes the fast path.

    Returns:
        AUROC in [0, 1], or None when there are no positive or no negative
        pixels.
    """
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    _check_same_size(masks, maps, "masks/maps")
    return _auroc_from_curve(_binary_curve(masks, maps))


class ROC(NamedTuple):
    """An exact ROC curve from one sort: its area and its points, so one curve serves both."""

    curve: _BinaryCurve

    @property
    def auroc(self) -> float | None:
        """What :func:`image_auroc` / :func:`pixel_auroc` give on the same inputs (None with one class)."""
        return _auroc_from_curve(self.curve)

    def points(self, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """``(fpr, tpr)`` for plotting, as :func:`roc_points` (ValueError with one class)."""
        curve = self.curve
        if curve.n_pos == 0 or curve.n_neg == 0:
            raise ValueError("ROC curve needs both positive and negative samples")
        fpr = np.concatenate(([0.0], curve.fps / curve.n_neg))
        tpr = np.concatenate(([0.0], curve.tps / curve.n_pos))
        if fpr.size > max_points:
            idx = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(np.int64))
            fpr, tpr = fpr[idx], tpr[idx]
        return fpr, tpr


def roc_curve(labels: np.ndarray | list, scores: np.ndarray | list) -> ROC:
    """The exact ROC of labels (or masks) and scores (or maps) of any equal shape, sorted once.

    Args:
        labels: Binary ground truth (1/True = anomalous), any shape.
        scores: Scores of the same shape.

    Returns:
        The curve; ``.auroc`` and ``.points()`` read it without sorting again.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    _check_same_size(labels, scores, "labels/scores")
    return ROC(_binary_curve(labels, scores))


def roc_points(
    labels: np.ndarray | list,
    scores: np.ndarray | list,
    max_points: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve points for plotting, thinned to at most ``max_points``.

    Uses the same exact single-sort curve as the AUROC functions, so it also
    works on pixel-level inputs; the full curve can have millions of
    vertices, far more than a plot needs.  Any array shape is accepted
    (e.g. (N, H, W) masks and maps) as long as both shapes match.

    Args:
        labels: Binary ground truth (1/True = anomalous), any shape.
        scores: Scores of the same shape.
        max_points: Upper bound on returned points (>= 2); the first (0, 0)
            and last (1, 1) points are always kept, the rest are evenly
            subsampled by index.

    Returns:
        ``(fpr, tpr)`` float64 arrays of equal length, non-decreasing.

    Raises:
        ValueError: If only one class is present (the curve is undefined) or
            ``max_points < 2``.
    """
    if max_points < 2:
        raise ValueError("max_points must be >= 2")
    return roc_curve(labels, scores).points(max_points)


def aupro(masks: np.ndarray | Sequence[np.ndarray], maps: np.ndarray | Sequence[np.ndarray],
          fpr_limit: float = 0.3) -> float | None:
    """Normalised area under the per-region-overlap (PRO) curve.

    Unlike pixel AUROC, every connected defect region has equal weight, so
    small defects matter as much as large ones; restricting to low FPR
    reflects the operating range that is useful in practice.

    Regions are 8-connected components of each image's mask.  At every
    distinct threshold, PRO is the mean over regions of the fraction of the
    region's pixels with ``score >= threshold`` and FPR is the fraction of
    all normal pixels (of all images) above it.  The curve starts at (0, 0),
    is integrated with the trapezoid rule up to ``fpr_limit`` (interpolated
    linearly there) and divided by ``fpr_limit``, so a perfect map scores
    1.0.  Images with an all-zero mask contribute only normal pixels.

    Args:
        masks: Shape (N, H, W), bool ground-truth masks, or a sequence of (H_i, W_i)
            masks of images of different sizes.
        maps: Anomaly maps shaped as ``masks``.
        fpr_limit: Upper FPR integration limit in (0, 1].

    Returns:
        AUPRO in [0, 1], or None when there are no anomalous regions or no
        normal pixels.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError("fpr_limit must be in (0, 1]")
    if isinstance(masks, np.ndarray) and isinstance(maps, np.ndarray):
        _check_same_size(masks, maps, "masks/maps")
        if masks.ndim != 3:
            raise ValueError(f"masks/maps must have shape (N, H, W), got {masks.shape}")
    elif len(masks) != len(maps):
        raise ValueError(f"masks/maps: {len(masks)} masks for {len(maps)} maps")
    for mask, image_map in zip(masks, maps):
        _check_same_size(np.asarray(mask), np.asarray(image_map), "masks/maps")
    scores = _as_scores(np.concatenate([np.asarray(m).reshape(-1) for m in maps]) if len(maps) else np.zeros(0),
                        "maps")

    # Global region ids: 0 = normal pixel, 1..n_regions = defect regions.
    parts = []
    n_regions = 0
    for mask in masks:
        ids, count = _regions(np.asarray(mask).astype(bool, copy=False), n_regions)
        n_regions += count
        parts.append(ids.reshape(-1))
    region_ids = np.concatenate(parts) if parts else np.zeros(0, np.uint32)
    del parts

    sizes = np.bincount(region_ids, minlength=n_regions + 1)
    n_normal = int(sizes[0])
    if n_regions == 0 or n_normal == 0:
        return None
    weight = np.zeros(n_regions + 1, dtype=np.float64)
    weight[1:] = 1.0 / (sizes[1:] * float(n_regions))

    ranked = _rank_desc(scores, region_ids, tag_bits=32)
    del region_ids
    fp = np.cumsum(ranked.tags == 0, dtype=np.int64)[ranked.ends]
    pro = np.cumsum(weight[ranked.tags])[ranked.ends]
    fpr = np.concatenate(([0.0], fp / n_normal))
    pro = np.concatenate(([0.0], pro))

    return _area_to_limit(fpr, pro, fpr_limit)


def _regions(mask: np.ndarray, first: int = 0) -> tuple[np.ndarray, int]:
    """Region id of every pixel of one mask (0 = normal, ``first + 1``... = its 8-connected defect regions)."""
    ids = np.zeros(mask.shape, dtype=np.uint32)
    if not mask.any():
        return ids, 0
    lab, count = ndimage.label(mask, structure=_STRUCTURE_8)
    inside = lab > 0
    ids[inside] = lab[inside].astype(np.uint32) + np.uint32(first)
    return ids, int(count)


def _area_to_limit(fpr: np.ndarray, pro: np.ndarray, fpr_limit: float) -> float:
    """Trapezoid area under (fpr, pro) up to ``fpr_limit`` (interpolated linearly there), over ``fpr_limit``."""
    k = int(np.searchsorted(fpr, fpr_limit, side="right"))
    x, y = fpr[:k], pro[:k]
    if k < fpr.size:
        x0, x1, y0, y1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        x = np.append(x, fpr_limit)
        y = np.append(y, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0))
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5)) / fpr_limit


def f1_max(labels: np.ndarray | list, scores: np.ndarray | list) -> tuple[float, float] | None:
    """Best F1 over all thresholds, and the threshold achieving it.

    Gives an optimistic but threshold-free operating-point summary and a
    concrete threshold to deploy.  Only distinct score values are candidate
    thresholds; on equal F1 the highest threshold wins.

    Args:
        labels: Binary ground truth (1/True = defective), any shape.
        scores: Scores of the same shape; ``score >= threshold`` is
            predicted defective.

    Returns:
        ``(f1, threshold)``, or None when there are no positives (F1 is then
        undefined).
    """
    curve = _binary_curve(labels, scores)
    if curve.n_pos == 0:
        return None
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (TP + FP + P).
    f1 = 2.0 * curve.tps / (curve.tps + curve.fps + curve.n_pos)
    best = int(np.argmax(f1))
    return float(f1[best]), float(curve.thresholds[best])


def threshold_metrics(
    labels: np.ndarray | list,
    scores: np.ndarray | list,
    threshold: float,
) -> dict[str, float]:
    """Precision, recall and F1 at a fixed decision threshold.

    Reports what a deployed detector with this threshold would achieve.
    Undefined ratios are reported as 0.0 instead of NaN: precision when
    nothing is predicted defective, recall when there are no positives, and
    F1 when precision + recall is 0.

    Args:
        labels: Binary ground truth (1/True = defective), any shape.
        scores: Scores of the same shape.
        threshold: ``score >= threshold`` is predicted defective.

    Returns:
        Dict with keys ``"precision"``, ``"recall"``, ``"f1"``.
    """
    labels = _as_labels(labels)
    scores = _as_scores(scores)
    _check_same_size(labels, scores, "labels/scores")
    pred = scores >= threshold
    tp = int(np.count_nonzero(pred & labels))
    n_pred = int(np.count_nonzero(pred))
    n_pos = int(np.count_nonzero(labels))
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


# ---------------------------------------------------------------------------
# Pixel ROC in bounded memory
# ---------------------------------------------------------------------------


class StreamedROC(NamedTuple):
    """Pixel ROC counts at every distinct score of a defect pixel (descending), and the AUPRO of the same pixels.

    Attributes:
        thresholds: Distinct scores of defect pixels, strictly decreasing.
        tps: Defect pixels with score >= threshold.
        fps: Normal pixels with score >= threshold.
        n_pos: Defect pixels in all.
        n_neg: Normal pixels in all.
        twice_area_pn: 2 * AUROC * n_pos * n_neg as an exact integer (ties count half).
        aupro: What :func:`aupro` gives on the same pixels held in memory (None where it is undefined).
    """

    thresholds: np.ndarray
    tps: np.ndarray
    fps: np.ndarray
    n_pos: int
    n_neg: int
    twice_area_pn: int
    aupro: float | None

    @property
    def auroc(self) -> float | None:
        """The same value :func:`pixel_auroc` gives on the same pixels held in memory."""
        if self.n_pos == 0 or self.n_neg == 0:
            return None
        return self.twice_area_pn / (2.0 * self.n_pos * self.n_neg)

    def points(self, max_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr) for plotting, from (0, 0) to (1, 1), thinned to at most ``max_points``."""
        fpr = np.concatenate(([0.0], self.fps / self.n_neg, [1.0]))
        tpr = np.concatenate(([0.0], self.tps / self.n_pos, [1.0]))
        if fpr.size > max_points:
            idx = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(np.int64))
            fpr, tpr = fpr[idx], tpr[idx]
        return fpr, tpr


def pixel_roc_streamed(pairs: Iterable[tuple[np.ndarray, np.ndarray]], fpr_limit: float = 0.3) -> StreamedROC:
    """Exact pixel ROC and AUPRO of (mask, map) pairs that are never all in memory at once.

    Why not a histogram: binning scores changes the AUROC. Instead the scores of
    defect pixels (a small share of all pixels) are kept, sorted and counted, and
    the normal pixels are streamed past them: each normal pixel only adds to the
    count of the interval between two defect scores it falls in (one
    ``searchsorted``), and ties with a defect score are counted apart. The
    Mann-Whitney sum over those counts is the trapezoidal AUROC, exactly, with
    memory for the defect pixels plus one image.

    The same counts give the PRO curve exactly: each defect pixel also keeps the
    weight of its region (8-connected, labelled per image), and between two
    adjacent defect scores the curve is flat, so its vertices are, for each
    defect score, the point where the normal pixels above it end and the point
    after its own ties.

    Args:
        pairs: Re-iterable (it is read twice) of ``(mask, map)`` arrays of equal
            shape per pair; shapes may differ between pairs.
        fpr_limit: Upper FPR integration limit of the AUPRO, in (0, 1].

    Returns:
        A :class:`StreamedROC`.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError("fpr_limit must be in (0, 1]")
    positives, region_sizes = [np.zeros(0, np.float64)], [np.zeros(0, np.float64)]
    n_regions = 0
    for mask, image_map in pairs:
        mask, image_map = np.asarray(mask).astype(bool, copy=False), np.asarray(image_map)
        _check_same_size(mask, image_map, "masks/maps")
        positives.append(_as_scores(image_map[mask], "maps").astype(np.float64))
        ids, count = _regions(mask)
        inside = ids[mask]
        region_sizes.append(np.bincount(inside, minlength=count + 1)[inside].astype(np.float64))
        n_regions += count
    values, first, pos_counts = np.unique(np.concatenate(positives), return_inverse=True,
                                          return_counts=True)  # float32 -> float64 is exact
    region_weight = np.bincount(first, weights=1.0 / np.concatenate(region_sizes), minlength=values.size)
    del positives, region_sizes, first
    at_or_below = np.zeros(values.size + 1, np.int64)  # normal pixels by how many defect scores lie below them
    equal = np.zeros(values.size + 1, np.int64)  # normal pixels equal to defect score j
    for mask, image_map in pairs:
        mask = np.asarray(mask).astype(bool, copy=False)
        normal = _as_scores(np.asarray(image_map)[~mask], "maps").astype(np.float64)
        slot = np.searchsorted(values, normal, side="left")
        at_or_below += np.bincount(slot, minlength=values.size + 1)
        tied = values[np.minimum(slot, max(values.size - 1, 0))] == normal if values.size else slot < 0
        equal += np.bincount(slot[tied], minlength=values.size + 1)
    n_neg = int(at_or_below.sum())
    below = np.cumsum(at_or_below)[: values.size] - equal[: values.size]  # normal pixels < defect score j
    twice = int(np.dot(pos_counts.astype(np.int64), 2 * below + equal[: values.size]))
    descending = slice(None, None, -1)
    tps = np.cumsum(pos_counts[descending]).astype(np.int64)
    fps = (n_neg - below)[descending]
    aupro = None
    if n_regions and n_neg:
        pro = np.cumsum(region_weight[descending]) / n_regions
        above = (fps - equal[: values.size][descending]) / n_neg  # normal pixels above each defect score
        fpr = np.concatenate(([0.0], np.stack([above, fps / n_neg], 1).reshape(-1), [1.0]))
        pro_before = np.concatenate(([0.0], pro[:-1]))
        aupro = _area_to_limit(fpr, np.concatenate(([0.0], np.stack([pro_before, pro], 1).reshape(-1), pro[-1:])),
                               fpr_limit)
    return StreamedROC(values[descending], tps, fps, int(pos_counts.sum()), n_neg, twice, aupro)
