"""eval-detection: the match rule, the per-megapixel interval, scene geometry (ground truth where the face
is), and a tiny end-to-end run (two fast detectors, blur, a handful of faces)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceprivacy.deid.evaluation.detection import DetectionConfig, match, ratio_ci


def test_match_rule_one_detection_per_face():
    gt = np.array([[0, 0, 100, 100], [200, 0, 260, 60]], float)
    det = np.array([[5, 5, 95, 95], [10, 10, 90, 90], [205, 5, 255, 55], [400, 400, 450, 450],
                    [0, 0, 10, 10]], float)
    found, fp = match(det, np.array([0.9, 0.8, 0.7, 0.6, 0.95]), gt)
    # the duplicate, the far box and the tiny box (size ratio 0.1) are false positives
    assert found.tolist() == [True, True] and fp == 3
    found, fp = match(np.zeros((0, 4)), np.zeros(0), gt)
    assert found.tolist() == [False, False] and fp == 0
    # a box three times the face is not that face
    found, fp = match(np.array([[-100, -100, 200, 200.0]]), np.array([0.9]), gt[:1])
    assert not found[0] and fp == 1


def test_ratio_ci():
    r = ratio_ci(np.array([1, 0, 3.0]), np.array([1, 1, 2.0]))
    assert r["value"] == pytest.approx(1.0) and r["n"] == 3 and r["ci95"][0] <= 1.0 <= r["ci95"][1]


def test_placed_face_ground_truth_follows_the_face(celeba_root):
    """A CelebA crop placed rotated and mirrored: cropping the scene at the placed five points gives back a
    face like the source (the ground truth is where the face went)."""
    from faceprivacy.core.align import ARCFACE_TEMPLATE, arcface_crop
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.core.imageio import load_image
    from faceprivacy.deid.evaluation.scenes import Source, build_scenes, gt_box

    ds = celeba_subset(celeba_root)
    src = Source(load_image(ds.paths[0]), ARCFACE_TEMPLATE.astype(float).copy(), "a", "celeba", "x")
    scenes = build_scenes([src], face_px=(90, 90), max_roll=25, occluded=0.0, n_empty=1, seed=3,
                          sizes=((640, 480),), weights=(1.0,))
    assert len(scenes) == 2 and not scenes[1].faces
    f = scenes[0].faces[0]
    assert f.size == pytest.approx(90, rel=0.05) and abs(f.roll) <= 25
    box, side = gt_box(f.five)
    np.testing.assert_allclose(box, f.box)
    back, _ = arcface_crop(scenes[0].image, f.five, 112)
    ref = src.image[:, ::-1] if f.flipped else src.image
    inner = (slice(30, 100), slice(25, 87))
    err = np.abs(back[inner].astype(float) - ref[inner].astype(float)).mean()
    assert err < 25, err


def test_eval_detection_tiny_end_to_end(datakit, tmp_path):
    from faceprivacy.deid.evaluation.detection import evaluate_detection

    cfg = DetectionConfig.quick(n_celeba=3, n_utk=3, detectors=("retinaface", "rfb320"), pipeline=("retinaface",),
                                n_thr=40)
    res = evaluate_detection(datakit, tmp_path / "o", cfg)
    assert (tmp_path / "o" / "eval_detection.html").is_file()
    saved = json.loads((tmp_path / "o" / "eval_detection.json").read_text())
    assert saved["scenes"]["faces"] == 6 and set(saved["detectors"]) == {"retinaface", "rfb320"}
    for r in res["detectors"].values():
        assert r["recall"]["n"] == 6 and 0 <= r["recall"]["value"] <= 1
        assert len(r["recall_by_size"]) == 7 and r["s_per_mp"] > 0
        assert any(sw["min_score"] == r["default_min_score"] for sw in r["score_sweep"])
    p = res["pipeline"]["detectors"]["retinaface"]
    assert p["miss_rate"]["n"] == 6 and 0 < res["pipeline"]["threshold"] < 1
    assert len(saved["faces"]["cos_after_retinaface"]) == 6
    # the weak tier (anonymize's default floor) is measured per detector and used by the pipeline
    from faceprivacy.core.detect import WEAK_SCORES

    for name, r in res["detectors"].items():
        (w,) = r["weak_tier"]
        assert w["floor"] == WEAK_SCORES[name] and w["recall"]["value"] >= r["recall"]["value"]
        assert len(saved["faces"][f"found_weak_{name}"]) == 6
    assert p["weak_floor"] == WEAK_SCORES["retinaface"] and p["safety_net"] is True
    assert set(p["obscured"]) == {"weak", "unalignable", "escalated", "occluded"} and p["safety_s"] >= 0


def test_eval_detection_refuses_bad_config(tmp_path):
    from faceprivacy.core.errors import InputError
    from faceprivacy.deid.evaluation.detection import evaluate_detection

    for kw in ({"n_celeba": 0, "n_utk": 0}, {"far": 0.0}, {"face_px": (50.0, 10.0)}, {"detectors": ("mtcnn",)},
               {"floors": (1.5,)}, {"occluded": 1.5}):
        with pytest.raises(InputError):
            evaluate_detection(tmp_path, tmp_path / "o", DetectionConfig.quick(**kw))
    with pytest.raises(InputError, match="not found"):
        evaluate_detection(tmp_path / "nope", tmp_path / "o", DetectionConfig.quick())
