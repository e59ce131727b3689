"""Fit RIAD (or another detector) with --set overrides; save the model, every test map, scores and metrics for diagnosis.

    python plugins/riad/tools/fit_and_save.py --data ../shared/data/mvtec3d_tire --out /tmp/riad-X --set lr=1e-3
"""
import argparse, json, time, sys
from pathlib import Path
import numpy as np, torch
from adcore import metrics
from adcore.cli.run_cmd import parse_set
from adcore.data.loading import ImageBatches, load_masks
from adcore.runner import RunOptions, make_detector, open_categories

p = argparse.ArgumentParser()
p.add_argument("--data", type=Path, required=True)
p.add_argument("--out", type=Path, required=True)
p.add_argument("--set", dest="assignments", action="append", default=[])
p.add_argument("--threads", type=int, default=2)
p.add_argument("--detector", default="riad")
a = p.parse_args()
torch.set_num_threads(a.threads)
opts = RunOptions(detector=a.detector, data=a.data, image_size=256, assignments=parse_set(tuple(a.assignments)))
cat = open_categories(opts)[0]
det = make_detector(opts)
train_paths = [s.path for s in cat.train]
test = list(cat.test)
t = time.perf_counter()
det.fit(ImageBatches(train_paths, 256, det.config.batch_size))
fit_s = time.perf_counter() - t
a.out.mkdir(parents=True, exist_ok=True)
det.save(a.out / "model")
t = time.perf_counter()
pred = det.predict(ImageBatches([s.path for s in test], 256, det.config.batch_size), progress=None)
pred_s = time.perf_counter() - t
labels = np.array([s.label for s in test])
masks = load_masks([s.mask_path for s in test], 256)
maps = np.asarray(pred.anomaly_maps, dtype=np.float32)
np.savez_compressed(a.out / "pred.npz", maps=maps.astype(np.float16), scores=np.asarray(pred.scores),
                    labels=labels, masks=np.asarray(masks).astype(bool),
                    paths=np.array([str(s.path) for s in test]))
res = dict(cmd=" ".join(sys.argv), n_train=len(train_paths), fit_s=round(fit_s, 1), predict_s=round(pred_s, 1),
           image_AUROC=metrics.image_auroc(labels, pred.scores),
           pixel_AUROC=metrics.pixel_auroc(masks, maps), AUPRO=metrics.aupro(masks, maps),
           loss=[round(float(v), 4) for v in det.loss_history_])
(a.out / "result.json").write_text(json.dumps(res, indent=1))
print(json.dumps(res))
