"""Attribute probes: how much non-identity information can be predicted from embeddings alone.

For each attribute a ridge (or logistic) probe and a small MLP probe are trained on the embeddings of
training identities; the one with the better validation score (validation identities) is scored on
held-out test identities, next to the trivial predictor (training mean / majority class).

``lift`` = 1 - probe_error / trivial_error: the fraction of the trivial predictor's error that the
embedding removes (0 = no leakage, 1 = perfect prediction; negative = worse than trivial).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .attributes import (
    HIST_BINS,
    MOUTH_OPEN_GAP,
    SMILE_WIDTH,
    Attributes,
    emd_hist,
    mouth_gap,
    mouth_width,
)


@dataclass(frozen=True)
class AttributeSpec:
    """How one attribute is turned into a target vector and scored (lower error = better)."""

    name: str
    kind: str                       # "regression" | "classification"
    unit: str
    target: Callable[[Attributes], np.ndarray]
    error: Callable[[np.ndarray, np.ndarray], float]   # (pred, truth) -> mean error
    postprocess: Callable[[np.ndarray], np.ndarray] | None = None
    valid: Callable[[Attributes], np.ndarray] | None = None


def _lm_err(p: np.ndarray, t: np.ndarray) -> float:
    return float(np.linalg.norm(p.reshape(-1, 68, 2) - t.reshape(-1, 68, 2), axis=-1).mean())


def _mae(p: np.ndarray, t: np.ndarray) -> float:
    return float(np.abs(np.asarray(p, float) - np.asarray(t, float)).mean())


def _hist_post(p: np.ndarray) -> np.ndarray:
    h = np.clip(p.reshape(-1, 3, HIST_BINS), 0, None) + 1e-8
    return (h / h.sum(-1, keepdims=True)).reshape(len(p), -1)


def _emd_err(p: np.ndarray, t: np.ndarray) -> float:
    return float(emd_hist(p.reshape(-1, 3, HIST_BINS), t.reshape(-1, 3, HIST_BINS)).mean())


def _cls_err(p: np.ndarray, t: np.ndarray) -> float:
    return float((np.asarray(p).ravel() != np.asarray(t).ravel()).mean())


ATTRIBUTES: dict[str, AttributeSpec] = {
    "landmarks": AttributeSpec("landmarks", "regression", "mean point error (px of 112 crop)",
                               lambda a: a.landmarks.reshape(len(a.landmarks), -1), _lm_err),
    "yaw": AttributeSpec("yaw", "regression", "MAE (deg)", lambda a: a.pose[:, :1], _mae),
    "pitch": AttributeSpec("pitch", "regression", "MAE (deg)", lambda a: a.pose[:, 1:2], _mae),
    "roll": AttributeSpec("roll", "regression", "MAE (deg)", lambda a: a.pose[:, 2:3], _mae),
    "colour_hist": AttributeSpec("colour_hist", "regression", "EMD (grey levels)",
                                 lambda a: a.hist.reshape(len(a.hist), -1), _emd_err, _hist_post),
    "illumination": AttributeSpec("illumination", "regression", "MAE (grey levels)",
                                  lambda a: a.illum[:, None], _mae),
    "background": AttributeSpec("background", "regression", "MAE per channel (grey levels)",
                                lambda a: a.background, _mae),
    "age": AttributeSpec("age", "regression", "MAE (years)", lambda a: a.age[:, None], _mae,
                         valid=lambda a: np.isfinite(a.age)),
    "gender": AttributeSpec("gender", "classification", "error rate", lambda a: a.gender, _cls_err,
                            valid=lambda a: a.gender >= 0),
    "mouth_open": AttributeSpec("mouth_open", "classification", "error rate",
                                lambda a: (mouth_gap(a.landmarks) > MOUTH_OPEN_GAP).astype(int), _cls_err),
    "smile": AttributeSpec("smile", "classification", "error rate",
                           lambda a: (mouth_width(a.landmarks) > SMILE_WIDTH).astype(int), _cls_err),
}


def _standardize(x_tr: np.ndarray, *xs: np.ndarray) -> list[np.ndarray]:
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    return [(x_tr - mu) / sd] + [(x - mu) / sd for x in xs]


def _fit_linear(kind: str, x: np.ndarray, y: np.ndarray, alpha: float):
    from sklearn.linear_model import LogisticRegression, Ridge

    if kind == "classification":
        return LogisticRegression(C=1.0 / alpha, max_iter=2000).fit(x, y)
    return Ridge(alpha=alpha).fit(x, y)


def _fit_mlp(kind: str, x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, seed: int,
             weight_decay: float = 1e-3):
    """A 2-layer MLP (torch, full-batch Adam) returning a predict function on numpy input."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: OpenMP overhead dominates, and it spins on busy machines
    try:
        return _fit_mlp_1t(torch, kind, x, y, hidden, epochs, seed, weight_decay)
    finally:
        torch.set_num_threads(threads)


