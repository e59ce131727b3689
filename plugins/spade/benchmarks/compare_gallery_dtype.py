"""Float32 vs float16 storage of SPADE's training pyramids, on one category.

Fits SPADE with a float32 gallery on the same training split ``adcore run``
uses, scores the test set, and prints image/pixel AUROC and AUPRO, to be set
against the metrics.json of a default (float16) ``adcore run``. The image score
does not depend on the gallery dtype (global descriptors are always float32).

It also prints a bound that needs no second pass: every stored feature moves by
at most eps = max_j ||g_j - fp16(g_j)|| when rounded, so every nearest distance,
and (upsampling and blurring being convex combinations) every map value, moves
by at most eps; a pixel AUROC can then change only through (defect, normal)
pixel pairs closer than 2 * eps, whose share is printed.

Usage: python compare_gallery_dtype.py /work/shared/data/mvtec3d_tire [--image-size 256]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from adcore import metrics
from adcore.data.loading import ImageBatches, load_masks
from adcore.runner import RunOptions, open_categories
from adcore.thresholds import split_calibration
from adcore_plugin_spade.detector import Spade


def close_pair_share(pos: np.ndarray, neg: np.ndarray, margin: float) -> float:
    """Share of (pos, neg) pairs with |pos - neg| <= margin."""
    neg = np.sort(neg)
    hi = np.searchsorted(neg, pos + margin, side="right")
    lo = np.searchsorted(neg, pos - margin, side="left")
    return float((hi - lo).sum()) / (len(pos) * len(neg))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    category = open_categories(RunOptions(detector="spade", data=args.data))[0]
    train, _, _ = split_calibration(category, 0.1, 0)
    size = args.image_size

    detector = Spade(gallery_dtype="float32")
    started = time.perf_counter()
    detector.fit(ImageBatches([s.path for s in train], size, detector.config.batch_size))
    fit_s = time.perf_counter() - started

    pyramid = detector.pyramid_.reshape(-1, detector.pyramid_.shape[-1])
    eps = 0.0
    for chunk in pyramid.split(65536):
        eps = max(eps, float((chunk - chunk.half().float()).norm(dim=1).max()))
    max_abs = float(pyramid.abs().max())

    test = list(category.test)
    started = time.perf_counter()
    prediction = detector.predict(ImageBatches([s.path for s in test], size, detector.config.batch_size), None)
    predict_s = time.perf_counter() - started
    labels = np.array([s.label for s in test])
    masks = load_masks([s.mask_path for s in test], size)
    maps = prediction.anomaly_maps
    result = {
        "gallery_dtype": "float32",
        "image_auroc": metrics.image_auroc(labels, prediction.scores),
        "pixel_auroc": metrics.pixel_auroc(masks, maps),
        "aupro": metrics.aupro(masks, maps),
        "fp16_eps": eps,
        "feature_max_abs": max_abs,
        "pixel_auroc_change_bound": close_pair_share(maps[masks], maps[~masks], 2 * eps),
        "fit_seconds": round(fit_s, 2),
        "images_per_second": round(len(test) / predict_s, 3),
        "scores": [float(s) for s in prediction.scores],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "scores"}, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
