"""Alignment to the standard crops and paste-back.

- ``arcface_crop``: similarity transform of 5 points onto the ArcFace 112x112 template (the layout of the
  CelebA subset, MobileFaceNet and the ``lite`` generator).
- ``dlib_chip``: dlib's own ``get_face_chip`` (150x150, padding 0.25), the input of dlib's descriptor.
- ``paste_back``: warp an edited crop back into the full frame through a feathered elliptical mask.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

#: ArcFace 112x112 5-point template (x, y): left eye, right eye, nose tip, left mouth, right mouth
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src -> dst; 2x3."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var_s = (s_c ** 2).sum() / len(src)
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine transform."""
    a = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(a)[:2]


def warp_affine(img: np.ndarray, m: np.ndarray, size: tuple[int, int], fill: int = 0) -> np.ndarray:
    """Warp ``img`` with the forward 2x3 transform ``m`` (input -> output coords) into (w, h) = size, bilinear."""
    inv = invert_affine(m)
    # PIL maps output pixel centres; use the half-pixel convention consistently
    a, b, c = inv[0]
    d, e, f = inv[1]
    c = c + 0.5 * a + 0.5 * b - 0.5
    f = f + 0.5 * d + 0.5 * e - 0.5
    pil = Image.fromarray(np.ascontiguousarray(img))
    fillc = fill if pil.mode == "L" else (fill,) * len(pil.getbands())
    out = pil.transform(size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=Image.Resampling.BILINEAR,
                        fillcolor=fillc)
    return np.asarray(out)


def arcface_crop(img: np.ndarray, arcface5: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Aligned ``size``x``size`` crop (template scaled by size/112) and the 2x3 transform image -> crop."""
    m = umeyama(arcface5, ARCFACE_TEMPLATE * (size / 112.0))
    return warp_affine(img, m, (size, size)), m


def dlib_chip(img: np.ndarray, shape5: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib's face chip (exactly ``dlib.get_face_chip``) from the 5-point shape."""
    import dlib

    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(shape5)]
    xs, ys = [p.x for p in pts], [p.y for p in pts]
    rect = dlib.rectangle(min(xs), min(ys), max(xs), max(ys))
    det = dlib.full_object_detection(rect, pts)
    return np.asarray(dlib.get_face_chip(np.ascontiguousarray(img), det, size=size, padding=padding))


def soft_face_mask(size: int, feather: float = 0.08, layout: str = "arcface112") -> np.ndarray:
    """Float mask in [0, 1] (size x size): an ellipse over the face in the given crop layout, feathered."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if layout == "arcface112":
        cx, cy, rx, ry = 0.5, 0.56, 0.40, 0.50
    else:
        cx, cy, rx, ry = 0.5, 0.5, 0.46, 0.50
    r = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
    mask = (r <= 1.0).astype(np.float64)
    return np.clip(gaussian_filter(mask, sigma=max(feather * size, 0.5)), 0, 1)


def paste_back(frame: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | None = None,
               feather: float = 0.08) -> np.ndarray:
    """Blend an edited crop (made with transform ``m`` from ``frame``) back into a copy of the frame."""
    h, w = frame.shape[:2]
    size = crop.shape[0]
    if mask is None:
        mask = soft_face_mask(size, feather)
    inv = invert_affine(m)
    warped = warp_affine(crop, inv, (w, h)).astype(np.float64)
    mask_u8 = np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
    alpha = warp_affine(mask_u8, inv, (w, h)).astype(np.float64)[..., None] / 255.0
    out = frame.astype(np.float64) * (1 - alpha) + warped * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
