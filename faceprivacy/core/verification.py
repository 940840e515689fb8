"""Verification evaluation of recognizers on a dataset (``faceprivacy eval-verification``) and the
calibrated same-person decision used by ``faceprivacy verify``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import (
    celeba_subset,
    identity_folder_dataset,
    identity_split,
    load_images,
    read_lfw_pairs,
    read_pairs_csv,
)
from .detect import FaceDetector
from .embedder import Embedder
from .embedders import get_embedder
from .errors import InputError
from .fileio import atomic_write_json
from .metrics import (
    genuine_impostor_pairs,
    pair_scores,
    roc,
    verification_accuracy_10fold,
    verification_report,
)
from .pipeline import embed_dataset
from .report import HtmlReport

#: cosine thresholds at FAR = 1e-3 on the CelebA subset's *training* identities (identity_split seed 0),
#: measured with `faceprivacy eval-verification --split train` (see docs/core.md); used by `verify`.
#: (200,000 impostor / 41,122 genuine pairs over 167 identities, 2026-11-22).
CALIBRATED_THRESHOLDS: dict[str, float] = {
    "dlib": 0.9310,
    "dlib-native": 0.9310,
    "mobilefacenet": 0.3817,
    "mobilefacenet-onnx": 0.3567,
}


def decide(embedder: Embedder, fa: np.ndarray, fb: np.ndarray, threshold: float | None = None) -> dict:
    """Same-person decision for two unit-norm features at the calibrated FAR=1e-3 threshold."""
    cos = float(np.dot(fa, fb))
    thr = threshold if threshold is not None else CALIBRATED_THRESHOLDS.get(embedder.name)
    if thr is None:
        raise InputError(f"no calibrated threshold for {embedder.name}; pass --threshold")
    return {"cosine": round(cos, 4), "threshold": thr, "same": bool(cos > thr)}


def _load_dataset(spec: str, root: Path | None, split: str):
    """(dataset, aligned_arcface, pairs) for a dataset spec."""
    if spec == "celeba":
        ds = celeba_subset(root / "celeba_subset_aligned112")
        pairs = read_pairs_csv(ds.root / "pairs_10fold.csv", ds.root / "images")
        if split != "all":
            ds = identity_split(ds)[split]
        return ds, True, pairs
    if spec in ("orl", "yale"):
        sub = {"orl": "orl_att_faces", "yale": "extended_yaleb_cropped"}[spec]
        return identity_folder_dataset(root / sub), False, None
    if spec.startswith("folder:"):
        return identity_folder_dataset(spec[len("folder:"):]), False, None
    raise InputError(f"unknown dataset {spec!r}")


def evaluate_verification(spec: str, root: Path | None, embedders: list[str], out_dir: Path,
                          split: str = "test", n_impostor: int = 200_000, seed: int = 0) -> dict:
    """Embed a dataset with each recognizer; TAR@FAR (1e-1..1e-4), EER, AUC (+ 10-fold pair accuracy)."""
    out_dir = Path(out_dir)
    report = HtmlReport(f"Verification: {spec} ({split})")
    results: dict = {"dataset": spec, "split": split, "seed": seed, "embedders": {}}
    if spec.startswith("lfw:"):
        _, pairs_file, img_root = spec.split(":", 2)
        pl = read_lfw_pairs(pairs_file, img_root)
        uniq = sorted(set(pl.a) | set(pl.b))
        index = {p: i for i, p in enumerate(uniq)}
        from .imageio import load_image

        imgs = [load_image(p) for p in uniq]
        curves = {}
        for name in embedders:
            emb = get_embedder(name, root)
            feats, keep = embed_dataset(imgs, emb, False, FaceDetector(), desc=name)
            pos = {k: i for i, k in enumerate(keep.tolist())}
            ok = np.array([index[a] in pos and index[b] in pos for a, b in zip(pl.a, pl.b, strict=True)])
            pr = np.array([[pos[index[a]], pos[index[b]]] for a, b, o in zip(pl.a, pl.b, ok, strict=True) if o])
            sc = pair_scores(feats, pr)
            r = verification_report(sc, pl.same[ok])
            r["pairs10fold_acc"], r["pairs10fold_std"] = verification_accuracy_10fold(sc, pl.same[ok], pl.fold[ok])
            r["pairs_without_face"] = int((~ok).sum())
            results["embedders"][name] = r
            curves[name] = roc(sc, pl.same[ok])
        _finish(report, results, curves, out_dir)
        return results

    ds, aligned, pairs10 = _load_dataset(spec, root, split)
    imgs = load_images(ds.paths, desc="loading images")
    results.update({"n_images": len(ds), "n_identities": len(ds.identities)})
    curves = {}
    for name in embedders:
        emb = get_embedder(name, root)
        feats, keep = embed_dataset(imgs, emb, aligned, FaceDetector(upsample=1), desc=name)
        labels = ds.labels[keep]
        pairs, same = genuine_impostor_pairs(labels, n_impostor=n_impostor, seed=seed)
        sc = pair_scores(feats, pairs)
        r = verification_report(sc, same)
        r["images_without_face"] = int(len(ds) - len(keep))
        if pairs10 is not None:
            pos = {p: keep_i for keep_i, p in enumerate(np.asarray(ds.paths, dtype=object)[keep].tolist())}
            ok = np.array([a in pos and b in pos for a, b in zip(pairs10.a, pairs10.b, strict=True)])
            if ok.sum() >= 20:
                pr = np.array([[pos[a], pos[b]] for a, b, o in zip(pairs10.a, pairs10.b, ok, strict=True) if o])
                s10 = pair_scores(feats, pr)
                acc, std = verification_accuracy_10fold(s10, pairs10.same[ok], pairs10.fold[ok])
                r.update({"pairs10fold_acc": acc, "pairs10fold_std": std, "pairs10fold_n": int(ok.sum())})
        results["embedders"][name] = r
        curves[name] = roc(sc, same)
    _finish(report, results, curves, out_dir)
    return results


def _finish(report: HtmlReport, results: dict, curves: dict, out_dir: Path) -> None:
    _findings(report, results)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"embedder": k, **{m: v[m] for m in v if m.startswith(("tar@", "eer", "auc", "pairs10fold_acc"))}}
            for k, v in results["embedders"].items()]
    report.table(rows)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (far, tar, _) in curves.items():
        ax.plot(np.maximum(far, 1e-6), tar, label=name)
    ax.set_xscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.grid(alpha=0.3)
    ax.legend()
    report.figure(fig, "ROC (log FAR)")
    atomic_write_json(out_dir / "verification.json", results)
    report.write(out_dir / "report.html")


def _findings(report: HtmlReport, results: dict) -> None:
    """The verdict box: TAR at FAR 1e-3 and EER of each recognizer, with the number of people."""
    items = [f"{k}: TAR {v.get('tar@far=0.001', float('nan')):.3f} at FAR 1e-3, EER {v.get('eer', float('nan')):.3f}"
             for k, v in results["embedders"].items()]
    best = max(results["embedders"].items(), key=lambda kv: kv[1].get("tar@far=0.001", -1), default=None)
    n = results.get("n_identities")
    if n is not None:
        items.append(f"n = {n} identities, {results.get('n_images')} images ({results['split']} split)")
    report.findings(items, verdict=f"most accurate: {best[0]}" if best else None, level="info")
    if n is not None:
        report.small_n(int(n), "identities")
