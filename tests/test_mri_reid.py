"""Render re-identification path: landmark-aligned crops through core's alignment and embedders."""

from __future__ import annotations

import numpy as np
import skimage.data

from faceprivacy.core.detect import FaceDetector
from faceprivacy.core.embedders import get_embedder
from faceprivacy.mri.reid import RenderFace, crops_for, embed_faces, rank1


def test_render_faces_embed_and_match() -> None:
    img = skimage.data.astronaut()
    f = FaceDetector(upsample=0).detect_one(img)
    shifted = np.roll(img, (7, -5), axis=(0, 1))
    faces = [RenderFace(img, f.arcface5, f.shape5, "a", "original", 0.0),
             RenderFace(shifted, f.arcface5 + [-5, 7], f.shape5 + [-5, 7], "a", "probe", 0.0),
             RenderFace(np.full_like(img, 128), f.arcface5, f.shape5, "b", "original", 0.0)]
    emb = get_embedder("dlib")
    assert crops_for(emb, faces).shape == (3, 150, 150, 3)
    feats = embed_faces(emb, faces)
    assert feats.shape == (3, 128)
    # the shifted render with its shifted landmarks gives the same crop, hence the same identity
    assert float(feats[0] @ feats[1]) > 0.99
    assert rank1(feats[1:2], ["a"], feats[[0, 2]], ["a", "b"]) == 1.0
