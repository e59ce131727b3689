"""Diagnose a run saved by fit_and_save.py: where the map maximum lies on normal and defective images,
per-defect-type AUROC, and the AUROC of other aggregations (diagnosis only: the score stays the paper's maximum).

    python plugins/riad/tools/diagnose_maps.py /tmp/riad-X [recompute]   # recompute: per-k maps, zero-padded filter
"""
import sys, json
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from adcore import metrics
from adcore.detector import load_model
from adcore.data.loading import ImageBatches
torch.set_num_threads(2)
out = Path(sys.argv[1]); recompute = len(sys.argv) > 2
z = np.load(out / "pred.npz")
maps, scores, labels, masks = z["maps"].astype(np.float32), z["scores"], z["labels"], z["masks"]
N, H, W = maps.shape
au = lambda s: round(metrics.image_auroc(labels, s), 4)
print("default max:", au(scores))
am = maps.reshape(N, -1).argmax(1); r, c = am // W, am % W
border = np.minimum.reduce([r, c, H - 1 - r, W - 1 - c])
inmask = masks.reshape(N, -1)[np.arange(N), am]
for lab in (0, 1):
    s = labels == lab
    print(f"label {lab}: n={s.sum()} score mean {scores[s].mean():.4f} sd {scores[s].std():.4f}; argmax dist-to-border median {np.median(border[s]):.0f}, "
          f"<=10px {np.mean(border[s] <= 10):.2f}; argmax row median {np.median(r[s]):.0f} col median {np.median(c[s]):.0f}; argmax in GT mask {inmask[s].mean():.2f}")
for b in (8, 16, 32, 48):
    print(f"max inside border {b}:", au(maps[:, b:-b, b:-b].reshape(N, -1).max(1)))
print("mean:", au(maps.reshape(N, -1).mean(1)), " p99:", au(np.percentile(maps.reshape(N, -1), 99, axis=1)),
      " max-mean:", au(maps.reshape(N, -1).max(1) - maps.reshape(N, -1).mean(1)))
# per-defect-type
paths = z["paths"]; types = np.array([Path(p).parent.name for p in paths])
for t in sorted(set(types) - {"good"}):
    s = (types == t) | (types == "good")
    print(f"  {t}: n={np.sum(types == t)} image AUROC vs good {metrics.image_auroc(labels[s], scores[s]):.3f}; mean map in defect {maps[types == t][masks[types == t]].mean():.4f} vs outside {maps[types == t][~masks[types == t]].mean():.4f}")
print("mean map on good images:", maps[labels == 0].mean())
if recompute:
    det, _ = load_model(out / "model")
    from adcore_plugin_riad.detector import to_signed, smoothing_size
    from adcore_plugin_riad.losses import msgms_map
    raw = {k: [] for k in det.config.cell_sizes}
    for batch in ImageBatches(list(paths), 256, 8):
        s = to_signed(batch)
        for k in det.config.cell_sizes:
            raw[k].append((1 - msgms_map(s, det._inpaint(s, k), det.config.gms_c)).numpy())
    raw = {k: np.concatenate(v) for k, v in raw.items()}
    np.savez_compressed(out / "raw_k.npz", **{str(k): v.astype(np.float16) for k, v in raw.items()})
    avg = sum(raw.values()) / len(raw)
    t = torch.from_numpy(avg).unsqueeze(1)
    inc = F.avg_pool2d(t, 21, 1, 10, count_include_pad=True).squeeze(1).numpy()
    print("zero-padded mean filter (count_include_pad=True) max:", au(inc.reshape(N, -1).max(1)),
          "pixel", round(metrics.pixel_auroc(masks, inc), 4))
    print("unsmoothed max:", au(avg.reshape(N, -1).max(1)))
    for k, v in raw.items():
        sm = F.avg_pool2d(torch.from_numpy(v).unsqueeze(1), 21, 1, 10, count_include_pad=False).squeeze(1).numpy()
        print(f"k={k}: image AUROC (max, smoothed) {au(sm.reshape(N, -1).max(1))}, pixel {metrics.pixel_auroc(masks, sm):.4f}, mean raw good {v[labels==0].mean():.4f} defective {v[labels==1].mean():.4f}")
