"""The FedFace server: update validation, (weighted) averaging, FedAvg / FedAdam steps, spreadout."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .losses import get_geometry, spreadout_value


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
    #: server learning-rate schedule over the run's rounds: "constant" or "cosine" (from server_lr down to
    #: server_lr * server_lr_min at the last round)
    server_lr_schedule: str = "constant"
    server_lr_min: float = 0.1
    #: spreadout warm-up: its step size grows linearly from spread_lr / spread_warmup to spread_lr over the
    #: first spread_warmup rounds (0 = off)
    spread_warmup: int = 0
    #: spreadout head start: the first spread_boost_rounds rounds run spread_boost x spread_steps spreadout steps
    #: (the class embeddings are spread before the clients' positive pull can drift the descriptors together;
    #: 0 = off)
    spread_boost_rounds: int = 0
    spread_boost: int = 1


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
        if cfg.server_lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown server lr schedule {cfg.server_lr_schedule!r}; choose constant or cosine")
        self.lr = float(cfg.server_lr)
        self.spread_lr = float(cfg.spread_lr)
        self.spread_steps = int(cfg.spread_steps)

    def schedule(self, rnd: int, total: int) -> None:
        """Set this round's server and spreadout step sizes (round ``rnd`` of ``total``, from 1)."""
        c = self.cfg
        f = 1.0
        if c.server_lr_schedule == "cosine" and total > 1:
            f = c.server_lr_min + (1.0 - c.server_lr_min) * 0.5 * (1.0 + math.cos(math.pi * (rnd - 1) / (total - 1)))
        self.lr = float(c.server_lr) * f
        if self.adam is not None:
            self.adam.lr = self.lr
        self.spread_lr = float(c.spread_lr) * (min(1.0, rnd / c.spread_warmup) if c.spread_warmup > 0 else 1.0)
        self.spread_steps = int(c.spread_steps) * (max(1, int(c.spread_boost)) if rnd <= c.spread_boost_rounds else 1)

    def apply(self, mean_delta: torch.Tensor | None, new_embeddings: dict[int, np.ndarray]) -> dict:
        """Apply the averaged head update, store the clients' embeddings, run spreadout; returns stats."""
        if mean_delta is not None and self.adam is not None:
            self.vec += self.adam.step(mean_delta)
        elif mean_delta is not None:
            step = mean_delta
            if self.momentum is not None:
                self.momentum.mul_(self.cfg.server_momentum).add_(mean_delta)
                step = self.momentum
            self.vec += self.lr * step
        self.W = store_embeddings(self.W, new_embeddings, self.cfg.geometry)
        stats = {}
        if self.cfg.spreadout and len(self.W) > 1:
            c = self.cfg
            stats["spread_before"] = spreadout_value(self.W, c.spread_margin, c.geometry)
            self.W = server_spreadout(self.W, self.spread_steps, self.spread_lr, c.spread_margin, c.geometry)
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
