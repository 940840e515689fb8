"""Differentiable face-chip extraction in dlib's layout, and a fixed warp from ArcFace 112 crops to it.

* :func:`face_chip_transform` reimplements dlib's ``get_face_chip_details`` for 5-point shapes (dlib's
  5-point chip template, padding, a least-squares similarity from chip to image, turned into dlib's
  ``chip_details`` rectangle + angle) and ``extract_image_chip``'s chip-pixel -> image-pixel affine.
* :func:`warp_affine_dlib` samples like dlib's ``transform_image`` + ``interpolate_bilinear``: bilinear,
  and a sample whose 2x2 neighbourhood leaves the image is 0 (black). Differentiable w.r.t. the image.
* :func:`extract_face_chips` = both, on batches (N,3,H,W) float 0..255; optional uint8 truncation with a
  straight-through gradient (dlib truncates the interpolated value to uint8).
* :func:`arcface112_to_dlib150`: a *fixed* similarity warp from 112x112 ArcFace-template crops to dlib's
  150x150 chip (padding 0.25); the constants were fitted on real faces (see ``ARCFACE112_FROM_DLIB150``).

Not reproduced: when the face box is more than ~2x the chip size (faces wider than ~300 px for a 150 chip)
dlib first downsamples with ``pyramid_down<2>``; here we sample the full-resolution image directly, so for
such large faces the result is sharper/aliased compared with dlib (``chip_needs_pyramid`` tells you when).
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: dlib's 5-point chip template (shape_predictor_5 point order: right-eye outer, right-eye inner,
#: left-eye outer, left-eye inner, nose base), in units of the unpadded chip side.
DLIB_CHIP_TEMPLATE_5PT = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
], dtype=np.float64)

#: the standard ArcFace 112x112 5-point template (left eye, right eye, nose tip, left/right mouth corner)
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)

#: Affine (2x3) mapping a dlib 150x150 chip pixel (x, y, 1) to ArcFace-112 crop pixel coordinates.
#: Fitted by ``benchmarks/derive_arcface_to_dlib.py`` (``derive_arcface_to_dlib150``): on 400 UTKFace
#: 200x200 crops with a dlib HOG detection, dlib's 5-point shape gives the dlib chip transform and the
#: 68-point shape gives the ArcFace 5 points (eye-contour centres, nose tip 30, mouth corners 48/54);
#: the per-face transforms chip150 -> image -> arcface112 were pooled on a 16x16 grid of chip points and a
#: single least-squares similarity was fitted (scale 0.6828, rotation -0.19 deg). Per-face spread around it:
#: scale sd 0.029, angle sd 2.1 deg, mean grid residual 2.4 px (in 112 px). Descriptor L2 (dlib ResNet) between
#: the proper dlib chip and the warped ArcFace crop on 100 faces: mean 0.163, max 0.29, 100% < 0.6
#: (different faces: mean 0.81). Command: ``PYTHONPATH=. python benchmarks/derive_arcface_to_dlib.py``.
ARCFACE112_FROM_DLIB150 = np.array([
    [0.682751, 0.002235, 5.617897],
    [-0.002235, 0.682751, 21.978483],
], dtype=np.float64)


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


def face_chip_transform(shape5: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The 2x3 affine mapping chip pixel (x, y, 1) to image pixel coordinates, exactly as
    ``dlib.get_face_chip(img, shape5, size, padding)`` samples. ``shape5``: (5,2) dlib 5-point landmarks
    (x, y) in image pixels, or a batch (N,5,2) -> (N,2,3)."""
    pts = np.asarray(shape5, np.float64)
    if pts.ndim == 3:
        return np.stack([face_chip_transform(p, size, padding) for p in pts])
    if pts.shape != (5, 2):
        raise ValueError(f"face_chip_transform needs dlib's 5-point shape (5,2), got {pts.shape}")
    if padding < 0 or size <= 0:
        raise ValueError("padding must be >= 0 and size > 0")
    chip_pts = (padding + DLIB_CHIP_TEMPLATE_5PT) / (2 * padding + 1) * size
    tform = umeyama_similarity(chip_pts, pts)  # chip -> image
    p = tform[:, :2] @ np.array([1.0, 0.0])
    angle = math.atan2(p[1], p[0])
    scale = math.hypot(p[0], p[1])
    cx, cy = tform[:, :2] @ np.array([size / 2.0, size / 2.0]) + tform[:, 2]
    # dlib's chip_details rectangle: centered_drect(centre, cols*scale, rows*scale), whose right-left is
    # width-1 (drectangle widths count the end pixel)
    w = h = size * scale - 1.0
    left, top = cx - w / 2, cy - h / 2
    # extract_image_chip maps chip corners (0,0), (cols-1,0), (0,rows-1) to the rotated rect corners
    ca, sa = math.cos(angle), math.sin(angle)
    rot = np.array([[ca, -sa], [sa, ca]])
    centre = np.array([cx, cy])

    def corner(x: float, y: float) -> np.ndarray:
        return rot @ (np.array([x, y]) - centre) + centre

    tl, tr, bl = corner(left, top), corner(left + w, top), corner(left, top + h)
    a = np.stack([(tr - tl) / (size - 1), (bl - tl) / (size - 1)], axis=1)
    return np.concatenate([a, tl[:, None]], axis=1)


