"""DRAEM's anomaly simulator: Perlin-noise masks filled with augmented texture.

All randomness comes from a ``numpy.random.Generator`` passed in, so a seed fixes
every simulated anomaly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from adcore.errors import DataError
from adcore.imageio import IMAGE_SUFFIXES, read_rgb

#: Perlin scale per axis is 2^s with s drawn from [0, PERLIN_SCALES) (official: 0..5).
PERLIN_SCALES = 6


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise of ``shape`` with ``res`` lattice cells per axis, about in [-1, 1].

    Random unit gradients on a (res_y + 1) × (res_x + 1) lattice, quintic fade, scaled by √2
    (as in the official code); any image size, not only multiples of ``res``.
    """
    height, width = shape
    res_y, res_x = res
    angles = 2 * math.pi * rng.random((res_y + 1, res_x + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.arange(height) * (res_y / height)
    x = np.arange(width) * (res_x / width)
    iy, ix = y.astype(np.int64), x.astype(np.int64)
    fy, fx = (y - iy)[:, None], (x - ix)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(iy + dy)[:, None], (ix + dx)[None, :]]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) + u * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + u * (corner(1, 1) - corner(1, 0))
    return (math.sqrt(2) * (top + v * (bottom - top))).astype(np.float32)


def rotate(array: np.ndarray | torch.Tensor, degrees: float) -> np.ndarray | torch.Tensor:
    """Rotate an (H, W) array or a (C, H, W) tensor about its centre (bilinear, zeros outside)."""
    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
    height, width = tensor.shape[-2:]
    a = math.radians(degrees)
    # affine_grid works in normalised coordinates; rescale so the rotation is isotropic in pixels.
    theta = torch.tensor([[math.cos(a), -math.sin(a) * height / width, 0.0],
                          [math.sin(a) * width / height, math.cos(a), 0.0]], dtype=tensor.dtype,
                         device=tensor.device)
    planes = tensor.reshape(1, -1, height, width)
    grid = F.affine_grid(theta[None], list(planes.shape), align_corners=False)
    out = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.reshape(tensor.shape)
    return out.numpy() if isinstance(array, np.ndarray) else out


def rotate_some(images: torch.Tensor, rng: np.random.Generator, prob: float,
                degrees: float = 90.0) -> torch.Tensor:
    """The official augmentation of normal training images: each, with probability ``prob``
    (official 0.3), is rotated by U(−degrees, degrees) about its centre, black outside."""
    out = images.clone()
    for i in range(images.shape[0]):
        if rng.random() < prob:
            out[i] = rotate(images[i], float(rng.uniform(-degrees, degrees)))
    return out


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, threshold: float = 0.5) -> np.ndarray:
    """Official mask recipe: Perlin noise, scale 2^[0, 6) per axis, rotated by U(−90°, 90°), > threshold."""
    scale_y, scale_x = (2 ** int(s) for s in rng.integers(0, PERLIN_SCALES, size=2))
    noise = perlin_noise(shape, (scale_y, scale_x), rng)
    noise = rotate(noise, float(rng.uniform(-90.0, 90.0)))
    return noise > threshold


