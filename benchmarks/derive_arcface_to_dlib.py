"""Recompute ``faceprivacy.core.chip.ARCFACE112_FROM_DLIB150`` and measure how well the fixed warp works.

For UTKFace 200x200 crops (``<data_root>/utkface_crop_part1/images``): dlib HOG detection (upsample 1, exactly
one face), dlib's 5-point shape -> the dlib chip transform (chip150 -> image), dlib's 68-point shape -> the
ArcFace 5 points (eye-contour centres, nose tip 30, mouth corners 48/54) -> ArcFace crop transform
(crop112 -> image). Per face, chip150 -> arcface112 = inv(arcface) o chip. All faces' transforms are pooled
on a 16x16 grid of chip pixels and one least-squares similarity is fitted.

Then, on faces whose dlib chip lies (almost) inside the photo, the descriptor (torch port of dlib's ResNet)
of the warped ArcFace crop is compared with the descriptor of the proper dlib chip.

Usage: ``PYTHONPATH=. python benchmarks/derive_arcface_to_dlib.py [data_root] [--n 400] [--n-eval 100]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _arcface5_from_68(p68: np.ndarray) -> np.ndarray:
    return np.stack([p68[36:42].mean(0), p68[42:48].mean(0), p68[30], p68[48], p68[54]])


def collect_faces(image_dir: Path, n: int, seed: int = 0) -> list[dict]:
    """Detect + landmark up to ``n`` single-face images (deterministic sample of the folder)."""
    import dlib
    from PIL import Image

    from faceprivacy.core.paths import dlib_model_path

    files = sorted(image_dir.glob("*.jpg"))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    det = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(dlib_model_path("shape5")))
    sp68 = dlib.shape_predictor(str(dlib_model_path("shape68")))
    faces = []
    for i in order:
        if len(faces) >= n:
            break
        img = np.asarray(Image.open(files[i]).convert("RGB"))
        dets = det(img, 1)
        if len(dets) != 1:
            continue
        s5 = sp5(img, dets[0])
        s68 = sp68(img, dets[0])
        faces.append({
            "file": files[i].name, "img": img, "dlib_shape": s5,
            "shape5": np.array([[p.x, p.y] for p in s5.parts()], np.float64),
            "arcface5": _arcface5_from_68(np.array([[p.x, p.y] for p in s68.parts()], np.float64)),
        })
    return faces


def fit_transform(faces: list[dict]) -> tuple[np.ndarray, dict]:
    """Pooled least-squares similarity chip150 pixel -> arcface112 pixel, plus the per-face spread."""
    from faceprivacy.core.chip import (
        arcface_crop_transform,
        compose_affine,
        face_chip_transform,
        invert_affine,
        umeyama_similarity,
    )

    g = np.linspace(0, 149, 16)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    grid_h = np.concatenate([grid, np.ones((len(grid), 1))], 1)
    src, dst, per_face = [], [], []
    for f in faces:
        t = compose_affine(invert_affine(arcface_crop_transform(f["arcface5"])), face_chip_transform(f["shape5"]))
        per_face.append(t)
        src.append(grid)
        dst.append(grid_h @ t.T)
    m = umeyama_similarity(np.concatenate(src), np.concatenate(dst))
    pf = np.stack(per_face)
    scales = np.hypot(pf[:, 0, 0], pf[:, 1, 0])
    angles = np.degrees(np.arctan2(pf[:, 1, 0], pf[:, 0, 0]))
    resid = [np.linalg.norm(grid_h @ t.T - grid_h @ m.T, axis=1).mean() for t in per_face]
    stats = {"n_faces": len(faces), "scale": float(np.hypot(m[0, 0], m[1, 0])),
             "angle_deg": float(np.degrees(np.arctan2(m[1, 0], m[0, 0]))),
             "per_face_scale_mean": float(scales.mean()), "per_face_scale_std": float(scales.std()),
             "per_face_angle_std_deg": float(angles.std()),
             "per_face_tx_std": float(pf[:, 0, 2].std()), "per_face_ty_std": float(pf[:, 1, 2].std()),
             "mean_grid_residual_px112": float(np.mean(resid)),
             "p90_grid_residual_px112": float(np.percentile(resid, 90))}
    return m, stats


def chip_inside_fraction(f: dict) -> float:
    """Fraction of the dlib chip's pixels that sample inside the photo."""
    from faceprivacy.core.chip import face_chip_transform

    m = face_chip_transform(f["shape5"])
    g = np.arange(150.0)
    gx, gy = np.meshgrid(g, g)
    x = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
    y = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]
    h, w = f["img"].shape[:2]
    return float(((x >= 0) & (y >= 0) & (x < w - 1) & (y < h - 1)).mean())


