"""Utility loss of defacing: what downstream measurements change between the original and the defaced
scan — head geometry, soft tissue in the face region, registration to the template, and a simple
3-class GMM tissue segmentation of the brain (each scan uses the brain mask from its own registration,
as a real pipeline would)."""

from __future__ import annotations

import numpy as np

from .deface import dice, warp_template_masks
from .io import Volume
from .register import Registration, register_affine
from .surface import head_mask
from .template import Template


def head_geometry(vol: Volume, mask: np.ndarray | None = None) -> dict[str, float]:
    """Head volume (mL) and extents (mm) along left-right, anterior-posterior, inferior-superior."""
    m = head_mask(vol.data) if mask is None else mask
    vox_ml = float(abs(np.linalg.det(vol.affine[:3, :3]))) / 1000.0
    out = {"head_volume_ml": float(m.sum()) * vox_ml}
    for ax, name in enumerate(("extent_lr_mm", "extent_ap_mm", "extent_si_mm")):
        idx = np.nonzero(m.any(axis=tuple(a for a in range(3) if a != ax)))[0]
        out[name] = float((idx[-1] - idx[0] + 1) * vol.zooms[ax]) if len(idx) else 0.0
    return out


def gmm_segment(data: np.ndarray, brain: np.ndarray, seed: int = 0, n_fit: int = 60000) -> np.ndarray:
    """Label brain voxels 1..3 (CSF / grey / white by increasing mean) with a 1-D Gaussian mixture."""
    from sklearn.mixture import GaussianMixture

    vals = data[brain].astype(np.float64)[:, None]
    lab = np.zeros(data.shape, np.uint8)
    if len(vals) < 100:
        return lab
    rng = np.random.default_rng(seed)
    fit = vals[rng.choice(len(vals), min(n_fit, len(vals)), replace=False)]
    g = GaussianMixture(3, random_state=seed, n_init=1, max_iter=200).fit(fit)
    order = np.argsort(g.means_.ravel())
    rank = np.empty(3, int)
    rank[order] = np.arange(1, 4)
    lab[brain] = rank[g.predict(vals)]
    return lab


def registration_shift_mm(a: Registration, b: Registration, vol: Volume, region: np.ndarray,
                          n: int = 5000, seed: int = 0) -> dict[str, float]:
    """How far two registrations of the same subject disagree over a region (mean / max mm)."""
    idx = np.argwhere(region)
    if len(idx) == 0:
        return {"mean_mm": float("nan"), "max_mm": float("nan")}
    rng = np.random.default_rng(seed)
    idx = idx[rng.choice(len(idx), min(n, len(idx)), replace=False)]
    w = np.c_[idx, np.ones(len(idx))] @ vol.affine.T
    d = np.linalg.norm((w @ a.matrix.T - w @ b.matrix.T)[:, :3], axis=1)
    return {"mean_mm": float(d.mean()), "max_mm": float(d.max())}


def utility_deltas(orig: Volume, defaced: Volume, tpl: Template, reg_orig: Registration | None = None,
                   reg_defaced: Registration | None = None, face_region: np.ndarray | None = None,
                   settings: str = "fast", seed: int = 0, orig_mask: np.ndarray | None = None) -> dict:
    """All utility measures on the original and the defaced scan, and their differences."""
    ro = reg_orig or register_affine(orig, tpl.head, settings, seed=seed)
    rd = reg_defaced or register_affine(defaced, tpl.head, settings, seed=seed)
    face_o, brain_o = warp_template_masks(orig, tpl, ro)
    _, brain_d = warp_template_masks(defaced, tpl, rd)
    face = face_o if face_region is None else face_region
    mo = head_mask(orig.data) if orig_mask is None else orig_mask
    md = head_mask(defaced.data)
    go, gd = head_geometry(orig, mo), head_geometry(defaced, md)
    vox_ml = float(abs(np.linalg.det(orig.affine[:3, :3]))) / 1000.0
    soft_o = float((mo & face).sum()) * vox_ml
    soft_d = float((md & face).sum()) * vox_ml
    so = gmm_segment(orig.data, brain_o & mo, seed)
    sd = gmm_segment(defaced.data, brain_d & md, seed)
    seg = {}
    for k, name in ((1, "csf"), (2, "gm"), (3, "wm")):
        vo, vd = float((so == k).sum()) * vox_ml, float((sd == k).sum()) * vox_ml
        seg[name] = {"orig_ml": vo, "defaced_ml": vd, "delta_ml": vd - vo, "dice": dice(so == k, sd == k)}
    return {
        "geometry": {k: {"orig": go[k], "defaced": gd[k], "delta": gd[k] - go[k]} for k in go},
        "face_soft_tissue_ml": {"orig": soft_o, "defaced": soft_d, "delta": soft_d - soft_o},
        "registration_change_in_brain_mm": registration_shift_mm(ro, rd, orig, brain_o),
        "brain_mask_dice": dice(brain_o, brain_d),
        "gmm_segmentation": seg,
    }
