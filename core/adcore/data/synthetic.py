"""Built-in synthetic anomaly-detection data set, written in MVTec AD layout.

Why: adcore must run end to end (tutorials, smoke tests, benchmarks) without
downloading anything, and evaluation code needs masks that are exactly right.
This module renders a few categories of industrial-looking surfaces and parts
with procedural textures and paints defects onto them. Every defective image is
rendered next to its clean twin, so each mask is the exact set of pixels the
defect changed in the saved file. Output is deterministic: the same arguments
give byte-identical files on the same platform.

Layout::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png   (uint8, 0 or 255)
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates, uniform_filter1d

from adcore import fs
from adcore.errors import ConfigError

CATEGORIES: tuple[str, ...] = ("brushed_metal", "woven_fabric", "machined_part")
DEFECTS: tuple[str, ...] = ("scratch", "crack", "spot", "missing")

_VERSION = "v1"
_MARKER = ".complete"
#: A generated tree is recognised by its completion marker, so only such a tree is ever replaced.
_KIND = fs.Kind("a synthetic data set", "adcore-synthetic", identity=_MARKER,
                recognise=lambda folder: (folder / _MARKER).is_file())
_AREA_RANGE = (0.002, 0.05)  # accepted fraction of the image a defect may change
_MAX_TRIES = 200
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SPOT_COLOURS = np.array(
    [[0.55, 0.27, 0.10], [0.42, 0.20, 0.08], [0.30, 0.23, 0.15], [0.16, 0.17, 0.19]],
    dtype=np.float32,
)  # rust, dark rust, stain, oil


@dataclasses.dataclass(frozen=True)
class _Scene:
    """A clean image as layers that defects can edit.

    Attributes:
        surface: Material appearance, float32 (H, W, C) in [0, 1], C is 1 or 3.
        backdrop: What shows where material is absent, same shape as surface.
        coverage: Material coverage (H, W) in [0, 1], anti-aliased at edges.
        interior: Where scratch, crack and spot defects may start.
        rim: Where a missing chunk may be centred.
    """

    surface: np.ndarray
    backdrop: np.ndarray
    coverage: np.ndarray
    interior: np.ndarray
    rim: np.ndarray

    def compose(self) -> np.ndarray:
        """Return the image as uint8 (H, W, C)."""
        cov = self.coverage[..., None]
        return _to_uint8(self.backdrop * (1.0 - cov) + self.surface * cov)


# ----------------------------------------------------------------- public API
def default_root(seed: int = 0) -> Path:
    """Return the cache folder of the default data set for ``seed``.

    It is ``$ADCORE_CACHE_DIR/synthetic/v1-seed{seed}``; ``ADCORE_CACHE_DIR``
    defaults to ``~/.cache/adcore``.
    """
    cache = os.environ.get("ADCORE_CACHE_DIR") or "~/.cache/adcore"
    return Path(cache).expanduser() / "synthetic" / f"{_VERSION}-seed{seed}"


def ensure(seed: int = 0, root: Path | None = None) -> Path:
    """Return the data set root, generating it with default arguments if needed.

    Args:
        seed: Random seed of the data set.
        root: Folder to use; defaults to :func:`default_root`.

    Returns:
        The root; a folder holding the completion marker is reused as it is.
    """
    root = Path(root) if root is not None else default_root(seed)
    if (root / _MARKER).is_file():
        return root
    return generate(root, seed=seed)


def generate(
    root: Path,
    *,
    categories: Sequence[str] = CATEGORIES,
    seed: int = 0,
    size: int = 256,
    n_train: int = 40,
    n_test_good: int = 10,
    n_test_defect: int = 5,
) -> Path:
    """Write the data set under ``root``, replacing whatever was there.

    The tree is built in a temporary sibling folder and moved into place, so an
    interrupted run never leaves a half-written data set.

    Args:
        root: Destination folder.
        categories: Names from :data:`CATEGORIES`.
        seed: Random seed; each image draws from its own generator seeded by
            (seed, category, split, index).
        size: Image side in pixels.
        n_train: Normal training images per category.
        n_test_good: Normal test images per category.
        n_test_defect: Test images per category and defect kind.

    Returns:
        ``root``.

    Raises:
        ConfigError: An argument is out of range or a category is unknown.
    """
    _check_args(categories, seed, size, (n_train, n_test_good, n_test_defect))
    root = Path(root)

    def write(folder: Path) -> None:
        for category in categories:
            _write_category(folder / category, category, seed, size, n_train, n_test_good, n_test_defect)
        params = {"version": _VERSION, "seed": seed, "size": size, "categories": list(categories),
                  "n_train": n_train, "n_test_good": n_test_good, "n_test_defect": n_test_defect}
        (folder / _MARKER).write_text(json.dumps(params, indent=1) + "\n")

    fs.replace_folder(root, write, _KIND)
    return root


# ------------------------------------------------------------------ writing
def _check_args(categories: Sequence[str], seed: int, size: int, counts: Sequence[int]) -> None:
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown:
        raise ConfigError(f"unknown synthetic categories {unknown}; choose from {list(CATEGORIES)}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if size < 32:
        raise ConfigError(f"size must be >= 32 pixels, got {size}")
    if min(counts) < 0:
        raise ConfigError(f"image counts must be >= 0, got {list(counts)}")


def _write_category(
    folder: Path, category: str, seed: int, size: int, n_train: int, n_test_good: int, n_test_defect: int
) -> None:
    for split, count in (("train/good", n_train), ("test/good", n_test_good)):
        (folder / split).mkdir(parents=True)
        for i in range(count):
            clean, _, _ = _sample(category, None, _rng(seed, category, split, i), size)
            _save(clean, folder / split / f"{i:03d}.png")
    for defect in DEFECTS:
        (folder / "test" / defect).mkdir(parents=True)
        (folder / "ground_truth" / defect).mkdir(parents=True)
        for i in range(n_test_defect):
            _, image, mask = _sample(category, defect, _rng(seed, category, f"test/{defect}", i), size)
            _save(image, folder / "test" / defect / f"{i:03d}.png")
            _save(mask, folder / "ground_truth" / defect / f"{i:03d}_mask.png")


def _rng(seed: int, category: str, split: str, index: int) -> np.random.Generator:
    words = [seed, zlib.crc32(category.encode()), zlib.crc32(split.encode()), index]
    return np.random.default_rng(np.random.SeedSequence(words))


def _save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------- sampling
def _sample(
    category: str, defect: str | None, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one image of ``category``, with ``defect`` painted on if given.

    Returns:
        (clean, image, mask): uint8 (H, W, C) clean and final images and the
        uint8 (H, W, 1) mask, 255 exactly where they differ. Without a defect
        image is clean and the mask is empty.
    """
    scene = _RENDERERS[category](rng, size)
    clean = scene.compose()
    if defect is None:
        return clean, clean, np.zeros((size, size, 1), np.uint8)
    low, high = _AREA_RANGE
    for _ in range(_MAX_TRIES):
        image = _PAINTERS[defect](scene, rng, size).compose()
        changed = np.any(image != clean, axis=-1, keepdims=True)
        if low <= changed.mean() <= high:
            return clean, image, changed.astype(np.uint8) * 255
    raise RuntimeError(f"could not place a {defect} defect on {category} in {_MAX_TRIES} tries")


