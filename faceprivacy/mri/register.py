"""Affine registration (SimpleITK, Mattes mutual information) and resampling between voxel grids.

All transforms are 4x4 matrices in world (RAS mm) coordinates mapping a point of the *fixed*
(subject) space to the corresponding point of the *moving* (template) space, i.e. the pull-back
that resampling needs. Speed comes from registering on a pre-smoothed, downsampled copy with a
coarse-to-fine pyramid and sparse metric sampling."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .io import Volume

#: named settings: refinement levels (mm) and iterations per level, iterations per start (4 mm),
#: metric sampling fraction of the head-masked voxels, histogram bins, optimiser step
SETTINGS: dict[str, dict] = {
    "fast": dict(levels_mm=[2.0], iters=[40], start_iters=60, sampling=0.02, bins=32, lr=1.0,
                 min_step=1e-3),
    "careful": dict(levels_mm=[2.0, 1.0], iters=[150, 100], start_iters=100, sampling=0.05, bins=32,
                    lr=1.0, min_step=1e-4),
}


def set_threads(n: int | None) -> None:
    """Cap SimpleITK's worker threads (the project runs on 2 shared cores)."""
    import SimpleITK as sitk

    if n:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))


def _index_image(arr: np.ndarray):
    """numpy (i,j,k) array -> SimpleITK image whose index (i,j,k) is the same voxel (spacing 1, origin 0)."""
    import SimpleITK as sitk

    return sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr).T))


def _from_index_image(img) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(img).T


def resample_to(moving: np.ndarray, moving_affine: np.ndarray, fixed_shape: tuple[int, int, int],
                fixed_affine: np.ndarray, world_fixed_to_moving: np.ndarray | None = None,
                order: int = 1, default: float = 0.0) -> np.ndarray:
    """Resample ``moving`` onto the fixed voxel grid through a world transform (fixed -> moving).

    One composed index-to-index affine is handed to SimpleITK (fast, multithreaded)."""
    import SimpleITK as sitk

    t = np.eye(4) if world_fixed_to_moving is None else np.asarray(world_fixed_to_moving, float)
    m = np.linalg.inv(moving_affine) @ t @ fixed_affine  # fixed ijk -> moving ijk
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(m[:3, :3].ravel().tolist())
    tx.SetTranslation(m[:3, 3].tolist())
    mov = _index_image(np.asarray(moving, dtype=np.float32))
    ref = sitk.Image([int(s) for s in fixed_shape], sitk.sitkUInt8)
    interp = {0: sitk.sitkNearestNeighbor, 1: sitk.sitkLinear, 3: sitk.sitkBSpline}[order]
    out = sitk.Resample(mov, ref, tx, interp, float(default), sitk.sitkFloat32)
    return _from_index_image(out)


def _work_image(vol: Volume, work_mm: float | None):
    """SimpleITK image of ``vol`` in world space (axis-aligned, isotropic ``work_mm`` voxels, or the
    native grid when None), with intensities scaled to [0, 1] by the 99.5th percentile."""

    data = vol.data
    hi = robust_max(data)
    data = np.clip(data / max(hi, 1e-6), 0, 1.5).astype(np.float32)
    if work_mm is None:
        img = _index_image(data)
        z = vol.zooms
        img.SetSpacing([float(v) for v in z])
        # world = A @ ijk; axis-aligned part only (canonical RAS): origin from the affine's translation
        img.SetOrigin([float(v) for v in vol.affine[:3, 3]])
        d = vol.affine[:3, :3] / z
        img.SetDirection(d.ravel().tolist())
        return img, None
    lo = vol.affine @ np.array([0, 0, 0, 1.0])
    corners = np.array([[i, j, k, 1.0] for i in (0, vol.shape[0] - 1) for j in (0, vol.shape[1] - 1)
                        for k in (0, vol.shape[2] - 1)])
    w = corners @ vol.affine.T
    lo, hi_w = w[:, :3].min(0), w[:, :3].max(0)
    shape = tuple(int(np.ceil((hi_w[a] - lo[a]) / work_mm)) + 1 for a in range(3))
    aff = np.diag([work_mm, work_mm, work_mm, 1.0])
    aff[:3, 3] = lo
    # anti-alias by block averaging (cheap), then resample the small array onto the work grid
    f = [max(1, int(round(work_mm / float(z)))) for z in vol.zooms]
    small, small_aff = block_mean(data, vol.affine, f)
    arr = resample_to(small, small_aff, shape, aff)
    img = _index_image(arr)
    img.SetSpacing([work_mm] * 3)
    img.SetOrigin([float(v) for v in lo])
    return img, aff


