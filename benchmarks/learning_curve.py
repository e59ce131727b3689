"""A detector's test metrics after growing numbers of epochs, from one training run.

Why: a trained method far below its paper is either implemented wrongly or trained too
briefly, and the curve tells the two apart. If the metrics still climb at the CPU
schedule's last epoch, the shortfall is the budget; if they are flat (or fall) while
the loss falls, more epochs will not close it. The training runs once: after each
point it is checkpointed, and the next point resumes from there (the checkpoint holds
the modules, optimisers and random generators, so the run is the uninterrupted one).

    python benchmarks/learning_curve.py --detector reverse_distillation \
        --data ../shared/data/magnetic_tile --epochs 10,20,40 --out /tmp/curve-rd-mt

Writes ``curve.json`` in ``--out`` (replaced atomically after every point) and prints one
line per point: epochs, cumulative training seconds, image / pixel AUROC, AUPRO, and the
mean loss of every epoch so far. Without ``--epochs`` it fits once at the detector's defaults
(a training-free detector such as PatchCore, for a comparison from the same session).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import attrs
import numpy as np
import torch
from adcore import fs, metrics
from adcore.checkpoints import Place
from adcore.cli.run_cmd import parse_set
from adcore.data.loading import ImageBatches, load_masks
from adcore.options import RunOptions
from adcore.runner import make_detector, open_categories

IMAGE_SIZE = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", required=True)
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: synthetic)")
    parser.add_argument("--category", default=None)
    parser.add_argument("--epochs", default=None,
                        help="comma-separated, increasing: 10,20,40 (default: one fit at the detector's defaults)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], help="KEY=VALUE parameter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--save-maps", action="store_true",
                        help="also write every point's test maps and scores (maps-<epochs>.npz, float16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    epoch_points = [int(e) for e in args.epochs.split(",")] if args.epochs else []
    if epoch_points and (epoch_points != sorted(set(epoch_points)) or epoch_points[0] < 1):
        parser.error("--epochs must be increasing positive integers")
    points: list[int | None] = [*epoch_points] or [None]

    assignments = parse_set(tuple(args.assignments))
    options = RunOptions(detector=args.detector, data=args.data, seed=args.seed, image_size=IMAGE_SIZE,
                         categories=(args.category,) if args.category else (), assignments=assignments)
    category = open_categories(options)[0]
    train = [s.path for s in category.train]
    test = list(category.test)
    labels = np.array([s.label for s in test])
    masks = load_masks([s.mask_path for s in test], IMAGE_SIZE)
    args.out.mkdir(parents=True, exist_ok=True)
    place = Place(args.out / "checkpoint", f"curve {args.detector} {sorted(assignments.items())} seed {args.seed}")
    record: dict = {"detector": args.detector, "data": str(args.data), "category": category.name,
                    "set": assignments, "seed": args.seed, "threads": args.threads,
                    "train_images": len(train), "test_images": len(test), "points": []}
    fit_seconds = 0.0
    for epochs in points:
        epoch_set = {} if epochs is None else {"epochs": str(epochs)}
        detector = make_detector(attrs.evolve(options, assignments={**assignments, **epoch_set}))
        started = time.perf_counter()
        detector.fit(ImageBatches(train, IMAGE_SIZE, detector.config.batch_size),
                     checkpoint=None if epochs is None else place)
        fit_seconds += time.perf_counter() - started
        started = time.perf_counter()
        prediction = detector.predict(ImageBatches([s.path for s in test], IMAGE_SIZE, detector.config.batch_size),
                                      progress=None)
        ms_per_image = (time.perf_counter() - started) / len(test) * 1000
        maps = np.asarray(prediction.anomaly_maps, dtype=np.float32)
        # Epochs actually trained: a schedule may derive them (DRÆM's step floor) or a time budget cut them.
        trained = len(getattr(detector, "loss_history_", []))
        point = {"epochs": trained or None, "fit_s_cumulative": round(fit_seconds, 1),
                 "ms_per_image": round(ms_per_image, 1),
                 "image_auroc": metrics.image_auroc(labels, prediction.scores),
                 "pixel_auroc": metrics.pixel_auroc(masks, maps), "aupro": metrics.aupro(masks, maps),
                 "by_defect": by_defect(test, labels, masks, maps, np.asarray(prediction.scores)),
                 "loss": [round(float(v), 4) for v in getattr(detector, "loss_history_", [])]}
        if args.save_maps:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, maps=maps.astype(np.float16), scores=np.asarray(prediction.scores),
                                labels=labels)
            fs.write_file(args.out / f"maps-{point['epochs']}.npz", buffer.getvalue())
        record["points"].append(point)
        fs.write_json(args.out / "curve.json", record)
        print(json.dumps({k: v for k, v in point.items() if k not in ("loss", "by_defect")}), "loss", point["loss"],
              flush=True)


def by_defect(test: list, labels: np.ndarray, masks: np.ndarray, maps: np.ndarray,
              scores: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Image and pixel AUROC of each defect type against the good test images: which defects a
    method misses, where the mean hides it."""
    defects = np.array([s.defect for s in test])
    good = defects == "good"
    result = {}
    for defect in sorted(set(defects) - {"good"}):
        chosen = good | (defects == defect)
        result[defect] = {"image_auroc": metrics.image_auroc(labels[chosen], scores[chosen]),
                          "pixel_auroc": metrics.pixel_auroc(masks[chosen], maps[chosen])}
    return result


if __name__ == "__main__":
    main()
