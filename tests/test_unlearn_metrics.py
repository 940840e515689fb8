"""Formula tests for the unlearning metrics (ToW, NoMUS, AUC, loss-based MIA)."""

from __future__ import annotations

import numpy as np
import pytest

from faceprivacy.unlearn.metrics import auc, mia, nomus, tow


def test_tow_identical_is_one_and_matches_formula() -> None:
    a = {"retain": 0.9, "forget": 0.5, "test": 0.6}
    assert tow(a, a) == pytest.approx(1.0)
    b = {"retain": 0.8, "forget": 0.7, "test": 0.6}
    # (1 - 0.1) * (1 - 0.2) * (1 - 0) = 0.72, i.e. 72 in the paper's percent form
    assert tow(a, b) == pytest.approx(0.72)
    assert tow(b, a) == pytest.approx(0.72)


def test_tow_worst_case_zero() -> None:
    assert tow({"retain": 1, "forget": 1, "test": 1}, {"retain": 0, "forget": 0, "test": 0}) == 0.0


def test_nomus_formula() -> None:
    assert nomus(0.6, 0.5) == pytest.approx(0.5 * 0.6 + 0.5 * 1.0)
    assert nomus(0.6, 1.0) == pytest.approx(0.3)
    assert nomus(0.6, 0.0) == pytest.approx(0.3)
    assert nomus(0.488, 0.5, lam=0.5) == pytest.approx(0.744)
    assert nomus(1.0, 0.75) == pytest.approx(0.5 + 0.5 * 0.5)


def test_auc_against_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(1, 1, 50), 1)
    neg = np.round(rng.normal(0, 1, 70), 1)
    ref = roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[pos, neg])
    assert auc(pos, neg) == pytest.approx(ref)
    assert auc(np.ones(5), np.zeros(5)) == 1.0
    assert auc(np.zeros(5), np.ones(5)) == 0.0
    assert auc(np.ones(3), np.ones(4)) == 0.5


def test_mia_detects_members_and_not_nonmembers() -> None:
    rng = np.random.default_rng(1)
    members = rng.exponential(0.05, 400)      # memorised: tiny losses
    nonmembers = rng.exponential(1.5, 400)    # unseen: large losses
    m = mia(members[:200], nonmembers[:200], members[200:], nonmembers[200:])
    assert m["auc"] > 0.9 and m["acc"] > 0.8 and m["loss_auc"] > 0.9
    # forget set that now looks unseen -> chance level
    fake = mia(members[:200], nonmembers[:200], rng.exponential(1.5, 200), nonmembers[200:])
    assert abs(fake["auc"] - 0.5) < 0.1 and abs(fake["acc"] - 0.5) < 0.1


def test_mia_empty_is_nan() -> None:
    assert np.isnan(mia(np.zeros(0), np.ones(3), np.ones(3), np.ones(3))["auc"])
