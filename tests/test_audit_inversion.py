"""Inversion attacks on a tiny random generator and a tiny differentiable 'recognizer' (known answer)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from faceprivacy.audit.inversion import (
    blackbox_refine,
    cosine_rows,
    decode_latents,
    encode_latents,
    fast_decoder,
    map_templates,
    pca_basis,
    to_crops112,
    train_mapper,
    whitebox_refine,
)
from faceprivacy.models.generator import Generator


class TinyGenerator(Generator):
    """Linear latent (16) -> 3x16x16 image, upsampled to 112; encode = least-squares inverse."""

    resolution = 112
    latent_shape = (16,)
    name = "tiny"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(16, 3 * 16 * 16, generator=g) * 0.15, requires_grad=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(z @ self.w).reshape(-1, 3, 16, 16)
        return F.interpolate(x, size=(112, 112), mode="nearest")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(images, 16).reshape(len(images), -1).clamp(-0.999, 0.999)
        return torch.atanh(x) @ torch.linalg.pinv(self.w)


def tiny_embedder(dim: int = 8):
    """Differentiable image -> unit vector, and its uint8-query twin (the black-box oracle)."""
    g = torch.Generator().manual_seed(1)
    proj = torch.randn(3 * 16 * 16, dim, generator=g)

    def f(img: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(img, 16).reshape(len(img), -1)
        return F.normalize(torch.tanh(x) @ proj, dim=1)

    def q(crops: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            return f(x).numpy()

    return f, q


def _setup():
    torch.manual_seed(0)
    gen = TinyGenerator()
    f, q = tiny_embedder()
    z_train = torch.randn(300, 16)
    crops_train = to_crops112(decode_latents(gen, z_train))
    z_test = torch.randn(6, 16)
    crops_test = to_crops112(decode_latents(gen, z_test))
    return gen, f, q, crops_train, crops_test


def test_encode_decode_roundtrip_of_tiny_generator():
    gen, _, _, crops, _ = _setup()
    z = encode_latents(gen, crops[:8])
    rec = to_crops112(decode_latents(gen, z))
    assert np.abs(rec.astype(int) - crops[:8].astype(int)).mean() < 3


def test_mapper_whitebox_and_blackbox_recover_the_embedding():
    gen, f, q, crops_tr, crops_te = _setup()
    e_tr, e_te = q(crops_tr), q(crops_te)
    z_tr = encode_latents(gen, crops_tr)
    mapper = train_mapper(e_tr, z_tr, epochs=40, hidden=128, depth=2)
    z0 = map_templates(mapper, e_te)
    s_map = cosine_rows(q(to_crops112(decode_latents(gen, z0))), e_te)
    # an uninformed guess (mean latent) is far worse than the mapper
    s_mean = cosine_rows(q(to_crops112(decode_latents(gen, z_tr.mean(0, keepdim=True).repeat(6, 1)))), e_te)
    assert s_map.mean() > s_mean.mean() + 0.1
    z_wb = whitebox_refine(gen, f, torch.as_tensor(e_te), z0, steps=60, lr=0.1, z_std=mapper.z_std)
    s_wb = cosine_rows(q(to_crops112(decode_latents(gen, z_wb))), e_te)
    assert s_wb.mean() > 0.97 and s_wb.mean() > s_map.mean()
    basis, bstd = pca_basis(z_tr, 16)
    bb = blackbox_refine(gen, q, e_te, z0, basis, bstd, iters=15, pop=8, sigma=0.5, lr=0.3)
    s_bb = cosine_rows(q(to_crops112(decode_latents(gen, bb.z))), e_te)
    assert bb.queries == 1 + 15 * 8
    assert (1 - s_bb).mean() < 0.6 * (1 - s_map).mean()  # NES removes most of the mapper's error
    assert np.allclose(s_bb, bb.best_score, atol=1e-5)  # the returned latent is the best one queried


def test_blackbox_stops_accepted_targets_and_reports_queries_vs_success():
    gen, _f, q, crops_tr, crops_te = _setup()
    e_tr, e_te = q(crops_tr), q(crops_te)
    z_tr = encode_latents(gen, crops_tr)
    z0 = map_templates(train_mapper(e_tr, z_tr, epochs=40, hidden=128, depth=2), e_te)
    basis, bstd = pca_basis(z_tr, 16)
    s0 = cosine_rows(q(to_crops112(decode_latents(gen, z0))), e_te)
    stop = float(np.median(s0)) + 0.02  # some targets start accepted, the others must earn it
    bb = blackbox_refine(gen, q, e_te, z0, basis, bstd, iters=15, pop=8, stop_score=stop, patience=3)
    done = np.isfinite(bb.first_success)
    assert done.any()
    assert np.all(bb.best_score[done] >= stop)
    assert bb.queries_per_target.max() <= 1 + 15 * 8 and bb.queries < 1 + 15 * 8  # accepted targets stop early
    curve = bb.success_curve()
    assert [c["success"] for c in curve] == sorted(c["success"] for c in curve)
    assert curve[-1]["success"] == done.mean()


def test_on_manifold_whitebox_moves_only_in_the_principal_subspace():
    gen, f, q, crops_tr, crops_te = _setup()
    e_te = q(crops_te)
    z_tr = encode_latents(gen, crops_tr)
    basis, bstd = pca_basis(z_tr, 4)
    z0 = z_tr.mean(0, keepdim=True).repeat(len(e_te), 1)
    z = whitebox_refine(gen, f, torch.as_tensor(e_te), z0, steps=30, lr=0.1, basis=basis, basis_std=bstd, reg=1e-2)
    d = z - z0
    resid = d - (d @ basis.T) @ basis  # the part outside the 4 principal directions
    assert float(resid.norm()) < 1e-4 * max(float(d.norm()), 1e-6) + 1e-5
    s = cosine_rows(q(to_crops112(decode_latents(gen, z))), e_te)
    s0 = cosine_rows(q(to_crops112(decode_latents(gen, z0))), e_te)
    assert s.mean() > s0.mean()


def test_blackbox_returns_the_queried_crops_and_fast_decoder_matches():
    gen, _f, q, crops_tr, crops_te = _setup()
    e_te = q(crops_te)
    z_tr = encode_latents(gen, crops_tr)
    basis, bstd = pca_basis(z_tr, 8)
    z0 = z_tr.mean(0, keepdim=True).repeat(len(e_te), 1)
    exact = fast_decoder(gen, bf16=False)
    assert torch.equal(exact(z0), decode_latents(gen, z0))
    approx = fast_decoder(gen, bf16=True)
    assert float((approx(z0) - exact(z0)).abs().mean()) < 0.02  # bf16 rounding only
    bb = blackbox_refine(gen, q, e_te, z0, basis, bstd, iters=4, pop=4, decode=approx)
    assert bb.crops.shape == (len(e_te), 112, 112, 3) and bb.crops.dtype == np.uint8
    assert np.allclose(cosine_rows(q(bb.crops), e_te), bb.best_score, atol=1e-5)  # the image that scored best
