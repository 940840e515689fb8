"""MetaUnlearn: a learned loss (MetaLoss) whose single gradient step on the support images makes the
model behave on the *whole* forget identity as if it had never been trained on it.

Meta-training happens while the training data still exists: simulated forget requests are drawn from
training identities (their held-out support images play the support set), and the MetaLoss is trained so
that after ``theta_u = theta - eta * grad M(S)`` the loss on the simulated forget images matches the
original model's loss on unseen (validation) identities, while retain and validation losses stay put.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..core.errors import InputError, ModelLoadError
from ..core.fileio import atomic_path
from ..core.progress import progress
from .model import ModelConfig, TaskCNN, TrainConfig, predict, to_float, train_model


class MetaLoss(nn.Module):
    """MLP scoring one sample: Linear-LN-Linear-GELU-Dropout (width 512), LN-Linear-Softplus -> scalar.
    Input: log_softmax(logits) | pooled CNN feature | one-hot target. (The paper feeds sigmoid(logits) of a
    multi-label head, the ViT feature, a 64-d identity embedding and the target; log-probabilities are used
    here because softmax probabilities of a memorised sample are saturated and pass almost no gradient.)"""

    def __init__(self, n_classes: int, feat_dim: int, width: int = 512, dropout: float = 0.5,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.n_classes, self.feat_dim, self.width = n_classes, feat_dim, width
        #: "mean" over the support photos (first task) or "sum" (each person's photo gets the same step,
        #: whatever the number of people in the request)
        self.reduction = reduction
        d = 2 * n_classes + feat_dim
        self.net = nn.Sequential(nn.Linear(d, width), nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                 nn.Dropout(dropout), nn.LayerNorm(width), nn.Linear(width, 1), nn.Softplus())
        #: which task-model parameters the learned step moves: "all", or "weights" (biases stay: a bias shift
        #: moves every person's logits alike, the main cause of lost test accuracy on the second task)
        self.update = "all"
        #: per Linear layer of the task model, orthonormal directions (in_dim, r) removed from the weight step:
        #: the top principal directions of that layer's inputs on the training data, so the step changes the
        #: layer's output little on a typical person and mostly along what is specific to the support photos
        self.proj: dict[str, torch.Tensor] = {}
        #: per Linear layer, a symmetric (in_dim, in_dim) preconditioner applied to the weight step after the
        #: projection, ``(M / mean eig + lam I)^-1 (1 + lam)`` with M the second moment of the layer's inputs on the
        #: training data: the step changes a layer's output on another input x' by ``delta * a_s^T P x'``, a
        #: whitened (Mahalanobis-like) similarity to the support activation a_s, so it moves the support person's
        #: other photos more and people who merely share common directions less (empty = off)
        self.precond: dict[str, torch.Tensor] = {}
        #: request-time step = eta * (n_support / k_ref) ** k_power (0 = the same step whatever the number of
        #: people; with the mean over support photos each person's share of the step shrinks as 1/K)
        self.k_power, self.k_ref = 0.0, 5
        #: learned-loss steps applied at request time (the number it was meta-trained with, unrolled)
        self.steps = 1
        #: request-time step rule from the support photos alone, ``(C, G)`` or None (the fixed step): each
        #: request's step is multiplied by ``clip((C / ce1) ** G, 0.5, 1.7)``, ce1 the support photos' mean
        #: cross-entropy after the fixed step (a person whose support photo is already far from the model after
        #: the fixed step gets a smaller one, and the reverse); see :func:`support_ce_multiplier`
        self.support_ce: tuple[float, float] | None = None

    def forward(self, logits: torch.Tensor, feats: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Learned loss over the batch (mean or sum of the per-sample scores)."""
        inp = torch.cat([logits.log_softmax(1), feats, F.one_hot(y, self.n_classes).to(logits.dtype)], dim=1)
        out = self.net(inp)
        return out.sum() if self.reduction == "sum" else out.mean()


