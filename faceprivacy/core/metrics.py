"""Verification, identification and image-quality metrics.

Scores are similarities (higher = more likely the same person). ``same`` is a boolean array.
Thresholds are chosen on impostor scores only, so a reported TAR@FAR is honest at that FAR.
"""

from __future__ import annotations

import numpy as np

FARS = (1e-1, 1e-2, 1e-3, 1e-4)


def _split(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if scores.shape != same.shape:
        raise ValueError("scores and same must have the same shape")
    return scores[same], scores[~same]


def threshold_at_far(impostor_scores: np.ndarray, far: float) -> float:
    """Smallest threshold t with fraction(impostor > t) <= far (accept iff score > t)."""
    imp = np.sort(np.asarray(impostor_scores, np.float64))[::-1]
    if len(imp) == 0:
        raise ValueError("no impostor scores")
    k = int(np.floor(far * len(imp)))
    if k >= len(imp):
        return -np.inf
    return float(imp[k])


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """(TAR, threshold) at the given FAR. FARs below 1/#impostors are clamped to what the data can support."""
    gen, imp = _split(scores, same)
    t = threshold_at_far(imp, far)
    return float(np.mean(gen > t)) if len(gen) else float("nan"), t


def roc(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: (far, tar, thresholds) for every distinct score as threshold (accept iff score >= thr)."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], same[order]
    distinct = np.r_[np.where(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(y)[distinct], np.cumsum(~y)[distinct]
    npos, nneg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / nneg], np.r_[0.0, tp / npos], np.r_[np.inf, s[distinct]]


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve."""
    far, tar, _ = roc(scores, same)
    return float(np.trapezoid(tar, far))


def eer(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold) where FAR == FRR (linear interpolation on the ROC)."""
    far, tar, thr = roc(scores, same)
    frr = 1 - tar
    i = int(np.argmax(far >= frr))
    if i == 0:
        return float(far[0]), float(thr[0])
    d0, d1 = frr[i - 1] - far[i - 1], frr[i] - far[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.5
    e = far[i - 1] + w * (far[i] - far[i - 1])
    t = thr[i] if not np.isfinite(thr[i - 1]) else thr[i - 1] + w * (thr[i] - thr[i - 1])
    return float(e), float(t)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising verification accuracy (midpoints between sorted scores)."""
    s = np.sort(np.unique(np.asarray(scores, np.float64)))
    cands = np.r_[s[0] - 1e-6, (s[1:] + s[:-1]) / 2, s[-1] + 1e-6]
    same = np.asarray(same, bool)
    sc = np.asarray(scores, np.float64)
    acc = [np.mean((sc > t) == same) for t in cands]
    return float(cands[int(np.argmax(acc))])


def verification_accuracy_10fold(scores: np.ndarray, same: np.ndarray,
                                 folds: np.ndarray | None = None, n_folds: int = 10) -> tuple[float, float]:
    """LFW protocol: threshold picked on 9 folds, accuracy on the 10th; returns (mean, std)."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    if folds is None:
        folds = np.arange(len(scores)) % n_folds
    folds = np.asarray(folds)
    accs = []
    for f in np.unique(folds):
        test = folds == f
        t = best_threshold(scores[~test], same[~test])
        accs.append(np.mean((scores[test] > t) == same[test]))
    return float(np.mean(accs)), float(np.std(accs))


def verification_report(scores: np.ndarray, same: np.ndarray, fars: tuple[float, ...] = FARS) -> dict:
    """TAR@FAR for each FAR (with thresholds), EER, AUC and pair counts in one dict."""
    gen, imp = _split(scores, same)
    out: dict = {"n_genuine": int(len(gen)), "n_impostor": int(len(imp))}
    for far in fars:
        tar, t = tar_at_far(scores, same, far)
        out[f"tar@far={far:g}"] = tar
        out[f"thr@far={far:g}"] = t
        out[f"far={far:g}_supported"] = bool(far * len(imp) >= 1)
    out["eer"], out["eer_threshold"] = eer(scores, same)
    out["auc"] = auc(scores, same)
    return out


def rank_k_identification(probe: np.ndarray, probe_labels: np.ndarray, gallery: np.ndarray,
                          gallery_labels: np.ndarray, k: int = 1) -> float:
    """Fraction of probes whose true identity is among the k most similar gallery identities (cosine)."""
    probe, gallery = np.asarray(probe, np.float64), np.asarray(gallery, np.float64)
    sims = probe @ gallery.T
    gl = np.asarray(gallery_labels)
    hits = 0
    for i, lab in enumerate(np.asarray(probe_labels)):
        order = np.argsort(-sims[i], kind="mergesort")
        ranked = list(dict.fromkeys(gl[order].tolist()))[:k]
        hits += lab in ranked
    return hits / max(len(probe), 1)


def genuine_impostor_pairs(labels: np.ndarray, n_impostor: int | None = None, max_genuine: int | None = None,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j: genuine (same label) and random impostor pairs; returns (pairs, same)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    gen = []
    for lab in np.unique(labels):
        idx = np.where(labels == lab)[0]
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                gen.append((idx[a], idx[b]))
    gen = np.array(gen, dtype=int).reshape(-1, 2)
    if max_genuine is not None and len(gen) > max_genuine:
        gen = gen[rng.choice(len(gen), max_genuine, replace=False)]
    n_imp = n_impostor if n_impostor is not None else len(gen)
    imp = set()
    n = len(labels)
    tries = 0
    while len(imp) < n_imp and tries < 50 * n_imp + 1000:
        i, j = rng.integers(0, n, 2)
        tries += 1
        if i != j and labels[i] != labels[j]:
            imp.add((min(i, j), max(i, j)))
    imp_arr = np.array(sorted(imp), dtype=int).reshape(-1, 2)
    pairs = np.vstack([gen, imp_arr])
    same = np.r_[np.ones(len(gen), bool), np.zeros(len(imp_arr), bool)]
    return pairs, same


def pair_scores(feats: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine similarities of unit-norm features for index pairs."""
    feats = np.asarray(feats, np.float64)
    return np.sum(feats[pairs[:, 0]] * feats[pairs[:, 1]], axis=1)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape images."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity (scikit-image, Gaussian-weighted, channel-averaged for colour)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    kw = {"channel_axis": -1} if a.ndim == 3 else {}
    return float(structural_similarity(a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, **kw))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid(feats_a: np.ndarray, feats_b: np.ndarray, n_subsets: int = 50, subset_size: int = 500,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (unbiased MMD^2, cubic polynomial kernel) on any features: (mean, std)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's)."""
    from scipy import linalg

    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def bootstrap_ci(values: np.ndarray, groups: np.ndarray, stat=np.mean, *, n_boot: int = 1000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): a percentile bootstrap interval that resamples *groups* (identities), not rows.

    ``values`` holds one entry per observation (e.g. 1.0/0.0 per probe for a rate), ``groups`` the identity of
    each observation. Rows of one identity stay together, so the interval reflects how many people were
    measured, not how many photos. ``stat`` maps the resampled values to a number (default: the mean).
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if values.shape[0] != groups.shape[0]:
        raise ValueError("values and groups must have the same length")
    est = float(stat(values)) if values.size else float("nan")
    uniq, inv = np.unique(groups, return_inverse=True)
    if uniq.size < 2:
        return est, float("nan"), float("nan")
    rows = [np.flatnonzero(inv == g) for g in range(uniq.size)]
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, uniq.size, uniq.size)
        boots[b] = stat(values[np.concatenate([rows[i] for i in pick])])
    a = (1.0 - level) / 2.0
    return est, float(np.quantile(boots, a)), float(np.quantile(boots, 1.0 - a))


def rate_with_ci(hits: np.ndarray, groups: np.ndarray, **kw) -> dict:
    """A rate as JSON-ready ``{"value", "ci95": [lo, hi], "n", "n_ids"}``, interval by identity bootstrap."""
    hits = np.asarray(hits, dtype=np.float64)
    v, lo, hi = bootstrap_ci(hits, groups, **kw)
    return {"value": v, "ci95": [lo, hi], "n": int(hits.size), "n_ids": int(np.unique(groups).size)}


def format_ci(value: float | dict, ci95: list | tuple | None = None, n: int | None = None,
              digits: int = 3) -> str:
    """``"0.915 [0.880, 0.941] n=10"``: a number with its 95 % interval and n, as every report prints it.

    Takes either the three parts or a :func:`rate_with_ci` dict (``n_ids`` is printed when it differs from
    ``n``, so a reader sees how many people stand behind the interval)."""
    if isinstance(value, dict):
        d = value
        value, ci95, n = d["value"], d.get("ci95"), d.get("n")
        ids = d.get("n_ids")
        tail = f" n={n}" + (f" ({ids} ids)" if ids is not None and ids != n else "")
    else:
        tail = f" n={n}" if n is not None else ""
    s = f"{float(value):.{digits}f}"
    if ci95 is not None and len(ci95) == 2 and all(np.isfinite(np.asarray(ci95, float))):
        s += f" [{float(ci95[0]):.{digits}f}, {float(ci95[1]):.{digits}f}]"
    return s + tail


def all_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every index pair (i < j) and its same-identity flag: all genuine and *all* impostor pairs, so a
    threshold at FAR rests on every impostor score the data holds."""
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), 1)
    return np.stack([i, j], 1), labels[i] == labels[j]


def verification_ci(scores: np.ndarray, same: np.ndarray, id_a: np.ndarray, id_b: np.ndarray,
                    fars: tuple[float, ...] = FARS, thresholds: dict[float, float] | None = None,
                    n_boot: int = 1000, seed: int = 0) -> dict:
    """95 % identity-bootstrap intervals of TAR@FAR (threshold re-estimated in every resample), AUC, and, for
    fixed ``thresholds`` (e.g. calibrated on another root), TAR and FAR at those thresholds.

    One resample draws identities with replacement; a genuine pair of identity a counts ``c_a`` times and an
    impostor pair (a, b) ``c_a * c_b`` times, where ``c`` are the draw counts. Pairs therefore move with
    their people, and the interval reflects how many people were measured (not how many pairs)."""
    scores, same = np.asarray(scores, np.float64), np.asarray(same, bool)
    ua, inv = np.unique(np.r_[np.asarray(id_a), np.asarray(id_b)], return_inverse=True)
    a, b = inv[:len(scores)], inv[len(scores):]
    order = np.argsort(-scores, kind="mergesort")
    s, y, a, b = scores[order], same[order], a[order], b[order]
    rng = np.random.default_rng(seed)
    out: dict = {"n_identities": int(ua.size), "n_boot": n_boot}
    keys = [f"tar@far={f:g}" for f in fars] + ["auc"]
    fixed = sorted((thresholds or {}).items())
    keys += [f"tar@thr_far={f:g}" for f, _ in fixed] + [f"far@thr_far={f:g}" for f, _ in fixed]
    boots = {k: np.empty(n_boot) for k in keys}
    pos = {f: int(np.searchsorted(-s, -t, side="left")) for f, t in fixed}  # rows with score > t come first
    for r in range(n_boot):
        c = np.bincount(rng.integers(0, ua.size, ua.size), minlength=ua.size).astype(np.float64)
        w = np.where(y, c[a], c[a] * c[b])
        wg, wi = np.where(y, w, 0.0), np.where(y, 0.0, w)
        cg, ci = np.cumsum(wg), np.cumsum(wi)
        tg, ti = max(cg[-1], 1e-12), max(ci[-1], 1e-12)
        for f in fars:
            k = int(np.searchsorted(ci, f * ti, side="right"))  # rows before the first impostor beyond FAR
            boots[f"tar@far={f:g}"][r] = (cg[k - 1] if k > 0 else 0.0) / tg
        boots["auc"][r] = float(np.sum(wi * (cg - wg))) / (tg * ti)
        for f, p in pos.items():
            boots[f"tar@thr_far={f:g}"][r] = (cg[p - 1] if p > 0 else 0.0) / tg
            boots[f"far@thr_far={f:g}"][r] = (ci[p - 1] if p > 0 else 0.0) / ti
    for k, v in boots.items():
        out[k] = [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]
    return out


def balanced_pairs(labels: np.ndarray, n_folds: int = 10, per_fold: int = 300,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An LFW-style balanced protocol: identities dealt into ``n_folds`` disjoint folds; each fold gets up to
    ``per_fold`` genuine and the same number of impostor pairs from its own identities (so the always-same
    answer scores 0.5, and no person appears in two folds). Returns (pairs, same, fold)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.unique(labels))
    pairs, same, fold = [], [], []
    for f in range(n_folds):
        fid = ids[f::n_folds]
        rows = np.flatnonzero(np.isin(labels, fid))
        if len(fid) < 2:
            continue
        p, s = all_pairs(labels[rows])
        gen, imp = p[s], p[~s]
        n = min(per_fold, len(gen), len(imp))
        if n == 0:
            continue
        g = gen[rng.choice(len(gen), n, replace=False)]
        i = imp[rng.choice(len(imp), n, replace=False)]
        pairs.append(rows[np.vstack([g, i])])
        same.append(np.r_[np.ones(n, bool), np.zeros(n, bool)])
        fold.append(np.full(2 * n, f))
    if not pairs:
        return np.zeros((0, 2), int), np.zeros(0, bool), np.zeros(0, int)
    return np.vstack(pairs), np.concatenate(same), np.concatenate(fold)


def accuracy_10fold_with_ci(scores: np.ndarray, same: np.ndarray, folds: np.ndarray,
                            groups: np.ndarray, seed: int = 0) -> dict:
    """10-fold pair accuracy (threshold from the other folds) with an identity-bootstrap interval over the
    per-pair correctness, and the always-same baseline (the share of same-person pairs)."""
    scores, same, folds = np.asarray(scores, np.float64), np.asarray(same, bool), np.asarray(folds)
    correct = np.zeros(len(scores))
    accs = []
    for f in np.unique(folds):
        test = folds == f
        t = best_threshold(scores[~test], same[~test])
        correct[test] = (scores[test] > t) == same[test]
        accs.append(correct[test].mean())
    r = rate_with_ci(correct, groups, seed=seed)
    r.update({"fold_std": float(np.std(accs)), "always_same_baseline": float(same.mean()),
              "n_same": int(same.sum()), "n_different": int((~same).sum())})
    return r
