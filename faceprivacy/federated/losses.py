"""FedFace's losses and the two geometries of its class embeddings (framework-free).

The client's positive-only hinge, the server's spreadout regularizer and its closed-form SGD steps, in the
cosine form (FedFace) and the Euclidean form (FedAwS); :class:`Geometry` bundles one form's pieces and
:func:`get_geometry` looks one up by name.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def squared_hinge_cosine_loss(feats: torch.Tensor, w: torch.Tensor, margin: float = 0.9) -> torch.Tensor:
    """FedFace's positive-only client loss: ``mean_j max(0, margin - cos(f_j, w))^2``.

    ``feats`` (N, D) raw features, ``w`` (D,) one class embedding or (N, D) one per row.
    """
    f = F.normalize(feats, dim=-1)
    wn = F.normalize(w, dim=-1)
    cos = (f * wn).sum(-1) if wn.dim() == 2 else f @ wn
    return torch.clamp(margin - cos, min=0.0).pow(2).mean()


def squared_hinge_radius_loss(feats: torch.Tensor, w: torch.Tensor, radius: float = 0.3) -> torch.Tensor:
    """Euclidean positive-only loss ``mean_j max(0, ||f_j - w|| - radius)^2`` (FedAwS geometry).

    For recognizers trained with a Euclidean metric loss, like dlib's (same person: distance < 0.6), whose raw
    descriptors sit in a narrow cosine cone where FedFace's cosine margins are inactive at the start.
    """
    d = (feats - w).pow(2).sum(-1).add(1e-12).sqrt()
    return torch.clamp(d - radius, min=0.0).pow(2).mean()


def centred_cosine_loss(feats: torch.Tensor, w: torch.Tensor, centre: torch.Tensor,
                        margin: float = 0.85) -> torch.Tensor:
    """Drift-free positive term: ``mean_j max(0, margin - cos(f_j - c, w - c))^2`` around the server's centre
    ``c`` (the mean of its class-embedding bank, the same for every client).

    The radius hinge alone lets the head pull every face towards the common mean (regression to the mean of the
    class embeddings, the drift that raises the impostor cosine); an angle measured from a fixed centre is blind
    to a uniform shrink towards it and penalises a translation common to all features.
    """
    c = centre.reshape(1, -1).to(feats.dtype)
    f = F.normalize(feats - c, dim=-1)
    wn = F.normalize(w.reshape(1, -1).to(feats.dtype) - c, dim=-1)
    return torch.clamp(margin - (f * wn).sum(-1), min=0.0).pow(2).mean()


def negative_hinge_radius_loss(feats: torch.Tensor, negs: torch.Tensor, margin: float = 0.7) -> torch.Tensor:
    """Hard negatives, Euclidean: ``mean_{j,k} max(0, margin - ||f_j - n_k||)^2`` for other classes' embeddings
    ``negs`` (K, D) (FedGC/FedFR's idea: the class-embedding bank supplies the negatives a client lacks)."""
    d = torch.cdist(feats, negs.to(feats.dtype))
    return torch.clamp(margin - d, min=0.0).pow(2).mean()


def negative_hinge_cosine_loss(feats: torch.Tensor, negs: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Hard negatives, cosine: ``mean_{j,k} max(0, cos(f_j, n_k) - margin)^2``."""
    c = F.normalize(feats, dim=-1) @ F.normalize(negs.to(feats.dtype), dim=-1).T
    return torch.clamp(c - margin, min=0.0).pow(2).mean()


def proxy_softmax_loss(feats: torch.Tensor, w: torch.Tensor, negs: torch.Tensor, scale: float,
                       geometry: str = "euclidean") -> torch.Tensor:
    """Softmax over the client's own class embedding ``w`` and other classes' embeddings ``negs`` (K, D) from the
    bank: ``-log softmax_0(-scale * ||f - p||^2)`` (euclidean) or ``scale * cos`` (cosine), mean over ``feats``.
    Unlike the hinges it penalises a contraction of the whole space (the logits flatten), the drift that
    positive-only clients share."""
    P = torch.cat([w.reshape(1, -1).to(feats.dtype), negs.to(feats.dtype)])
    if geometry == "cosine":
        logits = scale * (F.normalize(feats, dim=-1) @ F.normalize(P, dim=-1).T)
    else:
        logits = -scale * torch.cdist(feats, P).pow(2)
    return F.cross_entropy(logits, torch.zeros(len(feats), dtype=torch.long))


def nearest_negatives(W: np.ndarray, rows: np.ndarray, k: int, geometry: str = "cosine") -> np.ndarray:
    """For each of ``rows``, the indices of its ``k`` nearest *other* class embeddings in ``W`` (hardest
    negatives: smallest distance, or largest cosine); shape (len(rows), k)."""
    W = np.asarray(W, dtype=np.float32)
    k = int(min(k, len(W) - 1))
    if k <= 0:
        return np.zeros((len(rows), 0), dtype=np.int64)
    Q = W[rows]
    if geometry == "cosine":
        Wn = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
        d = -(Wn[rows] @ Wn.T)
    else:
        d = (Q * Q).sum(1)[:, None] - 2 * Q @ W.T + (W * W).sum(1)[None, :]
    d[np.arange(len(rows)), rows] = np.inf
    return np.argsort(d, axis=1)[:, :k]


def positive_loss(feats: torch.Tensor, w: torch.Tensor, margin: float, geometry: str = "cosine") -> torch.Tensor:
    """The client loss of ``geometry``: cosine squared hinge (FedFace) or Euclidean radius hinge (FedAwS)."""
    return get_geometry(geometry).positive_loss(feats, w, margin)


def spreadout_loss_euclidean(W: torch.Tensor, margin: float = 0.8) -> torch.Tensor:
    """FedAwS spreadout ``mean_{i!=j} max(0, margin - ||w_i - w_j||)^2`` over raw (unnormalised) rows."""
    n = W.shape[0]
    if n < 2:
        return W.sum() * 0.0
    D = torch.cdist(W, W)
    off = ~torch.eye(n, dtype=torch.bool, device=W.device)
    return torch.clamp(margin - D[off], min=0.0).pow(2).mean()


def spreadout_step_euclidean(W: np.ndarray | torch.Tensor, steps: int = 10, lr: float = 1.0,
                             margin: float = 0.8) -> np.ndarray:
    """``steps`` plain-SGD steps of ``(C-1) * spreadout_loss_euclidean`` on raw class embeddings (server side).

    Closed-form gradient: ``dL/dw_i = -(4/C) sum_j h_ij (w_i - w_j) / d_ij`` with ``h = max(0, margin - d)``.
    """
    Wt = torch.as_tensor(np.asarray(W, dtype=np.float64)).clone()
    n = Wt.shape[0]
    if n < 2 or steps <= 0:
        return Wt.float().numpy()
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(int(steps)):
        D = torch.cdist(Wt, Wt).masked_fill_(eye, 1.0)
        A = torch.clamp(margin - D, min=0.0).masked_fill_(eye, 0.0) / D
        g = -(4.0 / n) * (A.sum(1, keepdim=True) * Wt - A @ Wt)
        Wt = Wt - lr * g
    return Wt.float().numpy()


def spreadout_value(W: np.ndarray, margin: float, geometry: str = "cosine") -> float:
    """The spreadout regularizer of ``geometry`` at ``W`` (for logs)."""
    return get_geometry(geometry).spreadout_value(W, margin)


def spreadout_loss(W: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """Spreadout regularizer ``mean_{i!=j} max(0, w_i.w_j - margin)^2`` over L2-normalised rows of ``W``."""
    n = W.shape[0]
    if n < 2:
        return W.sum() * 0.0
    Wn = F.normalize(W, dim=1)
    G = Wn @ Wn.t()
    off = ~torch.eye(n, dtype=torch.bool, device=W.device)
    return torch.clamp(G[off] - margin, min=0.0).pow(2).mean()


def spreadout_step(W: np.ndarray | torch.Tensor, steps: int = 10, lr: float = 1.0,
                   margin: float = 0.3) -> np.ndarray:
    """Run ``steps`` plain-SGD steps of the spreadout regularizer on the class embeddings (server side).

    The step is taken on ``(C-1) * R(W)`` (a per-class mean over the other classes), so ``lr`` does not have to
    shrink as the number of classes ``C`` grows. Rows are re-normalised after each step; returns (C, D) float32.
    """
    Wt = F.normalize(torch.as_tensor(np.asarray(W, dtype=np.float32)).clone(), dim=1)
    n = Wt.shape[0]
    if n < 2 or steps <= 0:
        return Wt.numpy()
    eye = torch.eye(n, dtype=torch.bool)
    for _ in range(int(steps)):
        # closed-form gradient of (C-1) * R(W) at unit-norm rows (no autograd: two C x C matmuls per step):
        # dL/dG_ij = 2 max(0, G_ij - margin) / C for i != j;  dL/dW = 2 D W (D symmetric), projected onto
        # the tangent space of each unit-norm row (the normalisation inside R).
        D = torch.clamp(Wt @ Wt.t() - margin, min=0.0).masked_fill_(eye, 0.0).mul_(2.0 / n)
        g = 2.0 * (D @ Wt)
        g -= (g * Wt).sum(1, keepdim=True) * Wt
        Wt = F.normalize(Wt - lr * g, dim=1)
    return Wt.numpy().astype(np.float32)


class Geometry:
    """One geometry of FedFace's class embeddings: its client loss, server spreadout and stored form."""

    name = ""

    def positive_loss(self, feats: torch.Tensor, w: torch.Tensor, margin: float) -> torch.Tensor:
        raise NotImplementedError

    def negative_loss(self, feats: torch.Tensor, negs: torch.Tensor, margin: float) -> torch.Tensor:
        """Hinge pushing the client's features away from other classes' embeddings ``negs``."""
        raise NotImplementedError

    def spreadout_step(self, W: np.ndarray, steps: int, lr: float, margin: float) -> np.ndarray:
        raise NotImplementedError

    def spreadout_value(self, W: np.ndarray, margin: float) -> float:
        raise NotImplementedError

    def client_embedding(self, w: torch.Tensor) -> torch.Tensor:
        """A client's class embedding as it leaves the client."""
        raise NotImplementedError

    def stored(self, e: np.ndarray) -> np.ndarray:
        """A returned class embedding as the server keeps it (float32)."""
        raise NotImplementedError

    def init_embedding(self, head: nn.Module, feats: torch.Tensor) -> np.ndarray:
        """FedFace's start: the client's mean feature in this geometry."""
        raise NotImplementedError


class Cosine(Geometry):
    """FedFace as published: unit class embeddings, cosine margins (0.9 / 0.3)."""

    name = "cosine"

    def positive_loss(self, feats: torch.Tensor, w: torch.Tensor, margin: float) -> torch.Tensor:
        return squared_hinge_cosine_loss(feats, w, margin)

    def negative_loss(self, feats: torch.Tensor, negs: torch.Tensor, margin: float) -> torch.Tensor:
        return negative_hinge_cosine_loss(feats, negs, margin)

    def spreadout_step(self, W: np.ndarray, steps: int, lr: float, margin: float) -> np.ndarray:
        return spreadout_step(W, steps, lr, margin)

    def spreadout_value(self, W: np.ndarray, margin: float) -> float:
        return float(spreadout_loss(torch.from_numpy(np.asarray(W, dtype=np.float32)), margin))

    def client_embedding(self, w: torch.Tensor) -> torch.Tensor:
        return F.normalize(w, dim=0)

    def stored(self, e: np.ndarray) -> np.ndarray:
        e = np.asarray(e, dtype=np.float32)
        return e / max(float(np.linalg.norm(e)), 1e-12)

    def init_embedding(self, head: nn.Module, feats: torch.Tensor) -> np.ndarray:
        return F.normalize(embed_features(head, feats).mean(0), dim=0).numpy().astype(np.float32)


class Euclidean(Geometry):
    """FedAwS's form for metric-trained recognizers (dlib): raw embeddings, radius / distance margins."""

    name = "euclidean"

    def positive_loss(self, feats: torch.Tensor, w: torch.Tensor, margin: float) -> torch.Tensor:
        return squared_hinge_radius_loss(feats, w, margin)

    def negative_loss(self, feats: torch.Tensor, negs: torch.Tensor, margin: float) -> torch.Tensor:
        return negative_hinge_radius_loss(feats, negs, margin)

    def spreadout_step(self, W: np.ndarray, steps: int, lr: float, margin: float) -> np.ndarray:
        return spreadout_step_euclidean(W, steps, lr, margin)

    def spreadout_value(self, W: np.ndarray, margin: float) -> float:
        return float(spreadout_loss_euclidean(torch.from_numpy(np.asarray(W, dtype=np.float32)), margin))

    def client_embedding(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def stored(self, e: np.ndarray) -> np.ndarray:
        return np.asarray(e, dtype=np.float32)

    def init_embedding(self, head: nn.Module, feats: torch.Tensor) -> np.ndarray:
        head.eval()
        with torch.no_grad():
            return head(feats).float().mean(0).numpy().astype(np.float32)


#: the geometries by name (one lookup instead of string tests; a typo raises)
GEOMETRIES: dict[str, Geometry] = {g.name: g for g in (Cosine(), Euclidean())}


def get_geometry(name: str) -> Geometry:
    """The :class:`Geometry` called ``name``; raises ValueError for anything else."""
    try:
        return GEOMETRIES[name]
    except KeyError:
        raise ValueError(f"unknown geometry {name!r}; choose one of {sorted(GEOMETRIES)}") from None

@torch.no_grad()
def embed_features(head: nn.Module, feats: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Head outputs (N, D) for trunk features (N, ...), L2-normalised, in eval mode."""
    head.eval()
    outs = [F.normalize(head(feats[i:i + batch]).float(), dim=1) for i in range(0, len(feats), batch)]
    return torch.cat(outs) if outs else torch.zeros(0)
