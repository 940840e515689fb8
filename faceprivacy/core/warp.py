"""Image warps and compositing on numpy arrays: piecewise-affine warps between landmark sets, Lab colour
transfer, and gradient-domain (Poisson) blending.

* :func:`piecewise_affine`: each output pixel inside the Delaunay triangulation of ``dst`` is mapped by its
  triangle's affine map to ``src`` coordinates and sampled bilinearly (scipy); pixels outside keep ``fill``.
  Vectorised: one ``find_simplex`` call per image, no per-triangle loop.
* :func:`poisson_blend`: solves the Poisson equation for the pasted region with the pasted image's Laplacian
  as guidance and the target as Dirichlet boundary (Perez et al. 2003), one sparse LU for all channels.
* :func:`match_color`: per-channel mean/std transfer in YCbCr inside a mask (after Reinhard et al. 2001).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu
from scipy.spatial import Delaunay


@dataclass
class PiecewiseMap:
    """Where each output pixel falls in the triangulation of the destination points: triangle vertices and
    barycentric weights (shared by every image warped onto the same destination)."""

    shape: tuple[int, int]
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 of the computed window
    verts: np.ndarray  # (P, 3) point indices
    bary: np.ndarray  # (P, 3)
    inside: np.ndarray  # (P,) bool
    pts: np.ndarray  # (P, 2) x, y output coordinates

    def mask(self) -> np.ndarray:
        """Full-size bool mask of the output pixels inside the triangulation."""
        h, w = self.shape
        y0, y1, x0, x1 = self.box
        m = np.zeros((h, w), bool)
        m[y0:y1, x0:x1] = self.inside.reshape(y1 - y0, x1 - x0)
        return m


def piecewise_map(dst: np.ndarray, out_shape: tuple[int, int]) -> PiecewiseMap:
    """Triangulate ``dst`` (N, 2; x, y) and locate every output pixel of its bounding box."""
    dst = np.asarray(dst, np.float64)
    h, w = out_shape
    x0, y0 = (max(0, int(np.floor(v))) for v in dst.min(0))
    x1, y1 = min(w, int(np.ceil(dst[:, 0].max())) + 1), min(h, int(np.ceil(dst[:, 1].max())) + 1)
    tri = Delaunay(dst)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    simplex = tri.find_simplex(pts)
    inside = simplex >= 0
    s = np.where(inside, simplex, 0)
    t = tri.transform[s]
    b = np.einsum("pij,pj->pi", t[:, :2], pts - t[:, 2])
    bary = np.concatenate([b, 1 - b.sum(1, keepdims=True)], 1)
    return PiecewiseMap((h, w), (y0, y1, x0, x1), tri.simplices[s], bary, inside, pts)


def piecewise_affine(img: np.ndarray, src: np.ndarray, dst: np.ndarray | PiecewiseMap, out_shape: tuple[int, int],
                     fill: float | None = None, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``img`` so that points ``src`` (N, 2; x, y in ``img``) land on ``dst`` (N, 2; output coords, or
    a precomputed :func:`piecewise_map` of them).

    Returns (warped float32 (H, W, C), valid mask bool (H, W): inside the triangulation and sampled at
    least one pixel inside ``img``). Outside the triangulation of ``dst`` the output is ``fill`` (default:
    the identity mapping, i.e. ``img`` sampled where it is). ``order``: the spline order of the sampling
    (1 bilinear; 3 cubic, sharper, may overshoot the input's range slightly).
    """
    pm = dst if isinstance(dst, PiecewiseMap) else piecewise_map(dst, out_shape)
    src = np.asarray(src, np.float64)
    h, w = out_shape
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    out = np.asarray(img, np.float32).copy() if img.shape[:2] == (h, w) else np.zeros((h, w, img.shape[2]),
                                                                                    np.float32)
    y0, y1, x0, x1 = pm.box
    mapped = np.einsum("pk,pkj->pj", pm.bary, src[pm.verts])
    mapped = np.where(pm.inside[:, None], mapped, pm.pts)
    coords = [mapped[:, 1], mapped[:, 0]]
    imgf = np.asarray(img, np.float32)
    win = np.stack([ndimage.map_coordinates(imgf[..., c], coords, order=order, mode="nearest")
                    for c in range(img.shape[2])], -1)
    out[y0:y1, x0:x1] = win.reshape(y1 - y0, x1 - x0, -1)
    ih, iw = img.shape[:2]
    ok = pm.inside & (mapped[:, 0] >= 1) & (mapped[:, 0] <= iw - 2) & (mapped[:, 1] >= 1) & (mapped[:, 1] <= ih - 2)
    inside = np.zeros((h, w), bool)
    inside[y0:y1, x0:x1] = ok.reshape(y1 - y0, x1 - x0)
    if fill is not None:
        out[~inside] = fill
    return out, inside


_YCC = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC_INV = np.linalg.inv(_YCC)


