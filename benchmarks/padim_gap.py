"""Probe the PaDiM accuracy gap to anomalib by swapping in anomalib's choices one at a time.

Runs ``bench_detector.py --detector padim`` with, on request:

* ``--anomalib-draw``: anomalib's channel subset, ``random.seed(42); random.sample(range(176), 100)``
  (what its ``Padim`` draws if nothing consumed Python's ``random`` after its seed was set);
* ``--float-resize``: torchvision's antialiased resize on float images (anomalib 2.x's
  pre-processing) instead of Pillow's bilinear resize of 8-bit images.

    python benchmarks/padim_gap.py --data ../shared/data/magnetic_tile --anomalib-draw --float-resize

Accuracy only: the timings it prints are not those of a default run.
"""

from __future__ import annotations

import argparse
import random
import runpy
import sys
from pathlib import Path

import numpy as np
import torch


def anomalib_draw(total: int, count: int, seed: int) -> torch.Tensor:
    """anomalib's ``sample(range(total), count)`` under its seed 42 (``seed`` is ignored)."""
    random.seed(42)
    return torch.tensor(sorted(random.sample(range(total), count)))


def float_resize(path: Path, size: int | None = None) -> np.ndarray:
    """Read as float RGB, resize with torchvision (antialias), return (H, W, 3) in 0..255."""
    from torchvision.transforms.v2 import functional as tvf

    from adcore import imageio

    image = torch.from_numpy(imageio.read_rgb(path).astype(np.float32) / 255.0).permute(2, 0, 1)
    if size is not None:
        image = tvf.resize(image, [size, size], antialias=True)
    return (image.permute(1, 2, 0) * 255.0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--anomalib-draw", action="store_true")
    parser.add_argument("--float-resize", action="store_true")
    args = parser.parse_args()
    if args.anomalib_draw:
        import adcore_plugin_padim.detector

        adcore_plugin_padim.detector.channel_subset = anomalib_draw
    if args.float_resize:
        import adcore.data.loading

        adcore.data.loading.read_rgb = float_resize
    sys.argv = ["bench_detector.py", "--detector", "padim", "--data", args.data]
    runpy.run_path(str(Path(__file__).with_name("bench_detector.py")), run_name="__main__")


if __name__ == "__main__":
    main()
