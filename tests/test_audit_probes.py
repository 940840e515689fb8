"""Attribute ground truth and probes on synthetic data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from faceprivacy.audit.attributes import (
    _POSE_3D,
    _POSE_IDX,
    HIST_BINS,
    Attributes,
    background_colour,
    colour_histogram,
    emd_hist,
    head_pose,
    mean_illumination,
)
from faceprivacy.audit.probes import run_probes


def _project(yaw: float, pitch: float, roll: float) -> np.ndarray:
    rot = Rotation.from_euler("YXZ", [yaw, -pitch, roll], degrees=True).as_matrix()
    p = 0.5 * (_POSE_3D @ rot.T)[:, :2]
    lm = np.zeros((68, 2))
    lm[_POSE_IDX] = np.c_[56 + p[:, 0], 60 - p[:, 1]]
    return lm


@pytest.mark.parametrize("angles", [(0, 0, 0), (20, 0, 0), (-15, 10, 5), (0, -12, -8)])
def test_head_pose_recovers_known_rotation(angles):
    est = head_pose(_project(*angles))
    assert np.allclose(est, angles, atol=1.0), (est, angles)


def test_yaw_sign_flips_with_mirror():
    lm = _project(25, 0, 0)
    assert head_pose(lm)[0] > 20
    assert head_pose(_project(-25, 0, 0))[0] < -20


def test_histogram_emd_illumination_background():
    img = np.full((112, 112, 3), 100, np.uint8)
    h = colour_histogram(img)
    assert h.shape == (3, HIST_BINS) and np.allclose(h.sum(1), 1)
    assert emd_hist(h, h) == 0
    brighter = colour_histogram(np.full((112, 112, 3), 116, np.uint8))  # exactly one bin up
    assert emd_hist(h, brighter) == pytest.approx(16.0)
    assert mean_illumination(img) == pytest.approx(100, abs=1e-6)
    img[:6] = 0
    assert background_colour(img)[0] < 100


def _synthetic(n: int, rng: np.random.Generator, w: dict[str, np.ndarray]) -> tuple[np.ndarray, Attributes]:
    """Embeddings whose first components linearly encode landmarks/yaw/illumination; gender from a sign."""
    x = rng.normal(size=(n, 32)).astype(np.float32)
    lm = (x[:, :4] @ w["lm"]).reshape(n, 68, 2) + 56
    pose = np.c_[x[:, 4] * 10, rng.normal(size=n) * 5, np.zeros(n)]  # pitch independent of x
    hist = np.abs(x[:, 5:8, None] + rng.normal(size=(n, 3, HIST_BINS)) * 0.01) + 0.1
    hist = hist / hist.sum(-1, keepdims=True)
    illum = 100 + 20 * x[:, 8]
    bg = rng.uniform(0, 255, (n, 3))  # independent of x
    age = 40 + 10 * x[:, 9]
    gender = (x[:, 10] > 0).astype(np.int64)
    return x, Attributes(lm.astype(np.float32), pose.astype(np.float32), hist.astype(np.float32),
                         illum.astype(np.float32), bg.astype(np.float32), age.astype(np.float32), gender)


def test_probes_find_encoded_attributes_and_not_independent_ones():
    rng = np.random.default_rng(0)
    w = {"lm": rng.normal(size=(4, 136))}
    tr, va, te = (_synthetic(n, rng, w) for n in (600, 150, 300))
    rows = {r["attribute"]: r for r in run_probes(tr[0], tr[1], va[0], va[1], te[0], te[1], mlp_epochs=30)}
    for name in ("landmarks", "yaw", "illumination", "age", "gender"):
        assert rows[name]["lift"] > 0.7, rows[name]
        assert rows[name]["probe"] < rows[name]["trivial"]
    for name in ("pitch", "background"):  # independent of the embedding: no lift beyond noise
        assert rows[name]["lift"] < 0.1, rows[name]
    assert rows["roll"]["trivial"] == pytest.approx(0.0, abs=1e-6)


def test_expression_labels_from_landmarks():
    from faceprivacy.audit.attributes import MOUTH_OPEN_GAP, SMILE_WIDTH, mouth_gap, mouth_width

    lm = np.zeros((2, 68, 2))
    lm[:, 36:42] = [30.0, 50.0]
    lm[:, 42:48] = [70.0, 50.0]  # inter-ocular distance 40
    lm[:, 48], lm[:, 54] = [40.0, 80.0], [72.0, 80.0]  # width 32 -> 0.8 (neutral)
    lm[1, 48], lm[1, 54] = [34.0, 78.0], [78.0, 78.0]  # width 44 -> 1.1 (smile)
    for a, b in ((61, 67), (62, 66), (63, 65)):
        lm[:, a] = lm[:, b] = [56.0, 82.0]
        lm[1, b] = [56.0, 90.0]  # 8 px inner-lip gap -> 0.2 (open)
    assert mouth_gap(lm)[0] == 0 and mouth_gap(lm)[1] > MOUTH_OPEN_GAP
    assert mouth_width(lm)[0] < SMILE_WIDTH < mouth_width(lm)[1]