# -- anomaly source textures -----------------------------------------------------------------
def _fractal(shape: tuple[int, int], rng: np.random.Generator, base: int, octaves: int = 4) -> np.ndarray:
    total = np.zeros(shape, np.float32)
    for octave in range(octaves):
        res = base * 2 ** octave
        total += perlin_noise(shape, (res, res), rng) / 2 ** octave
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _palette(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Map t in [0, 1] (H, W) through a random two- or three-colour ramp to (H, W, 3)."""
    colours = rng.random((int(rng.integers(2, 4)), 3)).astype(np.float32)
    positions = np.linspace(0, 1, len(colours))
    return np.stack([np.interp(t, positions, colours[:, c]) for c in range(3)], axis=-1)


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One random procedural texture (H, W, 3) uint8: fractal noise, stripes, cells or blobs."""
    height, width = shape
    kind = int(rng.integers(4))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # fractal colour field, one fractal per channel
        image = np.stack([_fractal(shape, rng, int(rng.integers(1, 5))) for _ in range(3)], axis=-1)
    elif kind == 1:  # warped stripes
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(4, max(6.0, min(shape) / 4))
        warp = rng.uniform(0, 3) * _fractal(shape, rng, 2)
        phase = (xx * math.cos(angle) + yy * math.sin(angle)) / period * 2 * math.pi + warp * math.pi
        image = _palette(rng, 0.5 + 0.5 * np.sin(phase))
    elif kind == 2:  # Voronoi cells with darkened borders
        n = int(rng.integers(6, 40))
        points = rng.random((n, 2)).astype(np.float32) * np.array([height, width], np.float32)
        d = (yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2
        nearest = np.sort(d, axis=-1)[..., :2]
        cell = d.argmin(axis=-1)
        colours = rng.random((n, 3)).astype(np.float32)
        edge = np.clip((np.sqrt(nearest[..., 1]) - np.sqrt(nearest[..., 0])) / 3.0, 0, 1)[..., None]
        image = colours[cell] * (0.4 + 0.6 * edge)
    else:  # thresholded blobs with speckle
        blobs = _fractal(shape, rng, int(rng.integers(2, 8))) > rng.uniform(0.35, 0.65)
        image = _palette(rng, 0.7 * blobs + 0.3 * _fractal(shape, rng, 16, octaves=2))
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def procedural_textures(count: int, shape: tuple[int, int], seed: int) -> torch.Tensor:
    """A bank of ``count`` procedural textures (count, 3, H, W) uint8, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([procedural_texture(shape, rng) for _ in range(count)])).permute(0, 3, 1, 2)


class FolderTextures:
    """Anomaly source images from a folder (searched recursively), read and resized on demand."""

    def __init__(self, folder: str | Path) -> None:
        root = Path(folder)
        if not root.is_dir():
            raise DataError(f"anomaly_source {root}: not a folder")
        self.paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not p.name.startswith("."))
        if not self.paths:
            raise DataError(f"anomaly_source {root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: int, shape: tuple[int, int]) -> torch.Tensor:
        image = Image.fromarray(read_rgb(self.paths[index])).resize((shape[1], shape[0]), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


# -- augmentation of the anomaly source --------------------------------------------------------
def _ops(rng: np.random.Generator) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The seven operations of the paper, each with its random strength drawn now."""
    bits = int(rng.integers(4, 8))
    sharp = float(rng.uniform(0.5, 3.0))
    solar = int(rng.integers(32, 224))
    bright = float(rng.uniform(0.5, 1.5))
    colour = float(rng.uniform(0.0, 2.0))
    return [
        lambda t: TF.posterize(t, bits),
        lambda t: TF.adjust_sharpness(t, sharp),
        lambda t: TF.solarize(t, solar),
        TF.equalize,
        lambda t: TF.adjust_brightness(t, bright),
        lambda t: TF.adjust_saturation(t, colour),
        TF.autocontrast,
    ]


def augment(texture: torch.Tensor, rng: np.random.Generator, n_ops: int = 3) -> torch.Tensor:
    """Apply ``n_ops`` distinct random operations (out of posterize, sharpness, solarize, equalize,
    brightness, colour, auto-contrast) to a (3, H, W) uint8 texture, in random order."""
    ops = _ops(rng)
    for index in rng.choice(len(ops), size=n_ops, replace=False):
        texture = ops[int(index)](texture)
    return texture


def blend(image: torch.Tensor, source: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Paper eq. 1: I_a = (1 − M)⊙I + (1 − β)(M⊙I) + β(M⊙A)."""
    return (1 - mask) * image + (1 - beta) * (mask * image) + beta * (mask * source)


def simulate(images: torch.Tensor, rng: np.random.Generator, source: Callable[[np.random.Generator], torch.Tensor],
             threshold: float = 0.5, beta_range: Sequence[float] = (0.1, 1.0),
             anomaly_prob: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated anomalies on a batch of normal images.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        rng: the random generator (every draw comes from it).
        source: ``f(rng)`` -> a (3, H, W) uint8 anomaly source texture.
        threshold: Perlin threshold (official 0.5).
        beta_range: opacity β of the texture, uniform in this range (paper [0.1, 1]).
        anomaly_prob: share of images that get an anomaly (official 0.5).

    Returns:
        augmented images (B, 3, H, W) and masks (B, 1, H, W) in {0, 1}.
    """
    height, width = images.shape[-2:]
    out = images.clone()
    masks = torch.zeros(images.shape[0], 1, height, width, dtype=images.dtype, device=images.device)
    for i in range(images.shape[0]):
        if rng.random() >= anomaly_prob:
            continue
        mask = torch.from_numpy(perlin_mask((height, width), rng, threshold)).to(images)
        texture = augment(source(rng), rng).to(images.device, images.dtype) / 255.0
        beta = float(rng.uniform(*beta_range))
        out[i] = blend(images[i], texture, mask, beta)
        masks[i, 0] = mask
    return out, masks
