"""Verification intervals resample people, thresholds use every impostor pair, pair protocols print their
always-same baseline, and a separate test root must hold other people."""
import numpy as np
import pytest

from faceprivacy.core import metrics as M
from faceprivacy.core.data import FaceDataset
from faceprivacy.core.errors import InputError
from faceprivacy.core.testset import load_test_root, require_disjoint


def _feats(n_ids=30, per=6, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, 16))
    labels = np.repeat(np.arange(n_ids), per)
    f = centres[labels] + noise * rng.normal(size=(len(labels), 16))
    return f / np.linalg.norm(f, axis=1, keepdims=True), labels


def test_all_pairs_counts_every_impostor():
    labels = np.array([0, 0, 1, 1, 1, 2])
    pairs, same = M.all_pairs(labels)
    assert len(pairs) == 15 and same.sum() == 1 + 3


def test_verification_ci_brackets_the_estimate_and_widens_with_fewer_people():
    f, lab = _feats()
    pairs, same = M.all_pairs(lab)
    sc = M.pair_scores(f, pairs)
    rep = M.verification_report(sc, same)
    ci = M.verification_ci(sc, same, lab[pairs[:, 0]], lab[pairs[:, 1]], fars=(1e-2,), n_boot=300)
    lo, hi = ci["tar@far=0.01"]
    assert lo - 1e-9 <= rep["tar@far=0.01"] <= hi + 1e-9
    assert ci["auc"][0] <= rep["auc"] <= ci["auc"][1]
    f2, lab2 = _feats(n_ids=8)
    p2, s2 = M.all_pairs(lab2)
    ci2 = M.verification_ci(M.pair_scores(f2, p2), s2, lab2[p2[:, 0]], lab2[p2[:, 1]], fars=(1e-2,), n_boot=300)
    assert np.diff(ci2["auc"])[0] > np.diff(ci["auc"])[0]


def test_fixed_threshold_reports_tar_and_realised_far():
    f, lab = _feats()
    pairs, same = M.all_pairs(lab)
    sc = M.pair_scores(f, pairs)
    t = M.threshold_at_far(sc[~same], 1e-2)
    ci = M.verification_ci(sc, same, lab[pairs[:, 0]], lab[pairs[:, 1]], fars=(1e-2,), thresholds={1e-2: t},
                           n_boot=200)
    far = float(np.mean(sc[~same] > t))
    assert ci["far@thr_far=0.01"][0] <= far + 1e-9 and far <= ci["far@thr_far=0.01"][1] + 0.02


def test_balanced_protocol_is_balanced_and_identity_disjoint_across_folds():
    _, lab = _feats(n_ids=40)
    pairs, same, fold = M.balanced_pairs(lab, per_fold=20)
    assert same.mean() == 0.5
    folds_of_id = {}
    for (i, j), f in zip(pairs, fold, strict=True):
        for x in (lab[i], lab[j]):
            folds_of_id.setdefault(int(x), set()).add(int(f))
    assert all(len(v) == 1 for v in folds_of_id.values())


def test_pair_accuracy_reports_the_always_same_baseline():
    f, lab = _feats()
    pairs, same = M.all_pairs(lab)
    keep = np.r_[np.flatnonzero(same), np.flatnonzero(~same)[:30]]
    r = M.accuracy_10fold_with_ci(M.pair_scores(f, pairs[keep]), same[keep], np.arange(len(keep)) % 10,
                                  lab[pairs[keep, 0]])
    assert r["always_same_baseline"] == pytest.approx(same[keep].mean())
    assert r["ci95"][0] <= r["value"] <= r["ci95"][1]


def test_test_root_must_hold_other_people(tmp_path):
    from PIL import Image

    for ident in ("p1", "p2"):
        (tmp_path / ident).mkdir()
        Image.new("RGB", (112, 112), (120, 100, 90)).save(tmp_path / ident / "a.png")
    ds = load_test_root(tmp_path)
    assert ds.identities == ["p1", "p2"]
    require_disjoint(["q1", "q2"], ds)
    with pytest.raises(InputError, match="shares 1 identities"):
        require_disjoint(["p2", "q9"], ds)
    with pytest.raises(InputError):
        load_test_root(tmp_path / "missing")
    assert isinstance(ds, FaceDataset)
