"""Evaluate a generator on held-out CelebA test identities: identity-preserving reconstruction
(MobileFaceNet at its FAR=1e-3 threshold, dlib < 0.6), SSIM/PSNR, sample face-detection rate, KID with
MobileFaceNet features; writes JSON, an HTML report and a contact-sheet PNG."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from .generator import Generator


def to_tensor(images: np.ndarray, device: str = "cpu"):
    """uint8 (N,H,W,3) -> float tensor (N,3,H,W) in [-1, 1]."""
    import torch
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x) -> np.ndarray:
    """float tensor (N,3,H,W) in [-1, 1] -> uint8 (N,H,W,3)."""
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def reconstruct(gen: Generator, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """encode -> decode of uint8 crops, batched, no autograd; returns uint8."""
    import torch
    dev = next(gen.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(to_uint8(gen.decode(gen.encode(to_tensor(images[i:i + batch], dev)))))
    return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), np.uint8)


def sample(gen: Generator, n: int, seed: int = 0, batch: int = 64) -> np.ndarray:
    """Decode ``n`` prior samples (seeded) to uint8 faces."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            out.append(to_uint8(gen.decode(gen.sample_latents(min(batch, n - i), generator=g))))
    return np.concatenate(out)


def interpolate(gen: Generator, a: np.ndarray, b: np.ndarray, steps: int = 8) -> np.ndarray:
    """Decoded linear interpolation between the latents of two uint8 crops (steps images)."""
    import torch
    dev = next(gen.parameters()).device
    with torch.no_grad():
        za, zb = gen.encode(to_tensor(np.stack([a, b]), dev))
        t = torch.linspace(0, 1, steps, device=dev)[:, None]
        return to_uint8(gen.decode((1 - t) * za[None] + t * zb[None]))


def dlib_raw_arcface(images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Raw dlib descriptors (for the < 0.6 rule) of 112x112 ArcFace-layout crops, via the fixed chip warp
    (``core.chip.arcface112_to_dlib150``, the same layout rule ``core.embedders.embed_arcface_crops`` uses)."""
    import torch

    from ..core.chip import arcface112_to_dlib150
    from ..core.embedders import get_embedder
    net = get_embedder("dlib").net
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch])).permute(0, 3, 1, 2).float()
            chips = torch.clamp(arcface112_to_dlib150(x), 0, 255).round()
            out.append(net(chips).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def latent_probes(gen: Generator, images: np.ndarray, labels: np.ndarray, n_pairs: int = 50,
                  seed: int = 0) -> dict:
    """How identity moves in latent space, on pairs (A, B) of different test identities (dlib distances to
    the reconstruction of A): along the straight line z_A -> z_B, and when only the global part is taken
    from B (``lite``: spatial layout part kept from A)."""
    import torch
    rng = np.random.default_rng(seed)
    pairs = []
    while len(pairs) < n_pairs:
        a, b = rng.integers(0, len(images), 2)
        if labels[a] != labels[b]:
            pairs.append((a, b))
    pa, pb = np.array(pairs).T
    dev = next(gen.parameters()).device
    with torch.no_grad():
        za, zb = gen.encode(to_tensor(images[pa], dev)), gen.encode(to_tensor(images[pb], dev))
        dec = {"A": to_uint8(gen.decode(za)), "B": to_uint8(gen.decode(zb))}
        for t in (0.25, 0.5, 0.75):
            dec[f"t{t}"] = to_uint8(gen.decode((1 - t) * za + t * zb))
        gdim = getattr(getattr(gen, "cfg", None), "global_dim", None)
        if gdim:
            dec["swap"] = to_uint8(gen.decode(torch.cat([zb[:, :gdim], za[:, gdim:]], 1)))
    emb = {k: dlib_raw_arcface(v) for k, v in dec.items()}
    dist = {k: float(np.linalg.norm(emb[k] - emb["A"], axis=1).mean()) for k in emb if k != "A"}
    out = {"n_pairs": n_pairs, "dlib_dist_to_A": dist}
    if "swap" in emb:
        out["swap_dlib_dist_to_B"] = float(np.linalg.norm(emb["swap"] - emb["B"], axis=1).mean())
    return out


def hog_detection_rate(images: np.ndarray, upsample: int = 1, pad: int = 0) -> float:
    """Fraction of images in which dlib's HOG detector finds at least one face. ``pad`` adds an
    edge-replicated border first: tight 112x112 ArcFace crops leave HOG's box no margin."""
    from ..core.detect import FaceDetector
    det = FaceDetector("hog", upsample=upsample, with_68=False)
    if pad:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    return float(np.mean([len(det.boxes(im)) > 0 for im in images])) if len(images) else float("nan")


def kid_reference(data_root: Path, mfn, f_test: np.ndarray, n: int = 500, seed: int = 0) -> float:
    """KID floor: real faces of the CelebA *train* identities vs the test faces (MobileFaceNet features)."""
    from ..core import metrics
    from ..core.data import celeba_subset, identity_split
    from ..core.embedders import embed_arcface_crops
    from ..core.imageio import load_image
    tr = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))["train"]
    idx = np.sort(np.random.default_rng(seed).choice(len(tr), min(n, len(tr)), replace=False))
    f_tr = embed_arcface_crops(mfn, np.stack([load_image(tr.paths[i]) for i in idx]))
    return metrics.kid(f_tr, f_test, subset_size=min(500, len(f_tr), len(f_test)), seed=seed)[0]