def match_color(img: np.ndarray, ref: np.ndarray, mask: np.ndarray, ref_mask: np.ndarray | None = None,
                shift: np.ndarray | None = None, luma_ratio: bool = False) -> np.ndarray:
    """Give ``img`` (float RGB 0..255) the per-channel mean/std of ``ref`` inside the masks, in the YCbCr
    opponent space (Reinhard-style transfer), plus an optional (Y, Cb, Cr) ``shift``. Returns float RGB.

    With ``luma_ratio`` the luma is *scaled* by the ratio of the means instead (reflectance times light):
    a light donor on a dark source keeps its shadows proportionate instead of turning eye sockets black
    (darkening only; a darker donor on a lighter source is shifted as usual, so whites never glow)."""
    ref_mask = mask if ref_mask is None else ref_mask
    a = np.asarray(img, np.float64) @ _YCC.T
    ma = a[mask]
    mr = np.asarray(ref, np.float64)[ref_mask] @ _YCC.T
    mu_a, sd_a = ma.mean(0), ma.std(0) + 1e-6
    mu_r, sd_r = mr.mean(0), mr.std(0) + 1e-6
    if shift is not None:
        mu_r = mu_r + shift
    # keep the donors' own contrast within a factor of 1.25 (shadows stay shadows)
    gain = np.clip(sd_r / sd_a, 0.8, 1.25)
    out = (a - mu_a) * gain + mu_r
    ratio = mu_r[0] / max(mu_a[0], 1.0)
    if luma_ratio and ratio < 1.0:  # darkening only: brightening by a ratio would make whites glow
        out[..., 0] = a[..., 0] * ratio
        # chroma deviations shrink with the light as well (a dark face is less saturated in absolute terms)
        out[..., 1:] = (a[..., 1:] - mu_a[1:]) * gain[1:] * min(1.0, ratio) + mu_r[1:]
    return out @ _YCC_INV.T


def poisson_blend(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, coarse: int = 1) -> np.ndarray:
    """Gradient-domain paste of ``src`` into ``dst`` (both float (H, W, C), same size) inside ``mask`` (bool).

    Inside the mask the result has ``src``'s Laplacian and matches ``dst`` on the mask's border, so no
    seam shows. Pixels on the image border are never unknowns. With ``coarse`` > 1 the correction
    membrane (harmonic, so smooth) is solved on a grid ``coarse`` times coarser and the last few pixels
    inside the mask fade to ``dst`` (several times faster, visually the same).
    """
    if coarse > 1:
        return _poisson_coarse(src, dst, mask, coarse)
    mask = np.asarray(mask, bool).copy()
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = False
    out = np.asarray(dst, np.float64).copy()
    ys, xs = np.nonzero(mask)
    n = len(ys)
    if n == 0:
        return out
    idx = -np.ones(mask.shape, np.int64)
    idx[ys, xs] = np.arange(n)
    src = np.asarray(src, np.float64)
    lap = (4 * src - np.roll(src, 1, 0) - np.roll(src, -1, 0) - np.roll(src, 1, 1) - np.roll(src, -1, 1))
    rhs = lap[ys, xs].copy()
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ny, nx = ys + dy, xs + dx
        j = idx[ny, nx]
        unk = j >= 0
        rows.append(np.nonzero(unk)[0])
        cols.append(j[unk])
        vals.append(np.full(int(unk.sum()), -1.0))
        known = ~unk
        rhs[known] += out[ny[known], nx[known]]
    a = sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = splu(a).solve(rhs)
    out[ys, xs] = sol
    return out


def _poisson_coarse(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    hc, wc = -(-h // k), -(-w // k)
    pad = ((0, hc * k - h), (0, wc * k - w))
    diff = dst - src
    # outside the mask, the difference of the nearest mask pixel (src is meaningless there)
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    diff = diff[iy, ix]
    # coarse boundary values: the difference averaged over each cell; unknowns: cells wholly inside
    dpad = np.pad(diff, pad + ((0, 0),), mode="edge")
    dc = dpad.reshape(hc, k, wc, k, -1).mean((1, 3))
    mpad = np.pad(mask, pad, mode="constant")
    mc = mpad.reshape(hc, k, wc, k).all((1, 3))
    mem = poisson_blend(np.zeros_like(dc), dc, mc)  # harmonic membrane with the differences on the border
    up = _upsample(mem, k)[:h, :w]
    # fade to the destination over the mask's last pixels, where the coarse grid cannot follow the border
    dist = ndimage.distance_transform_edt(mask)
    alpha = np.clip(dist / (1.5 * k), 0, 1)[..., None]
    out = dst.copy()
    blended = src + up
    return np.where(mask[..., None], alpha * blended + (1 - alpha) * dst, out)


def _upsample(a: np.ndarray, k: int) -> np.ndarray:
    """Bilinear upsampling of (h, w, C) by an integer factor (cell centres aligned)."""
    from PIL import Image

    h, w = a.shape[:2]
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c], np.float32), mode="F")
                                .resize((w * k, h * k), Image.Resampling.BILINEAR)) for c in range(a.shape[2])], -1)
