"""Key-conditioned, exactly invertible latent encryptor (RiDDLE-style de-identification, made exact).

RiDDLE rewrites a generator latent with a transformer conditioned on a password and recovers by running the
*same* network again, so recovery is only approximate. Here the encryptor is invertible by construction:

1. **Whitening** (fitted on training-identity latents): ``w = (P^T (z - mu)) / sigma`` (PCA, ``p`` comps);
   what PCA does not span is carried through unchanged, so the map stays a bijection on the full latent.
2. **Keyed identity rotation**: an LDA basis ``V`` (``m`` directions that separate the training identities,
   orthonormal in whitened space where the codes are isotropic) holds the identity code ``c = V^T w``;
   it is replaced by ``R_k c`` with ``R_k`` a Haar-random orthogonal matrix derived from the key. The
   orthogonal complement (pose, expression, lighting, background: within-identity variation) is kept, so
   attributes survive; a rotated isotropic code is still a plausible code, so a *wrong* key decrypts to
   another plausible stranger (``R_k'^T R_k`` is just another random rotation).
3. **Keyed affine couplings** (``L`` layers, RealNVP-style): half of ``w`` passes unchanged and, together
   with the password latent ``pi_k``, predicts a scale and shift for the other half. Zero-initialised,
   so an untrained encryptor is exactly the analytic rotation; training pushes identity further away
   (identity losses through a dlib proxy and/or decoder+dlib) while keeping the code on the prior.

``decrypt`` runs each step backwards, so ``decrypt(encrypt(z, k), k) == z`` up to float rounding
(~1e-12 in float64, which inference uses), independently of how well the network was trained.
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.errors import ModelLoadError

FORMAT_VERSION = 1


@dataclass
class EncryptorConfig:
    """Sizes of the encryptor (latent_dim = prod(generator.latent_shape))."""

    latent_dim: int = 512
    pca_dim: int = 256
    id_dim: int = 96
    key_dim: int = 64
    n_coupling: int = 4
    hidden: int = 128
    scale_clamp: float = 1.0


@dataclass
class FaceKey:
    """What one face's key contributes: the identity rotation (m, m) and the password latent (key_dim,)."""

    rotation: np.ndarray
    cond: np.ndarray

    @classmethod
    def from_key(cls, key: bytes, cfg: EncryptorConfig) -> FaceKey:
        """Derive both parts from a 32-byte face key (HKDF sub-keys, so they are independent)."""
        from ...core.keys import key_rotation, key_to_gaussian, subkey

        return cls(key_rotation(subkey(key, "deid/rotation"), cfg.id_dim),
                   key_to_gaussian(subkey(key, "deid/cond"), (cfg.key_dim,)))