def evaluate(faces: list[dict], m: np.ndarray | None = None, border: str = "zeros", pad: int = 0) -> dict:
    """Descriptor L2 between dlib's own chip and the ArcFace crop warped by the fixed transform.

    ``pad`` > 0 reflect-pads each photo first (landmarks shifted), so that neither crop runs off the photo
    and the comparison measures only the warp (layout, resampling, the ArcFace crop's field of view)."""
    import torch

    from faceprivacy.core import chip as chipmod
    from faceprivacy.models.dlib_resnet import load_dlib_resnet

    net = load_dlib_resnet()
    proper, warped = [], []
    old = chipmod.ARCFACE112_FROM_DLIB150
    if m is not None:
        chipmod.ARCFACE112_FROM_DLIB150 = m
    try:
        for f in faces:
            photo = np.pad(f["img"], ((pad, pad), (pad, pad), (0, 0)), mode="reflect") if pad else f["img"]
            img = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None].double()
            # float64 extract_face_chips is pixel-identical to dlib.get_face_chip (tests/test_dlib_port.py)
            proper.append(chipmod.extract_face_chips(img, f["shape5"] + pad, quantize=True)[0]
                          .permute(1, 2, 0).numpy().astype(np.uint8))
            crop = chipmod.warp_affine_dlib(img, chipmod.arcface_crop_transform(f["arcface5"] + pad), (112, 112))
            crop = torch.floor(crop.clamp(0, 255) + 0.5).float()  # a saved uint8 ArcFace crop
            warped.append(chipmod.arcface112_to_dlib150(crop, border=border)[0])
    finally:
        chipmod.ARCFACE112_FROM_DLIB150 = old
    with torch.inference_mode():
        d_proper = net.embed_uint8(np.stack(proper))
        d_warp = net(torch.stack(warped)).numpy()
    dist = np.linalg.norm(d_proper - d_warp, axis=1)
    n = len(d_proper)
    others = np.linalg.norm(d_proper[:, None] - d_proper[None], axis=2)[~np.eye(n, dtype=bool)]
    return {"n": n, "border": border, "photo_reflect_pad": pad, "l2_mean": float(dist.mean()), "l2_median": float(np.median(dist)),
            "l2_p90": float(np.percentile(dist, 90)), "l2_max": float(dist.max()),
            "frac_below_0.6": float((dist < 0.6).mean()),
            "different_faces_l2_mean": float(others.mean())}


def derive_arcface_to_dlib150(data_root: Path, n: int = 400, n_eval: int = 100, seed: int = 0) -> dict:
    """Recompute the 6 constants and the descriptor agreement; returns a JSON-able dict."""
    t0 = time.time()
    faces = collect_faces(Path(data_root) / "utkface_crop_part1" / "images", n, seed)
    m, stats = fit_transform(faces)
    inside = [f for f in faces if chip_inside_fraction(f) >= 0.97]
    ev = faces[:n_eval]
    res = {"matrix_arcface112_from_dlib150": m.round(6).tolist(), "fit": stats,
           # faces whose dlib chip lies >= 97% inside the (tight) UTKFace photo: no padding needed
           "eval_inside_zeros": evaluate(inside[:n_eval], m, "zeros"),
           "eval_inside_replicate": evaluate(inside[:n_eval], m, "replicate"),
           # all faces, photos reflect-padded by 64 px so both crops have full context
           "eval_padded_zeros": evaluate(ev, m, "zeros", pad=64),
           "eval_padded_replicate": evaluate(ev, m, "replicate", pad=64),
           "seconds": round(time.time() - t0, 1)}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_root", nargs="?", default=None)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--n-eval", type=int, default=100)
    ap.add_argument("--out", default=None, help="write the result JSON here")
    a = ap.parse_args(argv)
    import torch

    from faceprivacy.core.paths import default_data_root

    torch.set_num_threads(2)
    root = Path(a.data_root) if a.data_root else default_data_root()
    if root is None:
        print("no data root (pass the datakit path)", file=sys.stderr)
        return 2
    res = derive_arcface_to_dlib150(root, a.n, a.n_eval)
    print(json.dumps(res, indent=1))
    if a.out:
        from faceprivacy.core.fileio import atomic_write_json

        atomic_write_json(Path(a.out), res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
