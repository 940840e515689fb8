"""Occlusion check of ``anonymize``'s safety net: is part of a detected face covered (mask, eye band, hand,
one side)?

An occluded face defeats the replacement: its landmarks are guessed under the occluder, the morph paints the
stranger over the visible part only, and what the occluder leaves (an eye band's corners, the eyes above a
mask) can still verify as the original for a recognizer the safety net does not run. So ``anonymize`` sends a
face this check calls occluded straight to the obscuring fallback (``safety.obscure``: the whole grown box,
occluder included), sealed like any face.

The check is a logistic regression on the two safety-net descriptors of the face's ArcFace crop *from the
input*: dlib's ResNet descriptor and the CASIA MobileFaceNet's (the ONNX MobileFaceNet, the evaluation's
judge, is never used). It is trained here (:func:`train`, ``python -m faceprivacy.deid.occlusion``) on
CelebA *training* identities only, with synthetic occluders drawn by :func:`synth_occlude` (its own family of
shapes, colours and textures, wider than the benchmark's scene generator), 60 % of the crops (clean or
occluded) with busy background along some edges (:func:`surround`: a cut-out face is not an occluded one),
and every crop degraded like a detected face: a jittered alignment and a random lower resolution. The threshold is
chosen on *validation* identities, on the faces ``anonymize`` would replace in the validation scene set of
``eval-detection`` (at their detected five points): it flags at most :data:`TARGET_CLEAN_FLAGGED` of the
unoccluded ones >= 24 px. Record: ``models/weights/TRAINING_occlusion.md``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

#: the weights file (package data) and the share of unoccluded validation-scene faces (>= 24 px, the ones
#: anonymize would replace) the threshold may flag
WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "occlusion_lr.json"
TARGET_CLEAN_FLAGGED = 0.03
KINDS = ("mask", "eyes", "side", "blob")


def _five():
    from ..core.align import ARCFACE_TEMPLATE

    return np.asarray(ARCFACE_TEMPLATE, np.float64)


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An occluder's pixels: flat colour with noise, a two-colour gradient, stripes, or a blurred noise
    pattern."""
    from scipy.ndimage import gaussian_filter

    c1 = rng.uniform(0, 255, 3)
    kind = int(rng.integers(4))
    if kind == 0:
        img = c1 + rng.normal(0, rng.uniform(2, 30), (h, w, 3))
    elif kind == 1:
        c2 = rng.uniform(0, 255, 3)
        t = np.linspace(0, 1, h if rng.random() < 0.5 else w)
        t = t[:, None] if len(t) == h else t[None, :]
        img = c1 + (c2 - c1) * t[..., None] + rng.normal(0, 4, (h, w, 3))
    elif kind == 2:
        c2 = rng.uniform(0, 255, 3)
        period = rng.uniform(3, 14)
        yy, xx = np.mgrid[:h, :w]
        a = rng.uniform(0, np.pi)
        m = (np.sin((xx * np.cos(a) + yy * np.sin(a)) * 2 * np.pi / period) > 0)[..., None]
        img = np.where(m, c1, c2) + rng.normal(0, 3, (h, w, 3))
    else:
        n = rng.normal(0, 1, (h, w, 3))
        n = gaussian_filter(n, (rng.uniform(1, 5),) * 2 + (0,))
        img = c1 + n / (n.std() + 1e-6) * rng.uniform(10, 50)
    return img