def stack_keys(keys: list[FaceKey], dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Batch FaceKeys into (N, m, m) rotations and (N, key_dim) password latents."""
    rot = torch.as_tensor(np.stack([k.rotation for k in keys]), dtype=dtype, device=device)
    cond = torch.as_tensor(np.stack([k.cond for k in keys]), dtype=dtype, device=device)
    return rot, cond


def random_keys(n: int, cfg: EncryptorConfig, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh random (rotation, password latent) pairs for training (QR of Gaussians, like ``key_rotation``).
    On a GPU the QR runs there in float32 (fast); on the CPU in float64."""
    g = torch.randn(n, cfg.id_dim, cfg.id_dim, generator=generator, dtype=torch.float64)
    cond = torch.randn(n, cfg.key_dim, generator=generator, dtype=torch.float64)
    if torch.device(device).type != "cpu":
        g = g.to(device=device, dtype=torch.float32)
    q, r = torch.linalg.qr(g)
    d = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    d = torch.where(d == 0, torch.ones_like(d), d)
    q = q * d[:, None, :]
    return q.to(device=device, dtype=dtype), cond.to(device=device, dtype=dtype)


class KeyedCoupling(nn.Module):
    """One affine coupling layer: ``y_b = x_b * exp(s(x_a, pi)) + t(x_a, pi)``, ``y_a = x_a`` (exact inverse)."""

    def __init__(self, dim: int, key_dim: int, hidden: int, perm_seed: int, scale_clamp: float):
        super().__init__()
        g = torch.Generator().manual_seed(perm_seed)
        perm = torch.randperm(dim, generator=g)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))
        self.na = dim // 2
        self.nb = dim - self.na
        self.scale_clamp = scale_clamp
        self.net = nn.Sequential(nn.Linear(self.na + key_dim, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2 * self.nb))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, xa: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(torch.cat([xa, cond], dim=1))
        s, t = h[:, :self.nb], h[:, self.nb:]
        s = self.scale_clamp * torch.tanh(s / self.scale_clamp)
        return s, t

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = x[:, self.perm]
        xa, xb = x[:, :self.na], x[:, self.na:]
        s, t = self._st(xa, cond)
        y = torch.cat([xa, xb * torch.exp(s) + t], dim=1)
        return y[:, self.inv_perm]

    def inverse(self, y: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = y[:, self.perm]
        ya, yb = y[:, :self.na], y[:, self.na:]
        s, t = self._st(ya, cond)
        x = torch.cat([ya, (yb - t) * torch.exp(-s)], dim=1)
        return x[:, self.inv_perm]


class LatentEncryptor(nn.Module):
    """Keyed bijection on generator latents: ``encrypt(z, keys)`` / ``decrypt(z_enc, keys)`` (exact inverse)."""

    def __init__(self, cfg: EncryptorConfig):
        super().__init__()
        self.cfg = cfg
        d, p, m = cfg.latent_dim, cfg.pca_dim, cfg.id_dim
        if not (0 < m <= p <= d):
            raise ValueError(f"need 0 < id_dim <= pca_dim <= latent_dim, got {m}, {p}, {d}")
        self.register_buffer("mu", torch.zeros(d))
        self.register_buffer("basis", torch.eye(d, p))  # P, orthonormal columns
        self.register_buffer("sigma", torch.ones(p))
        self.register_buffer("id_basis", torch.eye(p, m))  # V, orthonormal columns in whitened space
        self.couplings = nn.ModuleList(KeyedCoupling(p, cfg.key_dim, cfg.hidden, 1000 + i, cfg.scale_clamp)
                                       for i in range(cfg.n_coupling))
        self.meta: dict = {}

    # ----- linear part -------------------------------------------------------------------------------
    @torch.no_grad()
    def fit_linear(self, latents: np.ndarray | torch.Tensor, labels: np.ndarray) -> dict:
        """Fit the whitening (PCA) and the identity subspace (LDA) on training-identity latents."""
        z = torch.as_tensor(np.asarray(latents), dtype=torch.float64).reshape(len(labels), -1)
        labels = np.asarray(labels)
        if z.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"latent dim {z.shape[1]} != config {self.cfg.latent_dim}")
        mu = z.mean(0)
        zc = z - mu
        _, s, vh = torch.linalg.svd(zc, full_matrices=False)
        p = self.cfg.pca_dim
        if vh.shape[0] < p:
            raise ValueError(f"need at least {p + 1} latents to fit pca_dim={p}")
        basis = vh[:p].T
        sigma = s[:p] / math.sqrt(len(z) - 1)
        w = (zc @ basis) / sigma
        # between-identity covariance in whitened space (total covariance there is I)
        sb = torch.zeros(p, p, dtype=torch.float64)
        for lab in np.unique(labels):
            idx = torch.as_tensor(np.nonzero(labels == lab)[0])
            mc = w[idx].mean(0)
            sb += len(idx) * torch.outer(mc, mc)
        sb /= len(w)
        evals, evecs = torch.linalg.eigh(sb)
        order = torch.argsort(evals, descending=True)
        v = evecs[:, order[:self.cfg.id_dim]]
        self.mu.copy_(mu.float())
        self.basis.copy_(basis.float())
        self.sigma.copy_(sigma.float())
        self.id_basis.copy_(v.float())
        ev = evals[order].clamp_min(0)
        return {"n_latents": len(z), "n_identities": int(len(np.unique(labels))),
                "pca_var_kept": float((s[:p] ** 2).sum() / (s ** 2).sum()),
                "between_var_in_id_subspace": float(ev[:self.cfg.id_dim].sum() / ev.sum())}

    def whiten(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat latent (N, D) -> (whitened PCA code (N, p), residual outside the PCA span (N, D))."""
        u = z - self.mu
        c = u @ self.basis
        return c / self.sigma, u - c @ self.basis.T

    def unwhiten(self, w: torch.Tensor, resid: torch.Tensor) -> torch.Tensor:
        """Inverse of ``whiten``."""
        return self.mu + (w * self.sigma) @ self.basis.T + resid

    def rotate(self, w: torch.Tensor, rot: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Replace the identity code ``c = V^T w`` by ``R c`` (or ``R^T c`` for the inverse)."""
        v = self.id_basis
        c = w @ v
        rc = torch.einsum("nij,nj->ni", rot.transpose(1, 2) if inverse else rot, c)
        return w + (rc - c) @ v.T

    # ----- full map ----------------------------------------------------------------------------------
    def encrypt_white(self, w: torch.Tensor, rot: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Encryption in whitened coordinates (what training differentiates through)."""
        w = self.rotate(w, rot)
        for layer in self.couplings:
            w = layer(w, cond)
        return w

    def decrypt_white(self, w: torch.Tensor, rot: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Exact inverse of ``encrypt_white``."""
        for layer in reversed(self.couplings):
            w = layer.inverse(w, cond)
        return self.rotate(w, rot, inverse=True)

    def encrypt(self, z: torch.Tensor, rot: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(N, *latent_shape) latents -> encrypted latents of the same shape."""
        shape = z.shape
        w, resid = self.whiten(z.reshape(len(z), -1).to(self.mu.dtype))
        out = self.unwhiten(self.encrypt_white(w, rot.to(w.dtype), cond.to(w.dtype)), resid)
        return out.reshape(shape)

    def decrypt(self, z: torch.Tensor, rot: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Exact inverse of ``encrypt`` for the same key; another (plausible) latent for any other key."""
        shape = z.shape
        w, resid = self.whiten(z.reshape(len(z), -1).to(self.mu.dtype))
        out = self.unwhiten(self.decrypt_white(w, rot.to(w.dtype), cond.to(w.dtype)), resid)
        return out.reshape(shape)

    @torch.no_grad()
    def for_inference(self) -> LatentEncryptor:
        """Switch to float64 with an identity basis re-orthonormalised in float64 (deterministic from the
        stored float32 values) and an exactly orthonormal PCA basis, so encrypt/decrypt are inverse to ~1e-12 on any machine."""
        self.double().eval()
        for name in ("basis", "id_basis"):
            b = getattr(self, name)
            q, r = torch.linalg.qr(b)
            d = torch.sign(torch.diagonal(r))
            b.copy_(q * torch.where(d == 0, torch.ones_like(d), d)[None, :])
        return self

    # ----- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """Write config + float32 state (small; loadable with ``weights_only=True``)."""
        from ...core.fileio import atomic_write_bytes

        buf = io.BytesIO()
        state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu()
                 for k, v in self.state_dict().items()}
        torch.save({"format": FORMAT_VERSION, "config": asdict(self.cfg), "meta": dict(meta or self.meta),
                    "state": state}, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> LatentEncryptor:
        """Load weights written by ``save``; a missing/corrupt file raises ModelLoadError."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"encryptor weights not found: {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            cfg = EncryptorConfig(**blob["config"])
            enc = cls(cfg)
            enc.load_state_dict(blob["state"])
        except (RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError) as e:
            raise ModelLoadError(f"cannot load encryptor weights {path}: {e}") from None
        enc.meta = dict(blob.get("meta", {}))
        return enc.eval()
