"""Unlearning methods behind one signature ``method(model, xs, ys, ctx) -> new model``.

Support-only methods (the 1-SHUI setting) see the model and the support images (with their labels);
``*_full`` / ``finetune_retain`` are oracle references that also read the full forget and retain data,
which a real request would not have. BatchNorm statistics stay frozen (eval mode) in every method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import InputError
from .metaloss import MetaLoss, meta_unlearn
from .model import TaskCNN, TrainConfig, clone, train_model


@dataclass
class UnlearnContext:
    """What a method may read besides the model and the support batch."""

    meta: MetaLoss | None = None
    eta: float = 0.1
    x: torch.Tensor | None = None  # all images (float, on device) -- oracle methods only
    y: torch.Tensor | None = None
    forget: np.ndarray | None = None
    retain: np.ndarray | None = None
    seed: int = 0
    lr: float | None = None  # overrides a method's default learning rate (eta for metaunlearn)
    train: TrainConfig | None = None  # the original's training recipe -- retrain_other_seed only


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return F.kl_div(student_logits.log_softmax(1), teacher_logits.softmax(1), reduction="batchmean")


def _anchor(model: TaskCNN, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(((p - ref[k]) ** 2).sum() for k, p in model.named_parameters())  # type: ignore[return-value]


def m_none(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext) -> TaskCNN:
    """Identity baseline ("fine-tune on nothing"): the original model is returned unchanged."""
    return clone(model)


def m_neggrad(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext,
              steps: int = 5, lr: float = 1e-3) -> TaskCNN:
    """Negative gradient: a few SGD steps of gradient *ascent* on the support images' cross-entropy."""
    lr = ctx.lr or lr
    m = clone(model).eval()
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    for _ in range(steps):
        loss = -F.cross_entropy(m(xs), ys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return m


def m_scrub_support(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext,
                    steps: int = 5, lr: float = 5e-4, anchor: float = 1.0) -> TaskCNN:
    """SCRUB-style, support only: max-steps pushing the student away from the original (KL) on the support;
    with no retain data, the min-step is replaced by an L2 anchor to the original weights."""
    lr = ctx.lr or lr
    m = clone(model).eval()
    ref = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        t = model.eval()(xs)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    for _ in range(steps):
        loss = -_kl(m(xs), t) + anchor * _anchor(m, ref)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return m


def _bad_teacher(model: TaskCNN, seed: int) -> TaskCNN:
    torch.manual_seed(10_000 + seed)
    bt = TaskCNN(replace(model.cfg))
    return bt.to(next(model.parameters()).device).eval()


def m_bad_teacher_support(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext,
                          steps: int = 5, lr: float = 5e-4) -> TaskCNN:
    """Bad-Teacher-style, support only: distil a randomly initialised ("incompetent") teacher on the
    support images (no retain data for the competent-teacher half)."""
    lr = ctx.lr or lr
    m = clone(model).eval()
    with torch.no_grad():
        t = _bad_teacher(model, ctx.seed)(xs)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    for _ in range(steps):
        loss = _kl(m(xs), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return m


def m_metaunlearn(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext) -> TaskCNN:
    """MetaUnlearn: one gradient step of the learned MetaLoss on the support images."""
    if ctx.meta is None:
        raise InputError("metaunlearn needs a trained MetaLoss (--metaloss)")
    m = clone(model)
    for p in m.parameters():
        p.requires_grad_(True)
    return meta_unlearn(m, ctx.meta.to(xs.device), xs, ys, eta=ctx.lr or ctx.eta)


def _need_full(ctx: UnlearnContext) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    if ctx.x is None or ctx.y is None or ctx.forget is None or ctx.retain is None:
        raise InputError("oracle methods need the full forget and retain data")
    return ctx.x, ctx.y, ctx.forget, ctx.retain


def m_finetune_retain(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext,
                      epochs: int = 2, lr: float = 5e-4, batch: int = 64) -> TaskCNN:
    """Oracle: fine-tune on the retain data only (catastrophic forgetting of the forget set)."""
    lr = ctx.lr or lr
    x, y, _f, r = _need_full(ctx)
    m = clone(model).eval()
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    rng = np.random.default_rng(ctx.seed)
    for _ in range(epochs):
        perm = rng.permutation(r)
        for s in range(0, len(perm), batch):
            idx = torch.as_tensor(perm[s:s + batch], device=x.device)
            loss = F.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return m


def m_scrub_full(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext,
                 epochs: int = 2, max_epochs: int = 1, lr: float = 5e-4, batch: int = 64,
                 alpha: float = 1.0) -> TaskCNN:
    """Oracle SCRUB: max-steps (KL away from the original) on the full forget set, min-steps (CE + KL to
    the original) on the retain set."""
    lr = ctx.lr or lr
    x, y, f, r = _need_full(ctx)
    m = clone(model).eval()
    teacher = model.eval()
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    rng = np.random.default_rng(ctx.seed)
    for ep in range(epochs):
        if ep < max_epochs:
            for s in range(0, len(f), batch):
                idx = torch.as_tensor(rng.permutation(f)[s:s + batch], device=x.device)
                with torch.no_grad():
                    t = teacher(x[idx])
                loss = -_kl(m(x[idx]), t)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        perm = rng.permutation(r)
        for s in range(0, len(perm), batch):
            idx = torch.as_tensor(perm[s:s + batch], device=x.device)
            with torch.no_grad():
                t = teacher(x[idx])
            out = m(x[idx])
            loss = F.cross_entropy(out, y[idx]) + alpha * _kl(out, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return m


def m_bad_teacher_full(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext,
                       lr: float = 5e-4, batch: int = 64, retain_frac: float = 0.3) -> TaskCNN:
    """Oracle Bad Teacher: one epoch over forget + a retain sample, distilling a random teacher on forget
    images and the original (competent) model on retain images."""
    lr = ctx.lr or lr
    x, y, f, r = _need_full(ctx)
    rng = np.random.default_rng(ctx.seed)
    r_s = rng.choice(r, size=max(1, int(retain_frac * len(r))), replace=False)
    pool = np.concatenate([f, r_s])
    is_f = np.r_[np.ones(len(f), bool), np.zeros(len(r_s), bool)]
    bad, good = _bad_teacher(model, ctx.seed), model.eval()
    m = clone(model).eval()
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    order = rng.permutation(len(pool))
    for s in range(0, len(order), batch):
        o = order[s:s + batch]
        idx = torch.as_tensor(pool[o], device=x.device)
        fm = torch.as_tensor(is_f[o], device=x.device)
        with torch.no_grad():
            t = torch.where(fm[:, None], bad(x[idx]), good(x[idx]))
        loss = _kl(m(x[idx]), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return m


#: seed offset of retrain_other_seed's training run (the reference itself is trained with seed + 1 + request seed)
OTHER_SEED_OFFSET = 50_000


def m_retrain_other_seed(model: TaskCNN, xs: torch.Tensor, ys: torch.Tensor, ctx: UnlearnContext) -> TaskCNN:
    """Reference row, not a method: a second model retrained from scratch on the retain set, with the original's
    recipe and another seed. Its ToW against the reference retraining is the ceiling any method can reach, since
    two retrainings already differ by their seed (a person near a class boundary is right in one, wrong in the
    other)."""
    x, y, _f, r = _need_full(ctx)
    if ctx.train is None:
        raise InputError("retrain_other_seed needs the training recipe")
    cfg = replace(ctx.train, seed=ctx.train.seed + OTHER_SEED_OFFSET + ctx.seed)
    m, _ = train_model(x[torch.as_tensor(r, device=x.device)], y[torch.as_tensor(r, device=y.device)].cpu().numpy(),
                       cfg, model.cfg, desc="retrain (other seed)", device=str(x.device))
    return m.eval()


Method = Callable[[TaskCNN, torch.Tensor, torch.Tensor, UnlearnContext], TaskCNN]

#: name -> (function, uses full data?)
METHODS: dict[str, tuple[Method, bool]] = {
    "none": (m_none, False),
    "neggrad": (m_neggrad, False),
    "scrub_support": (m_scrub_support, False),
    "bad_teacher_support": (m_bad_teacher_support, False),
    "metaunlearn": (m_metaunlearn, False),
    "finetune_retain": (m_finetune_retain, True),
    "scrub_full": (m_scrub_full, True),
    "bad_teacher_full": (m_bad_teacher_full, True),
    "retrain_other_seed": (m_retrain_other_seed, True),
}
SUPPORT_ONLY = [k for k, (_f, full) in METHODS.items() if not full]


#: learning-rate grid (step size for metaunlearn, as a multiple of its meta-training eta) searched on a
#: separate tuning request when ``EvalConfig.tune`` is on
LR_GRID: dict[str, tuple[float, ...]] = {
    "neggrad": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
    "scrub_support": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
    "bad_teacher_support": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
    "metaunlearn": (0.25, 0.5, 1.0, 2.0, 4.0),
    "finetune_retain": (1e-4, 5e-4, 2e-3),
    "scrub_full": (1e-4, 5e-4, 2e-3),
    "bad_teacher_full": (1e-4, 5e-4, 2e-3),
}

#: wider grids for the "mlp" head on embedder descriptors (second task), whose useful step sizes differ from the
#: CNN's by orders of magnitude (the CNN grids above stay as they were so the first task's results reproduce)
LR_GRID_MLP: dict[str, tuple[float, ...]] = {
    **LR_GRID,
    "neggrad": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1.0),
    "scrub_support": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "bad_teacher_support": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "metaunlearn": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
}


def lr_grid(model: TaskCNN) -> dict[str, tuple[float, ...]]:
    """The learning-rate grids that fit ``model``'s kind."""
    return LR_GRID_MLP if model.cfg.kind == "mlp" else LR_GRID


def get_method(name: str) -> tuple[Method, bool]:
    """Look up a method by name (InputError listing the valid names otherwise)."""
    if name not in METHODS:
        raise InputError(f"unknown unlearning method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]