def load_test_faces(data_root: Path, max_test: int | None = None, seed: int = 0,
                    test_root: Path | None = None, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """uint8 crops + labels of the CelebA subset's held-out ``split`` identities (``identity_split`` seed 0),
    or of every identity of a separate ``test_root`` (``core.testset``; it must not hold training people)."""
    from ..core.data import celeba_subset, identity_split
    from ..core.imageio import load_image
    splits = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))
    if test_root is not None:
        from ..core.testset import load_test_root, require_disjoint
        test = load_test_root(test_root)
        require_disjoint(splits["train"].identities + splits["val"].identities, test, "training and validation")
    else:
        test = splits[split]
    idx = np.arange(len(test))
    if max_test is not None and max_test < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_test, replace=False))
    imgs = np.stack([load_image(test.paths[i]) for i in idx])
    if imgs.shape[1:3] != (112, 112):
        raise InputError(f"test crops must be 112x112 ArcFace-aligned, got {imgs.shape[1:3]}")
    return imgs, test.labels[idx]


def _mean_ci(values: np.ndarray, groups: np.ndarray) -> dict:
    from ..core.metrics import bootstrap_ci
    v, lo, hi = bootstrap_ci(np.asarray(values, float), groups)
    return {"value": v, "ci95": [lo, hi], "n": int(len(values)), "n_ids": int(len(np.unique(groups)))}