def synth_occlude(crop: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A 112x112 ArcFace crop with part of the face covered by a synthetic occluder of ``kind`` (``KINDS``):
    a mask over nose and mouth, a band or sunglasses over the eyes, one side of the face, or a blob (a hand,
    an object) over at least one eye or the mouth. Shapes are rectangles or ellipses with random extent."""
    f = _five()
    img = crop.astype(np.float64).copy()
    h, w = img.shape[:2]
    eye, mouth = f[:2].mean(0), f[3:].mean(0)
    d = float(np.linalg.norm(mouth - eye))
    yy, xx = np.mgrid[:h, :w]
    if kind == "mask":
        x1, x2 = f[3, 0] - rng.uniform(0.4, 1.0) * d, f[4, 0] + rng.uniform(0.4, 1.0) * d
        y1, y2 = f[2, 1] - rng.uniform(-0.1, 0.35) * d, mouth[1] + rng.uniform(0.7, 1.6) * d
    elif kind == "eyes":
        x1, x2 = f[0, 0] - rng.uniform(0.3, 0.8) * d, f[1, 0] + rng.uniform(0.3, 0.8) * d
        y1, y2 = eye[1] - rng.uniform(0.2, 0.45) * d, eye[1] + rng.uniform(0.2, 0.45) * d
    elif kind == "side":
        cx = f[2, 0] + rng.uniform(-0.25, 0.25) * d
        x1, x2 = (-1.0, cx) if rng.random() < 0.5 else (cx, w + 1.0)
        y1, y2 = eye[1] - rng.uniform(0.4, 1.0) * d, mouth[1] + rng.uniform(0.3, 1.2) * d
    else:
        target = f[int(rng.choice([0, 1, 3, 4]))]
        r = rng.uniform(0.45, 0.9) * d
        cx, cy = target + rng.normal(0, 0.15 * d, 2)
        x1, x2, y1, y2 = cx - r * rng.uniform(0.8, 1.3), cx + r * rng.uniform(0.8, 1.3), cy - r, cy + r
    if kind == "eyes" and rng.random() < 0.35:  # sunglasses: two ellipses and a bridge
        ry = (y2 - y1) / 2
        rx = rng.uniform(0.35, 0.55) * d
        m = np.zeros((h, w), bool)
        for p in f[:2]:
            m |= ((xx - p[0]) / rx) ** 2 + ((yy - p[1]) / ry) ** 2 <= 1
        m |= (np.abs(yy - eye[1]) < max(1.0, 0.06 * d)) & (xx > f[0, 0]) & (xx < f[1, 0])
    elif kind in ("blob", "mask") and rng.random() < 0.5:
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    else:
        m = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
    tex = _texture(h, w, rng)
    img = np.where(m[..., None], tex, img)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def surround(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop with a band of busy background (:func:`_texture`) along some of its edges: a tightly cropped
    or cut-out face on a textured scene, whose surroundings are not an occluder."""
    img = crop.copy()
    h, w = img.shape[:2]
    for side in range(4):
        if rng.random() < 0.7:
            b = int(rng.integers(2, 23))
            tex = np.clip(_texture(h, w, rng) + 0.5, 0, 255).astype(np.uint8)
            sl = [(slice(0, b), slice(None)), (slice(h - b, h), slice(None)), (slice(None), slice(0, b)),
                  (slice(None), slice(w - b, w))][side]
            img[sl] = tex[sl]
    return img


def degrade(crop: np.ndarray, rng: np.random.Generator, jitter: float = 1.0) -> np.ndarray:
    """The crop as a detected face gives it: a random similarity jitter of the alignment (shift up to
    ``6 % x jitter`` of the side, rotation ``10 deg x jitter``, scale ``10 % x jitter``), a random mirror, and a
    resolution drawn log-uniformly in 20-112 px (down and back up)."""
    from PIL import Image

    from ..core.align import warp_affine

    h, w = crop.shape[:2]
    a = np.deg2rad(rng.uniform(-10, 10) * jitter)
    s = 1.0 + rng.uniform(-0.1, 0.1) * jitter
    t = rng.uniform(-0.06, 0.06, 2) * w * jitter
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    r = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = np.hstack([r, (c - r @ c + t)[:, None]])
    pad = w // 4
    big = np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    m_big = m.copy()
    m_big[:, 2] = m[:, 2] - m[:, :2] @ np.array([pad, pad])
    out = warp_affine(big, m_big, (w, h))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    side = int(round(np.exp(rng.uniform(np.log(20), np.log(w)))))
    if side < w:
        im = Image.fromarray(np.ascontiguousarray(out))
        out = np.asarray(im.resize((side, side), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(out)


def features(nets: dict, crops112: np.ndarray) -> np.ndarray:
    """The check's input: the dlib and CASIA MobileFaceNet descriptors of the crops, side by side."""
    from ..core.embedders import embed_arcface_crops

    crops112 = np.asarray(crops112)
    if not len(crops112):
        return np.zeros((0, 256))
    return np.concatenate([embed_arcface_crops(nets[k], crops112) for k in ("dlib", "mobilefacenet")], 1)


class OcclusionCheck:
    """The trained check (:data:`WEIGHTS`): ``prob(features)`` and ``flags(features)`` (prob >= threshold)."""

    def __init__(self, path: Path | str = WEIGHTS) -> None:
        w = json.loads(Path(path).read_text())
        self.mean = np.asarray(w["mean"], np.float64)
        self.scale = np.asarray(w["scale"], np.float64)
        self.coef = np.asarray(w["coef"], np.float64)
        self.bias = float(w["bias"])
        self.threshold = float(w["threshold"])

    def prob(self, feats: np.ndarray) -> np.ndarray:
        z = ((np.asarray(feats, np.float64) - self.mean) / self.scale) @ self.coef + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def flags(self, feats: np.ndarray) -> np.ndarray:
        feats = np.asarray(feats)
        if not len(feats):
            return np.zeros(0, bool)
        return self.prob(feats) >= self.threshold


@functools.cache
def default_check() -> OcclusionCheck | None:
    """The shipped check (None when its weights file is missing)."""
    return OcclusionCheck() if WEIGHTS.is_file() else None


def _crop_sets(data: Path, n_train: int, seed: int, val_repeats: int = 4):
    """(train crops, train labels, val crops, val labels, val kinds, val source): CelebA train identities for
    training; CelebA val identities + UTKFace val crops (warped to the ArcFace layout), each drawn
    ``val_repeats`` times (clean or occluded, degraded), for the threshold."""
    from ..core.align import arcface_crop
    from ..core.data import celeba_subset, identity_split
    from .crops import load_crops
    from .evaluation.scenes import load_sources

    rng = np.random.default_rng(seed)
    tr = identity_split(celeba_subset(Path(data) / "celeba_subset_aligned112"))["train"]
    rows = np.sort(rng.permutation(len(tr.paths))[:n_train])
    base = load_crops([tr.paths[i] for i in rows])
    xs, ys = [], []
    for c in base:  # each photo twice: clean and occluded (the same person on both sides of the boundary)
        for occ in (False, True):
            img = synth_occlude(c, KINDS[int(rng.integers(len(KINDS)))], rng) if occ else c
            if rng.random() < 0.6:
                img = surround(img, rng)
            xs.append(degrade(img, rng))
            ys.append(int(occ))
    val_src = load_sources(Path(data), "val", 100, 100, seed)
    vx, vy, vk, vd = [], [], [], []
    for j, s in enumerate(val_src * val_repeats):
        crop = arcface_crop(s.image, s.five, 112)[0]
        kind = "none" if j % 2 == 0 else KINDS[int(rng.integers(len(KINDS)))]
        img = crop if kind == "none" else synth_occlude(crop, kind, rng)
        vx.append(degrade(img, rng))
        vy.append(int(kind != "none"))
        vk.append(kind)
        vd.append(s.dataset)
    return np.stack(xs), np.array(ys), np.stack(vx), np.array(vy), np.array(vk), np.array(vd)


def scene_probs(data: Path, chk: OcclusionCheck, nets: dict, faces: int = 100, seed: int = 0,
                occluded: float = 0.3) -> dict:
    """The check's probability for every face ``anonymize`` would replace (strong, alignable detections of its
    default detector) on the *validation* scene set of ``faceprivacy eval-detection --identities val --faces
    <faces> --seed <seed>``, at the detected five points, with each face's occlusion and size -> lists."""
    from ..core.detect import anonymize_detector
    from .evaluation.scenes import build_scenes, load_sources
    from .safety import face_crops

    scenes = build_scenes(load_sources(Path(data), "val", faces, faces, seed), occluded=occluded, seed=seed)
    det = anonymize_detector(data)
    out: dict = {"prob": [], "occlusion": [], "size": []}
    for sc in scenes:
        for f in det.detect(sc.image):
            if f.weak or not f.alignable:
                continue
            c = (f.box[:2] + f.box[2:]) / 2
            gt = [g for g in sc.faces if g.box[0] <= c[0] <= g.box[2] and g.box[1] <= c[1] <= g.box[3]]
            if not gt:
                continue
            feats = features(nets, face_crops(sc.image, [f.arcface5]))
            out["prob"].append(float(chk.prob(feats)[0]))
            out["occlusion"].append(gt[0].occlusion or "none")
            out["size"].append(float(gt[0].size))
    return out


def clean_threshold(sp: dict, target: float) -> tuple[float, np.ndarray]:
    """The threshold that flags at most ``target`` of the unoccluded faces >= 24 px in ``scene_probs`` output
    -> (threshold, those faces' probabilities)."""
    prob, occ, size = np.array(sp["prob"]), np.array(sp["occlusion"]), np.array(sp["size"])
    clean = prob[(occ == "none") & (size >= 24)]
    return float(np.quantile(clean, 1 - target, method="higher")) + 1e-9, clean


def frame_probs(data: Path, chk: OcclusionCheck, nets: dict, probes_per_id: int = 2) -> list[float]:
    """The check's probability for every face ``anonymize`` would replace in ``eval-deid``'s synthetic full
    frames of the *validation* people (clean photos: every flag is a false positive)."""
    from ..core.detect import anonymize_detector
    from .evaluate import EvalConfig
    from .evaluation.data import load_eval_data
    from .evaluation.frames import make_frames
    from .safety import face_crops

    ec = EvalConfig()
    ev = load_eval_data(Path(data), None, "val", probes_per_id, 0, 0, 300, seed=ec.seed)
    det = anonymize_detector(data)
    out: list[float] = []
    for fr in make_frames(ev.x, ec.faces_per_frame, ec.face_px, seed=ec.seed):
        fs = [f for f in det.detect(fr.image) if f.alignable and not f.weak]
        if fs:
            out += chk.prob(features(nets, face_crops(fr.image, [f.arcface5 for f in fs]))).tolist()
    return out


def probe_flags(data: Path, split: str = "test", grid: Path | str | None = None) -> dict:
    """The shipped check on ``eval-deid``'s probe photos of ``split`` (one per person, aligned 112-px crops,
    unoccluded by construction: every flag is a false positive) -> counts and probabilities; ``grid``: a PNG
    row of the flagged crops, to look at."""
    from ..core.embedders import get_embedder
    from .evaluate import EvalConfig
    from .evaluation.data import load_eval_data

    ec = EvalConfig()
    ev = load_eval_data(Path(data), None, split, 1, 0, 0, 300, seed=ec.seed)
    nets = {"dlib": get_embedder("dlib"), "mobilefacenet": get_embedder("mobilefacenet", str(data))}
    chk = OcclusionCheck()
    prob = chk.prob(features(nets, ev.x))
    flagged = np.flatnonzero(prob >= chk.threshold)
    if grid is not None and len(flagged):
        from ..core.imageio import save_image

        save_image(Path(grid), np.concatenate([ev.x[i] for i in flagged], 1))
    return {"split": split, "n": int(len(prob)), "flagged": int(len(flagged)), "threshold": chk.threshold,
            "flagged_index": flagged.tolist(), "prob": np.round(prob, 4).tolist()}


def rethreshold(data: Path, path: Path | str = WEIGHTS, target: float = TARGET_CLEAN_FLAGGED) -> tuple[dict, dict]:
    """Keep the fitted check at ``path`` and choose its threshold again (as :func:`train` does, for ``target``)
    -> (weights, report with the flag rates on the validation scenes and on eval-deid's validation frames)."""
    from ..core.embedders import get_embedder

    nets = {"dlib": get_embedder("dlib"), "mobilefacenet": get_embedder("mobilefacenet", str(data))}
    chk = OcclusionCheck(path)
    sp = scene_probs(Path(data), chk, nets)
    prob, occ = np.array(sp["prob"]), np.array(sp["occlusion"])
    thr, clean_sc = clean_threshold(sp, target)
    w = json.loads(Path(path).read_text()) | {"threshold": thr}
    fp = np.array(frame_probs(Path(data), chk, nets))
    rep = {"val_scenes": {"threshold": thr, "target_clean_flagged": target,
                          "flagged": {k: {"flagged": int(np.sum(prob[occ == k] >= thr)), "n": int((occ == k).sum())}
                                      for k in ("none", "mask", "eyes", "side") if (occ == k).any()},
                          "clean_from_24px_flagged": float(np.mean(clean_sc >= thr)),
                          "n_clean_from_24px": int(len(clean_sc))},
           "val_eval_deid_frames": {"flagged": int(np.sum(fp >= thr)), "n": int(len(fp))}}
    return w, rep


def train(data: Path, n_train: int = 2000, seed: int = 0, c: float = 0.1) -> tuple[dict, dict]:
    """Fit the check (module docstring) -> (weights, report)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from ..core.embedders import get_embedder

    nets = {"dlib": get_embedder("dlib"), "mobilefacenet": get_embedder("mobilefacenet", str(data))}
    x, y, vx, vy, vk, vd = _crop_sets(Path(data), n_train, seed)
    f, vf = features(nets, x), features(nets, vx)
    mean, scale = f.mean(0), f.std(0) + 1e-6
    lr = LogisticRegression(C=c, max_iter=2000).fit((f - mean) / scale, y)
    w = {"mean": mean.tolist(), "scale": scale.tolist(), "coef": lr.coef_[0].tolist(),
         "bias": float(lr.intercept_[0]), "threshold": 0.5}
    chk = OcclusionCheck.__new__(OcclusionCheck)
    chk.mean, chk.scale, chk.coef, chk.bias = mean, scale, lr.coef_[0], float(lr.intercept_[0])
    pv = chk.prob(vf)
    # the threshold: on validation scenes, at the detected points, flag at most TARGET_CLEAN_FLAGGED of the
    # unoccluded faces >= 24 px that anonymize would replace
    sp = scene_probs(Path(data), chk, nets)
    prob, occ = np.array(sp["prob"]), np.array(sp["occlusion"])
    thr, clean_sc = clean_threshold(sp, TARGET_CLEAN_FLAGGED)
    w["threshold"] = thr
    rep = {"train": {"crops": int(len(y)), "occluded": int(y.sum()), "split": "CelebA train identities",
                     "train_acc": float(np.mean((chk.prob(f) >= 0.5) == y))},
           "val_crops": {"crops": int(len(vy)), "occluded": int(vy.sum()), "auc": float(roc_auc_score(vy, pv)),
                         "flagged_at_threshold": {k: float(np.mean(pv[vk == k] >= thr)) for k in ("none",) + KINDS},
                         "clean_flagged_by_dataset": {d: float(np.mean(pv[(vd == d) & (vy == 0)] >= thr))
                                                      for d in sorted(set(vd.tolist()))}},
           "val_scenes": {"command": "faceprivacy eval-detection --identities val --faces 100 (its scene set)",
                          "faces_replaced": int(len(prob)), "threshold": thr,
                          "target_clean_flagged": TARGET_CLEAN_FLAGGED,
                          "flagged": {k: {"rate": float(np.mean(prob[occ == k] >= thr)), "n": int((occ == k).sum())}
                                      for k in ("none", "mask", "eyes", "side") if (occ == k).any()},
                          "clean_from_24px_flagged": float(np.mean(clean_sc >= thr)),
                          "n_clean_from_24px": int(len(clean_sc))},
           "c": c, "seed": seed}
    return w, rep


def main(argv: list[str] | None = None) -> int:
    """``python -m faceprivacy.deid.occlusion [--data D] [--weights JSON] [-o REPORT] [--threshold-only T]``:
    train the check (or only choose its threshold again)."""
    import argparse

    from ..core.fileio import atomic_write_bytes
    from ..core.paths import default_data_root

    p = argparse.ArgumentParser(prog="python -m faceprivacy.deid.occlusion", description=main.__doc__)
    p.add_argument("--data", default=None)
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("-o", "--out", default=None)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--c", type=float, default=0.1)
    p.add_argument("--threshold-only", type=float, default=None, metavar="TARGET",
                   help="keep the fitted weights; choose the threshold again for this share of clean faces")
    p.add_argument("--probe-flags", default=None, metavar="SPLIT",
                   help="only count the shipped check's flags on eval-deid's probe photos of SPLIT (val/test)")
    p.add_argument("--grid", default=None, help="with --probe-flags: PNG of the flagged crops")
    a = p.parse_args(argv)
    data = Path(a.data or default_data_root())
    if a.probe_flags is not None:  # a measurement only: the weights stay as they are
        rep = probe_flags(data, a.probe_flags, a.grid)
        shown = json.dumps({k: v for k, v in rep.items() if k != "prob"})
    else:
        w, rep = (rethreshold(data, a.weights, a.threshold_only) if a.threshold_only is not None
                  else train(data, a.n_train, c=a.c))
        atomic_write_bytes(Path(a.weights), (json.dumps(w) + "\n").encode())
        shown = json.dumps(rep, indent=2)
    if a.out:
        atomic_write_bytes(Path(a.out), (json.dumps(rep, indent=2) + "\n").encode())
    print(shown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