def chip_needs_pyramid(shape5: np.ndarray, size: int = 150, padding: float = 0.25) -> bool:
    """True when dlib would downsample with pyramid_down<2> before sampling this chip (face box wider than
    about twice the chip), i.e. when :func:`extract_face_chips` is not pixel-exact to dlib."""
    m = face_chip_transform(shape5, size, padding)
    scale = float(np.hypot(m[0, 0], m[1, 0])) * (size - 1) / size
    side = size * scale
    # dlib's pyramid_down<2>::rect_down halves the rectangle (about); depth 0 when area <= size^2 after it
    return (side / 2.0) ** 2 > size * size


def _as_batch_affine(m: np.ndarray | torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    mt = torch.as_tensor(np.asarray(m, np.float64) if not isinstance(m, torch.Tensor) else m,
                         dtype=torch.float64, device=device)
    if mt.dim() == 2:
        mt = mt.unsqueeze(0).expand(n, 2, 3)
    if mt.shape != (n, 2, 3):
        raise ValueError(f"affine must be (2,3) or ({n},2,3), got {tuple(mt.shape)}")
    return mt


def warp_affine_dlib(img: torch.Tensor, m: np.ndarray | torch.Tensor, out_size: tuple[int, int],
                     border: str = "zeros") -> torch.Tensor:
    """Sample ``img`` (N,C,H,W) float at ``m @ (x, y, 1)`` for every output pixel (x, y) of an
    (out_h, out_w) image, with dlib's bilinear rule: a sample whose 2x2 neighbourhood is not fully
    inside the image is 0 (``border="zeros"``), or clamped to the edge (``border="replicate"``).
    ``m``: (2,3) or (N,2,3) output-pixel -> input-pixel affine. Differentiable w.r.t. ``img``."""
    if img.dim() != 4:
        raise ValueError(f"expected (N,C,H,W), got {tuple(img.shape)}")
    n, c, h, w = img.shape
    oh, ow = out_size
    mt = _as_batch_affine(m, n, img.device)
    ys, xs = torch.meshgrid(torch.arange(oh, dtype=torch.float64, device=img.device),
                            torch.arange(ow, dtype=torch.float64, device=img.device), indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(oh * ow, dtype=torch.float64,
                                                                    device=img.device)], 0)  # (3, P)
    pts = mt @ grid  # (N, 2, P) float64: exact coordinates like dlib's double arithmetic
    px, py = pts[:, 0], pts[:, 1]
    if border == "replicate":
        px = px.clamp(0, w - 1 - 1e-9)
        py = py.clamp(0, h - 1 - 1e-9)
    elif border != "zeros":
        raise ValueError(f"border must be 'zeros' or 'replicate', got {border!r}")
    x0 = torch.floor(px)
    y0 = torch.floor(py)
    fx = (px - x0).to(img.dtype).unsqueeze(1)
    fy = (py - y0).to(img.dtype).unsqueeze(1)
    x0l, y0l = x0.long(), y0.long()
    if border == "replicate":
        x1l = (x0l + 1).clamp(max=w - 1)
        y1l = (y0l + 1).clamp(max=h - 1)
        valid = None
    else:
        x1l, y1l = x0l + 1, y0l + 1
        valid = (x0l >= 0) & (y0l >= 0) & (x1l < w) & (y1l < h)
    xa, xb = x0l.clamp(0, w - 1), x1l.clamp(0, w - 1)
    ya, yb = y0l.clamp(0, h - 1), y1l.clamp(0, h - 1)
    flat = img.reshape(n, c, h * w)

    def gather(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        idx = (yy * w + xx).unsqueeze(1).expand(n, c, -1)
        return torch.gather(flat, 2, idx)

    tl, tr = gather(ya, xa), gather(ya, xb)
    bl, br = gather(yb, xa), gather(yb, xb)
    out = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    if valid is not None:
        out = out * valid.unsqueeze(1).to(out.dtype)
    return out.reshape(n, c, oh, ow)


def quantize_uint8_ste(x: torch.Tensor) -> torch.Tensor:
    """dlib's conversion of an interpolated value to uint8 (clamp to 0..255, truncate) in the forward pass,
    identity gradient in the backward pass (straight-through estimator)."""
    q = torch.floor(x.clamp(0, 255))
    return x + (q - x).detach()


def extract_face_chips(img: torch.Tensor, shape5: np.ndarray, size: int = 150, padding: float = 0.25,
                       quantize: bool = False) -> torch.Tensor:
    """Differentiable ``dlib.get_face_chip``: images (N,3,H,W) float 0..255 and dlib 5-point shapes
    (N,5,2) (or (5,2) for N=1) -> chips (N,3,size,size). ``quantize=True`` reproduces dlib's uint8 output
    (straight-through gradient)."""
    pts = np.asarray(shape5, np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.shape[0] != img.shape[0]:
        raise ValueError(f"{img.shape[0]} images but {pts.shape[0]} shapes")
    m = face_chip_transform(pts, size, padding)
    chips = warp_affine_dlib(img, m, (size, size))
    return quantize_uint8_ste(chips) if quantize else chips


def arcface_crop_transform(arcface5: np.ndarray, size: int = 112) -> np.ndarray:
    """2x3 affine mapping ArcFace crop pixel -> image pixel for 5 ArcFace points (eye centres, nose tip,
    mouth corners) in the image (standard template, scaled for ``size``)."""
    tmpl = ARCFACE_TEMPLATE_112 * (size / 112.0)
    return invert_affine(umeyama_similarity(np.asarray(arcface5, np.float64), tmpl))


def arcface112_to_dlib150(x: torch.Tensor, border: str = "zeros") -> torch.Tensor:
    """Warp 112x112 ArcFace-layout crops (N,3,112,112) float into dlib's 150x150 chip layout
    (N,3,150,150), differentiably, with the fixed fitted transform ``ARCFACE112_FROM_DLIB150``. Chip pixels
    outside the ArcFace crop are 0 (``border="zeros"``) or edge-replicated (``"replicate"``)."""
    if x.dim() != 4 or tuple(x.shape[2:]) != (112, 112):
        raise ValueError(f"arcface112_to_dlib150 expects (N,C,112,112), got {tuple(x.shape)}")
    return warp_affine_dlib(x, ARCFACE112_FROM_DLIB150, (150, 150), border=border)
