"""Full-image -> per-face crops -> embeddings, the path every system uses on raw photos."""

from __future__ import annotations

import numpy as np

from .detect import Face, FaceDetector
from .embedder import Embedder
from .embedders import crops_for, embed_arcface_crops
from .errors import NoFaceError
from .progress import progress


def embed_faces(img: np.ndarray, embedder: Embedder, detector: FaceDetector | None = None,
                largest_only: bool = False) -> tuple[list[Face], np.ndarray]:
    """Detect faces in an RGB image and embed each; returns (faces, (n_faces, D) features)."""
    detector = detector or FaceDetector()
    faces = detector.detect(img)
    if largest_only:
        faces = faces[:1]
    if not faces:
        return [], np.zeros((0, embedder.dim), np.float32)
    crops = np.stack([crops_for(embedder, img, f) for f in faces])
    return faces, embedder.embed(crops)


def embed_largest_face(img: np.ndarray, embedder: Embedder, detector: FaceDetector | None = None) -> np.ndarray:
    """Embedding (D,) of the largest face; NoFaceError if none."""
    faces, feats = embed_faces(img, embedder, detector, largest_only=True)
    if not faces:
        raise NoFaceError("no face found in the image")
    return feats[0]


def embed_dataset(images: np.ndarray | list, embedder: Embedder, aligned_arcface: bool,
                  detector: FaceDetector | None = None, batch: int = 256,
                  desc: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
    """Embed a dataset. Aligned ArcFace crops are embedded directly; raw photos are detected/aligned.

    Returns (features (M, D), indices of the images that produced a face).
    """
    if aligned_arcface:
        images = np.asarray(images)
        feats = [embed_arcface_crops(embedder, images[i:i + batch])
                 for i in progress(range(0, len(images), batch), desc=desc)]
        return (np.concatenate(feats) if feats else np.zeros((0, embedder.dim), np.float32),
                np.arange(len(images)))
    detector = detector or FaceDetector()
    feats, keep = [], []
    for i, img in enumerate(progress(images, desc=desc)):
        faces = detector.detect(img)
        if faces:
            feats.append(embedder.embed(crops_for(embedder, img, faces[0])[None])[0])
            keep.append(i)
    return (np.array(feats, np.float32).reshape(-1, embedder.dim), np.array(keep, int))
