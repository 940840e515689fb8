"""Protected (cancelable) face templates: keyed random projection + binarisation (BioHashing-style).

A template is ``sign(R_k (e - mu))`` packed as bits, where ``R_k`` is an ``m x D`` matrix with
orthonormal rows derived from a key (HKDF sub-key of a master key -> :func:`core.keys.key_to_gaussian`
-> QR) and ``mu`` an optional public centring vector. Templates are compared by the fraction of equal
bits. Properties: the same key verifies; templates of one face under two keys are unrelated
(revocable, unlinkable); without the key the bits are not aligned with the embedding space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.keys import key_to_gaussian, subkey

PURPOSE = "audit/biohash"


def projection_from_key(key: bytes, dim: int, n_bits: int) -> np.ndarray:
    """``n_bits x dim`` matrix with orthonormal rows (when ``n_bits <= dim``) derived from ``key``."""
    g = key_to_gaussian(key, (dim, max(n_bits, 1))).astype(np.float64)
    if n_bits <= dim:
        q, r = np.linalg.qr(g)
        q = q * np.sign(np.diag(r))[None, :]
        return q.T.astype(np.float32)
    return (g.T / np.linalg.norm(g.T, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class BioHasher:
    """Keyed projection + sign binarisation of unit-norm embeddings into ``n_bits`` bits."""

    key: bytes
    dim: int
    n_bits: int = 64
    center: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.n_bits < 1:
            raise ValueError("n_bits must be >= 1")
        self._r = projection_from_key(self.key, self.dim, self.n_bits)

    @classmethod
    def from_master(cls, master_key: bytes, label: str, dim: int, n_bits: int = 64,
                    center: np.ndarray | None = None) -> BioHasher:
        """Hasher for one user/application: its key is the HKDF sub-key ``audit/biohash/<label>``."""
        return cls(subkey(master_key, f"{PURPOSE}/{label}"), dim, n_bits, center)

    def project(self, emb: np.ndarray) -> np.ndarray:
        """Real-valued projections (N, n_bits) before binarisation."""
        e = np.asarray(emb, np.float32)
        if e.ndim == 1:
            e = e[None]
        if e.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of dimension {self.dim}, got {e.shape[1]}")
        if self.center is not None:
            e = e - self.center[None]
        return e @ self._r.T

    def protect(self, emb: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, n_bits) uint8 {0,1} protected templates."""
        return (self.project(emb) > 0).astype(np.uint8)


def template_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of equal bits between paired templates (N, m) x (N, m) -> (N,) in [0, 1]."""
    a = np.asarray(a)
    b = np.asarray(b)
    return (a == b).mean(axis=1)


def protect_per_identity(master_key: bytes, emb: np.ndarray, identities: list[str] | np.ndarray,
                         n_bits: int = 64, center: np.ndarray | None = None) -> np.ndarray:
    """Protect each row with the key of its identity (per-user tokens, the BioHashing setting)."""
    emb = np.asarray(emb, np.float32)
    out = np.zeros((len(emb), n_bits), np.uint8)
    ids = np.asarray(identities)
    for ident in np.unique(ids):
        m = ids == ident
        out[m] = BioHasher.from_master(master_key, str(ident), emb.shape[1], n_bits, center).protect(emb[m])
    return out