@dataclass
class MetaConfig:
    """Meta-training recipe (AdamW amsgrad as in the paper, whose lr is 1e-4 and eta 0.1 for a ViT; the
    defaults here were chosen on the small CNN, see docs/unlearn.md)."""

    iters: int = 600
    eta: float = 1.0
    lr: float = 1e-3
    k_max: int = 20
    batch: int = 64
    retain_weight: float = 1.0
    val_weight: float = 1.0
    seed: int = 0
    #: "ce": match the forget-set cross-entropies themselves (first task); "logce": match their logarithms,
    #: so the outer gradient does not vanish on a saturated model whose forget loss is ~0.005; "oof": match the
    #: forget-set predictions to out-of-fold models' (:func:`out_of_fold_probs`) and keep retain predictions
    #: (KL to the original) -- the outer loss aimed at the retrained model's behaviour (second task)
    outer: str = "ce"
    #: dropout inside the MetaLoss while meta-training (0.5 as in the paper for the first task). It is off at
    #: request time, and on the second task's head the train-mode step was several times larger than the
    #: eval-mode one, so the second task meta-trains without it
    dropout: float = 0.5
    #: weight of KL(original || unlearned) on validation (unseen) people: a step that forgets one person
    #: should leave predictions on people the model never saw unchanged (0 = off, the first task's setting)
    val_kl: float = 0.0
    #: MetaLoss reduction over the support photos ("mean" or "sum")
    reduction: str = "mean"
    #: "all" task-model parameters move, or only the "weights" (no bias step; see MetaLoss.update)
    update: str = "all"
    #: remove the top ``proj_rank`` principal input directions of every Linear layer from the weight step
    #: (0 = off; see MetaLoss.proj)
    proj_rank: int = 0
    #: step-size exponent in the number of support photos, used in meta-training and at request time
    k_power: float = 0.0
    k_ref: int = 5
    #: exponent stored with the MetaLoss for request time (None = ``k_power``); chosen on tuning requests
    request_k_power: float | None = None
    #: lambda of the input preconditioner of every Linear layer's weight step (0 = off; see MetaLoss.precond)
    precond: float = 0.0
    #: identity groups for ``outer="oof"``: more groups = each out-of-fold model misses fewer people, closer to
    #: a retraining without K people
    oof_folds: int = 5
    #: smallest simulated request (K drawn uniformly from k_min..k_max)
    k_min: int = 1
    #: inner steps of the learned loss, unrolled (differentiated through) in meta-training and applied at
    #: request time (stored with the MetaLoss)
    unroll: int = 1


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.named_parameters()}


def inner_step(model: TaskCNN, meta: MetaLoss, xs: torch.Tensor, ys: torch.Tensor, eta: float,
               create_graph: bool, params: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Parameters after one step of the learned loss on the support batch (differentiable if asked), from the
    model's own parameters or from ``params`` (a previous, unrolled step)."""
    params = _params(model) if params is None else params
    buffers = {k: v for k, v in model.named_buffers()}
    f = functional_call(_FeatureWrapper(model), {**{f"m.{k}": v for k, v in params.items()},
                                                 **{f"m.{k}": v for k, v in buffers.items()}}, (xs,))
    logits, feat = f
    loss = meta(logits, feat, ys)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
    eta = eta * (len(xs) / meta.k_ref) ** meta.k_power
    out = {}
    for (k, p), g in zip(params.items(), grads, strict=True):
        layer, kind = k.rsplit(".", 1) if "." in k else ("", k)
        if kind == "bias" and meta.update == "weights":
            out[k] = p
            continue
        if kind == "weight" and layer in meta.proj and g.dim() == 2:
            u = meta.proj[layer].to(g)
            g = g - (g @ u) @ u.T
        if kind == "weight" and layer in meta.precond and g.dim() == 2:
            g = g @ meta.precond[layer].to(g)
        out[k] = p - eta * g
    return out


@torch.no_grad()
def input_projectors(model: TaskCNN, x: torch.Tensor, rank: int, batch: int = 2048) -> dict[str, torch.Tensor]:
    """Top-``rank`` eigenvectors of the (uncentred) second moment of each Linear layer's inputs over ``x``:
    the directions every person's activations share (the first is essentially their mean)."""
    out = {}
    for n, m in _input_moments(model, x, batch).items():
        _ev, u = torch.linalg.eigh(m)
        out[n] = u.flip(1)[:, :min(rank, u.shape[1])].float().contiguous()
    return out


@torch.no_grad()
def _input_moments(model: TaskCNN, x: torch.Tensor, batch: int) -> dict[str, torch.Tensor]:
    """The (uncentred) second moment, float64, of each Linear layer's inputs over ``x``."""
    acts: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda _m, inp, _o, n=n: acts.setdefault(n, []).append(inp[0].detach()))
             for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        for s in range(0, len(x), batch):
            model(x[s:s + batch])
    finally:
        for h in hooks:
            h.remove()
    out = {}
    for n, a in acts.items():
        a = torch.cat(a).double()
        out[n] = a.T @ a / len(a)
    return out


