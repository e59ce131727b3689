"""SPADE's pixel-gallery search, pruned ("clustered", the default) against brute force ("exact").

Fits SPADE once on all of train/good, then scores the first ``--images`` test images
with each index back to back, printing seconds per image for each and the largest
relative difference of their image scores and raw pixel maps (0 when the pruned
search is exact, as it must be). Run on a quiet machine.

Usage: python compare_index.py /work/shared/data/magnetic_tile [--images 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from adcore.data.loading import ImageBatches, load_images
from adcore.runner import RunOptions, open_categories
from adcore_plugin_spade.detector import Spade


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--images", type=int, default=16, help="test images scored with each index")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = RunOptions(detector="spade", data=args.data)
    category, size = open_categories(options)[0], options.image_size
    detector = Spade()
    started = time.perf_counter()
    detector.fit(ImageBatches([s.path for s in category.train], size, detector.config.batch_size))
    print(f"{category.name}: fit {time.perf_counter() - started:.1f} s "
          f"({len(category.train)} images, {detector.config.pixel_cells} cells)")
    images = load_images([s.path for s in category.test][: args.images], size)
    results = {}
    for kind in ("clustered", "exact"):
        detector.config.index = kind
        started = time.perf_counter()
        detector._prepare()  # the clustered index cuts the training pixels into cells here, once
        prepare_s = time.perf_counter() - started
        started = time.perf_counter()
        results[kind] = [detector.score(chunk) for chunk in images.split(detector.config.batch_size)]
        print(f"{kind:9s} {(time.perf_counter() - started) / len(images):.2f} s per test image "
              f"(prepared in {prepare_s:.1f} s)", flush=True)
    for part, name in ((0, "image scores"), (1, "pixel maps")):
        pruned = torch.cat([r[part].flatten() for r in results["clustered"]])
        brute = torch.cat([r[part].flatten() for r in results["exact"]])
        print(f"largest relative difference of the {name}: {float(((pruned - brute).abs() / brute.abs()).max()):.2e}")


if __name__ == "__main__":
    main()
