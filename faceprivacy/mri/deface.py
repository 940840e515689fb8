"""Three defacers without FSL, all driven by one affine registration of the pydeface template:

* ``mask``   — pydeface's method: warp the template face mask onto the subject and zero the face;
* ``shear``  — quickshear-style: zero everything on the far side of one plane, fitted on the template
  to remove the most of its face mask while staying clear of its brain mask, mapped to the subject;
* ``reface`` — replace the face voxels with the registered, intensity-matched template face (the
  defence that resists refacing attacks), feathered at the border.

Every result carries its checks: brain voxels removed by a brain mask found *without* the registration
(:mod:`.brain`; a cut that meets its core is refused), face coverage and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError
from .io import Volume
from .register import Registration, register_affine, resample_to, robust_max
from .template import Template

METHODS = ("mask", "shear", "reface")
#: a cut may meet the independent brain mask's edge by at most this much (mm3) and never its core (the
#: mask is grown 6 mm from the white matter, so its edge can lie a little outside the brain)
REFUSE_BRAIN_MM3 = 100.0
#: a scan narrower than this along any axis cannot hold a whole head (mm)
MIN_FOV_MM = 100.0
#: less brain than this (mL, independent mask) means the scan is not a whole-head T1 (the blurred
#: population-mean template gives ~490 mL, real adult heads 720-1010 mL)
MIN_BRAIN_ML = 200.0


@dataclass
class DefaceResult:
    """Defaced voxels (canonical RAS, float32) plus masks, the registration and the checks."""

    data: np.ndarray
    removed: np.ndarray  # voxels whose value was zeroed or replaced
    face_region: np.ndarray  # the registered template face mask (what pydeface would remove)
    brain: np.ndarray  # the registered template brain mask (inside the face box only)
    registration: Registration
    method: str
    timings: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)


def head_threshold(data: np.ndarray) -> float:
    """Intensity separating head tissue from air (a fraction of the robust maximum)."""
    return 0.12 * robust_max(data)


def warp_template_masks(vol: Volume, tpl: Template, reg: Registration,
                        margin_mm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Face region and brain mask of the template pulled onto the subject grid (booleans).

    With ``margin_mm`` only the box around the registered face region (grown by that much) is resampled
    (the defacers: that is where both masks are used); the brain mask is False outside it."""
    if margin_mm is None:
        keep = resample_to(tpl.keep, tpl.head.affine, vol.shape, vol.affine, reg.matrix, order=1, default=1.0)
        brain = resample_to(tpl.brain.astype(np.float32), tpl.head.affine, vol.shape, vol.affine, reg.matrix,
                            order=1, default=0.0)
        return keep < 0.5, brain > 0.5
    face_box = bbox(tpl.face)
    corners = np.array([[s.start if e == 0 else s.stop - 1 for s, e in zip(face_box, b, strict=True)]
                        for b in np.ndindex(2, 2, 2)], float)
    tw = np.c_[corners, np.ones(8)] @ tpl.head.affine.T  # template world
    sv = (tw @ np.linalg.inv(reg.matrix).T) @ np.linalg.inv(vol.affine).T  # subject voxel
    m = margin_mm / vol.zooms
    lo = np.maximum(np.floor(sv[:, :3].min(0) - m), 0).astype(int)
    hi = np.minimum(np.ceil(sv[:, :3].max(0) + m) + 1, vol.shape).astype(int)
    face = np.zeros(vol.shape, bool)
    brain = np.zeros(vol.shape, bool)
    if np.any(hi <= lo):
        return face, brain
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    sub = crop_volume(vol, sl)  # type: ignore[arg-type]
    tkeep, tbrain, taff = _template_face_box(tpl, margin_mm)
    keep = resample_to(tkeep, taff, sub.shape, sub.affine, reg.matrix, order=1, default=1.0)
    br = resample_to(tbrain, taff, sub.shape, sub.affine, reg.matrix, order=1, default=0.0)
    face[sl] = keep < 0.5
    brain[sl] = br > 0.5
    return face, brain


