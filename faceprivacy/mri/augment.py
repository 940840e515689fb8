"""Realistic random head deformations for building a training cohort (and synthetic identities) from a
few real heads: a random affine, a smooth elastic displacement field, and a smooth multiplicative bias
field with gamma and noise on the intensities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DeformParams:
    """Strength of the random deformation (angles in degrees, lengths in mm)."""

    rot_deg: float = 6.0
    scale: float = 0.07
    shift_mm: float = 4.0
    elastic_mm: float = 3.0
    elastic_grid: int = 5
    bias: float = 0.15
    gamma: float = 0.15
    noise: float = 0.01


def random_affine(rng: np.random.Generator, p: DeformParams) -> np.ndarray:
    """A random 4x4 affine about the origin (apply about a centre by conjugation)."""
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", rng.uniform(-p.rot_deg, p.rot_deg, 3), degrees=True).as_matrix()
    s = np.diag(1 + rng.uniform(-p.scale, p.scale, 3))
    a = np.eye(4)
    a[:3, :3] = r @ s
    a[:3, 3] = rng.uniform(-p.shift_mm, p.shift_mm, 3)
    return a


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], grid: int, std: float) -> np.ndarray:
    """A smooth random scalar field: Gaussian noise on a coarse grid, cubic-upsampled to ``shape``."""
    from scipy import ndimage

    coarse = rng.normal(0, std, [grid] * len(shape))
    return ndimage.zoom(coarse, [s / grid for s in shape], order=3, mode="nearest")[
        tuple(slice(0, s) for s in shape)]


def deform_array(arr: np.ndarray, zooms: np.ndarray, rng: np.random.Generator, p: DeformParams,
                 extra: list[np.ndarray] | None = None, info: dict | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Deform a volume (and optional label volumes, nearest-neighbour) with one random affine + elastic
    field about the array centre; intensity changes apply to ``arr`` only. Returns (arr, extras); the
    affine (output mm -> source mm about the centre) is stored in ``info["affine"]`` if given."""
    from scipy import ndimage

    shape = arr.shape
    z = np.asarray(zooms, float)
    a = random_affine(rng, p)
    if info is not None:
        info["affine"] = a
    c = (np.array(shape) - 1) / 2
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    mm = [(g - ci) * zi for g, ci, zi in zip(grids, c, z, strict=True)]
    src = [a[i, 0] * mm[0] + a[i, 1] * mm[1] + a[i, 2] * mm[2] + a[i, 3] for i in range(3)]
    if p.elastic_mm > 0:
        src = [s + smooth_field(rng, shape, p.elastic_grid, p.elastic_mm).astype(np.float32) for s in src]
    coords = np.stack([s / zi + ci for s, zi, ci in zip(src, z, c, strict=True)])
    out = ndimage.map_coordinates(arr, coords, order=1, mode="constant", cval=0.0)
    ex = [ndimage.map_coordinates(e.astype(np.float32), coords, order=0, mode="constant") for e in (extra or [])]
    if p.bias > 0:
        out = out * np.exp(smooth_field(rng, shape, 4, p.bias)).astype(np.float32)
    if p.gamma > 0:
        g = float(np.exp(rng.uniform(-p.gamma, p.gamma)))
        hi = max(float(out.max()), 1e-6)
        out = hi * np.clip(out / hi, 0, None) ** g
    if p.noise > 0:
        out = out + rng.normal(0, p.noise * max(float(out.max()), 1e-6), shape).astype(np.float32) * (out > 0)
    return out.astype(np.float32), ex