def robust_max(data: np.ndarray, q: float = 99.5) -> float:
    """The q-th percentile of the positive voxels (on a strided subsample, for speed)."""
    sub = np.asarray(data).ravel()[::7]
    sub = sub[sub > 0]
    return float(np.percentile(sub, q)) if sub.size else 1.0


def block_mean(data: np.ndarray, affine: np.ndarray, factors: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Downsample by averaging non-overlapping blocks; returns the array and its affine."""
    fx, fy, fz = factors
    nx, ny, nz = (s // f for s, f in zip(data.shape, factors, strict=True))
    d = data[:nx * fx, :ny * fy, :nz * fz].reshape(nx, fx, ny, fy, nz, fz).mean(axis=(1, 3, 5))
    aff = affine.copy()
    aff[:3, :3] = affine[:3, :3] * np.array(factors, float)
    aff[:3, 3] = affine[:3, :3] @ ((np.array(factors, float) - 1) / 2) + affine[:3, 3]
    return d.astype(np.float32), aff


@dataclass
class Registration:
    """Result of an affine registration: ``matrix`` maps fixed world points to moving world points."""

    matrix: np.ndarray
    seconds: float
    metric: float
    settings: str
    info: dict = field(default_factory=dict)


_PYRAMID: dict[tuple[int, bytes, float], tuple[np.ndarray, object, object]] = {}


def _cached_work(vol: Volume, mm: float):
    """Work image (and head-mask image) of ``vol`` at ``mm``; cached per array (the template is registered
    against every subject, so its pyramid is built once per process)."""
    key = (id(vol.data), vol.affine.tobytes(), float(mm))
    hit = _PYRAMID.get(key)
    if hit is not None and hit[0] is vol.data:
        return hit[1], hit[2]
    img, m = _uncached(vol, mm)
    if len(_PYRAMID) > 16:
        _PYRAMID.clear()
    _PYRAMID[key] = (vol.data, img, m)
    return img, m


def _head_points(img) -> np.ndarray:
    """World coordinates (N, 3) of the head voxels of a work image (threshold 0.1 of the robust max)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(img).T  # (i, j, k)
    ijk = np.argwhere(arr > 0.1).astype(float)
    sp, org = np.array(img.GetSpacing()), np.array(img.GetOrigin())
    d = np.array(img.GetDirection()).reshape(3, 3)
    return ijk * sp @ d.T + org


def _top_centre(pts: np.ndarray) -> np.ndarray:
    """The vertex height and the left-right / anterior-posterior centre of the upper 8 cm of a head
    (far more stable than whole-volume moments: fields of view differ a lot below the skull)."""
    ztop = float(np.percentile(pts[:, 2], 99.8))
    up = pts[pts[:, 2] > ztop - 80.0]
    return np.array([up[:, 0].mean(), up[:, 1].mean(), ztop])


def _principal_axes(pts: np.ndarray) -> np.ndarray:
    """Eigenvectors (columns) of the covariance of the upper head (the part every T1 field of view holds)."""
    ztop = float(np.percentile(pts[:, 2], 99.8))
    up = pts[pts[:, 2] > ztop - 110.0]
    w, v = np.linalg.eigh(np.cov((up - up.mean(0)).T))
    return v


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def _moments_rotation(fixed_pts: np.ndarray, moving_pts: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Rotation (fixed -> moving) mapping the fixed head's principal axes onto the moving head's, with the
    axis pairing and signs chosen closest to ``near`` (a head is never upside down)."""
    import itertools

    ef, em = _principal_axes(fixed_pts), _principal_axes(moving_pts)
    best, best_ang = near, np.inf
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            s = np.zeros((3, 3))
            for i, (j, sg) in enumerate(zip(perm, signs, strict=True)):
                s[j, i] = sg
            r = em @ s @ ef.T
            if np.linalg.det(r) < 0:
                continue
            ang = np.arccos(np.clip((np.trace(r @ near.T) - 1) / 2, -1, 1))
            if ang < best_ang:
                best, best_ang = r, ang
    return best


def _euler(ax: str, deg: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler(ax, deg, degrees=True).as_matrix()


def initial_rotations(fixed: Volume, fixed_pts: np.ndarray, moving_pts: np.ndarray) -> dict[str, np.ndarray]:
    """Starting rotations (fixed world -> moving world): identity (head upright in the world), the inverse
    header rotation (head upright in its voxel grid), the principal-axes rotation, and +-15 degree pitch /
    +-10 degree roll and yaw around the first two (the tilts scanners and headers produce)."""
    hdr = _nearest_rotation(fixed.affine[:3, :3] / fixed.zooms).T
    cands = {"identity": np.eye(3), "header": hdr}
    cands["moments"] = _moments_rotation(fixed_pts, moving_pts, np.eye(3))
    for base in ("identity", "header"):
        for ax, deg in (("x", 15), ("x", -15), ("y", 10), ("y", -10), ("z", 10), ("z", -10)):
            cands[f"{base}{ax}{deg:+d}"] = _euler(ax, deg) @ cands[base]
    out: dict[str, np.ndarray] = {}
    for k, r in cands.items():  # drop near-duplicates (a straight header makes "header" == "identity")
        if all(np.arccos(np.clip((np.trace(r @ q.T) - 1) / 2, -1, 1)) > np.radians(2) for q in out.values()):
            out[k] = r
    return out


def _to_matrix(tx) -> np.ndarray:
    a = np.array(tx.GetMatrix()).reshape(3, 3)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    mat = np.eye(4)
    mat[:3, :3] = a
    mat[:3, 3] = t + c - a @ c
    return mat


def _method(cfg: dict, fixed_mask, seed: int, iters: int, shrink: list[int], sigma: list[float],
            sampling: float):
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg["bins"])
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, seed=seed + 1)
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=cfg["lr"], minStep=cfg["min_step"],
                                                 numberOfIterations=iters, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(sigma)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def _metric(f_img, m_img, f_mask, mat: np.ndarray, bins: int, fraction: float = 0.2) -> float:
    """Mattes MI of a world transform on a regular ``fraction`` of the masked fixed voxels (comparable
    across starts: the same samples for every candidate)."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(fraction, seed=1)
    reg.SetMetricFixedMask(f_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(mat[:3, :3].ravel().tolist())
    tx.SetTranslation(mat[:3, 3].tolist())
    reg.SetInitialTransform(tx)
    return float(reg.MetricEvaluate(f_img, m_img))


def register_affine(fixed: Volume, moving: Volume, settings: str = "fast", seed: int = 0,
                    threads: int | None = 2, init: np.ndarray | None = None) -> Registration:
    """Affine-register ``moving`` (e.g. the template) to ``fixed`` (the subject) by Mattes MI.

    Coarse-to-fine and multi-start, so that a tilted header or head cannot trap it: each starting rotation
    (:func:`initial_rotations`; or ``init`` alone when given) is optimised as a similarity transform on
    4 mm images (head-mask-limited sampling), the best by a common MI evaluation is refined as a full
    affine at 4 and 2 mm ("fast") or 4, 2 and 1 mm ("careful"). The moving image's pyramid is cached."""

    cfg = SETTINGS[settings]
    set_threads(threads)
    t0 = time.perf_counter()
    f8, fm8 = _work_image_pair(fixed, 8.0)
    m8, _ = _cached_work(moving, 8.0)
    f4, fm4 = _work_image_pair(fixed, 4.0)
    m4, _ = _cached_work(moving, 4.0)
    fpts, mpts = _head_points(f4), _head_points(m4)
    centre = fpts.mean(0)
    if init is not None:
        starts = {"given": np.asarray(init, float)}
    else:
        starts = {}
        ctop = _top_centre(mpts)
        for name, r in initial_rotations(fixed, fpts, mpts).items():
            mat = np.eye(4)
            mat[:3, :3] = r
            mat[:3, 3] = ctop - _top_centre(fpts @ r.T)
            starts[name] = mat
    # stage 1: every start as a similarity transform on 8 mm images, scored on all 8 mm head voxels
    scores: dict[str, float] = {}
    results: dict[str, np.ndarray] = {}
    for name, mat in starts.items():
        results[name] = _optimise(_similarity(mat, centre), f8, fm8, m8, cfg, seed, cfg["start_iters"], 8.0, 0.5)
        scores[name] = _metric(f8, m8, fm8, results[name], cfg["bins"], 1.0)
    # stage 2: the two best starts refined on 4 mm images
    top = sorted(scores, key=scores.__getitem__)[:2]
    for name in top:
        results[name] = _optimise(_similarity(results[name], centre), f4, fm4, m4, cfg, seed,
                                  cfg["start_iters"], 4.0, 0.1)
        scores[name] = _metric(f4, m4, fm4, results[name], cfg["bins"])
    best = min(top, key=scores.__getitem__)
    # stage 3: full affine, coarse to fine
    tx = _affine(results[best], centre)
    iters = 0
    metric = scores[best]
    for mm, n in zip(cfg["levels_mm"], cfg["iters"], strict=True):
        f_img, f_mask = _work_image_pair(fixed, mm)
        m_img, _ = _cached_work(moving, mm)
        reg = _method(cfg, f_mask, seed, n, [1], [mm], cfg["sampling"])
        reg.SetInitialTransform(tx, inPlace=True)
        reg.Execute(f_img, m_img)
        metric = float(reg.GetMetricValue())
        iters += int(reg.GetOptimizerIteration())
    return Registration(_to_matrix(tx), time.perf_counter() - t0, metric, settings,
                        {"iterations": iters, "start": best, "n_starts": len(starts),
                         "start_metrics": {k: round(v, 5) for k, v in scores.items()}})


def _similarity(mat: np.ndarray, centre: np.ndarray):
    import SimpleITK as sitk

    tx = sitk.Similarity3DTransform()
    tx.SetCenter(centre.tolist())
    tx.SetMatrix(_nearest_rotation(mat[:3, :3]).ravel().tolist())
    tx.SetScale(float(np.cbrt(abs(np.linalg.det(mat[:3, :3])))))
    tx.SetTranslation((mat[:3, :3] @ centre + mat[:3, 3] - centre).tolist())
    return tx


def _affine(mat: np.ndarray, centre: np.ndarray):
    import SimpleITK as sitk

    tx = sitk.AffineTransform(3)
    tx.SetCenter(centre.tolist())
    tx.SetMatrix(mat[:3, :3].ravel().tolist())
    tx.SetTranslation((mat[:3, :3] @ centre + mat[:3, 3] - centre).tolist())
    return tx


def _optimise(tx, f_img, f_mask, m_img, cfg: dict, seed: int, iters: int, sigma_mm: float,
              sampling: float) -> np.ndarray:
    reg = _method(cfg, f_mask, seed, iters, [1], [sigma_mm], sampling)
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f_img, m_img)
    return _to_matrix(tx)


_FIXED: dict[tuple[int, bytes, float], tuple[np.ndarray, object, object]] = {}


def _work_image_pair(fixed: Volume, mm: float):
    """Work image + dilated head mask of the subject (not kept beyond the last two subjects)."""
    key = (id(fixed.data), fixed.affine.tobytes(), float(mm))
    hit = _FIXED.get(key)
    if hit is not None and hit[0] is fixed.data:
        return hit[1], hit[2]
    if len(_FIXED) > 6:
        _FIXED.clear()
    img, m = _uncached(fixed, mm)
    _FIXED[key] = (fixed.data, img, m)
    return img, m


def _uncached(vol: Volume, mm: float):
    import SimpleITK as sitk

    img, _ = _work_image(vol, mm)
    arr = sitk.GetArrayViewFromImage(img)
    m = sitk.GetImageFromArray((arr > 0.1).astype(np.uint8))
    m.CopyInformation(img)
    return img, sitk.BinaryDilate(m, [1, 1, 1])


def point_error_mm(est: np.ndarray, truth: np.ndarray, points: np.ndarray) -> float:
    """Largest distance (mm) between two world transforms applied to the same points (N, 3)."""
    p = np.c_[points, np.ones(len(points))]
    return float(np.linalg.norm((p @ est.T - p @ truth.T)[:, :3], axis=1).max())
