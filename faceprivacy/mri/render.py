"""Offscreen face renders of a head without VTK: ray-cast the smoothed head mask along the view
direction (one SimpleITK resample onto the camera grid), take the first surface crossing as a depth
map, and shade it Lambertian from the depth-map normals. Orthographic camera; yaw turns the head."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .io import Volume
from .register import resample_to
from .surface import head_mask, smooth_occupancy


@dataclass
class Camera:
    """Orthographic camera: ``centre`` (world mm), ``yaw`` degrees (+ turns the view towards the
    subject's left cheek), pixel size ``px_mm``, image ``size`` (H = W) and ray depth range ``depth_mm``."""

    centre: np.ndarray
    yaw: float = 0.0
    px_mm: float = 1.0
    size: int = 240
    depth_mm: float = 220.0
    step_mm: float = 1.0
    rot: np.ndarray | None = None  # world-from-template rotation (head pose); None = identity

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(u = image right, v = image up, w = viewing direction) in world RAS."""
        t = np.radians(self.yaw)
        rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])
        u = rz @ np.array([-1.0, 0, 0])  # frontal view: the subject's right is on the image's left
        v = np.array([0, 0, 1.0])
        w = rz @ np.array([0, -1.0, 0])  # looking from the front (anterior) towards the back
        if self.rot is not None:
            u, v, w = self.rot @ u, self.rot @ v, self.rot @ w
        return u, v, w

    def grid_affine(self) -> np.ndarray:
        """Index (col, row, depth) -> world affine of the ray-casting grid."""
        u, v, w = self.basis()
        n = self.size
        nd = int(round(self.depth_mm / self.step_mm))
        a = np.eye(4)
        a[:3, 0] = u * self.px_mm
        a[:3, 1] = -v * self.px_mm
        a[:3, 2] = w * self.step_mm
        a[:3, 3] = np.asarray(self.centre, float) - u * self.px_mm * n / 2 + v * self.px_mm * n / 2 \
            - w * self.step_mm * nd / 2
        return a

    def project(self, pts: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> image (x = col, y = row) pixel coordinates (N, 2)."""
        u, v, _ = self.basis()
        d = np.atleast_2d(pts) - np.asarray(self.centre, float)
        return np.c_[self.size / 2 + d @ u / self.px_mm, self.size / 2 - d @ v / self.px_mm]


def depth_map(occ: np.ndarray, affine: np.ndarray, cam: Camera) -> np.ndarray:
    """Distance (mm) along the ray to the first 0.5 crossing of ``occ`` per pixel (NaN where none)."""
    nd = int(round(cam.depth_mm / cam.step_mm))
    g = cam.grid_affine()  # the camera grid is the "fixed" grid the occupancy is pulled onto
    vals = resample_to(occ, affine, (cam.size, cam.size, nd), g, None, order=1)
    hit = vals > 0.5
    any_hit = hit.any(axis=2)
    d = np.argmax(hit, axis=2)
    dm1 = np.maximum(d - 1, 0)
    v1 = np.take_along_axis(vals, d[..., None], 2)[..., 0]
    v0 = np.take_along_axis(vals, dm1[..., None], 2)[..., 0]
    frac = np.where(d > 0, (0.5 - v0) / np.maximum(v1 - v0, 1e-6), 0.0)
    depth = (dm1 + np.clip(frac, 0, 1)) * cam.step_mm
    depth = np.where(any_hit, depth, np.nan)
    return depth.T  # (row, col)


def shade(depth: np.ndarray, px_mm: float, light: tuple[float, float, float] = (-0.35, 0.45, -1.0),
          ambient: float = 0.12) -> np.ndarray:
    """Lambertian shading of a depth map (row, col) -> uint8 RGB; background black."""
    from scipy import ndimage

    valid = np.isfinite(depth)
    if not valid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    far = np.nanmax(depth) + 5.0
    z = ndimage.gaussian_filter(np.where(valid, depth, far), 1.0)
    zr, zc = np.gradient(z)
    s = px_mm
    n = np.stack([s * zc, -s * zr, -np.full_like(z, s * s)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    ell = np.asarray(light, float)
    ell /= np.linalg.norm(ell)
    lam = np.clip(n @ ell, 0, 1)
    img = ambient + (1 - ambient) * lam
    img = np.where(valid, img, 0.0)
    g = (255 * np.clip(img, 0, 1) ** (1 / 1.2)).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def render_head(vol: Volume, cam: Camera, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Render the head surface of ``vol`` through ``cam``: returns (RGB uint8 image, depth map mm)."""
    m = head_mask(vol.data) if mask is None else mask
    occ = smooth_occupancy(m, 1.0)
    depth = depth_map(occ, vol.affine, cam)
    return shade(depth, cam.px_mm), depth


def render_views(vol: Volume, centre: np.ndarray, yaws: tuple[float, ...] = (0.0, -30.0, 30.0),
                 mask: np.ndarray | None = None, **cam_kw) -> list[tuple[np.ndarray, Camera]]:
    """Renders at several yaw angles (default frontal and +-30 degrees) sharing one head mask."""
    m = head_mask(vol.data) if mask is None else mask
    occ = smooth_occupancy(m, 1.0)
    out = []
    for y in yaws:
        cam = Camera(np.asarray(centre, float), yaw=y, **cam_kw)
        out.append((shade(depth_map(occ, vol.affine, cam), cam.px_mm), cam))
    return out


def pose_rotation(world_subject_to_template: np.ndarray) -> np.ndarray:
    """Rotation part (polar decomposition) of the subject->template affine, inverted: rotates template
    directions into the subject's world, so renders are frontal to the head, not to the scanner."""
    a = np.asarray(world_subject_to_template, float)[:3, :3]
    uu, _, vt = np.linalg.svd(a)
    r = uu @ vt
    if np.linalg.det(r) < 0:
        uu[:, -1] *= -1
        r = uu @ vt
    return r.T


def face_views(vol: Volume, reg_matrix: np.ndarray, label: str, state: str,
               yaws: tuple[float, ...] = (0.0, -30.0, 30.0), mask: np.ndarray | None = None,
               **cam_kw) -> list:
    """Pose-normalised renders of a subject with the template landmarks projected (``reid.RenderFace``)."""
    from .reid import RenderFace
    from .template import ARCFACE5, DLIB5, RENDER_CENTRE, TEMPLATE_LANDMARKS

    inv = np.linalg.inv(reg_matrix)
    centre = (inv @ np.r_[RENDER_CENTRE, 1.0])[:3]
    lm = {k: (inv @ np.r_[v, 1.0])[:3] for k, v in TEMPLATE_LANDMARKS.items()}
    rot = pose_rotation(reg_matrix)
    m = head_mask(vol.data) if mask is None else mask
    occ = smooth_occupancy(m, 1.0)
    out = []
    for y in yaws:
        cam = Camera(centre, yaw=y, rot=rot, **cam_kw)
        img = shade(depth_map(occ, vol.affine, cam), cam.px_mm)
        arc = cam.project(np.array([lm[k] for k in ARCFACE5]))
        d5 = cam.project(np.array([lm[k] for k in DLIB5]))
        out.append(RenderFace(img, arc, d5, label, state, y))
    return out
