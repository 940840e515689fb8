"""The FedFace client: local training of the head and its own class embedding, clipping and DP noise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .losses import (
    centred_cosine_loss,
    get_geometry,
    negative_hinge_cosine_loss,
    positive_loss,
    proxy_softmax_loss,
)
from .params import load_head_vector
from .privacy import noise_generator

#: the client's positive terms (``ClientConfig.positive``)
POSITIVES = ("geometry", "centred", "both")


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
    #: hard negatives (FedGC/FedFR idea): the server sends the ``negatives`` class embeddings of other clients
    #: nearest to this client's; the client adds ``neg_weight`` x a hinge that keeps its features
    #: ``neg_margin`` away from them (distance, euclidean) or below cosine ``neg_margin`` (cosine). 0 = off
    negatives: int = 0
    neg_margin: float = 0.7
    neg_weight: float = 1.0
    #: how the negatives enter: "hinge" (keep features neg_margin away in the geometry), "cosine" (keep their
    #: cosine to the negatives below neg_margin whatever the geometry: sees a shift common to all features, which
    #: a Euclidean hinge does not) or "softmax" (a softmax over the own and the negatives' class embeddings with
    #: logits -neg_scale x squared distance, or neg_scale x cosine)
    neg_loss: str = "hinge"
    neg_scale: float = 10.0
    #: public negatives (FedFR's idea): faces of a public set without identity labels that every client holds;
    #: each step draws ``public_batch`` of them, runs them through the *current* head and keeps the client's
    #: features ``neg_margin`` away (image-level negatives, as the centralised metric loss has). 0 = off
    public_batch: int = 0
    #: the positive term: "geometry" (the geometry's hinge), "centred" (a cosine hinge around the server's
    #: centre, the mean of its class-embedding bank: ``losses.centred_cosine_loss``; blind to a shrink towards
    #: the centre, so it cannot be met by the common drift) or "both" (the geometry's hinge + centred_weight x
    #: the centred one)
    positive: str = "geometry"
    centred_margin: float = 0.85
    centred_weight: float = 1.0


@dataclass
class ClientUpdate:
    """What a client sends back: NO images and NO per-image features, only aggregate quantities."""

    delta: torch.Tensor  # flat head update (new - received), float32
    embedding: np.ndarray  # the client's own (updated) class embedding, unit norm, (D,)
    num_examples: int
    loss: float
    clipped: bool = False
    meta: dict = field(default_factory=dict)




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
                  reference: np.ndarray | None = None, negatives: np.ndarray | None = None,
                  public_feats: torch.Tensor | None = None, centre: np.ndarray | None = None) -> ClientUpdate:
    """One FedFace client round: load the global head, train head + own class embedding for
    ``cfg.local_steps`` SGD steps on the positive-only squared-hinge cosine loss, return the update.

    ``head`` is used as scratch space (its parameters are overwritten). ``feats`` are this client's trunk
    features (never leave the client). ``seed`` drives batch sampling only; DP noise comes from the OS CSPRNG
    (``privacy.noise_generator``). ``reference`` is the embedding the server holds (default ``embedding``): the
    embedding update is taken against it, so a first upload from a server's random start is clipped and
    noised like any other update. ``negatives`` (K, D): other classes' embeddings from the server's bank (hard
    negatives; used only when ``cfg.negatives > 0``). ``public_feats``: trunk features of the public negative
    set (used only when ``cfg.public_batch > 0``). ``centre``: the server's centre of the class embeddings
    (needed when ``cfg.positive`` is "centred" or "both").
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
    geo = get_geometry(cfg.geometry)
    if cfg.positive not in POSITIVES:
        raise ValueError(f"unknown positive term {cfg.positive!r}; choose one of {POSITIVES}")
    c = None
    if cfg.positive != "geometry":
        if centre is None:
            raise ValueError(f"positive={cfg.positive!r} needs the server's centre of the class embeddings")
        c = torch.as_tensor(np.asarray(centre, dtype=np.float32))
    negs = None
    if negatives is not None and cfg.negatives > 0 and len(negatives):
        negs = torch.as_tensor(np.asarray(negatives, dtype=np.float32))
    for _ in range(max(1, int(cfg.local_steps))):
        if n > cfg.batch_size:
            idx = torch.randperm(n, generator=gen)[: cfg.batch_size]
            xb = feats[idx]
        else:
            xb = feats
        opt.zero_grad(set_to_none=True)
        fb = head(xb)
        if c is None:
            loss = positive_loss(fb, w, cfg.margin, cfg.geometry)
        else:
            loss = cfg.centred_weight * centred_cosine_loss(fb, w, c, cfg.centred_margin)
            if cfg.positive == "both":
                loss = loss + positive_loss(fb, w, cfg.margin, cfg.geometry)
        if negs is not None and cfg.neg_loss == "softmax":
            loss = loss + cfg.neg_weight * proxy_softmax_loss(fb, w, negs, cfg.neg_scale, cfg.geometry)
        elif negs is not None and cfg.neg_loss == "cosine":  # angle-based whatever the geometry
            loss = loss + cfg.neg_weight * negative_hinge_cosine_loss(fb, negs, cfg.neg_margin)
        elif negs is not None:
            loss = loss + cfg.neg_weight * geo.negative_loss(fb, negs, cfg.neg_margin)
        if public_feats is not None and cfg.public_batch > 0 and len(public_feats):
            pidx = torch.randperm(len(public_feats), generator=gen)[: cfg.public_batch]
            loss = loss + cfg.neg_weight * geo.negative_loss(fb, head(public_feats[pidx]), cfg.neg_margin)
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
    ref = w0 if reference is None else torch.as_tensor(np.asarray(reference, dtype=np.float32))
    emb_delta = geo.client_embedding(w.detach()) - ref
    delta, emb_delta, clipped = privatize(delta, emb_delta, cfg.dp_clip, cfg.dp_noise, noise_generator())
    emb = geo.client_embedding(ref + emb_delta)
    emb = emb.numpy().astype(np.float32)
    return ClientUpdate(delta=delta, embedding=emb, num_examples=n, loss=loss_v, clipped=clipped)
