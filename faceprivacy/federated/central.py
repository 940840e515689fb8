"""The centralised reference: all images in one place (the upper bound FedFace is compared with)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .losses import embed_features


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
