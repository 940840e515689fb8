"""Keyed latent encryptor: exact inverse by construction, key behaviour, persistence, key derivation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deid_tiny import tiny_encryptor

from faceprivacy.core.errors import ModelLoadError
from faceprivacy.core.keys import derive_master_key, face_purpose, key_rotation, password_latent, subkey
from faceprivacy.deid.riddle.encryptor import (
    EncryptorConfig,
    FaceKey,
    LatentEncryptor,
    random_keys,
    stack_keys,
)


def _keys(enc, seeds):
    return stack_keys([FaceKey.from_key(bytes([s]) * 32, enc.cfg) for s in seeds], dtype=torch.float64)


def test_exact_inverse_and_wrong_key():
    enc = tiny_encryptor().for_inference()
    z = torch.randn(10, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rot, cond = _keys(enc, range(10))
    ze = enc.encrypt(z, rot, cond)
    assert (enc.decrypt(ze, rot, cond) - z).abs().max() < 1e-10
    # encryption changes the latent substantially
    assert ((ze - z).norm(dim=1) / z.norm(dim=1)).min() > 0.2
    # a wrong key decrypts to something else again
    rot2, cond2 = _keys(enc, range(10, 20))
    zw = enc.decrypt(ze, rot2, cond2)
    assert ((zw - z).norm(dim=1) / z.norm(dim=1)).min() > 0.2
    # float32 stored latents still invert to float32 precision
    z32 = enc.decrypt(ze.float().double(), rot, cond)
    assert (z32 - z).abs().max() < 1e-3


def test_rotation_keeps_whitened_norm_and_complement():
    enc = tiny_encryptor(trained_like=False).for_inference()  # couplings are exactly the identity at init
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rot, cond = _keys(enc, range(5))
    w, res = enc.whiten(z)
    w2, res2 = enc.whiten(enc.encrypt(z, rot, cond))
    assert torch.allclose(w.norm(dim=1), w2.norm(dim=1), atol=1e-9)
    comp = torch.eye(enc.cfg.pca_dim, dtype=torch.float64) - enc.id_basis @ enc.id_basis.T
    assert torch.allclose(w @ comp, w2 @ comp, atol=1e-9)  # non-identity part untouched
    assert torch.allclose(res, res2, atol=1e-9)


def test_keys_are_deterministic_and_distinct():
    salt = b"0123456789abcdef"
    m1 = derive_master_key(b"pw", salt, n=2 ** 10)
    assert m1 == derive_master_key(b"pw", salt, n=2 ** 10)
    assert m1 != derive_master_key(b"pw2", salt, n=2 ** 10)
    assert face_purpose(3) != face_purpose(4)
    assert face_purpose(3, consistent=True) == face_purpose(4, consistent=True)
    a = password_latent(m1, "deid/latent", 16)
    assert np.array_equal(a, password_latent(m1, "deid/latent", 16))
    assert not np.allclose(a, password_latent(m1, "deid/latent/face/1", 16))
    q = key_rotation(subkey(m1, "x"), 24)
    assert np.allclose(q @ q.T, np.eye(24), atol=1e-12)
    assert not np.allclose(q, key_rotation(subkey(m1, "y"), 24))


def test_random_keys_are_orthogonal():
    cfg = EncryptorConfig(latent_dim=64, pca_dim=32, id_dim=12, key_dim=8)
    rot, cond = random_keys(4, cfg, torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(12, dtype=torch.float64).expand(4, 12, 12)
    assert torch.allclose(rot @ rot.transpose(1, 2), eye, atol=1e-10)
    assert cond.shape == (4, 8)


def test_save_load_roundtrip(tmp_path):
    enc = tiny_encryptor()
    enc.save(tmp_path / "e.pt", meta={"id": "abc"})
    back = LatentEncryptor.load(tmp_path / "e.pt")
    assert back.meta["id"] == "abc"
    for (k, v), (k2, v2) in zip(enc.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v.float(), v2.float())
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError):
        LatentEncryptor.load(tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError):
        LatentEncryptor.load(tmp_path / "missing.pt")
