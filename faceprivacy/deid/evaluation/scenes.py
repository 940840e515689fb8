"""The labelled scene set of ``faceprivacy eval-detection``: real faces on textured backgrounds, with
ground-truth boxes, built deterministically (a seed) from the datakit.

* Faces: CelebA identities of one split (``val`` to choose, ``test`` to claim; at most 2 photos a person) and
  UTKFace crops (varied age, skin tone and pose; split into val/test halves by a keyed hash of the file name,
  picked round-robin over the five race labels). Each source crop has known five points: the ArcFace
  template for the aligned CelebA crops, the UTKFace crops' fixed layout (``UTK_FIVE``) for UTKFace.
* Each face is scaled to a face size drawn log-uniformly in ``face_px`` (default 16-400 px), rotated by a
  uniform roll in +-``max_roll`` degrees, mirrored with probability 1/2, and in a fraction ``occluded`` of
  cases partly covered (a mask over mouth and nose, a band over the eyes, or one side of the face), then
  pasted with feathered edges into a scene of 640x480 to 3840x2160 px with 3-8 faces that do not overlap.
* Ground truth: a square of side ``GT_SIDE`` x the eye-to-mouth distance, centred ``GT_UP`` x that distance
  above the eye-mouth midpoint (RetinaFace's boxes on the CelebA originals: width 2.13, centre 0.22 above).
  The face size reported is that side, in scene pixels.
* Pose: the roll applied, and a yaw index of the source face, |2r - 1| with r the nose tip's position between
  the jaw's two ends (dlib's 68 points fitted inside the ground-truth box, no detector): 0 frontal, 1 profile.
* Face-free scenes: the same backgrounds with clutter and no face (false positives per megapixel).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError

#: five points (left eye, right eye, nose, mouth corners) of the 200x200 UTKFace crops: median RetinaFace
#: landmarks over 80 seeded crops (the crops are aligned, so one layout serves them all)
UTK_FIVE = np.array([[61.5, 57.4], [139.9, 58.1], [99.9, 106.1], [64.4, 134.5], [133.8, 135.4]])
GT_SIDE, GT_UP = 2.1, 0.2
#: scene sizes (w, h) and their weights
SCENE_SIZES = ((640, 480), (1280, 720), (1920, 1080), (3840, 2160))
SCENE_WEIGHTS = (0.3, 0.35, 0.25, 0.1)
OCCLUSIONS = ("mask", "eyes", "side")


@dataclass
class Source:
    """A face crop to place: pixels, its five points, who it is (bootstrap group) and where it came from."""

    image: np.ndarray
    five: np.ndarray
    group: str
    dataset: str
    name: str


@dataclass
class PlacedFace:
    """One face of a scene: ground-truth box and five points in scene pixels, and how it was altered."""

    source: int
    box: np.ndarray
    five: np.ndarray
    size: float
    roll: float
    flipped: bool
    occlusion: str | None
    yaw: float = float("nan")


@dataclass
class Scene:
    name: str
    image: np.ndarray
    faces: list[PlacedFace] = field(default_factory=list)

    @property
    def megapixels(self) -> float:
        return self.image.shape[0] * self.image.shape[1] / 1e6


def gt_box(five: np.ndarray) -> tuple[np.ndarray, float]:
    """Ground-truth square (x1, y1, x2, y2) and its side from five points (module docstring)."""
    f = np.asarray(five, np.float64)
    eye, mouth = f[:2].mean(0), f[3:].mean(0)
    d = float(np.linalg.norm(mouth - eye))
    c = (eye + mouth) / 2 - GT_UP * (mouth - eye)
    side = GT_SIDE * d
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2]), side


def _utk_split(name: str, seed: int) -> str:
    return "val" if int(hashlib.sha256(f"{seed}:utk:{name}".encode()).hexdigest(), 16) % 2 == 0 else "test"


def load_sources(data: Path, identities: str = "test", n_celeba: int = 150, n_utk: int = 150,
                 seed: int = 0) -> list[Source]:
    """The face crops of the scene set (module docstring); refuses a datakit without them."""
    from ...core.align import ARCFACE_TEMPLATE
    from ...core.data import celeba_subset, identity_split
    from ...core.imageio import load_image

    if identities not in ("val", "test"):
        raise InputError(f"--identities must be val or test, not {identities!r}")
    out: list[Source] = []
    rng = np.random.default_rng(seed)
    if n_celeba:
        root = Path(data) / "celeba_subset_aligned112"
        if not (root / "labels.csv").is_file():
            raise InputError(f"CelebA subset not found under {data} (celeba_subset_aligned112/labels.csv)")
        ds = identity_split(celeba_subset(root))[identities]
        by_id: dict[int, list[int]] = {}
        for i, lab in enumerate(ds.labels):
            by_id.setdefault(int(lab), []).append(i)
        order = [by_id[k] for k in sorted(by_id)]
        picks = [rows[j] for j in range(2) for rows in order if len(rows) > j]
        for i in picks[:n_celeba]:
            out.append(Source(load_image(ds.paths[i]), ARCFACE_TEMPLATE.astype(np.float64).copy(),
                              f"celeba:{ds.names[ds.labels[i]]}", "celeba", str(ds.paths[i])))
    if n_utk:
        root = Path(data) / "utkface_crop_part1"
        if not (root / "labels.csv").is_file():
            raise InputError(f"UTKFace crops not found under {data} (utkface_crop_part1/labels.csv)")
        with open(root / "labels.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("image") and _utk_split(r["image"], seed) == identities]
        by_race: dict[str, list[dict]] = {}
        for r in rows:
            by_race.setdefault(r.get("race_0white_1black_2asian_3indian_4other") or "?", []).append(r)
        pools = [list(rng.permutation(len(v))) for v in (by_race[k] for k in sorted(by_race))]
        keys = sorted(by_race)
        chosen: list[dict] = []
        while len(chosen) < n_utk and any(pools):
            for k, pool in zip(keys, pools, strict=True):
                if pool and len(chosen) < n_utk:
                    chosen.append(by_race[k][int(pool.pop(0))])
        for r in chosen:
            img = load_image(root / "images" / r["image"])
            if img.shape[:2] != (200, 200):
                continue
            out.append(Source(img, UTK_FIVE.copy(), f"utk:{r['image']}", "utkface", r["image"]))
    if not out:
        raise InputError("no faces to place (--faces 0?)")
    return out


def _field(h: int, w: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field (h, w, 3): normal noise on a grid of ``cell`` px, upsampled bicubically."""
    from PIL import Image

    small = rng.normal(size=(max(2, h // cell + 2), max(2, w // cell + 2), 3)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(small[..., c], mode="F").resize((w, h), Image.Resampling.BICUBIC))
                     for c in range(3)], -1)


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A textured background (a smooth colour field, mid-frequency texture, a gradient and fine noise, like
    ``frames.background`` but fast at 4K) with a few textured rectangles and discs as clutter."""
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    img = base + 45 * _field(h, w, 96, rng) + 18 * _field(h, w, 10, rng)
    img += (np.linspace(-25, 25, w, dtype=np.float32)[None, :, None] * np.float32(rng.uniform(-1, 1)))
    img += rng.normal(0, 3, size=img.shape).astype(np.float32)
    yy, xx = None, None
    for _ in range(int(rng.integers(4, 12))):
        s = int(rng.integers(max(8, min(h, w) // 30), max(9, min(h, w) // 4)))
        x0, y0 = int(rng.integers(0, max(1, w - s))), int(rng.integers(0, max(1, h - s)))
        col = rng.uniform(0, 255, 3)
        patch = col + rng.normal(0, rng.uniform(2, 30), (s, s, 3))
        if rng.random() < 0.5:
            if yy is None or yy.shape[0] != s:
                yy, xx = np.mgrid[:s, :s]
            disc = ((yy - s / 2) ** 2 + (xx - s / 2) ** 2 <= (s / 2) ** 2)[..., None]
            img[y0:y0 + s, x0:x0 + s] = np.where(disc, patch, img[y0:y0 + s, x0:x0 + s])
        else:
            img[y0:y0 + s, x0:x0 + s] = patch
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def occlude(crop: np.ndarray, five: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The crop with one part of the face covered by a textured patch (mask / eyes / side)."""
    img = crop.astype(np.float64).copy()
    f = np.asarray(five, np.float64)
    eye, mouth = f[:2].mean(0), f[3:].mean(0)
    d = float(np.linalg.norm(mouth - eye))
    box, _ = gt_box(f)
    if kind == "mask":
        x1, x2, y1, y2 = f[3, 0] - 0.6 * d, f[4, 0] + 0.6 * d, f[2, 1] - 0.1 * d, box[3]
    elif kind == "eyes":
        x1, x2, y1, y2 = f[0, 0] - 0.6 * d, f[1, 0] + 0.6 * d, eye[1] - 0.3 * d, eye[1] + 0.3 * d
    else:
        left = rng.random() < 0.5
        x1, x2 = (box[0], f[2, 0]) if left else (f[2, 0], box[2])
        y1, y2 = eye[1] - 0.6 * d, mouth[1] + 0.5 * d
    h, w = img.shape[:2]
    xa, xb = int(np.clip(round(x1), 0, w)), int(np.clip(round(x2), 0, w))
    ya, yb = int(np.clip(round(y1), 0, h)), int(np.clip(round(y2), 0, h))
    if xb > xa and yb > ya:
        img[ya:yb, xa:xb] = rng.uniform(0, 255, 3) + rng.normal(0, rng.uniform(3, 25), (yb - ya, xb - xa, 3))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _place(src: Source, size: float, roll: float, flip: bool, occl: str | None,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB patch, alpha patch in [0,1], five points in patch coordinates) of one altered face."""
    from PIL import Image

    from ...core.align import warp_affine

    crop = occlude(src.image, src.five, occl, rng) if occl else src.image
    _, side0 = gt_box(src.five)
    s = size / side0
    n = max(4, int(round(crop.shape[1] * s)))
    scaled = np.asarray(Image.fromarray(crop).resize((n, n), Image.Resampling.LANCZOS))
    five = (src.five + 0.5) * (n / crop.shape[1]) - 0.5
    if flip:
        scaled = scaled[:, ::-1]
        five = five.copy()
        five[:, 0] = n - 1 - five[:, 0]
        five = five[[1, 0, 2, 4, 3]]
    ramp = np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / max(2.0, 0.08 * n), 0, 1)
    alpha = (np.minimum(ramp[:, None], ramp[None, :]) * 255).astype(np.uint8)
    a = np.deg2rad(roll)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    out = int(np.ceil(n * (abs(np.cos(a)) + abs(np.sin(a))))) + 2
    c_in, c_out = np.array([(n - 1) / 2, (n - 1) / 2]), np.array([(out - 1) / 2, (out - 1) / 2])
    m = np.hstack([r, (c_out - r @ c_in)[:, None]])
    patch = warp_affine(np.ascontiguousarray(scaled), m, (out, out))
    al = warp_affine(alpha, m, (out, out)).astype(np.float64) / 255.0
    return patch, al, five @ r.T + m[:, 2]


def build_scenes(sources: list[Source], face_px: tuple[float, float] = (16, 400), max_roll: float = 30.0,
                 occluded: float = 0.3, n_empty: int = 8, seed: int = 0, sizes=SCENE_SIZES,
                 weights=SCENE_WEIGHTS) -> list[Scene]:
    """Every source face placed once (altered as in the module docstring), plus ``n_empty`` face-free scenes."""
    lo, hi = float(face_px[0]), float(face_px[1])
    if not 4 <= lo <= hi:
        raise InputError(f"--face-px must satisfy 4 <= MIN <= MAX, got {lo:g} {hi:g}")
    rng = np.random.default_rng(seed)
    specs = []
    for i in rng.permutation(len(sources)):
        specs.append((int(i), float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), float(rng.uniform(-max_roll, max_roll)),
                      bool(rng.random() < 0.5),
                      OCCLUSIONS[int(rng.integers(len(OCCLUSIONS)))] if rng.random() < occluded else None))
    weights = np.asarray(weights, float) / np.sum(weights)
    scenes: list[Scene] = []
    queue = list(specs)
    while queue:
        k = int(rng.integers(3, 9))
        batch, queue = queue[:k], queue[k:]
        foot = max(1.9 * sz for _, sz, _, _, _ in batch)
        fits = [j for j, (w, h) in enumerate(sizes) if h >= foot + 16]
        if not fits:  # a face larger than the largest scene allows: shrink it to fit
            fits = [len(sizes) - 1]
            hmax = sizes[-1][1]
            batch = [(i, min(sz, (hmax - 16) / 1.9), r, f, o) for i, sz, r, f, o in batch]
        pw = weights[fits] / weights[fits].sum()
        w, h = sizes[fits[int(rng.choice(len(fits), p=pw))]]
        img = background(h, w, rng).astype(np.float64)
        taken: list[tuple[int, int, int, int]] = []
        faces: list[PlacedFace] = []
        for spec in batch:
            i, sz, roll, flip, occl = spec
            patch, al, five = _place(sources[i], sz, roll, flip, occl, rng)
            ph, pwid = patch.shape[:2]
            if ph + 4 > h or pwid + 4 > w:
                queue.append(spec)
                continue
            for _ in range(80):
                x0, y0 = int(rng.integers(2, w - pwid - 1)), int(rng.integers(2, h - ph - 1))
                if all(x0 + pwid + 6 <= a or a2 + 6 <= x0 or y0 + ph + 6 <= b or b2 + 6 <= y0
                       for a, b, a2, b2 in taken):
                    break
            else:
                queue.append(spec)  # no room left in this scene: it goes into a later one
                continue
            taken.append((x0, y0, x0 + pwid, y0 + ph))
            reg = img[y0:y0 + ph, x0:x0 + pwid]
            img[y0:y0 + ph, x0:x0 + pwid] = reg * (1 - al[..., None]) + patch * al[..., None]
            five = five + [x0, y0]
            box, side = gt_box(five)
            faces.append(PlacedFace(i, box, five, side, roll, flip, occl))
        if not faces:  # cannot happen (the scene is sized for its largest face); guards against a loop
            raise InputError("a face does not fit any scene size (--face-px too large)")
        scenes.append(Scene(f"scene_{len(scenes):03d}", np.clip(img + 0.5, 0, 255).astype(np.uint8), faces))
    for j in range(n_empty):
        w, h = sizes[j % min(3, len(sizes))]
        scenes.append(Scene(f"empty_{j:03d}", background(h, w, rng)))
    return scenes


def yaw_index(sources: list[Source]) -> np.ndarray:
    """|2r - 1| per source (module docstring): dlib's 68 points fitted inside the ground-truth box."""
    from ...core.detect import FaceDetector

    det = FaceDetector("hog", with_68=True)
    out = np.full(len(sources), np.nan)
    for k, s in enumerate(sources):
        box, _ = gt_box(s.five)
        try:
            _, lm = det.landmarks(s.image, box)
        except Exception:  # noqa: BLE001 - a landmark failure leaves the yaw unknown
            continue
        span = lm[16, 0] - lm[0, 0]
        if abs(span) > 1e-6:
            out[k] = float(np.clip(abs(2 * (lm[30, 0] - lm[0, 0]) / span - 1), 0, 1))
    return out
