"""Reference method "swap with a real stranger": the whole inner face of one other real person (keyed pick
from a bank of training identities), in that person's geometry, colour-matched (Lab mean/std inside the face)
and blended in the gradient domain (Poisson). It is what a perfect face generator that copies a real
stranger would give; identity left after it is carried by hair, outline, skin tone and background."""

from __future__ import annotations

import numpy as np

from ..methods import AnonResult, Method

# inner-face outline from the 68 points: jaw 0-16, brows 17-26 (raised a little towards the hairline)
_BROWS = np.arange(17, 27)


def inner_face_mask(lm68: np.ndarray, size: int, brow_raise: float = 0.06, erode: int = 1) -> np.ndarray:
    """Boolean mask of the convex hull of the jaw line and the (slightly raised) brows, in crop pixels."""
    from scipy.ndimage import binary_erosion
    from scipy.spatial import ConvexHull
    from skimage.draw import polygon

    pts = np.asarray(lm68, np.float64).copy()
    pts[_BROWS, 1] -= brow_raise * size
    pts = pts[:27]
    hull = pts[ConvexHull(pts).vertices]
    rr, cc = polygon(hull[:, 1], hull[:, 0], (size, size))
    m = np.zeros((size, size), bool)
    m[rr, cc] = True
    m[:2], m[-2:], m[:, :2], m[:, -2:] = False, False, False, False  # keep a boundary for the Poisson solve
    return binary_erosion(m, iterations=erode) if erode else m


def match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``src`` (uint8) with its Lab mean/std inside ``mask`` moved to ``ref``'s (uint8 out)."""
    import warnings

    from skimage.color import lab2rgb, rgb2lab

    a, b = rgb2lab(src), rgb2lab(ref)
    for c in range(3):
        ms, ss = a[..., c][mask].mean(), a[..., c][mask].std() + 1e-6
        mr, sr = b[..., c][mask].mean(), b[..., c][mask].std() + 1e-6
        a[..., c] = (a[..., c] - ms) * (sr / ss) + mr
    with warnings.catch_warnings():  # out-of-gamut Lab values are clipped, as intended
        warnings.simplefilter("ignore", UserWarning)
        rgb = lab2rgb(a)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def poisson_blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Gradient-domain paste: inside ``mask`` the result has ``source``'s Laplacian and ``target``'s values on
    the mask border (sparse direct solve, one factorisation for the three channels)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import splu

    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    idx = -np.ones((h, w), np.int64)
    idx[ys, xs] = np.arange(len(ys))
    n = len(ys)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    tgt, src = target.astype(np.float64), source.astype(np.float64)
    b = 4 * src[ys, xs]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        b -= src[ny, nx]
        inside = idx[ny, nx] >= 0
        rows.append(np.flatnonzero(inside))
        cols.append(idx[ny[inside], nx[inside]])
        vals.append(-np.ones(int(inside.sum())))
        b[~inside] += tgt[ny[~inside], nx[~inside]]
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    sol = splu(a).solve(b)
    out = tgt.copy()
    out[ys, xs] = sol
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


class StrangerSwap(Method):
    """Keyed reference method: paste one real stranger's inner face (see module doc). ``bank`` holds aligned
    112-px ArcFace-layout crops of people who are never evaluated, ``bank_lm68`` their 68 landmarks."""

    name = "stranger"
    keyed = True

    def __init__(self, bank: np.ndarray, bank_lm68: np.ndarray):
        if len(bank) == 0:
            raise ValueError("the stranger bank is empty")
        self.bank, self.bank_lm68 = bank, np.asarray(bank_lm68, np.float64)

    def crop_size(self, face_px: float) -> int:
        return int(np.clip(round(face_px * 1.6 / 16) * 16, 112, 224))

    def pick(self, key: bytes) -> int:
        """Bank index chosen by a face key (uniform over the bank)."""
        from ...core.keys import subkey

        return int.from_bytes(subkey(key, "eval/stranger")[:8], "big") % len(self.bank)

    def anonymize(self, crops: np.ndarray, keys: list[bytes] | None = None) -> AnonResult:
        from PIL import Image

        if keys is None or len(keys) != len(crops):
            raise ValueError("the stranger swap needs one key per face")
        out = []
        for crop, key in zip(crops, keys, strict=True):
            j = self.pick(key)
            s = crop.shape[0]
            donor = self.bank[j] if s == 112 else np.asarray(
                Image.fromarray(self.bank[j]).resize((s, s), Image.Resampling.BICUBIC))
            mask = inner_face_mask(self.bank_lm68[j] * (s / 112.0), s)
            out.append(poisson_blend(crop, match_colour(donor, crop, mask), mask))
        return AnonResult(np.stack(out))
