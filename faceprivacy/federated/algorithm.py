"""FedFace algorithm core, free of any FL framework (used by the in-process simulator and the Flower apps).

One identity per client. Each client holds the trunk features of its own images, receives the global
*head* (the trainable upper layers of the recognizer) and its own class embedding ``w_i``, trains both with a
positive-only loss ``mean_j max(0, m - cos(f(x_j), w_i))^2`` (m = 0.9) and returns the head update and ``w_i``.
The server averages the head updates (FedAvg) and runs a few SGD steps of the *spreadout* regularizer
``R(W) = mean_{i!=j} max(0, w_i.w_j - 0.3)^2`` over all class embeddings, so that classes do not collapse.

All model exchange uses a flat float32 vector of the head parameters (``head_vector``/``load_head_vector``),
which keeps FedAvg over thousands of clients a single tensor accumulation.

>>> import torch
>>> head = torch.nn.Linear(8, 4)
>>> feats = torch.randn(5, 8)
>>> w0 = init_class_embedding(head, feats)
>>> upd = client_update(head, head_vector(head), feats, w0, ClientConfig(local_steps=2), seed=0)
>>> upd.delta.shape == head_vector(head).shape and upd.embedding.shape == (4,)
True
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .privacy import noise_generator

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- losses


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


# ----------------------------------------------------------------------------------------------- head vectors


def head_vector(head: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``head`` as one flat float32 vector (a copy)."""
    return torch.nn.utils.parameters_to_vector([p.detach() for p in head.parameters()]).float().clone()


def load_head_vector(head: nn.Module, vec: torch.Tensor) -> None:
    """Write a flat parameter vector back into ``head`` (in place, no autograd history)."""
    i = 0
    with torch.no_grad():  # copy (vector_to_parameters would alias ``vec`` and let training overwrite it)
        for p in head.parameters():
            n = p.numel()
            p.copy_(vec[i:i + n].view_as(p))
            i += n
    if i != vec.numel():
        raise ValueError(f"parameter vector has {vec.numel()} values, the head needs {i}")


def head_state_arrays(head: nn.Module) -> dict[str, np.ndarray]:
    """Head parameters as a name -> numpy array dict (what crosses the network)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in head.named_parameters()}


def load_head_state_arrays(head: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Load a name -> array dict produced by :func:`head_state_arrays`; raises ValueError on a mismatch."""
    params = dict(head.named_parameters())
    if set(arrays) != set(params):
        raise ValueError(f"head parameter names differ: missing {sorted(set(params) - set(arrays))[:3]}, "
                         f"unexpected {sorted(set(arrays) - set(params))[:3]}")
    with torch.no_grad():
        for k, p in params.items():
            a = np.asarray(arrays[k])
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"shape of {k}: expected {tuple(p.shape)}, got {a.shape}")
            p.copy_(torch.from_numpy(a.astype(np.float32)))


# ----------------------------------------------------------------------------------------------- presets

#: hyper-parameters per geometry. "cosine" is FedFace's published setting (margins 0.9 / 0.3, CosFace-like
#: features). "euclidean" suits dlib's metric-trained descriptors (same person < 0.6 apart): radius 0.3 around
#: the class embedding, class embeddings pushed >= 0.7 apart; class embeddings move only by the server's
#: spreadout (client embedding lr 0); server FedAdam 1e-5. Chosen on the validation identities (docs/federated.md).
GEOMETRY_PRESETS: dict[str, dict[str, float | str]] = {
    "cosine": {"margin": 0.9, "spread_margin": 0.3, "lr": 0.005, "embedding_lr": -1.0, "spread_lr": 0.1,
               "server_opt": "sgd", "server_lr": 1.0},
    "euclidean": {"margin": 0.3, "spread_margin": 0.7, "lr": 0.001, "embedding_lr": 0.0, "spread_lr": 2.0,
                  "server_opt": "adam", "server_lr": 1e-5},
}


