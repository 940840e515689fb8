"""Detection, landmarks, alignment and paste-back on a real (public-domain) face: skimage's astronaut."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from faceprivacy.core.align import ARCFACE_TEMPLATE, arcface_crop, dlib_chip, paste_back, umeyama
from faceprivacy.core.detect import FaceDetector


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def face(astronaut):
    return FaceDetector(upsample=0).detect_one(astronaut)


def test_detects_the_face(face) -> None:
    x1, y1, x2, y2 = face.box
    assert 150 < x1 < 210 and 60 < y1 < 110 and 240 < x2 < 290 and 140 < y2 < 200
    assert face.landmarks68.shape == (68, 2) and face.shape5.shape == (5, 2)
    # eyes above nose above mouth, left eye left of right eye
    le, re, nose, lm, rm = face.arcface5
    assert le[0] < re[0] and max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])


def test_umeyama_recovers_similarity() -> None:
    ang, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = ARCFACE_TEMPLATE
    m = umeyama(src, src @ r.T + t)
    np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)


def test_arcface_crop_puts_landmarks_on_template(astronaut, face) -> None:
    crop, m = arcface_crop(astronaut, face.arcface5, 112)
    assert crop.shape == (112, 112, 3)
    mapped = face.arcface5 @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 6.0
    # re-detecting landmarks in the crop lands near the template too (the crop really is aligned)
    det = FaceDetector(upsample=2, min_size=10)
    big = np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(crop).resize((224, 224)))
    f2 = det.detect(big)
    assert f2, "face not re-detected in its own aligned crop"
    assert np.abs(f2[0].arcface5 / 2 - ARCFACE_TEMPLATE).max() < 8.0


def test_dlib_chip_shape(astronaut, face) -> None:
    chip = dlib_chip(astronaut, face.shape5)
    assert chip.shape == (150, 150, 3) and chip.std() > 20


def test_paste_back_only_changes_face_region(astronaut, face) -> None:
    crop, m = arcface_crop(astronaut, face.arcface5, 112)
    edited = 255 - crop
    out = paste_back(astronaut, edited, m)
    assert out.shape == astronaut.shape
    diff = np.abs(out.astype(int) - astronaut.astype(int)).sum(2)
    x1, y1, x2, y2 = face.box.astype(int)
    inside = diff[y1:y2, x1:x2].mean()
    outside = np.r_[diff[:, :100].ravel(), diff[:, 350:].ravel()].mean()
    assert inside > 100 and outside < 1.0
    # the input array is not modified
    assert not np.shares_memory(out, astronaut)


def test_no_face_in_flat_image() -> None:
    from faceprivacy.core.errors import NoFaceError

    with pytest.raises(NoFaceError):
        FaceDetector().detect_one(np.full((200, 200, 3), 90, np.uint8))