@torch.no_grad()
def input_preconditioners(model: TaskCNN, x: torch.Tensor, lam: float, batch: int = 2048) -> dict[str, torch.Tensor]:
    """``(M / mean eigenvalue + lam I)^-1 (1 + lam)`` per Linear layer, M the (uncentred) second moment of the
    layer's inputs over ``x`` (see :attr:`MetaLoss.precond`)."""
    if lam <= 0:
        raise InputError("the preconditioner's lambda must be > 0")
    out = {}
    for n, m in _input_moments(model, x, batch).items():
        m = m / (torch.trace(m) / len(m))
        eye = torch.eye(len(m), dtype=m.dtype)
        out[n] = (torch.linalg.inv(m + lam * eye) * (1.0 + lam)).float().contiguous()
    return out


class _FeatureWrapper(nn.Module):
    """Makes ``forward_both`` callable through ``functional_call``."""

    def __init__(self, m: TaskCNN) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.m.forward_both(x)


def _logits(model: TaskCNN, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    buffers = {k: v for k, v in model.named_buffers()}
    return functional_call(model, {**params, **buffers}, (x,))


def out_of_fold_probs(x: torch.Tensor, y: np.ndarray, ident: np.ndarray, train_fit: np.ndarray,
                      train_cfg: TrainConfig, model_cfg: ModelConfig | None, folds: int = 5, seed: int = 0,
                      device: str = "cpu") -> torch.Tensor:
    """Class probabilities that models which never saw a person give that person's photos: the training
    identities are split into ``folds`` groups, one model per group is trained (same recipe) without it and
    predicts its photos. Rows of people outside ``train_fit`` stay zero. Meta-training with ``outer="oof"``
    matches the unlearned model's forget-set predictions to these, the stand-in for a retrained model."""
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.unique(ident[train_fit]))
    if folds < 2 or len(ids) < folds:
        raise InputError(f"need at least {folds} >= 2 training identities for out-of-fold predictions")
    out: torch.Tensor | None = None
    for f in range(folds):
        held = np.isin(ident[train_fit], ids[f::folds])
        m, _ = train_model(x[train_fit[~held]], y[train_fit[~held]], replace(train_cfg, seed=train_cfg.seed + 300 + f),
                           model_cfg, desc=f"out-of-fold model {f + 1}/{folds}", device=device)
        rows = np.flatnonzero(np.isin(ident, ids[f::folds]))
        probs = torch.softmax(predict(m, x[torch.as_tensor(rows, device=x.device)]), 1).cpu()
        if out is None:
            out = torch.zeros(len(ident), probs.shape[1])
        out[torch.as_tensor(rows)] = probs
    assert out is not None
    return out