def resolve_geometry(geometry: str, backbone: str) -> str:
    """``auto`` -> ``euclidean`` for dlib backbones (metric-trained), ``cosine`` otherwise."""
    if geometry == "auto":
        return "euclidean" if backbone.startswith("dlib") else "cosine"
    if geometry not in GEOMETRY_PRESETS:
        raise ValueError(f"unknown geometry {geometry!r}; choose auto, cosine or euclidean")
    return geometry


# ----------------------------------------------------------------------------------------------- client


@dataclass
class ClientConfig:
    """Local training hyper-parameters of one FedFace client (also used by the Flower ClientApp)."""

    local_steps: int = 1
    batch_size: int = 32
    lr: float = 0.01
    embedding_lr: float | None = None  # None: same as lr
    #: cosine margin of the positive hinge (geometry "cosine"), or the radius (geometry "euclidean")
    margin: float = 0.9
    momentum: float = 0.0
    #: "cosine": FedFace's normalised embeddings; "euclidean": raw embeddings, radius hinge (FedAwS geometry)
    geometry: str = "cosine"
    #: DP: L2 clipping bound of the whole update (head delta + embedding delta); 0 = no clipping
    dp_clip: float = 0.0
    #: DP: Gaussian noise multiplier sigma; the noise std is sigma * dp_clip (needs dp_clip > 0)
    dp_noise: float = 0.0


@dataclass
class ClientUpdate:
    """What a client sends back: NO images and NO per-image features, only aggregate quantities."""

    delta: torch.Tensor  # flat head update (new - received), float32
    embedding: np.ndarray  # the client's own (updated) class embedding, unit norm, (D,)
    num_examples: int
    loss: float
    clipped: bool = False
    meta: dict = field(default_factory=dict)


