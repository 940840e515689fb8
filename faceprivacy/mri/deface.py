"""Three defacers without FSL, all driven by one affine registration of the pydeface template:

* ``mask``   — pydeface's method: warp the template face mask onto the subject and zero the face;
* ``shear``  — quickshear-style: zero everything below a plane under the (registered) brain mask's
  lower convex hull in the sagittal projection;
* ``reface`` — replace the face voxels with the registered, intensity-matched template face (the
  defence that resists refacing attacks), feathered at the border.

Every result carries its checks: brain voxels removed (must be 0), face coverage and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .io import Volume
from .register import Registration, register_affine, resample_to, robust_max
from .template import Template

METHODS = ("mask", "shear", "reface")


@dataclass
class DefaceResult:
    """Defaced voxels (canonical RAS, float32) plus masks, the registration and the checks."""

    data: np.ndarray
    removed: np.ndarray  # voxels whose value was zeroed or replaced
    face_region: np.ndarray  # the registered template face mask (what pydeface would remove)
    brain: np.ndarray  # the registered template brain mask
    registration: Registration
    method: str
    timings: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)


def head_threshold(data: np.ndarray) -> float:
    """Intensity separating head tissue from air (a fraction of the robust maximum)."""
    return 0.12 * robust_max(data)


def warp_template_masks(vol: Volume, tpl: Template, reg: Registration) -> tuple[np.ndarray, np.ndarray]:
    """Face region and brain mask of the template pulled onto the subject grid (booleans)."""
    keep = resample_to(tpl.keep, tpl.head.affine, vol.shape, vol.affine, reg.matrix, order=1, default=1.0)
    brain = resample_to(tpl.brain.astype(np.float32), tpl.head.affine, vol.shape, vol.affine, reg.matrix,
                        order=1, default=0.0)
    return keep < 0.5, brain > 0.5


def voxel_world(vol: Volume, axes: tuple[int, ...] = (1, 2)) -> list[np.ndarray]:
    """World coordinates (mm) of every voxel for the requested world axes, as broadcastable arrays."""
    i, j, k = (np.arange(n, dtype=np.float32) for n in vol.shape)
    a = vol.affine.astype(np.float32)
    return [a[ax, 0] * i[:, None, None] + a[ax, 1] * j[None, :, None] + a[ax, 2] * k[None, None, :] + a[ax, 3]
            for ax in axes]


def _lower_hull(points: np.ndarray) -> np.ndarray:
    """Lower convex hull (monotone chain) of 2-D points sorted by their first coordinate."""
    pts = points[np.lexsort((points[:, 1], points[:, 0]))]
    hull: list[np.ndarray] = []
    for p in pts:
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            if (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0]) <= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    return np.array(hull)


def shear_plane(vol: Volume, brain: np.ndarray, buffer_mm: float = 10.0) -> tuple[float, float, float]:
    """Quickshear-style plane in the sagittal (y=anterior, z=superior) projection: the first lower-hull
    edge of the brain from its anterior end, lowered by ``buffer_mm``. Returns (a, b, c) with the
    removed side a*y + b*z + c > 0."""
    y, z = voxel_world(vol, (1, 2))
    yy = np.broadcast_to(y, vol.shape)[brain]
    zz = np.broadcast_to(z, vol.shape)[brain]
    # lowest brain z per 1 mm y-bin (the edge of the sagittal projection)
    yb = np.round(yy).astype(int)
    order = np.lexsort((zz, yb))
    yb_s, zz_s = yb[order], zz[order]
    first = np.r_[True, yb_s[1:] != yb_s[:-1]]
    edge = np.c_[-yb_s[first].astype(float), zz_s[first]]  # negate y: start from the anterior end
    hull = _lower_hull(edge)
    if len(hull) < 2:
        raise ValueError("brain mask too small to place a shear plane")
    (y0, z0), (y1, z1) = (-hull[0][0], hull[0][1]), (-hull[1][0], hull[1][1])
    # line through the two points, normal pointing anterior-inferior (away from the brain)
    ny, nz = (z1 - z0), -(y1 - y0)
    if ny * 1 + nz * (-1) < 0:  # make the normal point towards +y / -z
        ny, nz = -ny, -nz
    norm = float(np.hypot(ny, nz))
    ny, nz = ny / norm, nz / norm
    c = -(ny * y0 + nz * z0) - buffer_mm
    return float(ny), float(nz), float(c)


def _match_intensity(tpl_vals: np.ndarray, subj_ref: np.ndarray, tpl_ref: np.ndarray) -> np.ndarray:
    """Map template intensities to the subject's scale by matching the median of head tissue."""
    s = float(np.median(subj_ref)) if subj_ref.size else 1.0
    t = float(np.median(tpl_ref)) if tpl_ref.size else 1.0
    return tpl_vals * (s / max(t, 1e-6))


