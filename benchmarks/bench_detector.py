"""Time one detector on one category: fit, predict, backbone floor, peak memory, accuracy.

Compares with the incumbent's numbers in ../shared/reference/anomalib.json when
that file has the same method and category. Fits on all of train/good (as the
reference does: no calibration hold-out). Run one benchmark at a time on a
quiet machine; timings on shared machines are noisy.

    python benchmarks/bench_detector.py --detector patchcore --data ../shared/data/mvtec3d_tire
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from adcore import metrics
from adcore.cli.run_cmd import parse_set
from adcore.data.loading import ImageBatches, load_images, load_masks
from adcore.memory import peak_rss_mb
from adcore.options import RunOptions
from adcore.runner import make_detector, open_categories

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "anomalib.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", default="patchcore")
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: synthetic)")
    parser.add_argument("--category", default=None)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the reference used 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    options = RunOptions(detector=args.detector, data=args.data, image_size=args.image_size,
                         assignments=parse_set(tuple(args.assignments)),
                         categories=(args.category,) if args.category else ())
    category = open_categories(options)[0]
    detector = make_detector(options)
    size, batch = args.image_size, detector.config.batch_size
    train_paths = [s.path for s in category.train]
    test = list(category.test)

    started = time.perf_counter()
    detector.fit(ImageBatches(train_paths, size, batch))
    fit_s = time.perf_counter() - started
    fit_peak = peak_rss_mb()

    started = time.perf_counter()
    prediction = detector.predict(ImageBatches([s.path for s in test], size, batch), progress=None)
    predict_s = time.perf_counter() - started

    floor = backbone_floor(detector, [s.path for s in test][:64], size, batch)
    labels = np.array([s.label for s in test])
    masks = load_masks([s.mask_path for s in test], size) if category.has_masks else None
    result = {
        "detector": args.detector, "category": category.name, "n_train": len(train_paths), "n_test": len(test),
        "image_AUROC": metrics.image_auroc(labels, prediction.scores),
        "pixel_AUROC": metrics.pixel_auroc(masks, prediction.anomaly_maps) if masks is not None else None,
        "pixel_AUPRO": metrics.aupro(masks, prediction.anomaly_maps) if masks is not None else None,
        "fit_train_phase_seconds": round(fit_s, 2),
        "test_images_per_s": round(len(test) / predict_s, 2),
        "backbone_only_images_per_s": floor,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_after_fit": round(fit_peak, 1),
    }
    print(json.dumps(result, indent=2))
    compare(result)


def backbone_floor(detector, paths, size, batch) -> float | None:  # type: ignore[no-untyped-def]
    """Images per second of the backbone alone on preloaded images (the method's speed limit)."""
    extractor = getattr(detector, "extractor", None)
    if extractor is None:
        return None
    images = load_images(paths, size)
    extractor(images[:batch])  # warm-up
    started = time.perf_counter()
    for chunk in images.split(batch):
        extractor(chunk)
    return round(len(images) / (time.perf_counter() - started), 2)


def compare(result: dict) -> None:  # type: ignore[type-arg]
    if not REFERENCE.is_file():
        print(f"(no reference file at {REFERENCE}; skipping the comparison)")
        return
    reference = json.loads(REFERENCE.read_text()).get(f"{result['detector']}/{result['category']}")
    if reference is None:
        print("(the reference has no numbers for this detector and category)")
        return
    print(f"\nversus anomalib 2.7.0 ({result['detector']}/{result['category']}):")
    rows = [("fit speed-up (x, higher is better)", reference["fit_train_phase_seconds"] / result["fit_train_phase_seconds"]),
            ("predict speed-up (x)", result["test_images_per_s"] / reference["test_images_per_s"]),
            ("peak memory ratio (lower is better)", result["peak_rss_mb"] / reference["peak_rss_mb"])]
    for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO"):
        if result[key] is not None:
            rows.append((f"{key} difference", result[key] - reference[key]))
    for label, value in rows:
        print(f"  {label:40s} {value:+.4f}" if "difference" in label else f"  {label:40s} {value:.2f}")


if __name__ == "__main__":
    main()
