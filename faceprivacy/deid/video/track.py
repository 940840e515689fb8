"""Face tracks across the frames of a clip: detect every ``detect_every`` frames, follow each face in between
by refitting dlib's 68 landmarks in the box its last landmarks predict, and keep identities apart.

* **Association** (detection frames): a detection joins the live track whose box overlaps it most (IoU >=
  ``MIN_IOU``) unless their dlib descriptors disagree (distance >= ``SWITCH_DISTANCE``, dlib's same-person
  rule), so two people who cross do not swap tracks; a detection left over (a fast move) joins the nearest
  unmatched live track by descriptor (distance < ``deid.pipeline.PERSON_DISTANCE``); any other detection
  starts a new track. A detection whose landmarks miss its box or fail the detector's ``alignable`` check
  (extreme pose, occlusion) continues or
  starts a track at the detector's box and is blurred on that frame. Descriptors are computed when a match could be wrong (a new or young track, two
  faces near each other, a fast move) and at least every ``EMBED_EVERY`` frames per track.
* **Between detections** a track's landmarks are refit inside the box predicted from its last landmarks and
  speed; a refit whose size or position jumps is not trusted: that frame is a *fallback* (the face is blurred
  at the predicted box, never left untouched). A track not re-detected for ``max_coast`` frames ends.
* **Smoothing**: each track's landmarks are smoothed over time with a centred Gaussian (sigma
  ``SMOOTH_SIGMA`` frames), so the aligned crop, and the new face on it, do not flicker.
* **Pseudonyms**: after the pass, tracks are grouped into people by their mean dlib descriptor (distance <
  ``deid.pipeline.PERSON_DISTANCE``; two tracks alive at the same time never share a person), and every
  person gets one pseudonym slot: a person who leaves and comes back keeps the same stranger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: smallest overlap of a detection with a track's box to continue it
MIN_IOU = 0.3
#: dlib descriptor distance at or above which a detection is not the track's person
SWITCH_DISTANCE = 0.6
SMOOTH_SIGMA = 1.5
#: an unambiguous overlap match re-checks the descriptor at least this often (frames)
EMBED_EVERY = 12
#: landmarks whose box overlaps the detector's box less than this did not find the face: blurred instead
MIN_ALIGN_IOU = 0.25
#: a refit landmark box may change its side by this factor and move by this fraction of its side per frame
MAX_SCALE_STEP = 1.3
MAX_SHIFT_STEP = 0.35


def lm_box(lm: np.ndarray) -> np.ndarray:
    """A square detector-like box (x1, y1, x2, y2) around 68 landmarks (brows to chin, jaw to jaw)."""
    x1, x2 = float(lm[:, 0].min()), float(lm[:, 0].max())
    y1, y2 = float(lm[17:27, 1].min()), float(lm[:, 1].max())
    s = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / ua) if ua > 0 else 0.0


@dataclass
class Track:
    """One face followed through the clip: per frame its raw landmarks (None: fallback) and box."""

    id: int
    first: int
    lm: dict[int, np.ndarray | None] = field(default_factory=dict)
    box: dict[int, np.ndarray] = field(default_factory=dict)
    detected: set[int] = field(default_factory=set)
    desc: list[np.ndarray] = field(default_factory=list)
    last_detected: int = 0
    last_desc: int = 0
    ended: bool = False
    #: the largest detected view: (frame index, face width, patch of the frame, its (x0, y0) offset, landmarks)
    anchor: tuple | None = None
    slot: int = -1
    smooth: dict[int, np.ndarray | None] = field(default_factory=dict)

    @property
    def last(self) -> int:
        return max(self.box)

    def last_lm(self) -> np.ndarray | None:
        for k in sorted(self.lm, reverse=True):
            if self.lm[k] is not None:
                return self.lm[k]
        return None

    def predicted_box(self, i: int) -> np.ndarray:
        """The box at frame ``i`` extrapolated from the last two *trusted* boxes (detected, or followed with
        landmarks): the centre moves on at its velocity, at most ``MAX_SHIFT_STEP`` of the side per frame, and the
        size changes by its ratio per frame, within ``MAX_SCALE_STEP``. A box that was itself only a prediction
        (a failed follow) never feeds the velocity: extrapolating from one made the boxes of a track followed
        between detections (``--detect-every 3``) swing ever wider until they overflowed."""
        known = sorted(self.box)
        ks = [k for k in known if k in self.detected or self.lm.get(k) is not None][-2:] or known[-1:]
        b = np.asarray(self.box[ks[-1]], np.float64)
        if len(ks) < 2 or i <= ks[-1]:
            return b
        a = np.asarray(self.box[ks[0]], np.float64)
        dt, n = ks[1] - ks[0], i - ks[1]
        side_a, side_b = float(a[2] - a[0]), float(b[2] - b[0])
        if side_b <= 0 or side_a <= 0:
            return b
        c_a, c_b = (a[:2] + a[2:]) / 2, (b[:2] + b[2:]) / 2
        v = np.clip((c_b - c_a) / dt, -MAX_SHIFT_STEP * side_b, MAX_SHIFT_STEP * side_b)
        r = float(np.clip((side_b / side_a) ** (1.0 / dt), 1 / MAX_SCALE_STEP, MAX_SCALE_STEP)) ** n
        half = (b[2:] - b[:2]) / 2 * r
        c = c_b + v * n
        return np.concatenate([c - half, c + half])

    def mean_desc(self) -> np.ndarray | None:
        return np.mean(self.desc, axis=0) if self.desc else None


class Tracker:
    """Builds ``Track`` s frame by frame (see the module docstring). ``detector`` has ``detect(img)``
    returning faces with ``box`` and ``landmarks68`` (``core.detect.FaceDetector``)."""

    def __init__(self, detector, *, detect_every: int = 1, max_coast: int | None = None, embed=None) -> None:
        from ...core.detect import FaceDetector

        self.detector = detector
        self.detect_every = max(1, int(detect_every))
        self.max_coast = int(max_coast if max_coast is not None else max(2 * self.detect_every, 4))
        self._lm = FaceDetector(with_68=True)  # landmarks only (dlib's shape predictor)
        self._embed = embed
        self.tracks: list[Track] = []
        self.n_detections = 0

    def landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self._lm.landmarks(frame, box)[1]

    def descriptor(self, frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """dlib's 128-D descriptor of the face at 68 landmarks ``lm`` (dlib's own chip and network)."""
        if self._embed is not None:
            return np.asarray(self._embed(frame, lm), np.float64)
        import dlib

        from ...core.paths import dlib_model_path

        if not hasattr(self, "_facerec"):
            self._facerec = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))
        b = lm_box(lm)
        rect = dlib.rectangle(*[int(round(v)) for v in b])
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in lm])
        return np.asarray(self._facerec.compute_face_descriptor(np.ascontiguousarray(frame), shape), np.float64)

    def live(self) -> list[Track]:
        return [t for t in self.tracks if not t.ended]

    def step(self, i: int, frame: np.ndarray) -> None:
        """Process frame ``i``."""
        live = self.live()
        matched: set[int] = set()
        if i % self.detect_every == 0:
            matched = self._detect(i, frame, live)
        for t in live:
            if t.id in matched:
                continue
            if i - t.last_detected > self.max_coast:
                t.ended = True
                continue
            self._follow(i, frame, t)

    def _detect(self, i: int, frame: np.ndarray, live: list[Track]) -> set[int]:
        faces = self.detector.detect(frame)
        self.n_detections += len(faces)
        lms = [np.asarray(f.landmarks68, float) if getattr(f, "landmarks68", None) is not None
               else self.landmarks(frame, np.asarray(f.box, float)) for f in faces]
        if not lms:
            return set()
        boxes = [lm_box(lm) for lm in lms]
        # landmarks that missed the detected face (extreme pose, occlusion): the face is kept at the
        # detector's box and blurred on this frame (see ``Track.lm``)
        aligned = [bool(getattr(f, "alignable", True)) and iou(b, np.asarray(f.box, float)) >= MIN_ALIGN_IOU
                   for b, f in zip(boxes, faces, strict=True)]
        boxes = [b if ok else np.asarray(f.box, float) for b, f, ok in zip(boxes, faces, aligned, strict=True)]
        cache: dict[int, np.ndarray | None] = {}

        def desc(d: int) -> np.ndarray | None:
            if d not in cache:
                cache[d] = self.descriptor(frame, lms[d]) if aligned[d] else None
            return cache[d]

        ov = np.array([[iou(boxes[d], t.predicted_box(i)) for t in live] for d in range(len(lms))]).reshape(
            len(lms), len(live))
        pairs = sorted(((ov[d, k], d, k) for d in range(len(lms)) for k in range(len(live))), reverse=True)
        used_d: set[int] = set()
        matched: set[int] = set()
        for o, d, k in pairs:
            t = live[k]
            if o < MIN_IOU or d in used_d or t.id in matched:
                continue
            # the descriptor is checked when the match could be wrong: a young track, another face near,
            # or not checked for EMBED_EVERY frames
            ambiguous = (np.sum(ov[d] > 0.05) > 1 or np.sum(ov[:, k] > 0.05) > 1 or len(t.desc) < 3
                         or i - t.last_desc >= EMBED_EVERY)
            if ambiguous and t.desc and desc(d) is not None:
                if np.linalg.norm(desc(d) - t.mean_desc()) >= SWITCH_DISTANCE:
                    continue
            used_d.add(d)
            matched.add(t.id)
            self._observe(t, i, frame, lms[d] if aligned[d] else None, boxes[d], cache.get(d))
        # a face that moved too far for any overlap: the nearest live track by descriptor, same-person rule
        from ..pipeline import PERSON_DISTANCE

        rest = [d for d in range(len(lms)) if d not in used_d and aligned[d]]
        free = [k for k, t in enumerate(live) if t.id not in matched and t.desc]
        pairs2 = sorted((float(np.linalg.norm(desc(d) - live[k].mean_desc())), d, k) for d in rest for k in free)
        for dist, d, k in pairs2:
            t = live[k]
            if dist >= PERSON_DISTANCE or d in used_d or t.id in matched:
                continue
            used_d.add(d)
            matched.add(t.id)
            self._observe(t, i, frame, lms[d], boxes[d], desc(d))
        for d in range(len(lms)):
            if d not in used_d:
                t = Track(id=len(self.tracks), first=i)
                self.tracks.append(t)
                matched.add(t.id)
                self._observe(t, i, frame, lms[d] if aligned[d] else None, boxes[d], desc(d))
        return matched

    def _observe(self, t: Track, i: int, frame: np.ndarray, lm: np.ndarray | None, box: np.ndarray,
                 desc: np.ndarray | None) -> None:
        t.lm[i], t.box[i] = lm, box
        t.detected.add(i)
        t.last_detected = i
        if desc is not None:
            t.desc.append(np.asarray(desc, np.float64))
            t.last_desc = i
        w = float(box[2] - box[0])
        if lm is not None and (t.anchor is None or w > t.anchor[1]):
            # a patch 3x the box around the face: enough for any working crop of this view
            h, wd = frame.shape[:2]
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            x0, y0 = int(max(0, cx - 1.5 * w)), int(max(0, cy - 1.5 * w))
            x1, y1 = int(min(wd, cx + 1.5 * w)), int(min(h, cy + 1.5 * w))
            t.anchor = (i, w, frame[y0:y1, x0:x1].copy(), (x0, y0), lm - np.array([x0, y0], float))

    def _follow(self, i: int, frame: np.ndarray, t: Track) -> None:
        pb = t.predicted_box(i)
        h, w = frame.shape[:2]
        if (not np.all(np.isfinite(pb)) or pb[2] - pb[0] < 1 or pb[2] - pb[0] > 2 * max(h, w)
                or pb[2] <= 0 or pb[3] <= 0 or pb[0] >= w or pb[1] >= h):
            t.ended = True  # predicted out of the frame or out of scale: the next detection starts a new track
            return
        prev = t.last_lm()
        lm = self.landmarks(frame, pb)
        nb = lm_box(lm)
        side_p, side_n = pb[2] - pb[0], nb[2] - nb[0]
        shift = np.hypot((nb[0] + nb[2] - pb[0] - pb[2]) / 2, (nb[1] + nb[3] - pb[1] - pb[3]) / 2)
        ok = (prev is not None and 1 / MAX_SCALE_STEP <= side_n / max(side_p, 1e-6) <= MAX_SCALE_STEP
              and shift <= MAX_SHIFT_STEP * side_p)
        t.lm[i] = lm if ok else None
        t.box[i] = nb if ok else pb

    # ----- after the pass ----------------------------------------------------------------------------
    def finish(self, person_distance: float | None = None) -> list[Track]:
        """Smooth every track and give it a pseudonym slot -> tracks (by first frame)."""
        from ..pipeline import PERSON_DISTANCE

        dist = PERSON_DISTANCE if person_distance is None else person_distance
        for t in self.tracks:
            t.smooth = smooth_landmarks(t.lm)
        assign_slots(self.tracks, dist)
        return self.tracks


def smooth_landmarks(lm: dict[int, np.ndarray | None], sigma: float = SMOOTH_SIGMA) -> dict[int, np.ndarray | None]:
    """Centred Gaussian smoothing over time of one track's landmarks (frames without landmarks stay None and
    do not contribute)."""
    frames = sorted(lm)
    r = max(1, int(round(3 * sigma)))
    out: dict[int, np.ndarray | None] = {}
    for f in frames:
        if lm[f] is None:
            out[f] = None
            continue
        acc, wsum = np.zeros_like(lm[f]), 0.0
        for g in range(f - r, f + r + 1):
            x = lm.get(g)
            if x is None:
                continue
            w = float(np.exp(-0.5 * ((g - f) / sigma) ** 2))
            acc += w * x
            wsum += w
        out[f] = acc / wsum
    return out


def assign_slots(tracks: list[Track], dist: float) -> int:
    """Group tracks into people (see the module docstring); sets ``slot`` -> number of people."""
    centres: list[np.ndarray] = []
    counts: list[int] = []
    members: list[list[Track]] = []
    for t in sorted(tracks, key=lambda t: (t.first, t.id)):
        d = t.mean_desc()
        busy = {s for s, ms in enumerate(members) if any(_overlap(t, m) for m in ms)}
        best, bd = -1, np.inf
        if d is not None:
            for s, c in enumerate(centres):
                if s not in busy and np.linalg.norm(d - c) < min(dist, bd):
                    best, bd = s, float(np.linalg.norm(d - c))
        if best < 0:
            centres.append(np.zeros(128) if d is None else d.copy())
            counts.append(1)
            members.append([t])
            best = len(centres) - 1
        else:
            counts[best] += 1
            centres[best] += (d - centres[best]) / counts[best]
            members[best].append(t)
        t.slot = best
    return len(centres)


def _overlap(a: Track, b: Track) -> bool:
    return not (a.last < b.first or b.last < a.first)