def bbox(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice]:
    """Bounding box slices of a boolean mask, grown by ``margin`` voxels (whole grid if empty)."""
    idx = np.nonzero(mask.any(axis=(1, 2)))[0], np.nonzero(mask.any(axis=(0, 2)))[0], \
        np.nonzero(mask.any(axis=(0, 1)))[0]
    if any(len(i) == 0 for i in idx):
        return (slice(None),) * 3  # type: ignore[return-value]
    return tuple(slice(max(0, int(i[0]) - margin), min(n, int(i[-1]) + 1 + margin))
                 for i, n in zip(idx, mask.shape, strict=True))  # type: ignore[return-value]


def crop_volume(vol: Volume, sl: tuple[slice, slice, slice]) -> Volume:
    """A sub-volume with the correspondingly shifted affine."""
    start = np.array([s.start or 0 for s in sl], float)
    aff = vol.affine.copy()
    aff[:3, 3] = vol.affine[:3, :3] @ start + vol.affine[:3, 3]
    return Volume(vol.data[sl], aff)


def reface_region(vol: Volume, tpl: Template, reg: Registration, removed: np.ndarray,
                  feather_mm: float = 3.0, source: np.ndarray | None = None) -> np.ndarray:
    """Blend the registered, intensity-matched template face into ``removed`` (feathered border).
    ``source`` (defaults to the template head on its grid) may be any face volume on the template grid."""
    from scipy import ndimage

    data = vol.data
    out = data.copy()
    if not removed.any():
        return out
    sl = bbox(removed, margin=6)
    sub = crop_volume(vol, sl)
    rem = removed[sl]
    if source is None:
        source = tpl.face_source if tpl.face_source is not None else tpl.head.data
    src = source
    tpl_on = resample_to(src, tpl.head.affine, sub.shape, sub.affine, reg.matrix, order=1)
    d_sub = sub.data
    thr_s, thr_t = head_threshold(data), head_threshold(tpl.head.data)
    ring = ndimage.binary_dilation(rem, iterations=4) & ~rem
    vals = _match_intensity(tpl_on, d_sub[ring & (d_sub > thr_s)], tpl_on[ring & (tpl_on > thr_t)])
    if feather_mm > 0:
        w = np.clip(ndimage.distance_transform_edt(rem, sampling=vol.zooms) / feather_mm, 0, 1)
    else:
        w = rem.astype(np.float32)
    out[sl] = ((1 - w) * d_sub + w * vals).astype(np.float32)
    return out


def deface(vol: Volume, tpl: Template, method: str = "mask", settings: str = "fast",
           registration: Registration | None = None, protect_brain: bool = True,
           brain_truth: np.ndarray | None = None, feather_mm: float = 3.0, threads: int | None = 2,
           shear_buffer_mm: float = 10.0) -> DefaceResult:
    """Deface ``vol`` with ``method`` (mask | shear | reface). ``brain_truth`` (optional, subject grid)
    is used for the "brain voxels removed" check instead of the registered template brain mask."""

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    tm: dict[str, float] = {}
    t0 = time.perf_counter()
    reg = registration or register_affine(vol, tpl.head, settings, threads=threads)
    tm["register_s"] = reg.seconds if registration is None else 0.0
    t1 = time.perf_counter()
    face, brain = warp_template_masks(vol, tpl, reg)
    tm["warp_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    data = vol.data
    if method == "shear":
        ny, nz, c = shear_plane(vol, brain, shear_buffer_mm)
        y, z = voxel_world(vol, (1, 2))
        removed = (ny * y + nz * z + c) > 0
        removed = np.broadcast_to(removed, vol.shape).copy()
    else:
        removed = face.copy()
    n_brain_in = int((removed & brain).sum())
    if protect_brain:
        removed &= ~brain
    out = data.copy()
    if method == "reface":
        out = reface_region(vol, tpl, reg, removed, feather_mm)
    else:
        out[removed] = 0
    tm["apply_s"] = time.perf_counter() - t2
    tm["total_s"] = time.perf_counter() - t0
    head = data > head_threshold(data)
    face_head = face & head
    removed_head = removed & head
    checks = {
        "brain_voxels_removed": int((removed & (brain_truth if brain_truth is not None else brain)).sum()),
        "brain_reference": "given" if brain_truth is not None else "registered template brain mask",
        "brain_voxels_in_removal_before_protection": n_brain_in,
        "face_head_voxels": int(face_head.sum()),
        "face_coverage": float((face_head & removed).sum() / max(int(face_head.sum()), 1)),
        "removed_head_voxels": int(removed_head.sum()),
        "removed_outside_face_fraction": float((removed_head & ~face).sum() / max(int(removed_head.sum()), 1)),
    }
    return DefaceResult(out.astype(np.float32), removed, face, brain, reg, method, tm, checks)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s