def _fit_mlp_1t(torch, kind: str, x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, seed: int,
                weight_decay: float):
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    if kind == "classification":
        classes = np.unique(y)
        yt = torch.as_tensor(np.searchsorted(classes, y), dtype=torch.long)
        out_dim = len(classes)
    else:
        ymu, ysd = y.mean(0), y.std(0) + 1e-6
        yt = torch.as_tensor((y - ymu) / ysd, dtype=torch.float32)
        out_dim = y.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(hidden, out_dim))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=weight_decay)
    bs = 256
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), bs):
            b = perm[i:i + bs]
            out = net(xt[b])
            if kind == "classification":
                loss = torch.nn.functional.cross_entropy(out, yt[b])
            else:
                loss = torch.nn.functional.smooth_l1_loss(out, yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def predict(xn: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            o = net(torch.as_tensor(xn, dtype=torch.float32)).numpy()
        if kind == "classification":
            return classes[o.argmax(1)]
        return o * ysd + ymu

    return predict


def _lift_ci(spec: AttributeSpec, pred: np.ndarray, triv: np.ndarray, truth: np.ndarray, groups: np.ndarray,
             seed: int, n_boot: int = 500) -> tuple[list[float], list[float]]:
    """95 % identity-bootstrap intervals of (lift, probe error): test rows of one person move together."""
    from ..core.metrics import bootstrap_ci

    def err(p: np.ndarray, rows: np.ndarray) -> float:
        return spec.error(p[rows], truth[rows])

    def lift(rows: np.ndarray) -> float:
        r = rows.astype(int)
        t = err(triv, r)
        return 1.0 - err(pred, r) / t if t > 0 else 0.0

    rows = np.arange(len(truth), dtype=np.float64)
    _, lo, hi = bootstrap_ci(rows, groups, stat=lift, n_boot=n_boot, seed=seed)
    _, elo, ehi = bootstrap_ci(rows, groups, stat=lambda r: err(pred, r.astype(int)), n_boot=n_boot, seed=seed)
    return [lo, hi], [elo, ehi]


def run_probes(emb_train: np.ndarray, attr_train: Attributes, emb_val: np.ndarray, attr_val: Attributes,
               emb_test: np.ndarray, attr_test: Attributes, attributes: list[str] | None = None,
               mlp_hidden: int = 256, mlp_epochs: int = 60, alphas: tuple[float, ...] = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5),
               seed: int = 0, test_groups: np.ndarray | None = None) -> list[dict]:
    """Train probes on train identities, select on val identities, score on test identities.

    Returns one dict per attribute: ``probe`` (test error of the selected probe), ``trivial``,
    ``lift``, ``ridge``/``mlp`` test errors, ``selected``, ``unit``, sample counts; with ``test_groups``
    (the identity of each test row) also ``lift_ci95`` / ``probe_ci95``, bootstrapped over test identities.
    """
    names = attributes or list(ATTRIBUTES)
    xtr, xva, xte = _standardize(np.asarray(emb_train, np.float64), np.asarray(emb_val, np.float64),
                                 np.asarray(emb_test, np.float64))
    rows = []
    for name in names:
        spec = ATTRIBUTES[name]
        parts = []
        for x, a in ((xtr, attr_train), (xva, attr_val), (xte, attr_test)):
            y = np.asarray(spec.target(a))
            keep = spec.valid(a) if spec.valid else np.ones(len(y), bool)
            parts.append((x[keep], y[keep]))
        (xa, ya), (xv, yv), (xt, yt) = parts
        keep_t = spec.valid(attr_test) if spec.valid else np.ones(len(xte), bool)
        if len(ya) < 10 or len(yt) < 2:
            rows.append({"attribute": name, "error": "too few labelled samples"})
            continue
        if spec.kind == "classification" and len(np.unique(ya)) < 2:
            rows.append({"attribute": name, "error": "one class only among the training labels"})
            continue
        post = spec.postprocess or (lambda p: p)
        if spec.kind == "classification":
            vals, counts = np.unique(ya, return_counts=True)
            trivial_pred = np.full(len(yt), vals[counts.argmax()])
        else:
            trivial_pred = np.repeat(ya.mean(0, keepdims=True), len(yt), 0)
        trivial = spec.error(post(trivial_pred) if spec.kind == "regression" else trivial_pred, yt)

        candidates: dict[str, tuple[float, Callable[[np.ndarray], np.ndarray]]] = {}
        best_lin = None
        for alpha in alphas:
            m = _fit_linear(spec.kind, xa, ya, alpha)
            ev = spec.error(post(m.predict(xv)), yv) if len(yv) else 0.0
            if best_lin is None or ev < best_lin[0]:
                best_lin = (ev, m.predict)
        candidates["ridge" if spec.kind == "regression" else "logistic"] = best_lin
        mlp = _fit_mlp(spec.kind, xa, ya, mlp_hidden, mlp_epochs, seed)
        candidates["mlp"] = (spec.error(post(mlp(xv)), yv) if len(yv) else 0.0, mlp)
        selected = min(candidates, key=lambda k: candidates[k][0])
        test_err = {k: spec.error(post(f(xt)), yt) for k, (_, f) in candidates.items()}
        probe = test_err[selected]
        lift = 1.0 - probe / trivial if trivial > 0 else 0.0
        row = {"attribute": name, "unit": spec.unit, "probe": probe, "trivial": trivial, "lift": lift,
               "selected": selected, **{f"{k}_test": v for k, v in test_err.items()},
               "n_train": int(len(ya)), "n_test": int(len(yt))}
        if spec.kind == "classification":
            row["positive_rate_test"] = float(np.mean(np.asarray(yt) == np.max(ya)))
        if test_groups is not None:
            g = np.asarray(test_groups)[keep_t]
            pred = post(candidates[selected][1](xt))
            triv = post(trivial_pred) if spec.kind == "regression" else trivial_pred
            row["lift_ci95"], row["probe_ci95"] = _lift_ci(spec, pred, triv, yt, g, seed)
            row["n_test_ids"] = int(len(np.unique(g)))
        rows.append(row)
    return rows
