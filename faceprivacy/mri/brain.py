"""A brain mask found without any registration, to check the defacers independently.

The defacers place their cut with the registered template; a check that reused that registration
would repeat its error (a 30 mm miss reports "0 brain voxels removed"). This mask comes from the
subject's own intensities and shape only (an intensity/morphology head-brain split):

1. head = voxels above 12 % of the robust maximum, on a ~2 mm copy of the scan;
2. two Otsu splits of the intracranial interior (>= 20 mm inside the head surface, 15-100 mm below
   the vertex): CSF | grey matter | white matter;
3. the white-matter body = the bright component (after an opening) filling most of the interior
   (scalp fat and marrow are thin and outside the skull; face muscles are not that bright);
4. brain = white matter grown by 6 mm inside the tissue (the cortex), holes filled; the *core*
   used to refuse a cut is the white matter grown by 2 mm only: brain beyond doubt.

An erosion-based split of the tissue mask (BET-like) was tried first: it joined the tongue to the
brain on the blurred population-mean head and lost the cortex at the sulci on real heads.
"""

from __future__ import annotations

import numpy as np

from .io import Volume
from .register import block_mean, resample_to, robust_max


def _otsu(values: np.ndarray, bins: int = 128) -> float:
    h, e = np.histogram(values, bins=bins)
    c = (e[:-1] + e[1:]) / 2
    w0 = np.cumsum(h)
    w1 = w0[-1] - w0
    m0 = np.cumsum(h * c) / np.maximum(w0, 1)
    m1 = ((h * c).sum() - np.cumsum(h * c)) / np.maximum(w1, 1)
    return float(c[int(np.argmax(w0 * w1 * (m0 - m1) ** 2))])


def white_matter_lowres(vol: Volume, work_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(white-matter body, tissue mask, normalised data, affine) on a ~``work_mm`` copy of ``vol``.

    Two Otsu splits of the intracranial interior's intensities (CSF | grey | white matter); the
    white-matter body is the bright component (after a 1-voxel opening) that fills most of the interior.
    Fat and marrow are thin layers outside the skull, and the tongue and face muscles are not as bright
    as white matter, so they do not join it (even on a blurred population-mean head)."""
    from scipy import ndimage

    f = [max(1, int(round(work_mm / float(z)))) for z in vol.zooms]
    d, aff = block_mean(vol.data, vol.affine, f)
    zooms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    d = d / max(robust_max(d), 1e-6)
    head = ndimage.binary_fill_holes(d > 0.12)
    # the intracranial interior: >= 20 mm inside the head surface, 15-100 mm below the vertex; its
    # histogram holds white matter, grey matter and CSF only (no scalp fat, marrow or face)
    ztop = int(np.nonzero(head.any(axis=(0, 1)))[0].max())
    depth_z = (ztop - np.arange(d.shape[2])) * zooms[2]
    band = (depth_z > 15.0) & (depth_z < 100.0)
    interior = (ndimage.distance_transform_edt(head, sampling=zooms) > 20.0) & band[None, None, :]
    if interior.sum() < 100:
        return np.zeros(d.shape, bool), head, d, aff
    t_a = _otsu(d[interior])
    t_wm = _otsu(d[interior & (d > t_a)])
    tissue = head & (d > 0.8 * t_a)
    wm = ndimage.binary_opening(head & (d > t_wm), iterations=1)
    lab, n = ndimage.label(wm)
    if n == 0:
        return np.zeros(d.shape, bool), tissue, d, aff
    hits = np.bincount(lab[interior], minlength=n + 1)[1:]
    return lab == (1 + int(np.argmax(hits))), tissue, d, aff


def brain_mask_lowres(vol: Volume, work_mm: float = 2.0, grow_mm: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """(mask, affine) of the brain on a ~``work_mm`` copy: the white-matter body grown by ``grow_mm``
    inside the tissue mask (the cortex), holes filled."""
    from scipy import ndimage

    wm, tissue, _, aff = white_matter_lowres(vol, work_mm)
    zooms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    grown = ndimage.distance_transform_edt(~wm, sampling=zooms) <= grow_mm
    return ndimage.binary_fill_holes(wm | (grown & tissue)), aff


def brain_core(vol: Volume, grow_mm: float = 2.0, work_mm: float = 2.0) -> np.ndarray:
    """Boolean brain core on ``vol``'s grid: the white-matter body grown by ``grow_mm`` (voxels that are
    brain beyond doubt; the defacers refuse to remove any of them)."""
    return brain_full(vol, work_mm=work_mm, grow_mm=grow_mm)


def brain_full(vol: Volume, work_mm: float = 2.0, grow_mm: float = 6.0) -> np.ndarray:
    """The independent brain mask on ``vol``'s grid (white matter + ``grow_mm`` of tissue around it)."""
    m, aff = brain_mask_lowres(vol, work_mm, grow_mm)
    return resample_to(m.astype(np.float32), aff, vol.shape, vol.affine, order=1) > 0.5


def upsample_blocks(m: np.ndarray, factors: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``block_mean``'s grid for a mask: each low-res voxel covers its block of full-res
    voxels exactly (the remainder at the far edges is False)."""
    up = m
    for ax, f in enumerate(factors):
        up = np.repeat(up, f, axis=ax)
    out = np.zeros(shape, bool)
    out[:up.shape[0], :up.shape[1], :up.shape[2]] = up[:shape[0], :shape[1], :shape[2]]
    return out


_LAST: list = []  # (data array, affine bytes, params, result) of the last call: the defacers share it


def independent_masks(vol: Volume, work_mm: float = 2.0, core_mm: float = 2.0,
                      full_mm: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """(core, full) independent brain masks on ``vol``'s grid from one white-matter estimate (the last
    result is kept, so defacing one scan with several methods computes it once)."""
    key = (vol.affine.tobytes(), work_mm, core_mm, full_mm)
    if _LAST and _LAST[0] is vol.data and _LAST[1] == key:
        return _LAST[2]
    res = _independent_masks(vol, work_mm, core_mm, full_mm)
    _LAST[:] = [vol.data, key, res]
    return res


def _independent_masks(vol: Volume, work_mm: float, core_mm: float, full_mm: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    f = [max(1, int(round(work_mm / float(z)))) for z in vol.zooms]
    wm, tissue, _, aff = white_matter_lowres(vol, work_mm)
    zooms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    dist = ndimage.distance_transform_edt(~wm, sampling=zooms)
    out = []
    for mm in (core_mm, full_mm):
        m = ndimage.binary_fill_holes(wm | ((dist <= mm) & tissue))
        out.append(upsample_blocks(m, f, vol.shape))
    return out[0], out[1]
