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
    FARS,
    accuracy_10fold_with_ci,
    all_pairs,
    balanced_pairs,
    format_ci,
    genuine_impostor_pairs,
    pair_scores,
    roc,
    threshold_at_far,
    verification_ci,
    verification_report,
)
from .pipeline import embed_dataset
from .report import HtmlReport
from .testset import load_test_root, require_disjoint

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


def _pairs(labels: np.ndarray, n_impostor: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All genuine pairs, and all impostor pairs (``n_impostor`` None) or a seeded sample of them."""
    if n_impostor is None:
        return all_pairs(labels)
    return genuine_impostor_pairs(labels, n_impostor=n_impostor, seed=seed)


def score_identities(feats: np.ndarray, labels: np.ndarray, fars: tuple[float, ...] = FARS,
                     n_impostor: int | None = None, seed: int = 0,
                     thresholds: dict[float, float] | None = None) -> tuple[dict, tuple]:
    """TAR@FAR, EER, AUC of one embedder on labelled features with 95 % identity-bootstrap intervals; with
    ``thresholds`` (calibrated elsewhere) also TAR and the realised FAR at them. Returns (report, roc)."""
    pairs, same = _pairs(labels, n_impostor, seed)
    sc = pair_scores(feats, pairs)
    r = verification_report(sc, same, fars)
    r["impostor_pairs"] = "all" if n_impostor is None else f"random sample of {n_impostor}"
    r["n_identities"] = int(len(np.unique(labels)))
    ci = verification_ci(sc, same, labels[pairs[:, 0]], labels[pairs[:, 1]], fars, thresholds, seed=seed)
    for f in fars:
        r[f"tar@far={f:g}_ci95"] = ci[f"tar@far={f:g}"]
    r["auc_ci95"] = ci["auc"]
    for f, t in (thresholds or {}).items():
        gen, imp = sc[same], sc[~same]
        r[f"calibrated@far={f:g}"] = {"threshold": float(t), "tar": float(np.mean(gen > t)),
                                      "tar_ci95": ci[f"tar@thr_far={f:g}"], "far": float(np.mean(imp > t)),
                                      "far_ci95": ci[f"far@thr_far={f:g}"]}
    return r, roc(sc, same)


def _pair_protocols(feats: np.ndarray, ds_paths: list, labels: np.ndarray, pairs10, seed: int) -> dict:
    """The datakit's pairs_10fold.csv (mostly same-person pairs: its always-same baseline is printed) and a
    balanced identity-disjoint 10-fold protocol built here (baseline 0.5)."""
    out: dict = {}
    if pairs10 is not None:
        pos = {p: i for i, p in enumerate(ds_paths)}
        ok = np.array([a in pos and b in pos for a, b in zip(pairs10.a, pairs10.b, strict=True)])
        if ok.sum() >= 20:
            pr = np.array([[pos[a], pos[b]] for a, b, o in zip(pairs10.a, pairs10.b, ok, strict=True) if o])
            r = accuracy_10fold_with_ci(pair_scores(feats, pr), pairs10.same[ok], pairs10.fold[ok],
                                        labels[pr[:, 0]], seed=seed)
            out["pairs10fold"] = r
    bp, bs, bf = balanced_pairs(labels, seed=seed)
    if len(bp) >= 20:
        out["balanced10fold"] = accuracy_10fold_with_ci(pair_scores(feats, bp), bs, bf, labels[bp[:, 0]],
                                                        seed=seed)
    return out


def _embed(ds, imgs: np.ndarray, name: str, root: Path | None, aligned: bool):
    emb = get_embedder(name, root)
    feats, keep = embed_dataset(imgs, emb, aligned, FaceDetector(upsample=1), desc=name)
    return feats, keep


def evaluate_verification(spec: str, root: Path | None, embedders: list[str], out_dir: Path,
                          split: str = "test", n_impostor: int | None = None, seed: int = 0,
                          test_root: Path | None = None) -> dict:
    """Embed a dataset with each recognizer; TAR@FAR (1e-1..1e-4), EER, AUC with 95 % identity-bootstrap
    intervals, and pair accuracy (datakit pairs + a balanced protocol, each with its always-same baseline).

    With ``test_root`` every identity of that folder is the test set; thresholds at each FAR are calibrated on
    ``split`` of the training root (default: its ``train`` identities, as ``verify`` uses) and the test root
    reports TAR and the realised FAR at them, next to its own ROC numbers."""
    out_dir = Path(out_dir)
    results: dict = {"dataset": spec, "split": split, "seed": seed, "embedders": {},
                     "intervals": "95 % bootstrap over identities (1000 resamples; pairs move with their people)"}
    if spec.startswith("lfw:"):
        report = HtmlReport(f"Verification: {spec}")
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
            names = np.array([Path(p).parent.name for p in uniq])[keep]
            r["pairs10fold"] = accuracy_10fold_with_ci(sc, pl.same[ok], pl.fold[ok], names[pr[:, 0]], seed=seed)
            r["pairs_without_face"] = int((~ok).sum())
            results["embedders"][name] = r
            curves[name] = roc(sc, pl.same[ok])
        _finish(report, results, curves, out_dir)
        return results

    calib = None
    if test_root is not None:
        if spec != "celeba":
            raise InputError("--test-data works with --dataset celeba (thresholds from its identities)")
        full, aligned, _ = _load_dataset(spec, root, "all")
        calib_split = "train" if split in ("test", "all") else split
        calib = identity_split(full)[calib_split]
        ds = load_test_root(test_root)
        require_disjoint(calib.identities, ds, f"calibration ({calib_split})")
        pairs10 = None
        results.update({"split": f"all identities of {test_root}", "calibration_split": calib_split,
                        "test_root": str(test_root)})
    else:
        ds, aligned, pairs10 = _load_dataset(spec, root, split)
    report = HtmlReport(f"Verification: {spec} ({results['split']})")
    imgs = load_images(ds.paths, desc="loading images")
    results.update({"n_images": len(ds), "n_identities": len(ds.identities)})
    cimgs = load_images(calib.paths, desc="loading calibration images") if calib is not None else None
    curves = {}
    for name in embedders:
        thresholds = None
        if calib is not None:
            cf, ck = _embed(calib, cimgs, name, root, aligned)
            cp, cs = all_pairs(calib.labels[ck])
            csc = pair_scores(cf, cp)
            thresholds = {f: threshold_at_far(csc[~cs], f) for f in FARS}
        feats, keep = _embed(ds, imgs, name, root, aligned)
        labels = ds.labels[keep]
        r, curves[name] = score_identities(feats, labels, n_impostor=n_impostor, seed=seed, thresholds=thresholds)
        r["images_without_face"] = int(len(ds) - len(keep))
        r.update(_pair_protocols(feats, np.asarray(ds.paths, dtype=object)[keep].tolist(), labels, pairs10, seed))
        results["embedders"][name] = r
    _finish(report, results, curves, out_dir)
    return results


def _finish(report: HtmlReport, results: dict, curves: dict, out_dir: Path) -> None:
    _findings(report, results)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report.paragraph(f"{results.get('n_images', '?')} images of {results.get('n_identities', '?')} identities "
                     f"({results['split']}). Brackets: {results['intervals']}. n = pairs (genuine / impostor).")
    rows = []
    for k, v in results["embedders"].items():
        row = {"embedder": k, "n genuine / impostor": f"{v['n_genuine']} / {v['n_impostor']}",
               "impostor pairs": v.get("impostor_pairs", "")}
        for far in FARS:
            ok = v.get(f"far={far:g}_supported", True)
            row[f"TAR@FAR={far:g}"] = (format_ci(v[f"tar@far={far:g}"], v.get(f"tar@far={far:g}_ci95"))
                                       + ("" if ok else " (FAR below 1/#impostors)"))
        row["EER"] = f"{v['eer']:.4f}"
        row["AUC"] = format_ci(v["auc"], v.get("auc_ci95"), digits=4)
        rows.append(row)
    report.table(rows)
    prow = []
    for k, v in results["embedders"].items():
        for proto in ("pairs10fold", "balanced10fold"):
            if isinstance(v.get(proto), dict):
                p = v[proto]
                prow.append({"embedder": k, "protocol": proto, "accuracy": format_ci(p),
                             "always-same baseline": f"{p['always_same_baseline']:.3f}",
                             "same / different pairs": f"{p['n_same']} / {p['n_different']}"})
        for key, c in v.items():
            if key.startswith("calibrated@"):
                prow.append({"embedder": k, "protocol": f"threshold from training root ({key})",
                             "accuracy": f"TAR {format_ci(c['tar'], c['tar_ci95'])}; "
                                         f"FAR {format_ci(c['far'], c['far_ci95'], digits=5)}"})
    if prow:
        report.heading("Pair accuracy (10-fold) and calibrated thresholds")
        report.table(prow)
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
