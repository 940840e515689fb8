"""eval-deid end to end on a tiny slice of the held-out people: both protocols run through the real pipeline,
every rate carries n and an interval, the numbers are internally consistent, bad flags exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deid_tiny import TinyGenerator, tiny_encryptor

from faceprivacy.cli import main
from faceprivacy.deid.evaluate import EvalConfig, evaluate_deid
from faceprivacy.deid.methods import Riddle, make_method


@pytest.fixture(scope="module")
def tiny_run(datakit, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    cfg = EvalConfig.quick(methods=("riddle", "blur", "mask", "stranger"), recognizers=("mobilefacenet",),
                           detectors=("hog", "cnn"), attributes=False, max_ids=3, max_distractors=5)
    methods = {"riddle": Riddle(TinyGenerator(), tiny_encryptor()), "blur": make_method("blur"),
               "mask": make_method("mask")}
    res = evaluate_deid(datakit, out, cfg, methods=methods)
    return res, out


def test_report_and_json_are_written(tiny_run):
    res, out = tiny_run
    assert (out / "eval_deid.html").stat().st_size > 5000
    saved = json.loads((out / "eval_deid.json").read_text())
    assert saved["n_identities"] == 3 and saved["n_gallery"] == 3 + 5
    assert saved["chance_rank1"] == pytest.approx(1 / 8)
    assert set(saved["protocols"]) == {"frames", "aligned"}


def test_every_rate_has_n_and_interval(tiny_run):
    res, _ = tiny_run
    for pres in res["protocols"].values():
        for r in pres.values():
            for idm in r["identity"].values():
                for key in ("verif_vs_other_photos", "verif_vs_source", "rank1"):
                    d = idm[key]
                    assert d["n"] > 0 and d["n_ids"] == 3 and len(d["ci95"]) == 2
                    assert d["ci95"][0] <= d["value"] <= d["ci95"][1] or not np.isfinite(d["ci95"][0])


def test_numbers_are_consistent(tiny_run):
    res, _ = tiny_run
    for proto, pres in res["protocols"].items():
        orig = pres["originals"]["identity"]["mobilefacenet"]
        assert orig["rank1"]["value"] > res["chance_rank1"], proto  # real photos of the same people are found
        assert orig["verif_vs_source"]["value"] == 1.0  # a photo is verified as itself
        assert pres["mask"]["identity"]["mobilefacenet"]["verif_vs_source"]["value"] <= 0.5
        for name in ("riddle", "blur", "mask", "stranger"):
            assert pres[name]["recovered_bit_exact"]["value"] == 1.0, (proto, name)
            assert pres[name]["faces_anonymized"]["n"] == res["n_probes"]
            assert "two_sample_accuracy" in pres[name] and "kid" in pres[name]
        # keyed methods get two keys (and riddle a wrong key); baselines do not
        assert "two_keys_verified_same" in pres["riddle"]["identity"]["mobilefacenet"]
        assert "wrong_key_verif_vs_source" in pres["riddle"]["identity"]["mobilefacenet"]
        assert "two_keys_verified_same" in pres["stranger"]["identity"]["mobilefacenet"]
        assert "two_keys_verified_same" not in pres["blur"]["identity"]["mobilefacenet"]
        assert pres["blur"]["detection"]["hog"]["n"] == res["n_probes"]
    # the mask is always replaced where the pipeline found the face; aligned crops are all found
    assert res["protocols"]["aligned"]["mask"]["faces_anonymized"]["value"] == 1.0


def test_stranger_swap_is_keyed_and_uses_the_bank():
    from faceprivacy.deid.evaluation.stranger import StrangerSwap, poisson_blend

    rng = np.random.default_rng(0)
    bank = rng.integers(0, 255, (5, 112, 112, 3), dtype=np.uint8)
    lm = np.tile(np.array([[20 + 4 * i, 40 + (i % 9) * 6] for i in range(68)], float), (5, 1, 1))
    s = StrangerSwap(bank, lm)
    assert s.pick(b"k" * 32) == s.pick(b"k" * 32)
    assert len({s.pick(bytes([i]) * 32) for i in range(40)}) > 1
    flat = np.full((112, 112, 3), 100, np.uint8)
    mask = np.zeros((112, 112), bool)
    mask[30:80, 30:80] = True
    out = poisson_blend(flat, np.full_like(flat, 200), mask)
    assert np.abs(out.astype(int) - 100).max() <= 1  # a constant source keeps the target's values


def test_head_pose_is_zero_for_the_frontal_model_and_signs_flip():
    from faceprivacy.deid.evaluation.measures import _MODEL3D, _POSE_IDX, head_pose

    lm = np.zeros((68, 2))
    lm[_POSE_IDX] = _MODEL3D[:, :2] * [1, -1] * 2 + 100
    yaw, pitch = head_pose(lm)
    assert abs(yaw) < 1 and abs(pitch) < 1
    a = np.radians(20)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    lm[_POSE_IDX] = (_MODEL3D @ rot.T)[:, :2] * [1, -1] * 2 + 100
    assert abs(abs(head_pose(lm)[0]) - 20) < 1


def test_identity_measures_exclude_the_source_photo():
    from faceprivacy.deid.evaluation.measures import identity_measures

    y = np.array([0, 0, 1, 1])
    fx = np.eye(4)[[0, 0, 1, 1]].astype(float)
    fg = np.eye(4)[[0, 1, 2]].astype(float)
    m = identity_measures(fx, y, fx, fg, np.array([0, 1, 2]), thr=0.5)
    assert m["verif_vs_other_photos"]["value"] == 1.0 and m["verif_vs_other_photos"]["n"] == 4 * 2  # one other probe + the gallery photo each
    assert m["rank1"]["value"] == 1.0


@pytest.mark.parametrize("argv", [
    ["--data", "/nonexistent/datakit"],
    ["--test-data", "/nonexistent/other"],
    ["--face-px", "300", "80"],
    ["--per-id", "0"],
    ["--methods", "nosuch"],
])
def test_eval_cli_bad_flags_exit_2(datakit, tmp_path, capsys, argv):
    base = ["-q", "eval-deid", "--quick", "--out", str(tmp_path / "o")]
    if "--data" not in argv:
        base += ["--data", str(datakit)]
    assert main(base + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_attribute_readings_carry_the_other_photo_reference(datakit, tmp_path):
    """With attributes on, the originals carry the attribute model's own agreement between two real photos of
    each person (the ceiling an anonymized face is held to), with n and an interval like every rate."""
    cfg = EvalConfig.quick(methods=("blur",), recognizers=("mobilefacenet",), detectors=("hog",),
                           protocols=("aligned",), max_ids=2, max_distractors=2, two_sample=False)
    res = evaluate_deid(datakit, tmp_path, cfg, methods={"blur": make_method("blur")})
    ref = res["protocols"]["aligned"]["originals"]["attributes_other_photo"]
    g = ref["gender_agreement"]
    assert 0.0 <= g["value"] <= 1.0 and g["n"] == len(res["probe_paths"]) and len(g["ci95"]) == 2
    assert ref["age_abs_err_years"]["value"] >= 0.0
    assert "other photo" in (tmp_path / "eval_deid.html").read_text()


def test_select_summarize_pairs_faces_against_the_baseline():
    from faceprivacy.deid.select import summarize

    def row(name, cos):
        r = {"name": name, "probe_ids": [0, 0, 1, 1], "s_per_face": 1.0}
        for rn in ("dlib", "mobilefacenet"):
            r[rn] = {"two_keys": {"value": 0.25}, "two_keys_mean_cos": float(np.mean(cos)), "two_keys_cos": cos}
        return r | {"gender_agreement": {"value": 0.9}, "age_mae": {"value": 5.0}, "yaw_err_deg": {"value": 4.0},
                    "two_sample_accuracy": {"value": 0.6}, "hp_ratio": {"value": 0.9}}

    table = summarize([row("base", [0.5, 0.5, 0.5, 0.5]), row("lower", [0.4, 0.4, 0.4, 0.4])], "base")
    lines = table.splitlines()
    assert len(lines) == 4 and "| base |" in lines[2] and "-0.100 [-0.100, -0.100]" in lines[3]


def test_two_keys_are_kept_per_probe_with_a_face_at_place_split(tiny_run):
    res, _ = tiny_run
    for p in res["protocols"].values():
        ok = p["originals"]["face_at_place_mmod"]
        assert ok["n"] == res["n_probes"] and 0.0 <= ok["value"] <= 1.0
        idm = p["riddle"]["identity"]["mobilefacenet"]
        cos = idm["two_keys_cos"]
        assert len(cos) == idm["two_keys_verified_same"]["n"] and all(-1.0 <= c <= 1.0 for c in cos)
        sub = idm["two_keys_verified_same_face_probes"]
        assert sub["n"] <= idm["two_keys_verified_same"]["n"]