@torch.no_grad()
def embed_features(head: nn.Module, feats: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Head outputs (N, D) for trunk features (N, ...), L2-normalised, in eval mode."""
    head.eval()
    outs = [F.normalize(head(feats[i:i + batch]).float(), dim=1) for i in range(0, len(feats), batch)]
    return torch.cat(outs) if outs else torch.zeros(0)


def init_class_embedding(head: nn.Module, feats: torch.Tensor, geometry: str = "cosine") -> np.ndarray:
    """A client's initial class embedding: the normalised mean of its normalised features (FedFace init), or
    for the Euclidean geometry the plain mean of its raw features."""
    if len(feats) == 0:
        raise ValueError("a client needs at least one image to initialise its class embedding")
    return get_geometry(geometry).init_embedding(head, feats)


def privatize(delta: torch.Tensor, emb_delta: torch.Tensor, clip: float, noise: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Client-side DP: clip the joint update (head delta, embedding delta) to L2 ``clip`` and add Gaussian
    noise of std ``noise * clip`` to every coordinate (Gaussian mechanism on a bounded-sensitivity update)."""
    if clip <= 0:
        if noise > 0:
            raise ValueError("dp_noise needs dp_clip > 0 (noise std is noise * clip)")
        return delta, emb_delta, False
    norm = torch.sqrt(delta.pow(2).sum() + emb_delta.pow(2).sum()).item()
    scale = min(1.0, clip / (norm + 1e-12))
    delta, emb_delta = delta * scale, emb_delta * scale
    if noise > 0:
        std = noise * clip
        delta = delta + torch.randn(delta.shape, generator=gen) * std
        emb_delta = emb_delta + torch.randn(emb_delta.shape, generator=gen) * std
    return delta, emb_delta, scale < 1.0


def client_update(head: nn.Module, global_vec: torch.Tensor, feats: torch.Tensor,
                  embedding: np.ndarray, cfg: ClientConfig, seed: int = 0,
                  reference: np.ndarray | None = None) -> ClientUpdate:
    """One FedFace client round: load the global head, train head + own class embedding for
    ``cfg.local_steps`` SGD steps on the positive-only squared-hinge cosine loss, return the update.

    ``head`` is used as scratch space (its parameters are overwritten). ``feats`` are this client's trunk
    features (never leave the client). ``seed`` drives batch sampling only; DP noise comes from the OS CSPRNG
    (``privacy.noise_generator``). ``reference`` is the embedding the server holds (default ``embedding``): the
    embedding update is taken against it, so a first upload from a server's random start is clipped and
    noised like any other update.
    """
    n = len(feats)
    if n == 0:
        raise ValueError("client has no images")
    load_head_vector(head, global_vec)
    head.train()
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFFFFFFFFFFFFFF)
    w0 = torch.as_tensor(np.asarray(embedding, dtype=np.float32))
    w = w0.clone().requires_grad_(True)
    params = list(head.parameters())
    e_lr = cfg.lr if cfg.embedding_lr is None else cfg.embedding_lr
    opt = torch.optim.SGD([{"params": params, "lr": cfg.lr}, {"params": [w], "lr": e_lr}],
                          lr=cfg.lr, momentum=cfg.momentum)
    loss_v = math.nan
    for _ in range(max(1, int(cfg.local_steps))):
        if n > cfg.batch_size:
            idx = torch.randperm(n, generator=gen)[: cfg.batch_size]
            xb = feats[idx]
        else:
            xb = feats
        opt.zero_grad(set_to_none=True)
        loss = positive_loss(head(xb), w, cfg.margin, cfg.geometry)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
    delta = torch.empty_like(global_vec)
    i = 0
    with torch.no_grad():  # delta = new - received, written straight into one buffer
        for p in params:
            k = p.numel()
            torch.sub(p.reshape(-1), global_vec[i:i + k], out=delta[i:i + k])
            i += k
    geo = get_geometry(cfg.geometry)
    ref = w0 if reference is None else torch.as_tensor(np.asarray(reference, dtype=np.float32))
    emb_delta = geo.client_embedding(w.detach()) - ref
    delta, emb_delta, clipped = privatize(delta, emb_delta, cfg.dp_clip, cfg.dp_noise, noise_generator())
    emb = geo.client_embedding(ref + emb_delta)
    emb = emb.numpy().astype(np.float32)
    return ClientUpdate(delta=delta, embedding=emb, num_examples=n, loss=loss_v, clipped=clipped)


# ----------------------------------------------------------------------------------------------- server


def validate_update(delta: torch.Tensor | np.ndarray, embedding: np.ndarray | None, num_examples: float,
                    expected_len: int, expected_dim: int | None = None,
                    max_norm: float | None = None) -> str | None:
    """Why an update must be rejected (``None`` if it is acceptable): wrong shape, NaN/inf, a non-positive
    example count, an embedding of the wrong size, or an update norm above ``max_norm``."""
    try:
        d = torch.as_tensor(delta)
    except Exception as e:  # noqa: BLE001 - anything unparsable is malformed
        return f"unreadable update ({type(e).__name__})"
    if d.dim() != 1 or d.numel() != expected_len:
        return f"update has shape {tuple(d.shape)}, expected ({expected_len},)"
    norm = float(d.float().norm())  # one pass: the norm is NaN/inf iff some value is
    if not math.isfinite(norm):
        return "update contains NaN/inf"
    try:
        ne = float(num_examples)
    except (TypeError, ValueError):
        return "num_examples is not a number"
    if not math.isfinite(ne) or ne <= 0:
        return f"num_examples={num_examples!r} is not positive"
    if embedding is not None:
        e = np.asarray(embedding)
        if e.ndim != 1 or (expected_dim is not None and e.shape[0] != expected_dim):
            return f"embedding has shape {e.shape}, expected ({expected_dim},)"
        if not np.all(np.isfinite(e)) or float(np.linalg.norm(e)) < 1e-6:
            return "embedding is NaN/inf or zero"
    if max_norm is not None and norm > max_norm:
        return f"update norm {norm:.3g} exceeds {max_norm:.3g}"
    return None


