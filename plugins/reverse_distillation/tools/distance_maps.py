"""Which teacher-student distance sees which defect: RD's 1 - cos against the Euclidean distance,
from one trained model (diagnosis of the magnetic-tile result, see the README).

RD scores a position by 1 - cos between teacher and student features, which ignores how long
the two vectors are. This fits (or resumes from a learning-curve checkpoint), then builds the
map three ways from the same teacher and student levels, each aggregated as RD does
(upsampled, summed over levels, Gaussian σ = 4): 1 - cos (the method), the Euclidean distance
|t - s| divided by the level's mean teacher norm, and the teacher norm's relative change
| |t| - |s| | / mean |t|. It prints image and pixel AUROC per defect type for each.

    python plugins/reverse_distillation/tools/distance_maps.py --data ../shared/data/magnetic_tile \
        --epochs 40 --checkpoint /tmp/lc/rd-mt-diag/checkpoint
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from adcore import metrics
from adcore.checkpoints import Place
from adcore.data.loading import ImageBatches, load_masks
from adcore.ops import gaussian_blur, upsample_maps
from adcore.options import RunOptions
from adcore.runner import make_detector, open_categories
from adcore_plugin_reverse_distillation.detector import cosine_distance_maps

SIZE = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: synthetic)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--checkpoint", type=Path, required=True, help="learning_curve.py's checkpoint folder")
    parser.add_argument("--fingerprint", default="curve reverse_distillation [] seed 0")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = RunOptions(detector="reverse_distillation", data=args.data, assignments={"epochs": str(args.epochs)})
    category = open_categories(options)[0]
    detector = make_detector(options)
    train = [s.path for s in category.train]
    detector.fit(ImageBatches(train, SIZE, 16), checkpoint=Place(args.checkpoint, args.fingerprint))
    test = list(category.test)
    maps: dict[str, list[np.ndarray]] = {"1 - cos (RD)": [], "|t - s| / mean |t|": [], "||t| - |s|| / mean |t|": []}
    with torch.no_grad():
        for batch in ImageBatches([s.path for s in test], SIZE, 16):
            teacher = detector.extractor(batch)
            student = detector._student(teacher)
            per_kind: dict[str, list[torch.Tensor]] = {name: [] for name in maps}
            per_kind["1 - cos (RD)"] = cosine_distance_maps(teacher, student)
            for t, s in zip(teacher, student):
                scale = t.norm(dim=1).mean()
                per_kind["|t - s| / mean |t|"].append((t - s).norm(dim=1) / scale)
                per_kind["||t| - |s|| / mean |t|"].append((t.norm(dim=1) - s.norm(dim=1)).abs() / scale)
            for name, levels in per_kind.items():
                total = sum(upsample_maps(m, (SIZE, SIZE)) for m in levels)
                maps[name].append(gaussian_blur(total, 4.0).numpy())
    labels = np.array([s.label for s in test])
    defects = np.array([s.defect for s in test])
    masks = load_masks([s.mask_path for s in test], SIZE)
    kinds = sorted(set(defects) - {"good"})
    print(f"{'distance':24s} {'all':>13s} " + " ".join(f"{k:>13s}" for k in kinds) + "   (image / pixel AUROC)")
    for name, parts in maps.items():
        m = np.concatenate(parts)
        scores = m.reshape(len(m), -1).max(1)
        cells = [f"{metrics.image_auroc(labels, scores):.3f}/{metrics.pixel_auroc(masks, m):.3f}"]
        for kind in kinds:
            chosen = (defects == "good") | (defects == kind)
            cells.append(f"{metrics.image_auroc(labels[chosen], scores[chosen]):.3f}/"
                         f"{metrics.pixel_auroc(masks[chosen], m[chosen]):.3f}")
        print(f"{name:24s} " + " ".join(f"{c:>13s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