# ---------------------------------------------------------------- renderers
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (y, x) pixel-centre coordinates, float32 (size, size)."""
    y, x = np.indices((size, size), dtype=np.float32)
    return y, x


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return field / (field.std() + 1e-8)


def _lighting(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Smooth illumination field around 1: a linear gradient and a vignette."""
    y, x = _grid(size)
    y, x = 2 * y / size - 1, 2 * x / size - 1
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * x + np.sin(angle) * y
    return 1 + strength * (rng.uniform(0.4, 1.0) * ramp - rng.uniform(0.0, 0.5) * (x * x + y * y))


def _margin_mask(size: int, margin: float) -> np.ndarray:
    """Boolean (size, size) mask that is True away from the borders."""
    inner = np.zeros((size, size), bool)
    m = int(margin * size)
    inner[m : size - m, m : size - m] = True
    return inner


def _dark_hole(rng: np.random.Generator, size: int, tint: np.ndarray) -> np.ndarray:
    """Backdrop seen through a hole in a flat sheet: dark, slightly uneven."""
    return np.clip((0.07 + 0.015 * _noise(rng, (size, size), 1.5))[..., None] * tint, 0, 1)


def _texture_scene(rng: np.random.Generator, surface: np.ndarray, tint: np.ndarray) -> _Scene:
    """Scene of a flat sheet filling the frame, with a dark hole behind it."""
    size = surface.shape[0]
    inner = _margin_mask(size, 0.08)
    return _Scene(np.clip(surface, 0, 1), _dark_hole(rng, size, tint), np.ones((size, size), np.float32),
                  inner, inner)


