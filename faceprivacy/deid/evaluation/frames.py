"""The two protocols. Both run a method through the project's real pipeline and return, for each probe, the
112-px ArcFace-layout crop a recognizer sees, so every measure treats both protocols alike.

* **Full frames** (what a user runs): probe crops are scaled so the face is 80-300 px wide, pasted with
  feathered edges onto seeded textured backgrounds (several people per frame, known places), written as PNG
  files and anonymized with ``batch.anonymize_paths`` (the function behind ``faceprivacy anonymize``:
  detection, landmarks, alignment, the method, paste-back, record, atomic PNG writing), once per passphrase.
  Each face is cropped back at its known place. A face the detector misses keeps its original pixels (that is
  what the user would publish). ``batch.recover_paths`` then restores the frames with the right passphrase
  (bit-exact check against the input file) and, with a wrong one and ``plausible``, gives the wrong-key
  output where the method has one. Detection is run once per input frame (cached) and shared by every
  method and key: the inputs are identical, so are the detections.
* **Aligned crops**: the crops are tiled into mosaics (edge-padded tiles) and anonymized with the same
  ``Deidentifier`` given the crops' known five points (no detector), so each face gets its own key as in a
  photo with many faces; wrong key and recovery through ``Deidentifier.recover``.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import AuthenticationError, FacePrivacyError
from ...core.progress import progress

#: dlib HOG face-box width / side of the ArcFace-layout crop, and the box centre's height (measured on
#: CelebA test crops: 0.75 +- 0.09 and 0.62)
FACE_PER_CROP = 0.75
FACE_CY = 0.6


@dataclass
class Frame:
    """A synthetic photo and where each probe was placed: (probe index, x0, y0, side of the pasted crop)."""

    image: np.ndarray
    places: list[tuple[int, int, int, int]] = field(default_factory=list)


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded textured background: smooth colour field + mid-frequency texture + a light gradient."""
    from scipy.ndimage import gaussian_filter, zoom

    def field_(scale: int, sigma: float) -> np.ndarray:
        small = rng.normal(size=(max(2, h // scale), max(2, w // scale), 3))
        big = zoom(small, (h / small.shape[0], w / small.shape[1], 1), order=1)[:h, :w]
        return gaussian_filter(big, (sigma, sigma, 0))

    base = rng.uniform(40, 215, size=3)
    img = base + 45 * field_(64, 8) + 18 * field_(8, 1.5)
    img += np.linspace(-25, 25, w)[None, :, None] * rng.uniform(-1, 1)
    img += rng.normal(0, 3, size=img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def make_frames(x: np.ndarray, faces_per_frame: int = 3, face_px: tuple[float, float] = (80, 300),
                seed: int = 0) -> list[Frame]:
    """Place the probe crops ``x`` (N,112,112,3) in frames, ``faces_per_frame`` each, face widths drawn
    log-uniformly in ``face_px``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    frames = []
    for start in range(0, len(x), faces_per_frame):
        idx = list(range(start, min(start + faces_per_frame, len(x))))
        sides = [int(round(np.exp(rng.uniform(*np.log(face_px))) / FACE_PER_CROP)) for _ in idx]
        gap = int(rng.integers(24, 64))
        h = max(sides) + 2 * gap
        w = sum(sides) + gap * (len(sides) + 1)
        img = background(h, w, rng).astype(np.float64)
        x0 = gap
        places = []
        for i, s in zip(idx, sides, strict=True):
            y0 = int(rng.integers(gap // 2, h - s - gap // 2 + 1))
            crop = np.asarray(Image.fromarray(x[i]).resize((s, s), Image.Resampling.BICUBIC), np.float64)
            ramp = np.clip(np.minimum(np.arange(s), np.arange(s)[::-1]) / max(2.0, 0.08 * s), 0, 1)
            alpha = np.minimum(ramp[:, None], ramp[None, :])[..., None]
            img[y0:y0 + s, x0:x0 + s] = img[y0:y0 + s, x0:x0 + s] * (1 - alpha) + crop * alpha
            places.append((i, x0, y0, s))
            x0 += s + gap
        frames.append(Frame(np.clip(img + 0.5, 0, 255).astype(np.uint8), places))
    return frames


def crop_back(img: np.ndarray, place: tuple[int, int, int, int], size: int = 112) -> np.ndarray:
    """The square a probe was pasted into, resized to ``size`` (the ArcFace layout of the probe)."""
    from PIL import Image

    _, x0, y0, s = place
    return np.asarray(Image.fromarray(np.ascontiguousarray(img[y0:y0 + s, x0:x0 + s])).resize(
        (size, size), Image.Resampling.BICUBIC))


def face_box(place: tuple[int, int, int, int]) -> np.ndarray:
    """Approximate face box (x1, y1, x2, y2) of a placed probe (ArcFace layout: face centred low)."""
    _, x0, y0, s = place
    half = FACE_PER_CROP * s / 2
    cx, cy = x0 + 0.5 * s, y0 + FACE_CY * s
    return np.array([cx - half, cy - half, cx + half, cy + half])


def crop_face_box(size: int) -> np.ndarray:
    """Where dlib's HOG box falls on an ArcFace-layout crop of side ``size`` (x1, y1, x2, y2)."""
    half = FACE_PER_CROP * size / 2
    return np.array([size / 2 - half, FACE_CY * size - half, size / 2 + half, FACE_CY * size + half])


class CachedDetector:
    """A face detector whose results are cached by image content (same pixels -> same faces)."""

    def __init__(self, detector):
        self.detector = detector
        self._cache: dict[bytes, list] = {}

    def detect(self, img: np.ndarray) -> list:
        k = hashlib.sha256(np.ascontiguousarray(img).tobytes()).digest() + repr(img.shape).encode()
        if k not in self._cache:
            self._cache[k] = self.detector.detect(img)
        return self._cache[k]


@dataclass
class ProtocolOutput:
    """Per probe: the crop under each passphrase tag, the wrong-key crop (or None), flags."""

    crops: dict[str, np.ndarray]
    wrong: np.ndarray | None
    anonymized: np.ndarray  # bool per probe: the pipeline changed the face
    recovered_exact: np.ndarray  # bool per probe: right-passphrase recovery restored the input exactly
    notes: list[str] = field(default_factory=list)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per crop: more than half of the central face ellipse differs."""
    from ...core.align import soft_face_mask

    m = soft_face_mask(a.shape[1]) > 0.9
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=3) > 2
    return diff[:, m].mean(axis=1) > 0.5


#: the obscuring baselines run bare in both protocols, so that their rows stay plain blur / pixelate / mask;
#: the replacing methods run with the post-replacement safety net, as ``anonymize`` runs them
_BASELINES = frozenset({"blur", "pixelate", "mask"})


def _with_safety_net(method) -> bool:
    """Whether the evaluation runs ``method`` with the safety net (``deid.safety``)."""
    return getattr(method, "name", "") not in _BASELINES


def run_full_frames(method, frames: list[Frame], n: int, passphrases: dict[str, bytes], wrong: bytes | None,
                    detector, method_factory, workdir: Path | None = None) -> tuple[ProtocolOutput, np.ndarray]:
    """Run the full-frame protocol for one method. Returns (output, original crop-backs)."""
    from PIL import Image

    from ...core.imageio import load_image
    from ..batch import anonymize_paths, recover_paths

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        src = tmp / "in"
        src.mkdir()
        for k, fr in enumerate(frames):
            Image.fromarray(fr.image).save(src / f"frame{k:04d}.png")
        orig = np.zeros((n, 112, 112, 3), np.uint8)
        for fr in frames:
            for pl in fr.places:
                orig[pl[0]] = crop_back(fr.image, pl)
        crops: dict[str, np.ndarray] = {}
        notes = []
        for tag, pw in passphrases.items():
            out = tmp / f"out_{tag}"
            summary = anonymize_paths(src, out, pw, method, detector=detector, safety=_with_safety_net(method))
            if summary["skipped"]:
                notes.append(f"key {tag}: {len(summary['skipped'])} frame(s) with no face found")
            crops[tag] = orig.copy()
            for k, fr in enumerate(frames):
                f = out / f"frame{k:04d}.png"
                if f.is_file():
                    img = load_image(f)
                    for pl in fr.places:
                        crops[tag][pl[0]] = crop_back(img, pl)
        first = next(iter(passphrases))
        exact = np.zeros(n, bool)
        rec = tmp / "recovered"
        recover_paths(tmp / f"out_{first}", rec, passphrases[first], method_factory)
        for k, fr in enumerate(frames):
            f = rec / f"frame{k:04d}.png"
            ok = f.is_file() and np.array_equal(load_image(f), fr.image)
            if not (tmp / f"out_{first}" / f"frame{k:04d}.png").is_file():
                ok = True  # nothing was written, nothing to recover: the input is untouched
            for pl in fr.places:
                exact[pl[0]] = ok
        wrong_crops = None
        if wrong is not None:
            wdir = tmp / "wrong"
            s = recover_paths(tmp / f"out_{first}", wdir, wrong, method_factory, plausible=True)
            if s["written"]:
                wrong_crops = orig.copy()
                for k, fr in enumerate(frames):
                    f = wdir / f"frame{k:04d}.png"
                    if f.is_file():
                        img = load_image(f)
                        for pl in fr.places:
                            wrong_crops[pl[0]] = crop_back(img, pl)
            else:
                notes.append("no wrong-key output (the method keeps nothing a wrong key can decrypt)")
    return ProtocolOutput(crops, wrong_crops, _changed(orig, crops[first]), exact, notes), orig


def run_aligned(method, x: np.ndarray, passphrases: dict[str, bytes], wrong: bytes | None,
                tiles_per_mosaic: int = 48) -> ProtocolOutput:
    """Run the aligned-crop protocol for one method (mosaics of edge-padded 112-px crops, known landmarks;
    the padding covers the method's ``crop_pad`` so no method reads a neighbouring tile)."""
    from ...core.align import ARCFACE_TEMPLATE
    from ..pipeline import Deidentifier, DetectedFace

    pad = 8 + int(np.ceil(float(getattr(method, "crop_pad", 0.0)) * 112))
    deid = Deidentifier(method, detector=False, safety=_with_safety_net(method))
    t = 112 + 2 * pad
    crops = {tag: np.zeros_like(x) for tag in passphrases}
    wrong_crops = np.zeros_like(x) if wrong is not None else None
    exact = np.zeros(len(x), bool)
    notes: list[str] = []
    first = next(iter(passphrases))
    chunks = list(range(0, len(x), tiles_per_mosaic))
    for start in progress(chunks, desc=f"aligned {method.name}", unit="mosaic"):
        idx = np.arange(start, min(start + tiles_per_mosaic, len(x)))
        cols = int(np.ceil(np.sqrt(len(idx))))
        rows = int(np.ceil(len(idx) / cols))
        mosaic = np.zeros((rows * t, cols * t, 3), np.uint8)
        faces, origin = [], []
        for j, i in enumerate(idx):
            oy, ox = (j // cols) * t, (j % cols) * t
            mosaic[oy:oy + t, ox:ox + t] = np.pad(x[i], ((pad, pad), (pad, pad), (0, 0)), mode="edge")
            five = ARCFACE_TEMPLATE + [ox + pad, oy + pad]
            box = crop_face_box(112) + [ox + pad, oy + pad, ox + pad, oy + pad]
            faces.append(DetectedFace(box, five))
            origin.append((oy + pad, ox + pad))

        def tiles(img: np.ndarray, origin=origin) -> np.ndarray:
            return np.stack([img[oy:oy + 112, ox:ox + 112] for oy, ox in origin])

        outs = {}
        for tag, pw in passphrases.items():
            outs[tag] = deid.anonymize(mosaic, pw, faces=faces)
            crops[tag][idx] = tiles(outs[tag].image)
        back, _ = deid.recover(outs[first].image, outs[first].record, passphrases[first])
        exact[idx] = [np.array_equal(a, b) for a, b in zip(tiles(back), x[idx], strict=True)]
        if wrong_crops is not None:
            try:
                w, _ = deid.recover(outs[first].image, outs[first].record, wrong, plausible=True)
                wrong_crops[idx] = tiles(w)
            except (AuthenticationError, FacePrivacyError, NotImplementedError):
                wrong_crops = None
                notes.append("no wrong-key output (the method keeps nothing a wrong key can decrypt)")
    return ProtocolOutput(crops, wrong_crops, _changed(x, crops[first]), exact, notes)
