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

#: named settings: working voxel size (mm), pyramid shrink factors, smoothing (mm), sampling fraction,
#: iterations per level
SETTINGS: dict[str, dict] = {
    "fast": dict(work_mm=2.0, shrink=[4, 2, 1], sigma_mm=[4.0, 2.0, 0.0], sampling=0.10,
                 iters=[200, 100, 60], bins=32, lr=1.0, min_step=1e-3),
    "careful": dict(work_mm=1.0, shrink=[4, 2, 1], sigma_mm=[4.0, 2.0, 0.0], sampling=0.05,
                    iters=[300, 200, 100], bins=32, lr=1.0, min_step=1e-4),
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


def _init_translation(fixed: Volume, moving: Volume) -> np.ndarray:
    """Initial translation: align the head tops (vertex) and the left-right/anterior-posterior centres of
    the upper head, which are far more stable than whole-volume moments (fields of view differ a lot)."""

    def top_centre(v: Volume) -> np.ndarray:
        d = v.data
        thr = 0.15 * robust_max(d)
        m = d > thr
        zs = np.nonzero(m.any(axis=(0, 1)))[0]
        if len(zs) == 0:
            return v.affine[:3, :3] @ (np.array(v.shape) / 2) + v.affine[:3, 3]
        ztop = zs.max()
        zlo = max(0, ztop - int(round(80 / v.zooms[2])))  # upper 8 cm of the head
        ii, jj, kk = np.nonzero(m[:, :, zlo:ztop + 1])
        c = np.array([ii.mean(), jj.mean(), ztop + 0.0])
        return v.affine[:3, :3] @ c + v.affine[:3, 3]

    return top_centre(moving) - top_centre(fixed)


def register_affine(fixed: Volume, moving: Volume, settings: str = "fast", seed: int = 0,
                    threads: int | None = 2, init: np.ndarray | None = None) -> Registration:
    """Affine-register ``moving`` (e.g. the template) to ``fixed`` (the subject) by Mattes MI.

    ``settings`` is "fast" (2 mm working grid, ~seconds) or "careful" (native grid, slower)."""
    import SimpleITK as sitk

    cfg = SETTINGS[settings]
    set_threads(threads)
    t0 = time.perf_counter()
    f_img, _ = _work_image(fixed, cfg["work_mm"])
    m_img, _ = _work_image(moving, cfg["work_mm"])
    tx = sitk.AffineTransform(3)
    if init is not None:
        tx.SetMatrix(np.asarray(init)[:3, :3].ravel().tolist())
        tx.SetTranslation(np.asarray(init)[:3, 3].tolist())
    else:
        tx.SetTranslation(_init_translation(fixed, moving).tolist())
    # rotate/scale about the fixed head's centre so the parameters are well conditioned
    sz = np.array(f_img.GetSize())
    centre = f_img.TransformContinuousIndexToPhysicalPoint(((sz - 1) / 2).tolist())
    if init is None:
        tx.SetCenter(centre)
    else:
        c = np.array(centre)
        a = np.asarray(init)[:3, :3]
        t = np.asarray(init)[:3, 3]
        tx.SetCenter(centre)
        tx.SetTranslation((a @ c + t - c).tolist())
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=cfg["bins"])
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(cfg["sampling"], seed=seed + 1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=cfg["lr"], minStep=cfg["min_step"],
                                                 numberOfIterations=max(cfg["iters"]),
                                                 gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(cfg["shrink"])
    reg.SetSmoothingSigmasPerLevel(cfg["sigma_mm"])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(f_img, m_img)
    a = np.array(tx.GetMatrix()).reshape(3, 3)
    c = np.array(tx.GetCenter())
    t = np.array(tx.GetTranslation())
    mat = np.eye(4)
    mat[:3, :3] = a
    mat[:3, 3] = t + c - a @ c
    return Registration(mat, time.perf_counter() - t0, float(reg.GetMetricValue()), settings,
                        {"iterations": int(reg.GetOptimizerIteration()),
                         "stop": reg.GetOptimizerStopConditionDescription()})


def point_error_mm(est: np.ndarray, truth: np.ndarray, points: np.ndarray) -> float:
    """Largest distance (mm) between two world transforms applied to the same points (N, 3)."""
    p = np.c_[points, np.ones(len(points))]
    return float(np.linalg.norm((p @ est.T - p @ truth.T)[:, :3], axis=1).max())
