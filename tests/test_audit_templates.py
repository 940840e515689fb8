"""Protected templates: same key verifies, different key does not, re-issued templates are unlinkable."""

from __future__ import annotations

import numpy as np

from faceprivacy.audit.templates import (
    BioHasher,
    projection_from_key,
    protect_per_identity,
    template_similarity,
)
from faceprivacy.core.embedder import l2_normalize


def _faces(rng: np.random.Generator, n_ids: int = 40, per: int = 4, dim: int = 128, noise: float = 0.2):
    centres = l2_normalize(rng.normal(size=(n_ids, dim)))
    lab = np.repeat(np.arange(n_ids), per)
    emb = l2_normalize(centres[lab] + noise * rng.normal(size=(len(lab), dim)) / np.sqrt(dim))
    return emb, lab


def test_projection_is_orthonormal_and_key_dependent():
    r1 = projection_from_key(b"k" * 32, 128, 64)
    r2 = projection_from_key(b"j" * 32, 128, 64)
    assert np.allclose(r1 @ r1.T, np.eye(64), atol=1e-5)
    assert np.allclose(r1, projection_from_key(b"k" * 32, 128, 64))
    assert np.abs(r1 @ r2.T).max() < 0.6


def test_same_key_verifies_different_key_does_not():
    rng = np.random.default_rng(1)
    emb, lab = _faces(rng)
    master = b"m" * 32
    h = BioHasher.from_master(master, "alice", 128, 64)
    h_other = BioHasher.from_master(master, "bob", 128, 64)
    a, b = emb[0:1], emb[1:2]  # two samples of identity 0
    assert template_similarity(h.protect(a), h.protect(b))[0] > 0.85
    # the same face under another key looks like an unrelated template
    cross = template_similarity(h.protect(emb), h_other.protect(emb))
    assert abs(cross.mean() - 0.5) < 0.08
    # an impostor with the victim's key is still rejected on average
    imp = template_similarity(h.protect(emb[lab != 0]), np.repeat(h.protect(a), (lab != 0).sum(), 0))
    assert imp.mean() < 0.65


def test_per_identity_templates_unlinkable_across_reissue():
    rng = np.random.default_rng(2)
    emb, lab = _faces(rng)
    ids = np.array([f"id{i}" for i in lab])
    t1 = protect_per_identity(b"a" * 32, emb, ids, 64)
    t2 = protect_per_identity(b"b" * 32, emb, ids, 64)  # same people, re-issued keys
    same_key_genuine = template_similarity(t1[0::4], t1[1::4]).mean()
    cross_key_genuine = template_similarity(t1[0::4], t2[1::4]).mean()
    assert same_key_genuine > 0.85
    assert abs(cross_key_genuine - 0.5) < 0.08
