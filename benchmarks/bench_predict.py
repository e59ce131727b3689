"""Every detector's predict time next to its own network's forward time, on one category.

Why: no method predicts faster than the network it runs, so the ratio of the two
says how much of a method's time is its own scoring (a memory-bank search, a
gallery, a reconstruction's comparison) and how much could only come from a
faster network. Images are decoded once, before timing, so neither column pays
for decoding.

The training-free detectors are fitted on the whole train split (their memory
bank, and so their search, grows with it). The trained ones are fitted for one
epoch on a few images: their predict cost does not depend on how long they
trained, so their accuracy here means nothing and is not printed. The forward
column is the backbone's feature pass (``detector.extractor``) where a detector
has one; DRÆM and RIAD have none (their networks are the method).

    python benchmarks/bench_predict.py --data ../shared/data/mvtec3d_tire
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from adcore.data.loading import load_images
from adcore.options import RunOptions
from adcore.plugins import get_registry
from adcore.runner import make_detector, open_categories

#: Parameters that make a trained detector's fit short; predict is unaffected.
SHORT_FIT = {"simplenet": ["epochs=1"], "reverse_distillation": ["epochs=1"], "draem": ["epochs=1"],
             "riad": ["epochs=1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: synthetic)")
    parser.add_argument("--category", default=None)
    parser.add_argument("--detectors", default="all", help="comma-separated names, or all")
    parser.add_argument("--test-images", type=int, default=64, help="test images timed per detector")
    parser.add_argument("--trained-fit-images", type=int, default=16, help="images a trained detector fits on")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = (sorted(get_registry().names("detector")) if args.detectors == "all" else args.detectors.split(","))
    print(f"{'detector':22s} {'fit s':>7s} {'predict ms/img':>15s} {'forward ms/img':>15s} {'predict/forward':>16s}")
    for name in names:
        options = RunOptions(detector=name, data=args.data, categories=(args.category,) if args.category else (),
                             assignments=dict(a.split("=", 1) for a in SHORT_FIT.get(name, [])))
        category = open_categories(options)[0]
        detector = make_detector(options)
        train = [s.path for s in category.train]
        if name in SHORT_FIT:
            train = train[: args.trained_fit_images]
        test = load_images([s.path for s in category.test][: args.test_images], 256)
        started = time.perf_counter()
        detector.fit(load_images(train, 256))
        fit_s = time.perf_counter() - started
        detector.predict(test[:2], progress=None)  # warm-up
        started = time.perf_counter()
        detector.predict(test, progress=None)
        predict_ms = (time.perf_counter() - started) / len(test) * 1000
        forward_ms = _forward_ms(detector, test)
        ratio = f"{predict_ms / forward_ms:16.1f}" if forward_ms else f"{'-':>16s}"
        forward = f"{forward_ms:15.1f}" if forward_ms else f"{'-':>15s}"
        print(f"{name:22s} {fit_s:7.1f} {predict_ms:15.1f} {forward} {ratio}", flush=True)


def _forward_ms(detector, images: torch.Tensor) -> float | None:  # type: ignore[no-untyped-def]
    """The backbone feature pass alone, per image, in the detector's own batches."""
    extractor = getattr(detector, "extractor", None)
    if extractor is None:
        return None
    batch = detector.config.batch_size
    extractor(images[:batch])  # warm-up
    started = time.perf_counter()
    for chunk in images.split(batch):
        extractor(chunk)
    return (time.perf_counter() - started) / len(images) * 1000


if __name__ == "__main__":
    main()