def _brushed_metal(rng: np.random.Generator, size: int) -> _Scene:
    """Grey-blue metal brushed along a nearly horizontal direction."""
    big = int(size * 1.5) + 2
    white = rng.standard_normal((big, big), dtype=np.float32)
    long = uniform_filter1d(uniform_filter1d(white, max(3, size // 5), axis=1), max(3, size // 5), axis=1)
    short = uniform_filter1d(white, max(2, size // 25), axis=1)
    streaks = long / long.std() + 0.5 * short / short.std()
    y, x = _grid(size)
    angle = rng.normal(0, 0.04)
    c, s, mid = np.cos(angle), np.sin(angle), size / 2
    rows = big / 2 + (y - mid) * c - (x - mid) * s
    cols = big / 2 + (y - mid) * s + (x - mid) * c
    streaks = map_coordinates(gaussian_filter(streaks, (0.6, 0)), [rows, cols], order=1)
    band_pos, band_width = rng.uniform(0.1, 0.9) * size, rng.uniform(0.15, 0.4) * size
    highlight = 0.12 * np.exp(-(((x - band_pos) / band_width) ** 2))
    grey = (0.52 + rng.uniform(-0.04, 0.04) + 0.035 * streaks + highlight) * _lighting(rng, size, 0.12)
    grey = grey + 0.01 * rng.standard_normal((size, size), dtype=np.float32)
    tint = np.array([0.93, 0.98, 1.06], np.float32) + rng.normal(0, 0.01, 3).astype(np.float32)
    return _texture_scene(rng, grey[..., None] * tint, tint)


def _woven_fabric(rng: np.random.Generator, size: int) -> _Scene:
    """Plain weave of navy warp and beige weft threads, slightly skewed."""
    period = max(4.0, size / rng.uniform(19, 23))
    y, x = _grid(size)
    angle = rng.normal(0, 0.02)
    u = (x * np.cos(angle) + y * np.sin(angle)) / period + rng.uniform(0, 2)
    v = (y * np.cos(angle) - x * np.sin(angle)) / period + rng.uniform(0, 2)
    i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - i, v - j
    warp_on_top = (i + j) % 2 == 0
    across = np.where(warp_on_top, fu, fv)  # position across the visible thread
    along = np.where(warp_on_top, fv, fu)  # position along it, within the float
    profile = (0.35 + 0.65 * np.sin(np.pi * across) ** 0.6) * (0.8 + 0.2 * np.sin(np.pi * along))
    gains = 1 + 0.06 * rng.standard_normal((2, 64)).astype(np.float32)  # per-thread dye unevenness
    gain = np.where(warp_on_top, gains[0][i % 64], gains[1][j % 64])
    warp = np.array([0.20, 0.27, 0.48], np.float32) + rng.normal(0, 0.01, 3).astype(np.float32)
    weft = np.array([0.78, 0.70, 0.54], np.float32) + rng.normal(0, 0.01, 3).astype(np.float32)
    colour = np.where(warp_on_top[..., None], warp, weft)
    fibres = 1 + 0.05 * _noise(rng, (size, size), 0.7)
    shade = (profile * gain * fibres * _lighting(rng, size, 0.15)).astype(np.float32)
    surface = shade[..., None] * colour + 0.008 * rng.standard_normal((size, size, 3), dtype=np.float32)
    return _texture_scene(rng, surface, np.array([0.8, 0.85, 1.0], np.float32))


def _flange_sdf(dy: np.ndarray, dx: np.ndarray, size: int, rot: float) -> np.ndarray:
    """Signed distance (negative inside) of a flange: disc, keyed bore, 4 bolt holes."""
    radius, bore, pitch, hole = 0.37 * size, 0.13 * size, 0.255 * size, 0.045 * size
    rho = np.hypot(dy, dx)
    sdf = np.maximum(rho - radius, bore - rho)
    for k in range(4):
        a = rot + np.pi / 4 + k * np.pi / 2
        sdf = np.maximum(sdf, hole - np.hypot(dy - pitch * np.sin(a), dx - pitch * np.cos(a)))
    along = dx * np.cos(rot) + dy * np.sin(rot) - bore  # keyway: a slot cut into the bore
    across = dy * np.cos(rot) - dx * np.sin(rot)
    qa, qc = np.abs(along) - 0.04 * size, np.abs(across) - 0.022 * size
    box = np.hypot(np.maximum(qa, 0), np.maximum(qc, 0)) + np.minimum(np.maximum(qa, qc), 0)
    return np.maximum(sdf, -box)


def _machined_part(rng: np.random.Generator, size: int) -> _Scene:
    """Grey top-down photo of a turned flange on a dark matte table."""
    y, x = _grid(size)
    cy, cx = (float(v) for v in size / 2 + rng.normal(0, 0.015 * size, 2))
    rot = rng.uniform(-0.15, 0.15)
    light = rng.uniform(0, 2 * np.pi)
    ly, lx = np.sin(light), np.cos(light)
    dy, dx = y - cy, x - cx
    sdf = _flange_sdf(dy, dx, size, rot)
    coverage = np.clip(0.5 - sdf, 0, 1)
    offset = 0.02 * size  # the shadow falls away from the light
    shadow_sdf = _flange_sdf(dy + offset * ly, dx + offset * lx, size, rot)
    shadow = gaussian_filter(np.clip(0.5 - shadow_sdf, 0, 1), 0.015 * size)
    table = (0.2 + 0.012 * _noise(rng, (size, size), 1.0)) * _lighting(rng, size, 0.15)
    backdrop = table * (1 - 0.5 * shadow)
    rho = np.hypot(dy, dx)
    towards_light = (dx * lx + dy * ly) / (0.37 * size)
    rings = np.sin(2 * np.pi * rho / max(2.5, size / 60) + rng.uniform(0, 2 * np.pi))
    edge = np.exp(-(((0.37 * size - rho) / (0.015 * size)) ** 2))  # chamfer catches the light
    metal = (
        0.56
        + rng.uniform(-0.03, 0.03)
        + 0.08 * towards_light
        + 0.02 * rings
        + 0.02 * _noise(rng, (size, size), 1.2)
        + 0.14 * edge * (0.5 + 0.5 * np.cos(np.arctan2(dy, dx) - light))
    )
    metal = metal + 0.01 * rng.standard_normal((size, size), dtype=np.float32)
    interior = sdf < -0.03 * size
    rim = np.abs(rho - 0.37 * size) < 0.02 * size
    return _Scene(np.clip(metal, 0, 1)[..., None], np.clip(backdrop, 0, 1)[..., None],
                  coverage.astype(np.float32), interior, rim)


_RENDERERS: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "brushed_metal": _brushed_metal,
    "woven_fabric": _woven_fabric,
    "machined_part": _machined_part,
}


# ------------------------------------------------------------------ defects
def _pick(region: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return a random (y, x) point of a boolean region."""
    flat = np.flatnonzero(region)
    return np.array(divmod(int(flat[rng.integers(len(flat))]), region.shape[1]), np.float32)


def _polyline_alpha(points: np.ndarray, widths: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage (H, W) of segments ``points[k] -> points[k+1]``.

    Args:
        points: (K + 1, 2) vertices as (y, x).
        widths: (K,) stroke width of each segment in pixels.
        size: Image side.
    """
    alpha = np.zeros((size, size), np.float32)
    pad = float(widths.max()) / 2 + 2
    y0, x0 = np.maximum(np.floor(points.min(axis=0) - pad), 0).astype(int)
    y1, x1 = np.minimum(np.ceil(points.max(axis=0) + pad) + 1, size).astype(int)
    if y0 >= y1 or x0 >= x1:
        return alpha
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    a, b = points[:-1, :, None, None], points[1:, :, None, None]
    ab = b - a
    py, px = yy[None] - a[:, 0], xx[None] - a[:, 1]
    t = np.clip((py * ab[:, 0] + px * ab[:, 1]) / np.maximum((ab**2).sum(axis=1), 1e-6), 0, 1)
    dist = np.hypot(py - t * ab[:, 0], px - t * ab[:, 1])
    alpha[y0:y1, x0:x1] = np.clip(widths[:, None, None] / 2 + 0.5 - dist, 0, 1).max(axis=0)
    return alpha


def _blob_sdf(center: np.ndarray, radius: float, rng: np.random.Generator, size: int,
              roughness: float, harmonics: int) -> np.ndarray:
    """Approximate signed distance (positive inside) of an irregular blob."""
    y, x = _grid(size)
    dy, dx = y - center[0], x - center[1]
    theta = np.arctan2(dy, dx)
    k = np.arange(2, harmonics + 1, dtype=np.float32)
    amp = roughness * rng.uniform(0.3, 1.0, k.size).astype(np.float32) / k**0.7
    phase = rng.uniform(0, 2 * np.pi, k.size).astype(np.float32)
    wobble = (amp[:, None, None] * np.cos(k[:, None, None] * theta + phase[:, None, None])).sum(axis=0)
    return radius * np.maximum(1 + wobble, 0.3) - np.hypot(dy, dx)


def _scratch(scene: _Scene, rng: np.random.Generator, size: int) -> _Scene:
    """1-3 near-parallel thin lines, brighter (bare metal) or darker."""
    heading = rng.uniform(0, np.pi)
    alpha = np.zeros((size, size), np.float32)
    t = np.linspace(0, 1, 24, dtype=np.float32)[:, None]
    for _ in range(rng.integers(1, 4)):
        start = _pick(scene.interior, rng)
        direction = heading + rng.normal(0, 0.08)
        end = start + size * rng.uniform(0.15, 0.55) * np.array([np.sin(direction), np.cos(direction)])
        bend = rng.normal(0, 0.06) * np.hypot(*(end - start)) * np.array([np.cos(direction), -np.sin(direction)])
        ctrl = (start + end) / 2 + bend
        points = ((1 - t) ** 2 * start + 2 * (1 - t) * t * ctrl + t**2 * end).astype(np.float32)
        mid = (t[1:, 0] + t[:-1, 0]) / 2
        widths = max(1.0, rng.uniform(1.0, 2.4) * size / 256) * (0.4 + 0.6 * np.sin(np.pi * mid))
        alpha = np.maximum(alpha, _polyline_alpha(points, widths, size))
    sign = rng.choice([-1.0, 1.0])
    surface = np.clip(scene.surface + sign * rng.uniform(0.16, 0.3) * alpha[..., None], 0, 1)
    return dataclasses.replace(scene, surface=surface)


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, steps: int, step: float) -> np.ndarray:
    """Random-walk polyline of ``steps`` segments, (steps + 1, 2) as (y, x)."""
    headings = heading + np.cumsum(rng.normal(0, 0.4, steps))
    moves = step * np.stack([np.sin(headings), np.cos(headings)], axis=1)
    return np.vstack([start, start + np.cumsum(moves, axis=0)]).astype(np.float32)


def _crack(scene: _Scene, rng: np.random.Generator, size: int) -> _Scene:
    """A dark, tapering random-walk line with a few shorter branches."""
    width = max(1.2, rng.uniform(1.5, 3.0) * size / 256)
    step = size * rng.uniform(0.015, 0.03)
    heading = rng.uniform(0, 2 * np.pi)
    trunk = _walk(rng, _pick(scene.interior, rng), heading, int(rng.integers(8, 22)), step)
    alpha = _polyline_alpha(trunk, width * np.linspace(1.0, 0.45, len(trunk) - 1), size)
    for _ in range(rng.integers(1, 4)):
        fork = trunk[rng.integers(1, len(trunk) - 1)]
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        branch = _walk(rng, fork, heading + side, int(rng.integers(3, 9)), step * 0.8)
        branch_widths = 0.7 * width * np.linspace(1.0, 0.4, len(branch) - 1)
        alpha = np.maximum(alpha, _polyline_alpha(branch, branch_widths, size))
    surface = scene.surface * (1 - rng.uniform(0.55, 0.8) * alpha[..., None])
    return dataclasses.replace(scene, surface=surface)


def _spot(scene: _Scene, rng: np.random.Generator, size: int) -> _Scene:
    """A rust, stain or oil blob with a soft edge and mottled interior."""
    area = np.exp(rng.uniform(np.log(0.003), np.log(0.035))) * size * size
    radius = float(np.sqrt(area / np.pi))
    inside = _blob_sdf(_pick(scene.interior, rng), radius, rng, size, 0.35, 7)
    mottle = np.clip(0.85 + 0.15 * _noise(rng, (size, size), max(1.0, radius / 5)), 0.6, 1.0)
    alpha = np.clip(inside / (0.35 * radius), 0, 1) * mottle * rng.uniform(0.65, 0.9)
    colour = _SPOT_COLOURS[rng.integers(len(_SPOT_COLOURS))]
    if scene.surface.shape[-1] == 1:
        colour = np.array([colour @ _LUMA], np.float32)
    layer = colour * (1 + 0.12 * _noise(rng, (size, size), 1.0))[..., None]
    a = alpha[..., None]
    return dataclasses.replace(scene, surface=np.clip(scene.surface * (1 - a) + layer * a, 0, 1))


def _missing(scene: _Scene, rng: np.random.Generator, size: int) -> _Scene:
    """A jagged chunk of material torn out, showing what lies beneath."""
    area = np.exp(rng.uniform(np.log(0.004), np.log(0.035))) * size * size
    radius = float(np.sqrt(area / np.pi))
    inside = _blob_sdf(_pick(scene.rim, rng), radius, rng, size, 0.45, 12)
    alpha = np.clip(inside + 0.5, 0, 1)
    return dataclasses.replace(scene, coverage=scene.coverage * (1 - alpha))


_PAINTERS: dict[str, Callable[[_Scene, np.random.Generator, int], _Scene]] = {
    "scratch": _scratch,
    "crack": _crack,
    "spot": _spot,
    "missing": _missing,
}
