"""Alignment to the standard crops and paste-back.

- ``arcface_crop``: similarity transform of 5 points onto the ArcFace 112x112 template (the layout of the
  CelebA subset, MobileFaceNet and the ``lite`` generator).
- ``dlib_chip``: dlib's own ``get_face_chip`` (150x150, padding 0.25), the input of dlib's descriptor.
- ``paste_back``: warp an edited crop back into the full frame through a feathered elliptical mask.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: ArcFace 112x112 5-point template (x, y): left eye, right eye, nose tip, left mouth, right mouth
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` (K,2) onto ``dst``
    (K,2), as a 2x3 matrix (Umeyama 1991; the same estimator as dlib's find_similarity_transform)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    var_s = (s0 ** 2).sum(1).mean()
    cov = d0.T @ s0 / len(src)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    det = np.linalg.det(cov)
    if det < 0 or (det == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        if d[1] < d[0]:
            s[1, 1] = -1
        else:
            s[0, 0] = -1
    r = u @ s @ vt
    c = 1.0 if var_s == 0 else float(np.trace(np.diag(d) @ s)) / var_s
    t = md - c * r @ ms
    return np.concatenate([c * r, t[:, None]], axis=1)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine (or a batch (N,2,3))."""
    m = np.asarray(m, np.float64)
    a = m[..., :2]
    ai = np.linalg.inv(a)
    t = -(ai @ m[..., 2:])
    return np.concatenate([ai, t], axis=-1)


def compose_affine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``x -> a(b(x))``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.concatenate([a[..., :2] @ b[..., :2], a[..., :2] @ b[..., 2:] + a[..., 2:]], axis=-1)


umeyama = umeyama_similarity  # short name used across the package


def warp_affine(img: np.ndarray, m: np.ndarray, size: tuple[int, int], fill: int = 0,
                resample: str = "bilinear") -> np.ndarray:
    """Warp ``img`` with the forward 2x3 transform ``m`` (input -> output coords) into (w, h) = size,
    ``resample`` = ``"bilinear"`` or ``"bicubic"`` (keeps the fine detail that bilinear sampling at sub-pixel
    offsets smooths away: a face cropped and pasted back with bilinear loses about a quarter of its
    high-frequency energy)."""
    inv = invert_affine(m)
    # our transforms map pixel *indices* (centres at integers); PIL maps continuous coordinates
    # (centre of pixel j at j + 0.5) both ways, so shift in and out by half a pixel
    a, b, c = inv[0]
    d, e, f = inv[1]
    c = c - 0.5 * a - 0.5 * b + 0.5
    f = f - 0.5 * d - 0.5 * e + 0.5
    pil = Image.fromarray(np.ascontiguousarray(img))
    fillc = fill if pil.mode == "L" else (fill,) * len(pil.getbands())
    rs = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[resample]
    out = pil.transform(size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=rs, fillcolor=fillc)
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
    from scipy.ndimage import gaussian_filter  # lazy: scipy.ndimage costs ~0.3 s of every CLI start

    return np.clip(gaussian_filter(mask, sigma=max(feather * size, 0.5)), 0, 1)


def paste_back(frame: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | None = None,
               feather: float = 0.08, resample: str = "bilinear") -> np.ndarray:
    """Blend an edited crop (made with transform ``m`` from ``frame``) back into a copy of the frame
    (the crop resampled with ``resample``, see :func:`warp_affine`; the mask always bilinear)."""
    h, w = frame.shape[:2]
    size = crop.shape[0]
    if mask is None:
        mask = soft_face_mask(size, feather)
    inv = invert_affine(m)
    warped = warp_affine(crop, inv, (w, h), resample=resample).astype(np.float64)
    mask_u8 = np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
    alpha = warp_affine(mask_u8, inv, (w, h)).astype(np.float64)[..., None] / 255.0
    out = frame.astype(np.float64) * (1 - alpha) + warped * alpha
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