class FedAvgAccumulator:
    """Streaming weighted mean of flat updates (O(model) memory for any number of clients)."""

    def __init__(self, length: int) -> None:
        self.sum = torch.zeros(length, dtype=torch.float32)
        self.weight = 0.0
        self.count = 0

    def add(self, delta: torch.Tensor, weight: float) -> None:
        """Add one accepted update with its weight (usually its number of examples)."""
        self.sum.add_(delta, alpha=float(weight))
        self.weight += float(weight)
        self.count += 1

    def mean(self) -> torch.Tensor | None:
        """The weighted mean update, or None when nothing was accepted."""
        if self.count == 0 or self.weight <= 0:
            return None
        return (self.sum / self.weight).float()


def fedavg(deltas: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Weighted average of flat updates (FedAvg)."""
    if not deltas:
        raise ValueError("fedavg needs at least one update")
    acc = FedAvgAccumulator(deltas[0].numel())
    for d, w in zip(deltas, weights, strict=True):
        acc.add(d, w)
    out = acc.mean()
    assert out is not None
    return out


@dataclass
class ServerConfig:
    """Server-side hyper-parameters: FedAvg step and the spreadout regularizer."""

    server_lr: float = 1.0
    server_momentum: float = 0.0
    #: "sgd" (FedAvg: add server_lr x the mean update) or "adam" (FedAdam: the negated mean update is the
    #: pseudo-gradient of an Adam step of size server_lr; Reddi et al., ICLR 2021)
    server_opt: str = "sgd"
    adam_betas: tuple[float, float] = (0.9, 0.99)
    adam_eps: float = 1e-8
    spreadout: bool = True
    spread_steps: int = 10
    spread_lr: float = 1.0
    spread_margin: float = 0.3
    #: "cosine" (FedFace spreadout on unit rows) or "euclidean" (FedAwS spreadout on raw rows)
    geometry: str = "cosine"
    #: reject updates whose L2 norm exceeds this (None = no limit)
    max_update_norm: float | None = None


class ServerAdam:
    """FedAdam's server step: the mean client update is the negated pseudo-gradient of an Adam step of size
    ``lr`` (Reddi et al., ICLR 2021). Per-parameter normalisation makes tiny, consistent head updates count."""

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.t = 0

    def step(self, mean_delta: torch.Tensor) -> torch.Tensor:
        """The server's change of the global vector for this round's mean update."""
        d = mean_delta.float()
        if self.m is None or self.v is None:
            self.m, self.v = torch.zeros_like(d), torch.zeros_like(d)
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(d, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(d, d, value=1 - b2)
        mhat = self.m / (1 - b1 ** self.t)
        vhat = self.v / (1 - b2 ** self.t)
        return self.lr * mhat / (vhat.sqrt() + self.eps)

    def state(self) -> dict[str, torch.Tensor | int]:
        """Moments (empty tensors before the first step) and step count, loadable with ``weights_only``."""
        z = torch.zeros(0)
        return {"m": z if self.m is None else self.m, "v": z if self.v is None else self.v, "t": self.t}

    def load(self, st: dict) -> None:
        """Restore :meth:`state`."""
        m, v = st["m"], st["v"]
        self.m = m if m.numel() else None
        self.v = v if v.numel() else None
        self.t = int(st["t"])


class ServerState:
    """Global head vector + all class embeddings + optional server momentum; applies one round."""

    def __init__(self, global_vec: torch.Tensor, W: np.ndarray, cfg: ServerConfig) -> None:
        self.vec = global_vec.float().clone()
        self.W = np.asarray(W, dtype=np.float32).copy()
        self.cfg = cfg
        self.momentum = torch.zeros_like(self.vec) if cfg.server_momentum > 0 else None
        if cfg.server_opt not in ("sgd", "adam"):
            raise ValueError(f"unknown server optimizer {cfg.server_opt!r}; choose 'sgd' or 'adam'")
        self.adam = ServerAdam(cfg.server_lr, cfg.adam_betas, cfg.adam_eps) if cfg.server_opt == "adam" else None

    def apply(self, mean_delta: torch.Tensor | None, new_embeddings: dict[int, np.ndarray]) -> dict:
        """Apply the averaged head update, store the clients' embeddings, run spreadout; returns stats."""
        if mean_delta is not None and self.adam is not None:
            self.vec += self.adam.step(mean_delta)
        elif mean_delta is not None:
            step = mean_delta
            if self.momentum is not None:
                self.momentum.mul_(self.cfg.server_momentum).add_(mean_delta)
                step = self.momentum
            self.vec += self.cfg.server_lr * step
        self.W = store_embeddings(self.W, new_embeddings, self.cfg.geometry)
        stats = {}
        if self.cfg.spreadout and len(self.W) > 1:
            c = self.cfg
            stats["spread_before"] = spreadout_value(self.W, c.spread_margin, c.geometry)
            self.W = server_spreadout(self.W, c.spread_steps, c.spread_lr, c.spread_margin, c.geometry)
            stats["spread_after"] = spreadout_value(self.W, c.spread_margin, c.geometry)
        return stats


def class_embedding(e: np.ndarray, geometry: str = "cosine") -> np.ndarray:
    """A returned class embedding as the server keeps it: float32, unit-normalised for the cosine geometry."""
    return get_geometry(geometry).stored(e)


def store_embeddings(W: np.ndarray, new_embeddings: dict[int, np.ndarray], geometry: str = "cosine") -> np.ndarray:
    """Write clients' returned embeddings into ``W`` (see :func:`class_embedding`)."""
    for cid, e in new_embeddings.items():
        W[cid] = class_embedding(e, geometry)
    return W


def server_spreadout(W: np.ndarray, steps: int, lr: float, margin: float, geometry: str = "cosine") -> np.ndarray:
    """The server's spreadout step for ``geometry`` (see :func:`spreadout_step`, :func:`spreadout_step_euclidean`)."""
    return get_geometry(geometry).spreadout_step(W, steps, lr, margin)


# ----------------------------------------------------------------------------------------------- centralised


@dataclass
class CentralConfig:
    """Centralised fine-tuning reference (all images in one place): same loss family as FedFace."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.005
    momentum: float = 0.9
    margin: float = 0.9
    neg_margin: float = 0.3
    neg_weight: float = 1.0
    seed: int = 0
    #: "proxy": the FedFace loss family above (class embeddings); "metric": dlib's own pairwise Euclidean
    #: metric loss (what dlib's network was trained with) on identity-balanced batches
    loss: str = "proxy"
    optimizer: str = "sgd"  # or "adam"
    ids_per_batch: int = 30
    images_per_id: int = 5


def dlib_metric_loss(emb: torch.Tensor, labels: torch.Tensor, threshold: float = 0.6,
                     margin: float = 0.04) -> torch.Tensor:
    """dlib's ``loss_metric``: same-identity pairs closer than ``threshold - margin``, different-identity pairs
    farther than ``threshold + margin`` (hinges on Euclidean distance), using as many of the hardest negative
    pairs as there are positive pairs; normalised by the number of positive pairs."""
    D = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    pos = torch.clamp(D[same & ~eye] - (threshold - margin), min=0.0)
    neg = torch.clamp((threshold + margin) - D[~same], min=0.0)
    n_pos = max(1, pos.numel())
    if neg.numel() == 0:
        return pos.sum() / n_pos
    hard = torch.topk(neg, min(neg.numel(), n_pos))[0]
    return (pos.sum() + hard.sum()) / n_pos


def _metric_finetune(head: nn.Module, feats: torch.Tensor, inv: torch.Tensor, cfg: CentralConfig,
                     progress_desc: str | None) -> dict:
    from ..core.progress import progress

    opt = _optimizer(list(head.parameters()), cfg)
    rng = np.random.default_rng(cfg.seed)
    by_class = [np.flatnonzero(inv.numpy() == c) for c in range(int(inv.max()) + 1)]
    k = min(cfg.ids_per_batch, len(by_class))
    steps_per_epoch = max(1, len(feats) // (k * cfg.images_per_id))
    losses = []
    head.train()
    for _ in progress(range(cfg.epochs), desc=progress_desc or "centralised", disable=progress_desc is None):
        for _ in range(steps_per_epoch):
            cls = rng.choice(len(by_class), k, replace=False)
            idx = np.concatenate([rng.choice(by_class[c], min(cfg.images_per_id, len(by_class[c])), replace=False)
                                  for c in cls])
            _step(opt, dlib_metric_loss(head(feats[idx]), inv[idx]), losses)
    head.eval()
    return _train_summary(losses)


def _optimizer(params: list, cfg: CentralConfig) -> torch.optim.Optimizer:
    """The centralised reference's optimiser: Adam, or SGD with ``cfg.momentum``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, losses: list[float]) -> None:
    """One optimiser step on ``loss``, recording its value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(float(loss.detach()))


def _train_summary(losses: list[float]) -> dict:
    return {"final_loss": float(np.mean(losses[-10:])) if losses else math.nan, "steps": len(losses)}


def centralised_finetune(head: nn.Module, feats: torch.Tensor, labels: np.ndarray, cfg: CentralConfig,
                         progress_desc: str | None = None) -> dict:
    """Fine-tune ``head`` on all identities at once (the upper bound FedFace is compared with).

    Loss per image: the positive squared hinge to its own class embedding (margin 0.9) plus
    ``neg_weight`` x the squared hinge ``max(0, cos(f, w_c) - neg_margin)^2`` summed over the other classes,
    i.e. the centralised counterpart of spreadout (which also pushes every pair above the margin apart); class
    embeddings start at the class mean features. ``cfg.loss == "metric"``: dlib's pairwise metric loss instead.
    """
    from ..core.progress import progress

    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    classes, inv = torch.unique(labels_t, return_inverse=True)
    if cfg.loss == "metric":
        return _metric_finetune(head, feats, inv, cfg, progress_desc)
    if cfg.loss != "proxy":
        raise ValueError(f"unknown centralised loss {cfg.loss!r}; choose 'proxy' or 'metric'")
    C = len(classes)
    f0 = embed_features(head, feats)
    W0 = torch.zeros(C, f0.shape[1])
    W0.index_add_(0, inv, f0)
    W = F.normalize(W0, dim=1).clone().requires_grad_(True)
    opt = _optimizer([{"params": list(head.parameters())}, {"params": [W]}], cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(feats)
    losses = []
    head.train()
    for _ in progress(range(cfg.epochs), desc=progress_desc or "centralised", disable=progress_desc is None):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            f = F.normalize(head(feats[idx]), dim=1)
            Wn = F.normalize(W, dim=1)
            cos = f @ Wn.t()
            y = inv[idx]
            pos = cos.gather(1, y[:, None]).squeeze(1)
            loss = torch.clamp(cfg.margin - pos, min=0).pow(2).mean()
            if C > 1 and cfg.neg_weight > 0:
                mask = torch.ones_like(cos, dtype=torch.bool)
                mask[torch.arange(len(y)), y] = False
                # summed over the other classes (mean over images), like the (C-1)-scaled spreadout step
                neg = torch.clamp(cos[mask] - cfg.neg_margin, min=0).pow(2).sum() / len(y)
                loss = loss + cfg.neg_weight * neg
            _step(opt, loss, losses)
    head.eval()
    return _train_summary(losses)
