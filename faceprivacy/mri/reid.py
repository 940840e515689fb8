"""Re-identification risk of head renders: face crops from renders, face-recognizer embeddings and
rank-1 matching of probes (defaced / refaced / attacked renders) against a gallery of undefaced renders.

Crops are aligned with the template's 3-D landmarks moved through the subject's registration and
projected into each render (an attacker knows where the face is even when a detector fails); the
detector's hit rate is reported separately. Recognizers come from ``faceprivacy.core.embedders``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.align import arcface_crop, dlib_chip


@dataclass
class RenderFace:
    """One render with its projected landmarks (ArcFace 5 and dlib 5, pixel coordinates)."""

    image: np.ndarray
    arc5: np.ndarray
    dlib5: np.ndarray
    label: str
    state: str
    yaw: float


def crops_for(embedder, faces: list[RenderFace]) -> np.ndarray:
    """Aligned crops in the embedder's layout."""
    if getattr(embedder, "alignment", "arcface112") == "dlib150":
        return np.stack([dlib_chip(f.image, f.dlib5) for f in faces])
    crops = np.stack([arcface_crop(f.image, f.arc5)[0] for f in faces])
    if tuple(getattr(embedder, "input_size", (112, 112))) != (112, 112):
        from ..core.embedders import embed_arcface_crops

        return embed_arcface_crops(embedder, crops)
    return crops


def embed_faces(embedder, faces: list[RenderFace]) -> np.ndarray:
    """Unit-norm embeddings of the render faces."""
    if not faces:
        return np.zeros((0, 128), np.float32)
    return np.asarray(embedder.embed(crops_for(embedder, faces)), np.float32)


def detect_rate(faces: list[RenderFace]) -> float:
    """Fraction of renders in which dlib's HOG detector (upsample 1) finds a face."""
    import dlib

    det = dlib.get_frontal_face_detector()
    hits = [len(det(np.ascontiguousarray(f.image), 1)) > 0 for f in faces]
    return float(np.mean(hits)) if hits else float("nan")


def rank1(probe: np.ndarray, probe_labels: list[str], gallery: np.ndarray, gallery_labels: list[str]) -> float:
    """Rank-1 identification rate: each probe's most similar gallery entry (cosine) has its label."""
    if len(probe) == 0:
        return float("nan")
    sim = probe @ gallery.T
    best = np.asarray(gallery_labels)[np.argmax(sim, axis=1)]
    return float(np.mean(best == np.asarray(probe_labels)))

