"""Aligned-crop helpers shared by the evaluation and the RiDDLE trainers: loading CelebA crops, the
paste-back blend a full frame shows, and the cosine threshold at a false-accept rate."""

from __future__ import annotations

import numpy as np


def load_crops(paths, size: int = 112) -> np.ndarray:
    """Load aligned CelebA crops as uint8 (N, size, size, 3)."""
    from PIL import Image

    from ..core.imageio import load_image

    out = []
    for p in paths:
        im = load_image(p)
        if im.shape[:2] != (size, size):
            im = np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
        out.append(im)
    return np.stack(out)


def blend_np(orig: np.ndarray, anon: np.ndarray) -> np.ndarray:
    """Blend anonymized crops into their source crops through the paste-back soft mask (uint8)."""
    from ..core.align import soft_face_mask

    m = soft_face_mask(orig.shape[1])[None, ..., None]
    return np.clip(orig * (1 - m) + anon.astype(np.float64) * m + 0.5, 0, 255).astype(np.uint8)


def far_threshold(feats: np.ndarray, labels: np.ndarray, far: float = 1e-3) -> float:
    """Cosine threshold at the given false-accept rate over all impostor pairs of ``feats``."""
    s = feats @ feats.T
    iu = np.triu_indices(len(feats), 1)
    imp = s[iu][labels[iu[0]] != labels[iu[1]]]
    return float(np.quantile(imp, 1 - far))