_FACE_BOX: dict[tuple[int, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _template_face_box(tpl: Template, margin_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The template keep-mask and brain mask cropped to the face box grown by ``margin_mm`` + 10 mm, and
    the crop's affine (cached: resampling the whole 176x256x256 template per subject is the slow part)."""
    key = (id(tpl), float(margin_mm))
    if key not in _FACE_BOX:
        m = int(np.ceil((margin_mm + 10.0) / float(min(tpl.head.zooms))))
        sl = bbox(tpl.face, margin=m)
        sub = crop_volume(tpl.head, sl)
        _FACE_BOX[key] = (np.ascontiguousarray(tpl.keep[sl]), np.ascontiguousarray(tpl.brain[sl], np.float32),
                          sub.affine)
    return _FACE_BOX[key]


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
    removed side a*y + b*z + c > 0. (The refacing attack's candidate region; ``deface --method shear``
    uses :func:`template_shear_plane`.)"""
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
        raise InputError("brain mask too small to place a shear plane")
    (y0, z0), (y1, z1) = (-hull[0][0], hull[0][1]), (-hull[1][0], hull[1][1])
    # line through the two points, normal pointing anterior-inferior (away from the brain)
    ny, nz = (z1 - z0), -(y1 - y0)
    if ny * 1 + nz * (-1) < 0:  # make the normal point towards +y / -z
        ny, nz = -ny, -nz
    norm = float(np.hypot(ny, nz))
    ny, nz = ny / norm, nz / norm
    c = -(ny * y0 + nz * z0) - buffer_mm
    return float(ny), float(nz), float(c)


_TPL_PLANE: dict[tuple[int, float], tuple[np.ndarray, float, float]] = {}


def template_shear_plane(tpl: Template, buffer_mm: float = 4.0) -> tuple[np.ndarray, float, float]:
    """The shear plane fitted on the template to its face mask and brain mask together.

    Over normals in the sagittal plane (pointing anterior-inferior, 0-90 degrees from anterior), the
    plane is put ``buffer_mm`` beyond the template brain mask (itself Colin27's brain dilated by 2 mm)
    and the angle that removes the largest share of the face mask's head voxels is kept. Returns
    (normal (3,), offset c, face coverage on the template); removed side: normal . x + c > 0 (template
    world mm). Cached per template."""
    key = (id(tpl), float(buffer_mm))
    if key in _TPL_PLANE:
        return _TPL_PLANE[key]
    head = tpl.head
    sub = (slice(None, None, 2),) * 3  # 2 mm is plenty for choosing an angle
    aff = head.affine.copy()
    aff[:3, :3] = aff[:3, :3] * 2
    ijk = lambda m: np.argwhere(m[sub]).astype(float)  # noqa: E731
    world = lambda p: p @ aff[:3, :3].T + aff[:3, 3]  # noqa: E731
    brain_pts = world(ijk(tpl.brain))
    face_pts = world(ijk(tpl.face & (head.data > head_threshold(head.data))))
    best: tuple[float, np.ndarray, float] = (-1.0, np.zeros(3), 0.0)
    for deg in np.arange(0.0, 90.5, 1.0):
        t = np.radians(deg)
        n = np.array([0.0, np.cos(t), -np.sin(t)])
        c = -float((brain_pts @ n).max()) - buffer_mm
        cov = float(((face_pts @ n + c) > 0).mean())
        if cov > best[0]:
            best = (cov, n, c)
    _TPL_PLANE[key] = (best[1], best[2], best[0])
    return _TPL_PLANE[key]


def plane_side(vol: Volume, normal: np.ndarray, c: float, world_to_plane: np.ndarray) -> np.ndarray:
    """Boolean: voxels of ``vol`` whose point, mapped by ``world_to_plane`` (subject world -> template
    world), lies on the removed side of the plane ``normal . x + c > 0``."""
    m = np.asarray(world_to_plane, float) @ vol.affine  # subject ijk -> template world
    w = normal @ m[:3, :3]
    off = float(normal @ m[:3, 3] + c)
    i, j, k = (np.arange(n, dtype=np.float32) for n in vol.shape)
    return (np.float32(w[0]) * i[:, None, None] + np.float32(w[1]) * j[None, :, None]
            + np.float32(w[2]) * k[None, None, :] + np.float32(off)) > 0


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
        source = tpl.face_source
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


def _name(vol: Volume) -> str:
    return f"{vol.path}: " if vol.path is not None else ""


class BrainInRemovalError(InputError):
    """The cut would remove brain found independently of the registration: nothing is written."""


def deface(vol: Volume, tpl: Template, *, method: str = "mask", settings: str = "fast",
           registration: Registration | None = None, protect_brain: bool = True,
           brain_truth: np.ndarray | None = None, feather_mm: float = 3.0, threads: int | None = 2,
           shear_buffer_mm: float = 4.0, check_brain: bool = True) -> DefaceResult:
    """Deface ``vol`` with ``method`` (mask | shear | reface).

    The cut comes from the registered template; the check does not: a brain mask found from the scan's
    own intensities (:mod:`.brain`) must not meet the removed region, else :class:`BrainInRemovalError`
    (``check_brain=False`` only reports). ``brain_truth`` (optional, subject grid) adds a third count."""
    from .brain import independent_masks

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {METHODS}")
    fov = np.array(vol.shape) * vol.zooms
    if fov.min() < MIN_FOV_MM:
        raise InputError(f"{_name(vol)}field of view {np.round(fov).astype(int).tolist()} mm is too small for a "
                         f"whole head (defacing needs >= {MIN_FOV_MM:g} mm along each axis)")
    tm: dict[str, float] = {}
    t0 = time.perf_counter()
    reg = registration or register_affine(vol, tpl.head, settings, threads=threads)
    tm["register_s"] = reg.seconds if registration is None else 0.0
    t1 = time.perf_counter()
    face, brain = warp_template_masks(vol, tpl, reg, margin_mm=15.0)
    tm["warp_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    data = vol.data
    plane_cov = None
    if method == "shear":
        n, c, plane_cov = template_shear_plane(tpl, shear_buffer_mm)
        removed = plane_side(vol, n, c, reg.matrix)
    else:
        removed = face.copy()
    n_brain_in = int((removed & brain).sum())
    if protect_brain:
        removed &= ~brain
    tm["cut_s"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    core, indep = independent_masks(vol)
    n_core = int((removed & core).sum())
    n_indep = int((removed & indep).sum())
    indep_mm3 = n_indep * float(np.prod(vol.zooms))
    tm["check_s"] = time.perf_counter() - t3
    if check_brain and (n_core > 0 or indep_mm3 > REFUSE_BRAIN_MM3):
        raise BrainInRemovalError(
            f"{_name(vol)}refusing to deface: the {method} cut would remove {n_indep} voxels ({indep_mm3:.0f} mm3; "
            f"{n_core} in its core) of a brain mask found without the template registration (the "
            "registration is probably wrong; nothing was written)")
    indep_ml = float(indep.sum() * np.prod(vol.zooms) / 1000.0)
    if check_brain and (indep_ml < MIN_BRAIN_ML or not (face & (data > head_threshold(data))).any()):
        raise InputError(f"{_name(vol)}no whole head found (brain {indep_ml:.0f} mL found without the "
                         "registration; the registered face region holds no head tissue or the brain is "
                         f"under {MIN_BRAIN_ML:g} mL): is this a whole-head T1 scan? Nothing was written")
    t4 = time.perf_counter()
    out = data.copy()
    if method == "reface":
        out = reface_region(vol, tpl, reg, removed, feather_mm)
    else:
        out[removed] = 0
    tm["apply_s"] = time.perf_counter() - t4
    tm["total_s"] = time.perf_counter() - t0
    head = data > head_threshold(data)
    face_head = face & head
    removed_head = removed & head
    checks = {
        "brain_voxels_removed": n_indep,
        "brain_reference": "independent intensity/morphology brain mask (no registration)",
        "brain_core_voxels_removed": n_core,
        "brain_voxels_removed_registered_template": int((removed & brain).sum()),
        "brain_voxels_in_removal_before_protection": n_brain_in,
        "independent_brain_ml": indep_ml,
        "face_head_voxels": int(face_head.sum()),
        "face_coverage": float((face_head & removed).sum() / max(int(face_head.sum()), 1)),
        "removed_head_voxels": int(removed_head.sum()),
        "removed_outside_face_fraction": float((removed_head & ~face).sum() / max(int(removed_head.sum()), 1)),
        "registration_start": reg.info.get("start"),
    }
    if plane_cov is not None:
        checks["template_plane_face_coverage"] = plane_cov
    if brain_truth is not None:
        checks["brain_voxels_removed_truth"] = int((removed & brain_truth).sum())
    return DefaceResult(out.astype(np.float32), removed, face, brain, reg, method, tm, checks)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s