def evaluate_generator(data_root: str | os.PathLike, out_dir: str | os.PathLike, weights: str | None = None,
                       backend: str = "lite", n_samples: int = 500, max_test: int | None = None,
                       device: str = "cpu", seed: int = 0, test_root: Path | None = None) -> dict:
    """Full held-out evaluation; writes ``generator_eval.json``, ``generator_eval.html``, ``contact_sheet.png``.

    Rates and means carry 95 % bootstrap intervals over test identities. The MobileFaceNet threshold at FAR
    1e-3 comes from all impostor pairs of the training root's validation identities (never the test set)."""
    import torch

    from ..core import metrics
    from ..core.embedders import embed_arcface_crops, get_embedder
    from ..core.fileio import atomic_path, atomic_write_json
    from ..core.metrics import format_ci, rate_with_ci
    from ..core.report import HtmlReport, array_to_png_bytes, image_grid, rounded
    from .generator_loader import load_generator

    data_root, out_dir = Path(data_root), Path(out_dir)
    torch.manual_seed(seed)
    gen = load_generator(backend, weights, device=device)
    if gen.alignment != "arcface112" or gen.resolution != 112:
        raise InputError(f"eval-generator needs a 112x112 ArcFace-layout generator, got {gen.alignment} "
                         f"{gen.resolution}")
    imgs, labels = load_test_faces(data_root, max_test, seed, test_root=test_root)
    t0 = time.time()
    rec = reconstruct(gen, imgs)
    t_rec = time.time() - t0
    samples = sample(gen, n_samples, seed=seed)

    mfn = get_embedder("mobilefacenet", data_root)
    f_real = embed_arcface_crops(mfn, imgs)
    f_rec = embed_arcface_crops(mfn, rec)
    f_samp = embed_arcface_crops(mfn, samples)
    val_imgs, val_labels = load_test_faces(data_root, None, seed, split="val")
    vp, vs = metrics.all_pairs(val_labels)
    thr = metrics.threshold_at_far(metrics.pair_scores(embed_arcface_crops(mfn, val_imgs), vp)[~vs], 1e-3)
    pairs, same = metrics.all_pairs(labels)
    scores = metrics.pair_scores(f_real, pairs)
    rec_scores = np.sum(f_real * f_rec, axis=1)
    real_tar = float(np.mean(scores[same] > thr))
    real_far = float(np.mean(scores[~same] > thr))

    # the project's independent judge (ONNX MobileFaceNet; never trained or tuned against): the same check
    judge = get_embedder("mobilefacenet-onnx", data_root)
    j_real, j_rec = embed_arcface_crops(judge, imgs), embed_arcface_crops(judge, rec)
    thr_j = metrics.threshold_at_far(metrics.pair_scores(embed_arcface_crops(judge, val_imgs), vp)[~vs], 1e-3)
    j_scores = np.sum(j_real * j_rec, axis=1)
    j_pairs = metrics.pair_scores(j_real, pairs)
    judge_real_tar = float(np.mean(j_pairs[same] > thr_j))

    d_real = dlib_raw_arcface(imgs)
    d_rec = dlib_raw_arcface(rec)
    d_dist = np.linalg.norm(d_real - d_rec, axis=1)

    ssims = [metrics.ssim(a, b) for a, b in zip(imgs, rec, strict=True)]
    psnrs = [metrics.psnr(a, b) for a, b in zip(imgs, rec, strict=True)]
    det_samples = hog_detection_rate(samples)
    det_real = hog_detection_rate(imgs[:n_samples])
    det_samples_pad = hog_detection_rate(samples, pad=16)
    det_real_pad = hog_detection_rate(imgs[:n_samples], pad=16)
    ref = kid_reference(data_root, mfn, f_real, n=min(500, len(f_real)), seed=seed)
    kid_s = metrics.kid(f_samp, f_real, subset_size=min(500, len(f_real), len(f_samp)), seed=seed)
    kid_r = metrics.kid(f_rec, f_real, subset_size=min(500, len(f_real)), seed=seed)
    probes = latent_probes(gen, imgs, labels, n_pairs=min(50, len(imgs)), seed=seed)

    summary = {
        "backend": backend, "weights": str(weights or "shipped"), "n_test_images": int(len(imgs)),
        "n_test_identities": int(len(np.unique(labels))), "n_samples": int(n_samples),
        "recon_mobilefacenet_pass@far1e-3": float(np.mean(rec_scores > thr)),
        "mobilefacenet_thr@far1e-3": float(thr),
        "mobilefacenet_real_pair_tar@far1e-3": real_tar,
        "recon_mobilefacenet_cos_mean": float(rec_scores.mean()),
        "recon_onnx_judge_pass@far1e-3": float(np.mean(j_scores > thr_j)),
        "onnx_judge_thr@far1e-3": float(thr_j),
        "onnx_judge_real_pair_tar@far1e-3": judge_real_tar,
        "onnx_judge_real_pair_far_at_thr": float(np.mean(j_pairs[~same] > thr_j)),
        "recon_onnx_judge_cos_mean": float(j_scores.mean()),
        "recon_dlib_pass@0.6": float(np.mean(d_dist < 0.6)),
        "recon_dlib_dist_mean": float(d_dist.mean()),
        "ssim_mean": float(np.mean(ssims)), "psnr_mean": float(np.mean(psnrs)),
        "samples_hog_detect_rate": det_samples, "real_hog_detect_rate": det_real,
        "samples_hog_detect_rate_pad16": det_samples_pad, "real_hog_detect_rate_pad16": det_real_pad,
        "kid_real_train_ids_vs_real_test_mfn": ref,
        "kid_samples_vs_real_mfn": kid_s[0], "kid_samples_vs_real_mfn_std": kid_s[1],
        "kid_recon_vs_real_mfn": kid_r[0],
        "recon_s_per_face": t_rec / max(len(imgs), 1), "device": device, "latent_probes": probes,
        "threshold_source": f"all {int((~vs).sum())} impostor pairs of the training root's validation identities",
        "mobilefacenet_real_pair_far_at_thr": real_far,
        "test_data": str(test_root) if test_root is not None else "held-out test identities of the training root",
        "intervals": {"recon_mobilefacenet_pass@far1e-3": rate_with_ci(rec_scores > thr, labels),
                      "recon_onnx_judge_pass@far1e-3": rate_with_ci(j_scores > thr_j, labels),
                      "onnx_judge_real_pair_tar@far1e-3": rate_with_ci(j_pairs[same] > thr_j,
                                                                              labels[pairs[same][:, 0]]),
                      "recon_onnx_judge_cos_mean": _mean_ci(j_scores, labels),
                      "recon_dlib_pass@0.6": rate_with_ci(d_dist < 0.6, labels),
                      "ssim_mean": _mean_ci(np.asarray(ssims), labels),
                      "psnr_mean": _mean_ci(np.asarray(psnrs), labels),
                      "recon_mobilefacenet_cos_mean": _mean_ci(rec_scores, labels)},
        "targets": {"recon_mobilefacenet_pass@far1e-3": 0.70, "recon_dlib_pass@0.6": 0.80,
                    "samples_hog_detect_rate": 0.90},
    }
    # contact sheet: real / reconstruction pairs, samples, one interpolation between two test identities
    order = np.argsort(labels, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, 10).astype(int)]
    j = next((k for k in range(len(labels)) if labels[k] != labels[picks[0]]), 1)
    rows = [list(imgs[picks]), list(rec[picks]), list(samples[:10]), list(samples[10:20]),
            list(interpolate(gen, imgs[picks[0]], imgs[j], 10))]
    sheet = image_grid(rows)
    with atomic_path(out_dir / "contact_sheet.png") as tmp:
        tmp.write_bytes(array_to_png_bytes(sheet))
    atomic_write_json(out_dir / "generator_eval.json", summary)
    rep = HtmlReport(f"Generator evaluation ({backend})")
    _findings(rep, summary)
    rep.paragraph(f"Held-out CelebA test identities: {summary['n_test_images']} images of "
                  f"{summary['n_test_identities']} people; {n_samples} prior samples.")
    rep.paragraph("Brackets: 95 % bootstrap interval over test identities; n = test images (identities).")
    rep.table([{"metric": k, "value": format_ci(v) if k in summary["intervals"] else v}
               for k, v in {**summary, **summary["intervals"]}.items() if not isinstance(v, dict) or k in
               summary["intervals"]])
    rep.paragraph("Latent probes (dlib distances; A, B = different test identities): "
                  + json.dumps(rounded(probes)))
    rep.image(sheet, "rows: real test faces; their reconstructions; 2 rows of random samples; "
                     "latent interpolation between two test identities")
    rep.write(out_dir / "generator_eval.html")
    return {"summary": summary}


def _findings(rep, m: dict) -> None:
    """The verdict box: each headline rate against its target."""
    from ..core.report import label_for

    checks = [(k, m[k], t) for k, t in m.get("targets", {}).items() if isinstance(m.get(k), float | int)]
    met = [k for k, v, t in checks if v >= t]
    rep.findings([f"{label_for(k).header()}: {v:.3f} (target {t:.2f}; {'met' if v >= t else f'short by {t - v:.3f}'})"
                  for k, v, t in checks] + [f"n = {m['n_test_images']} test images of {m['n_test_identities']} people"],
                 verdict=f"{len(met)} of {len(checks)} targets met", level="good" if len(met) == len(checks) else "warn")
    rep.small_n(int(m["n_test_identities"]), "people")
