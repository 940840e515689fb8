"""Face datasets (one folder per identity), the CelebA aligned subset, ORL, Extended Yale B,
deterministic identity-disjoint splits and verification pairs.

Every loader takes its root folder as a parameter; only the CLI knows the ``../shared/datakit`` default.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class FaceDataset:
    """A list of image paths with integer identity labels (``names[label]`` is the folder name)."""

    paths: list[Path]
    labels: np.ndarray
    names: list[str]
    root: Path | None = None
    meta: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def identities(self) -> list[str]:
        return sorted({self.names[i] for i in self.labels.tolist()})

    def subset(self, idx: Sequence[int] | np.ndarray) -> FaceDataset:
        """Rows ``idx`` of the dataset (labels keep their global numbering; meta columns follow)."""
        idx = np.asarray(idx, dtype=int)
        meta = {k: [v[i] for i in idx] for k, v in self.meta.items()}
        return FaceDataset([self.paths[i] for i in idx], self.labels[idx], self.names, self.root, meta)

    def select_identities(self, identities: Sequence[str]) -> FaceDataset:
        """Only the images of the given identity names."""
        keep = set(identities)
        return self.subset([i for i, lab in enumerate(self.labels) if self.names[lab] in keep])


def identity_folder_dataset(root: str | os.PathLike, min_images: int = 1) -> FaceDataset:
    """Load ``root/<identity>/<image>`` into a FaceDataset (sorted, so deterministic)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    paths: list[Path] = []
    labels: list[int] = []
    names: list[str] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        if len(files) < min_images:
            continue
        names.append(d.name)
        paths += files
        labels += [len(names) - 1] * len(files)
    if not paths:
        raise InputError(f"no identity folders with images under {root}")
    return FaceDataset(paths, np.asarray(labels, dtype=np.int64), names, root)


def celeba_subset(root: str | os.PathLike) -> FaceDataset:
    """The aligned CelebA subset (``images/<id>/<file>.jpg`` + ``labels.csv``, 112x112 ArcFace layout).

    ``meta`` carries the labels.csv columns per image (box, 5 landmarks in the original photo, score).
    """
    root = Path(root)
    ds = identity_folder_dataset(root / "images")
    ds.root = root
    lab_file = root / "labels.csv"
    if lab_file.is_file():
        with open(lab_file, newline="") as f:
            rows = {(r["celeba_identity"], r["image"]): r for r in csv.DictReader(f)}
        cols = ["x1", "y1", "x2", "y2", "det_score", "orig_w", "orig_h"]
        ds.meta = {c: [] for c in cols}
        for p, lab in zip(ds.paths, ds.labels, strict=True):
            r = rows.get((ds.names[lab], p.name), {})
            for c in cols:
                ds.meta[c].append(float(r[c]) if c in r and r[c] != "" else float("nan"))
    return ds


def orl(root: str | os.PathLike) -> FaceDataset:
    """AT&T/ORL faces: ``s1..s40`` folders of 92x112 grey PGM (loaded as RGB by core.imageio)."""
    return identity_folder_dataset(root)


def yale_b(root: str | os.PathLike) -> FaceDataset:
    """Extended Yale B cropped: ``yaleBxx`` folders of 168x192 grey images under many illuminations."""
    return identity_folder_dataset(root)


def _seeded_order(items: Sequence[str], seed: int) -> list[str]:
    """Order items by a keyed hash: deterministic across platforms/Python versions, independent of numpy."""
    return sorted(items, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())


def identity_split(ds: FaceDataset, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                   seed: int = 0) -> dict[str, FaceDataset]:
    """Identity-disjoint train/val/test split; the same seed gives the same identities everywhere.

    The project's standard CelebA protocol is ``identity_split(celeba_subset(root))`` with the defaults:
    generator, encryptor, probes and federated clients train on ``train``; all reported numbers are on ``test``.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError("fractions must be non-negative and sum to 1")
    ids = _seeded_order(ds.identities, seed)
    n = len(ids)
    n_tr = int(round(fractions[0] * n))
    n_va = int(round(fractions[1] * n))
    parts = {"train": ids[:n_tr], "val": ids[n_tr:n_tr + n_va], "test": ids[n_tr + n_va:]}
    return {k: ds.select_identities(v) for k, v in parts.items()}


@dataclass
class PairList:
    """Verification pairs: two image paths, a same-identity flag and a fold index per pair."""

    a: list[Path]
    b: list[Path]
    same: np.ndarray
    fold: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def read_lfw_pairs(pairs_file: str | os.PathLike, image_root: str | os.PathLike,
                   ext: str = ".jpg") -> PairList:
    """LFW-style ``pairs.txt``: header "folds n", then per fold n lines "name i j" (same) and n lines
    "name1 i name2 j" (different); images at ``image_root/name/name_%04d.jpg``."""
    root = Path(image_root)
    try:
        lines = [ln.split() for ln in Path(pairs_file).read_text().splitlines() if ln.strip()]
    except OSError as e:
        raise InputError(f"cannot read pairs file {pairs_file}: {e.strerror}") from None
    try:
        n_folds, n = int(lines[0][0]), int(lines[0][1]) if len(lines[0]) > 1 else None
    except (IndexError, ValueError):
        raise InputError(f"{pairs_file}: first line must be '<folds> <pairs per fold>'") from None
    body = lines[1:]
    per_fold = 2 * n if n is not None else max(len(body) // max(n_folds, 1), 1)
    a, b, same, fold = [], [], [], []

    def img(name: str, i: str) -> Path:
        return root / name / f"{name}_{int(i):04d}{ext}"

    for k, parts in enumerate(body):
        if len(parts) == 3:
            a.append(img(parts[0], parts[1]))
            b.append(img(parts[0], parts[2]))
            same.append(True)
        elif len(parts) == 4:
            a.append(img(parts[0], parts[1]))
            b.append(img(parts[2], parts[3]))
            same.append(False)
        else:
            raise InputError(f"{pairs_file}: line {k + 2} is neither 'name i j' nor 'name1 i name2 j'")
        fold.append(k // per_fold)
    return PairList(a, b, np.array(same, bool), np.array(fold, int))


def read_pairs_csv(pairs_csv: str | os.PathLike, image_root: str | os.PathLike) -> PairList:
    """The datakit's ``pairs_10fold.csv`` (fold,img1,img2,same_identity; paths relative to ``image_root``)."""
    root = Path(image_root)
    a, b, same, fold = [], [], [], []
    try:
        with open(pairs_csv, newline="") as f:
            for r in csv.DictReader(f):
                a.append(root / r["img1"])
                b.append(root / r["img2"])
                same.append(r["same_identity"].strip() in ("1", "True", "true"))
                fold.append(int(r["fold"]))
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"cannot read pairs csv {pairs_csv}: {e}") from None
    return PairList(a, b, np.array(same, bool), np.array(fold, int))


def load_images(paths: Sequence[str | os.PathLike], desc: str = "loading") -> np.ndarray:
    """Load equally sized images into one uint8 (N, H, W, 3) array (grey -> RGB), with a progress bar."""
    from .imageio import load_image
    from .progress import progress

    arrs = [load_image(p) for p in progress(paths, desc=desc)]
    if not arrs:
        return np.zeros((0, 1, 1, 3), np.uint8)
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1:
        raise InputError(f"images differ in size: {sorted(shapes)[:3]}")
    return np.stack(arrs)
