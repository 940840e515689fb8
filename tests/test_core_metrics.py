"""Metrics against hand-computed values and known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from faceprivacy.core import metrics as M


def test_threshold_and_tar_at_far_exact() -> None:
    imp = np.arange(1000) / 1000.0  # 0.000 .. 0.999
    gen = np.array([0.9985, 0.9995, 0.5, 0.2])
    scores = np.r_[gen, imp]
    same = np.r_[np.ones(4, bool), np.zeros(1000, bool)]
    tar, t = M.tar_at_far(scores, same, 1e-3)
    # one impostor (0.999) may pass: threshold is the 2nd highest impostor 0.998
    assert t == pytest.approx(0.998)
    assert np.mean(imp > t) <= 1e-3
    assert tar == pytest.approx(0.5)


def test_eer_separable_and_overlapping() -> None:
    rng = np.random.default_rng(0)
    g, i = rng.normal(2, 1, 20000), rng.normal(0, 1, 20000)
    scores, same = np.r_[g, i], np.r_[np.ones(20000, bool), np.zeros(20000, bool)]
    e, t = M.eer(scores, same)
    # two unit Gaussians 2 apart: EER = Phi(-1) = 0.1587, threshold ~ 1
    assert e == pytest.approx(0.1587, abs=0.01)
    assert t == pytest.approx(1.0, abs=0.05)
    assert M.auc(scores, same) == pytest.approx(0.921, abs=0.01)
    e2, _ = M.eer(np.r_[np.ones(5) + 1, np.zeros(5)], np.r_[np.ones(5, bool), np.zeros(5, bool)])
    assert e2 == 0.0


def test_10fold_accuracy_perfect_and_random() -> None:
    rng = np.random.default_rng(1)
    same = rng.random(600) < 0.5
    acc, _ = M.verification_accuracy_10fold(same.astype(float) + rng.normal(0, 0.01, 600), same)
    assert acc == 1.0
    acc2, _ = M.verification_accuracy_10fold(rng.random(600), same)
    assert 0.35 < acc2 < 0.65


def test_rank_k() -> None:
    gal = np.eye(4)
    probe = np.array([[1, 0.1, 0, 0], [0.2, 0.9, 0, 0], [0.0, 0, 0.5, 0.6]])
    probe = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    labels = np.array([0, 1, 2])
    assert M.rank_k_identification(probe, labels, gal, np.arange(4), k=1) == pytest.approx(2 / 3)
    assert M.rank_k_identification(probe, labels, gal, np.arange(4), k=2) == 1.0


def test_pairs_are_valid() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    pairs, same = M.genuine_impostor_pairs(labels, n_impostor=8, seed=0)
    assert same.sum() == 4  # 3 + 1 genuine pairs
    assert all((labels[a] == labels[b]) == s for (a, b), s in zip(pairs, same, strict=True))
    assert (~same).sum() == 8


def test_ssim_psnr_kid_fid() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.psnr(a, a) == float("inf")
    b = np.clip(a.astype(int) + rng.integers(-10, 11, a.shape), 0, 255)
    assert 25 < M.psnr(a, b) < 40
    assert 0.9 < M.ssim(a, b) < 1.0
    from scipy.ndimage import uniform_filter

    blurred = uniform_filter(a.astype(float), size=(5, 5, 1))
    assert M.ssim(a, blurred) < 0.5
    x, y, z = rng.normal(0, 1, (400, 16)), rng.normal(0, 1, (400, 16)), rng.normal(0.5, 1, (400, 16))
    k_same, _ = M.kid(x, y, n_subsets=10, subset_size=200)
    k_diff, _ = M.kid(x, z, n_subsets=10, subset_size=200)
    assert abs(k_same) < 0.01 and k_diff > 10 * abs(k_same)
    assert M.fid(x, y) < 0.5 < M.fid(x, z)
