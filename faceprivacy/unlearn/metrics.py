"""Unlearning metrics: accuracies, ToW (tug-of-war vs the retrained model), loss-based MIA and NoMUS."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def tow(acc: Mapping[str, float], acc_retrain: Mapping[str, float],
        parts: tuple[str, ...] = ("retain", "forget", "test")) -> float:
    """ToW = prod over retain/forget/test of (1 - |acc - acc_retrained|), accuracies as fractions in [0, 1]
    (the paper writes it in percent; 1.0 means indistinguishable from retraining)."""
    out = 1.0
    for p in parts:
        out *= 1.0 - abs(float(acc[p]) - float(acc_retrain[p]))
    return out


def nomus(test_acc: float, mia_acc: float, lam: float = 0.5) -> float:
    """NoMUS = lam * Acc_test + (1 - lam) * (1 - 2|MIA_acc - 0.5|) (MUFAC; both terms in [0, 1])."""
    return lam * float(test_acc) + (1.0 - lam) * (1.0 - 2.0 * abs(float(mia_acc) - 0.5))


def auc(pos_scores: np.ndarray, neg_scores: np.ndarray) -> float:
    """ROC AUC of ``score > threshold`` meaning positive (ties count half); Mann-Whitney form."""
    pos = np.asarray(pos_scores, float).ravel()
    neg = np.asarray(neg_scores, float).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sv = allv[order]
    i = 0
    while i < len(sv):  # average ranks over ties
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def mia(member_train: np.ndarray, nonmember_train: np.ndarray, member_test: np.ndarray,
        nonmember_test: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Loss-based membership inference as in 1-SHUI's basic MIA: a random forest on per-sample losses,
    fitted on retain (member) vs validation (non-member) losses with balanced classes, then scored on
    forget (member) vs unseen test (non-member). Returns the attack's AUC and balanced accuracy, plus the
    threshold-free AUC of the raw loss (lower loss = member)."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    a, b = np.asarray(member_train, float), np.asarray(nonmember_train, float)
    n = min(len(a), len(b))
    if n == 0 or len(member_test) == 0 or len(nonmember_test) == 0:
        return {"auc": float("nan"), "acc": float("nan"), "loss_auc": float("nan")}
    a, b = rng.choice(a, n, replace=False), rng.choice(b, n, replace=False)
    feats = np.log(np.concatenate([a, b]) + 1e-8)[:, None]
    lab = np.r_[np.ones(n), np.zeros(n)]
    clf = RandomForestClassifier(n_estimators=100, max_depth=4, min_samples_leaf=5, random_state=seed)
    clf.fit(feats, lab)
    mt = np.log(np.asarray(member_test, float) + 1e-8)[:, None]
    nt = np.log(np.asarray(nonmember_test, float) + 1e-8)[:, None]
    pm, pn = clf.predict_proba(mt)[:, 1], clf.predict_proba(nt)[:, 1]
    bal_acc = 0.5 * (float(np.mean(pm >= 0.5)) + float(np.mean(pn < 0.5)))
    return {"auc": auc(pm, pn), "acc": bal_acc,
            "loss_auc": auc(-np.asarray(member_test, float), -np.asarray(nonmember_test, float))}
