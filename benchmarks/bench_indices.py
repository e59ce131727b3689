"""PatchCore with each nearest-neighbour index on one category: accuracy cost and speed.

Fits once (features and coreset do not depend on the index), then predicts the
test set with every index of ``--indices``, printing image AUROC, pixel AUROC,
AUPRO, test images/s and the index build time. The exact indices must give the
same numbers; the approximate ones (faiss, ``pip install adcore[ann]``) can only
over-estimate distances, and this shows what that costs. Run on a quiet machine.

    python benchmarks/bench_indices.py --data ../shared/data/mvtec3d_tire
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from adcore import metrics
from adcore.data.loading import ImageBatches, load_images, load_masks
from adcore.neighbors import build_index
from adcore.runner import RunOptions, make_detector, open_categories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: synthetic)")
    parser.add_argument("--category", default=None)
    parser.add_argument("--indices", default="clustered,exact,ivf,hnsw")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = RunOptions(detector="patchcore", data=args.data, categories=(args.category,) if args.category else ())
    category = open_categories(options)[0]
    detector = make_detector(options)
    size, batch = options.image_size, detector.config.batch_size
    started = time.perf_counter()
    detector.fit(ImageBatches([s.path for s in category.train], size, batch))
    print(f"{category.name}: fit {time.perf_counter() - started:.1f} s, bank {tuple(detector.memory_bank_.shape)}")
    test = [s.path for s in category.test]
    images = load_images(test, size)  # decoded once: the timings compare searches, not decoding
    labels = np.array([s.label for s in category.test])
    masks = load_masks([s.mask_path for s in category.test], size) if category.has_masks else None
    print(f"{'index':10s} {'image AUROC':>12s} {'pixel AUROC':>12s} {'AUPRO':>8s} {'img/s':>7s} {'build s':>8s}")
    for kind in args.indices.split(","):
        built = time.perf_counter()
        detector._index = build_index(detector.memory_bank_, kind, detector.config.seed)
        build_s = time.perf_counter() - built
        started = time.perf_counter()
        prediction = detector.predict(images, progress=None)
        rate = len(test) / (time.perf_counter() - started)
        pixel = metrics.pixel_auroc(masks, prediction.anomaly_maps) if masks is not None else float("nan")
        aupro = metrics.aupro(masks, prediction.anomaly_maps) if masks is not None else float("nan")
        print(f"{kind:10s} {metrics.image_auroc(labels, prediction.scores):12.4f} {pixel:12.4f} {aupro:8.4f} "
              f"{rate:7.1f} {build_s:8.1f}", flush=True)


if __name__ == "__main__":
    main()
