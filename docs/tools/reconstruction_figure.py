"""Draw a reconstruction figure from a saved run: input | reconstruction | anomaly map, a few test images.

For detectors with a ``reconstruct(images[, cell])`` method (RIAD, DRAEM); their READMEs show
the figures this draws::

    python docs/tools/reconstruction_figure.py RUN_CATEGORY_FOLDER DATA_CATEGORY_FOLDER OUT.png [--cell 8]

RUN_CATEGORY_FOLDER is what ``adcore run`` wrote for one category (it holds ``model/``);
DATA_CATEGORY_FOLDER is the category in MVTec AD layout. ``--cell`` is RIAD's cell size k.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from adcore import visualize
from adcore.data.folder import read_category
from adcore.data.loading import load_images, load_masks
from adcore.detector import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cell", type=int, default=None, help="RIAD: cell size k of the reconstruction shown")
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args()

    detector, meta = load_model(args.run / "model")
    size = int(meta["image_size"])
    category = read_category(args.data.name, args.data)
    defective = [s for s in category.test if s.label == 1][: args.count - 1]
    good = [s for s in category.test if s.label == 0][:1]
    samples = defective + good
    images = load_images([s.path for s in samples], size)
    masks = load_masks([s.mask_path for s in samples], size)
    with torch.no_grad():
        extra = () if args.cell is None else (args.cell,)
        reconstructions = detector.reconstruct(images, *extra).clamp(0, 1)
    maps = detector.predict(images, progress=None).anomaly_maps
    vmin, vmax = meta.get("display_range") or (float(maps.min()), float(maps.max()))
    rows = []
    for image, rec, amap, mask in zip(images, reconstructions, maps, masks):
        rgb = image.permute(1, 2, 0).numpy()
        rec_tile = (rec.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        heat = visualize.heat_overlay((rgb * 255 + 0.5).astype(np.uint8), amap, vmin, vmax)
        gap = np.full((size, 4, 3), 255, np.uint8)
        row = np.concatenate([(rgb * 255 + 0.5).astype(np.uint8), gap, rec_tile, gap, heat], axis=1)
        rows.append(row)
        rows.append(np.full((4, row.shape[1], 3), 255, np.uint8))
    visualize.save_image(args.out, np.concatenate(rows[:-1], axis=0))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