def meta_train(model: TaskCNN, x: np.ndarray | torch.Tensor, y: np.ndarray, ident: np.ndarray,
               train_fit: np.ndarray, supports: dict[int, int], val: np.ndarray,
               cfg: MetaConfig | None = None, device: str = "cpu",
               oof: torch.Tensor | None = None) -> tuple[MetaLoss, dict]:
    """Train a MetaLoss for ``model`` (kept frozen, eval mode) on simulated forget requests drawn from the
    training identities that have a held-out support image; returns (metaloss, log). ``outer="oof"`` needs
    ``oof``: per-image class probabilities of models that never saw the image's person (see
    :func:`out_of_fold_probs`), the stand-in for what a retrained model predicts on the forget set."""
    cfg = cfg or MetaConfig()
    if cfg.outer == "oof" and oof is None:
        raise InputError("outer='oof' needs out-of-fold probabilities (oof=...)")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    xt = to_float(x).to(device) if not isinstance(x, torch.Tensor) or x.dtype == torch.uint8 else x.to(device)
    yt = torch.as_tensor(y, dtype=torch.long, device=device)
    meta = MetaLoss(model.cfg.n_classes, model.feature_dim, dropout=cfg.dropout, reduction=cfg.reduction).to(device)
    meta.update, meta.k_power, meta.k_ref, meta.steps = cfg.update, cfg.k_power, cfg.k_ref, max(1, cfg.unroll)
    if cfg.proj_rank:
        meta.proj = input_projectors(model, xt[np.r_[train_fit, val]], cfg.proj_rank)
    if cfg.precond:
        meta.precond = input_preconditioners(model, xt[np.r_[train_fit, val]], cfg.precond)
    opt = torch.optim.AdamW(meta.parameters(), lr=cfg.lr, amsgrad=True)
    ids = np.asarray(sorted(supports))
    fit_ident = ident[train_fit]
    beta = {"retain": cfg.retain_weight, "val": cfg.val_weight}
    params0 = {k: v.detach() for k, v in _params(model).items()}
    t0 = time.perf_counter()
    hist = []
    meta.train()
    for _it in progress(range(cfg.iters), desc="meta-train"):
        k = int(rng.integers(min(cfg.k_min, cfg.k_max), min(cfg.k_max, len(ids) - 1) + 1))
        fid = rng.choice(ids, size=k, replace=False)
        s_idx = np.asarray([supports[int(i)] for i in fid])
        in_f = np.isin(fit_ident, fid)
        f_pool, r_pool = train_fit[in_f], train_fit[~in_f]
        f_idx = rng.choice(f_pool, size=min(cfg.batch, len(f_pool)), replace=False)
        r_idx = rng.choice(r_pool, size=min(cfg.batch, len(r_pool)), replace=False)
        v_idx = rng.choice(val, size=min(cfg.batch, len(val)), replace=False)
        new = None
        for _s in range(max(1, cfg.unroll)):
            new = inner_step(model, meta, xt[s_idx], yt[s_idx], cfg.eta, create_graph=True, params=new)
        assert new is not None
        with torch.no_grad():
            v0_logits = _logits(model, params0, xt[v_idx])
            v0 = F.cross_entropy(v0_logits, yt[v_idx])
            r0_logits = _logits(model, params0, xt[r_idx])
            r0 = F.cross_entropy(r0_logits, yt[r_idx])
        f_logits = _logits(model, new, xt[f_idx])
        lf = F.cross_entropy(f_logits, yt[f_idx])
        r_logits = _logits(model, new, xt[r_idx])
        lr_ = F.cross_entropy(r_logits, yt[r_idx])
        v_logits = _logits(model, new, xt[v_idx])
        lv = F.cross_entropy(v_logits, yt[v_idx])
        if cfg.outer == "oof":
            outer = (F.kl_div(f_logits.log_softmax(1), oof[f_idx].to(f_logits), reduction="batchmean")
                     + beta["retain"] * F.kl_div(r_logits.log_softmax(1), r0_logits.log_softmax(1),
                                                 log_target=True, reduction="batchmean")
                     + beta["val"] * F.relu(lv - v0))
        elif cfg.outer == "logce":
            outer = (F.smooth_l1_loss(lf.clamp_min(1e-6).log(), v0.clamp_min(1e-6).log())
                     + beta["retain"] * F.relu(lr_.clamp_min(1e-6).log() - r0.clamp_min(1e-6).log())
                     + beta["val"] * F.relu(lv - v0))
        else:
            outer = F.smooth_l1_loss(lf, v0) + beta["retain"] * F.relu(lr_ - r0) + beta["val"] * F.relu(lv - v0)
        if cfg.val_kl:
            outer = outer + cfg.val_kl * F.kl_div(v_logits.log_softmax(1), v0_logits.log_softmax(1),
                                                  log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        outer.backward()
        opt.step()
        hist.append([float(outer.detach()), float(lf.detach()), float(v0), float(lr_.detach()), float(r0)])
    meta.eval()
    if cfg.request_k_power is not None:
        meta.k_power = cfg.request_k_power
    for p in model.parameters():
        p.grad = None
    h = np.asarray(hist) if hist else np.zeros((0, 5))
    tail = h[-max(1, len(h) // 10):].mean(0).tolist() if len(h) else []
    return meta, {"iters": cfg.iters, "wall_s": time.perf_counter() - t0, "config": asdict(cfg),
                  "last10pct_outer_forget_val0_retain_retain0": tail}


#: range of the per-request multiplier of :attr:`MetaLoss.support_ce`
SUPPORT_CE_RANGE = (0.5, 1.7)


def support_ce_rule(value: tuple[float, float] | list[float]) -> tuple[float, float] | None:
    """A requested ``(C, G)`` step rule as :attr:`MetaLoss.support_ce` stores it: G = 0 switches it off (None)."""
    c, g = float(value[0]), float(value[1])
    return None if g == 0 else (c, g)


def support_ce_multiplier(model: TaskCNN, meta: MetaLoss, xs: torch.Tensor, ys: torch.Tensor, eta: float,
                          target: float, gamma: float, steps: int | None = None) -> float:
    """Per-request step multiplier ``clip((target / ce1) ** gamma)`` from the support photos alone, ce1 their
    mean cross-entropy after the fixed step ``eta`` (the model is not changed)."""
    new = None
    for _ in range(meta.steps if steps is None else steps):
        new = inner_step(model, meta, xs, ys, eta, create_graph=False, params=new)
        new = {k: v.detach().requires_grad_(True) for k, v in new.items()}
    with torch.no_grad():
        ce1 = float(F.cross_entropy(_logits(model, new, xs), ys)) if new is not None else float("nan")
    lo, hi = SUPPORT_CE_RANGE
    return float(min(hi, max(lo, (target / max(ce1, 1e-6)) ** gamma)))


def meta_unlearn(model: TaskCNN, meta: MetaLoss, xs: torch.Tensor, ys: torch.Tensor, eta: float = 0.1,
                 steps: int | None = None) -> TaskCNN:
    """Apply the learned loss to the support images: ``steps`` plain gradient steps of size ``eta``
    (default: the number the MetaLoss was meta-trained with, one as in the paper unless unrolled), the step
    scaled per request by :attr:`MetaLoss.support_ce` when set; returns the updated model (in place, eval
    mode)."""
    model.eval()
    meta.eval()
    if meta.support_ce is not None:
        eta = eta * support_ce_multiplier(model, meta, xs, ys, eta, *meta.support_ce, steps=steps)
    for _ in range(meta.steps if steps is None else steps):
        new = inner_step(model, meta, xs, ys, eta, create_graph=False)
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(new[k])
    return model


def save_metaloss(meta: MetaLoss, path: str | Path, extra: dict | None = None) -> Path:
    """Save a MetaLoss state_dict with its shape (small file, atomic)."""
    blob = {"format": "faceprivacy-unlearn-metaloss-1", "n_classes": meta.n_classes, "feat_dim": meta.feat_dim,
            "width": meta.width, "reduction": meta.reduction, "update": meta.update, "k_power": meta.k_power,
            "k_ref": meta.k_ref, "steps": meta.steps,
            "support_ce": list(meta.support_ce) if meta.support_ce is not None else None, "proj": {k: v.detach().cpu() for k, v in meta.proj.items()},
            "precond": {k: v.detach().cpu() for k, v in meta.precond.items()},
            "state_dict": {k: v.detach().cpu() for k, v in meta.state_dict().items()},
            "extra": extra or {}}
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return Path(path)


def load_metaloss(path: str | Path) -> tuple[MetaLoss, dict]:
    """Load a MetaLoss saved by :func:`save_metaloss` -> (module, extra)."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"MetaLoss file not found: {p}")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
        meta = MetaLoss(int(blob["n_classes"]), int(blob["feat_dim"]), int(blob["width"]),
                        reduction=str(blob.get("reduction", "mean")))
        meta.load_state_dict(blob["state_dict"])
        meta.update = str(blob.get("update", "all"))
        meta.k_power, meta.k_ref = float(blob.get("k_power", 0.0)), int(blob.get("k_ref", 5))
        meta.steps = int(blob.get("steps", 1))
        sc = blob.get("support_ce")
        meta.support_ce = (float(sc[0]), float(sc[1])) if sc is not None else None
        meta.proj = {str(k): v.float() for k, v in (blob.get("proj") or {}).items()}
        meta.precond = {str(k): v.float() for k, v in (blob.get("precond") or {}).items()}
    except Exception as e:
        raise ModelLoadError(f"{p} is not a faceprivacy MetaLoss file: {e}") from e
    meta.eval()
    return meta, dict(blob.get("extra") or {})
