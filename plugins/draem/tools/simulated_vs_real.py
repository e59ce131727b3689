"""Does DRÆM learn its training task, and how much of it carries over to real defects?

DRÆM trains on simulated anomalies (Perlin masks filled with textures). A low score on real
defects has two readings: the networks did not learn to segment even the simulated anomalies
(training or implementation broken), or they did and the simulated anomalies do not resemble
the real ones (the method's transfer, at this budget). This fits DRÆM on ``train/good``, then
scores (a) the real test set and (b) the good test images with anomalies simulated on them
(textures from a bank of another seed than training's, every image altered) against the
same images unaltered, and prints image / pixel AUROC and AUPRO for both.

    python plugins/draem/tools/simulated_vs_real.py --data ../shared/data/mvtec3d_tire --set epochs=30
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
from adcore.options import RunOptions
from adcore.runner import make_detector, open_categories
from adcore_plugin_draem.simulate import procedural_textures, simulate

SIZE = 256
SIMULATION_SEED = 12345


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="MVTec-layout root (default: synthetic)")
    parser.add_argument("--set", dest="assignments", action="append", default=[], help="KEY=VALUE parameter")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = RunOptions(detector="draem", data=args.data, image_size=SIZE,
                         assignments=parse_set(tuple(args.assignments)))
    category = open_categories(options)[0]
    detector = make_detector(options)
    started = time.perf_counter()
    detector.fit(ImageBatches([s.path for s in category.train], SIZE, 8))
    fit_s = time.perf_counter() - started
    test = list(category.test)
    started = time.perf_counter()
    real = detector.predict(ImageBatches([s.path for s in test], SIZE, 8), progress=None)
    ms_per_image = (time.perf_counter() - started) / len(test) * 1000
    labels = np.array([s.label for s in test])
    masks = load_masks([s.mask_path for s in test], SIZE)
    real_maps = np.asarray(real.anomaly_maps, dtype=np.float32)

    good = load_images([s.path for s in test if s.label == 0], SIZE)
    bank = procedural_textures(detector.config.n_textures, (SIZE, SIZE), detector.config.seed + 1)
    altered, sim_masks = simulate(good, np.random.default_rng(SIMULATION_SEED),
                                  lambda r: bank[int(r.integers(len(bank)))], anomaly_prob=1.0)
    both = detector.predict(torch.cat([good, altered]), progress=None)
    sim_labels = np.r_[np.zeros(len(good)), np.ones(len(good))].astype(int)
    sim_truth = np.concatenate([np.zeros((len(good), SIZE, SIZE), bool), sim_masks[:, 0].numpy() > 0.5])
    sim_maps = np.asarray(both.anomaly_maps, dtype=np.float32)
    result = {
        "set": options.assignments, "epochs": len(detector.loss_history_), "fit_s": round(fit_s, 1),
        "ms_per_image": round(ms_per_image, 1), "loss": [round(float(v), 4) for v in detector.loss_history_],
        "real": {"image_auroc": metrics.image_auroc(labels, real.scores),
                 "pixel_auroc": metrics.pixel_auroc(masks, real_maps), "aupro": metrics.aupro(masks, real_maps)},
        "simulated": {"image_auroc": metrics.image_auroc(sim_labels, both.scores),
                      "pixel_auroc": metrics.pixel_auroc(sim_truth, sim_maps),
                      "aupro": metrics.aupro(sim_truth, sim_maps), "images": len(good)},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
