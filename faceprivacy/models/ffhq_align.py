"""FFHQ-style face alignment (the crop layout StyleGAN2-FFHQ and e4e/pSp expect: ``alignment="ffhq"``).

The FFHQ recipe, from 68-point (iBUG/dlib) landmarks: eye centres (points 36-41, 42-47) and mouth corners
(48, 54) define an oriented square centred slightly below the eye midpoint (0.1 of the eye-to-mouth vector),
with half-side max(2 x eye distance, 1.8 x eye-to-mouth distance), its up axis perpendicular to the eye line
bent towards the eye-to-mouth direction. We warp that square with one affine map (it is a rotated square),
reflect-padding the image where the square leaves it and box-shrinking first when it is much larger than the
output, so no OpenCV is needed. ``M`` maps image pixel coordinates to crop pixel coordinates (same convention
as ``core.align.arcface_crop``), so the crop can be pasted back with the inverse warp.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..core.errors import InputError
from ..core.imageio import check_rgb


def ffhq_quad(landmarks68: np.ndarray) -> np.ndarray:
    """Corners (top-left, bottom-left, bottom-right, top-right) of the FFHQ crop square, (4, 2) x/y pixels."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise InputError(f"FFHQ alignment needs 68 finite (x, y) landmarks, got shape {lm.shape}")
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # eye line, bent by the face's up axis
    n = np.hypot(*x)
    if n < 1e-6:
        raise InputError("degenerate landmarks: eyes and mouth coincide")
    x = x / n * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])  # x rotated by +90 degrees (image y points down)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def ffhq_crop(img: np.ndarray, landmarks68: np.ndarray, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Aligned (size, size, 3) uint8 FFHQ crop of an RGB uint8 image and the 2x3 image->crop matrix ``M``."""
    img = check_rgb(img)
    quad = ffhq_quad(landmarks68)  # pixel-index coordinates (pixel centres on integers)
    # continuous coordinates (pixel i spans [i, i+1)): image_c = quad[0] + 0.5 + A @ crop_c
    a = np.stack([(quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size], axis=1)
    b = quad[0] + 0.5
    # the same map in pixel-index coordinates: image_i = quad[0] + A @ (crop_i + 0.5)
    crop_to_img = np.concatenate([a, (quad[0] + a @ np.array([0.5, 0.5]))[:, None]], axis=1)
    m = np.linalg.inv(np.vstack([crop_to_img, [0.0, 0.0, 1.0]]))[:2]

    src = Image.fromarray(img)
    scale = float(np.hypot(*a[:, 0]))
    k = int(np.floor(scale / 2)) if scale >= 4 else 1
    if k > 1:  # box pre-shrink against aliasing when the face is much larger than the output
        src = src.reduce(k)
        a, b = a / k, b / k
    w, h = src.size
    corners = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float64) @ a.T + b
    pad_l = int(max(0, np.ceil(-corners[:, 0].min()) + 2))
    pad_t = int(max(0, np.ceil(-corners[:, 1].min()) + 2))
    pad_r = int(max(0, np.ceil(corners[:, 0].max() - w) + 2))
    pad_b = int(max(0, np.ceil(corners[:, 1].max() - h) + 2))
    if pad_l or pad_t or pad_r or pad_b:
        arr = np.asarray(src)
        arr = np.pad(arr, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)), mode="symmetric")
        src = Image.fromarray(arr)
        b = b + np.array([pad_l, pad_t])
    data = (a[0, 0], a[0, 1], b[0], a[1, 0], a[1, 1], b[1])
    out = src.transform((size, size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8).copy(), m
