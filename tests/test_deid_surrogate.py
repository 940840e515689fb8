"""CPU coupling training through a surrogate identity net (synthetic latents; no generator needed)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from faceprivacy.deid.riddle.encryptor import EncryptorConfig, LatentEncryptor, random_keys
from faceprivacy.deid.riddle.surrogate import Surrogate, fit_surrogate, surrogate_accuracy, train_couplings


def _world(n_ids=12, per=20, d=48, seed=0):
    """Latents whose first dims carry identity; 'descriptor' = fixed nonlinear function of the latent."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_ids, d, generator=g) * torch.linspace(2, 0.1, d)
    labels = torch.arange(n_ids).repeat_interleave(per)
    z = centers[labels] + 0.3 * torch.randn(len(labels), d, generator=g)
    proj = torch.randn(d, 16, generator=g)

    def embed(x):
        return F.normalize(torch.tanh(x @ proj), dim=1)

    return z, labels, embed


def test_surrogate_fits_and_couplings_push_identity_away_exactly_invertibly():
    torch.manual_seed(0)
    z, labels, embed = _world()
    enc = LatentEncryptor(EncryptorConfig(latent_dim=48, pca_dim=24, id_dim=8, key_dim=8, n_coupling=2,
                                          hidden=32))
    enc.fit_linear(z.numpy(), labels.numpy())
    w, r = enc.whiten(z)
    g = torch.Generator().manual_seed(1)
    # surrogate data: source codes and perturbed codes -> 'descriptor' of the unwhitened output
    w_out = torch.cat([w, w + 0.8 * torch.randn(w.shape, generator=g), w + 1.5 * torch.randn(w.shape, generator=g)])
    w_src = w.repeat(3, 1)
    e = embed(enc.unwhiten(w_out, r.repeat(3, 1)))
    e_src = embed(z)
    sur = Surrogate(24, hidden=128, out_dim=16)
    n = len(w_out)
    tr = torch.randperm(n, generator=g)
    te, tr = tr[: n // 5], tr[n // 5:]
    es = e_src.repeat(3, 1)
    fit_surrogate(sur, w_out[tr], w_src[tr], es[tr], e[tr], steps=400, seed=0)
    acc = surrogate_accuracy(sur, w_out[te], w_src[te], e[te], es[te], thr=0.9)
    assert acc["cos_to_true_mean"] > 0.8
    ra, ca = random_keys(len(w), enc.cfg, torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = (sur(enc.encrypt_white(w, ra, ca), w, e_src) * e_src).sum(1).mean()
    hist = train_couplings(enc, sur, w, e_src, steps=150, margin=-0.5, batch=32, w_attr=0.0, w_prior=0.01)
    assert hist[-1]["id"] < hist[0]["id"]
    with torch.no_grad():
        after = (sur(enc.encrypt_white(w, ra, ca), w, e_src) * e_src).sum(1).mean()
        assert after < before - 0.05
        enc64 = enc.for_inference()
        zd = z.double()
        ra, ca = random_keys(len(w), enc.cfg, torch.Generator().manual_seed(5), dtype=torch.float64)
        ze = enc64.encrypt(zd, ra, ca)
        assert (enc64.decrypt(ze, ra, ca) - zd).abs().max() < 1e-9
        # the trained couplings are not the identity: the output differs from the analytic rotation
        wd, rd = enc64.whiten(zd)
        analytic = enc64.unwhiten(enc64.rotate(wd, ra), rd)
        assert (ze - analytic).norm(dim=1).mean() > 1e-3
