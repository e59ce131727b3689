"""PatchCore at 1,000 to 10,000 training images: fit time, predict speed, peak memory.

Synthetic normal images (striped, shaded, noisy surfaces; one seeded generator per
image) are made in memory batch by batch, so the data set itself costs no memory.
For every size it fits PatchCore, then times, on the same test batch and back to
back, the backbone alone and each nearest-neighbour index's search. Peak memory
is the process's resident high-water mark (VmHWM), so run one size per process
for a per-size peak (``--sizes 3000``). Timings on a shared machine are noisy.

    nice -n 5 python benchmarks/bench_scaling.py --sizes 1000,3000
"""

from __future__ import annotations

import argparse
import math
import time

import attrs
import torch
import torch.nn.functional as F

from adcore.neighbors import build_index
from adcore.runner import peak_rss_mb
from adcore_plugin_patchcore.detector import PatchCore

SIZE = 256


class SyntheticImages:
    """``count`` normal images in [0, 1], generated per batch (re-iterable, sized)."""

    def __init__(self, count: int, batch_size: int = 32, seed: int = 0) -> None:
        self.count, self.batch_size, self.seed = count, batch_size, seed

    def __len__(self) -> int:
        return self.count

    def __iter__(self):  # type: ignore[no-untyped-def]
        for start in range(0, self.count, self.batch_size):
            yield torch.stack([_image(self.seed * 10**7 + i) for i in range(start, min(start + self.batch_size,
                                                                                        self.count))])


def _image(index: int) -> torch.Tensor:
    """Stripes of a random direction and frequency, smooth shading, sensor noise."""
    generator = torch.Generator().manual_seed(index)
    angle, frequency, phase = torch.rand(3, generator=generator) * torch.tensor([math.pi, 20.0, 6.3])
    axis = torch.linspace(-1, 1, SIZE)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    stripes = torch.sin((x * torch.cos(angle) + y * torch.sin(angle)) * (10 + frequency) + phase)
    shading = F.interpolate(torch.rand(1, 3, 4, 4, generator=generator), size=(SIZE, SIZE), mode="bilinear",
                            align_corners=False)[0]
    noise = 0.03 * torch.randn(3, SIZE, SIZE, generator=generator)
    return (0.25 + 0.2 * stripes + 0.5 * shading + noise).clamp(0, 1)


def timed(function, repeats: int = 2) -> float:  # type: ignore[no-untyped-def]
    """Best of ``repeats`` wall times (seconds) after one warm-up call."""
    function()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def run(count: int, kinds: list[str], test_images: int, coreset_ratio: float, index: str) -> None:
    detector = PatchCore(batch_size=32, coreset_ratio=coreset_ratio, index=index)
    started = time.perf_counter()
    detector.fit(SyntheticImages(count))
    fit_s = time.perf_counter() - started
    bank = detector.memory_bank_
    print(f"[{count} images] fit {fit_s:.1f} s, coreset {coreset_ratio:g}, bank {tuple(bank.shape)}, "
          f"peak RSS {peak_rss_mb():.0f} MB", flush=True)
    test = next(iter(SyntheticImages(test_images, test_images, seed=1)))
    started = time.perf_counter()
    detector.predict(test, progress=None)
    predict_s = time.perf_counter() - started
    print(f"[{count} images] predict {test_images / predict_s:.1f} images/s (index={detector.config.index})",
          flush=True)
    backbone_s = timed(lambda: detector.extractor(test))
    queries, _ = detector.embed(test)
    line = f"[{count} images] per image: backbone {1e3 * backbone_s / test_images:.1f} ms"
    for kind in kinds:
        built = time.perf_counter()
        index = build_index(bank, kind)
        build_s = time.perf_counter() - built
        search_s = timed(lambda index=index: index.search(queries, 1))
        line += f", {kind} search {1e3 * search_s / test_images:.1f} ms (built in {build_s:.1f} s)"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,3000,10000", help="training-set sizes, comma-separated")
    parser.add_argument("--indices", default="clustered,exact", help="indices to time, e.g. clustered,exact,ivf")
    parser.add_argument("--coreset-ratio", type=float, default=0.1, help="PatchCore's coreset_ratio (paper: 0.1, 0.01)")
    parser.add_argument("--index", default=attrs.fields(PatchCore.Config).index.default,
                        help="the index PatchCore predicts with (its `index`; default: PatchCore's)")
    parser.add_argument("--test-images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for count in (int(s) for s in args.sizes.split(",")):
        run(count, args.indices.split(","), args.test_images, args.coreset_ratio, args.index)


if __name__ == "__main__":
    main()
