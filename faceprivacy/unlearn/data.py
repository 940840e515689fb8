"""Data for the 1-SHUI protocol: the CelebA subset downsampled in memory, teacher labels (cached, labels
only), the identity-disjoint split, one held-out support image per training identity and forget requests."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.data import FaceDataset, celeba_subset, identity_split
from ..core.errors import InputError
from ..core.fileio import atomic_path


def cache_dir() -> Path:
    """Where teacher labels are cached: $FACEPRIVACY_CACHE/unlearn or ~/.cache/faceprivacy/unlearn."""
    base = os.environ.get("FACEPRIVACY_CACHE") or str(Path.home() / ".cache" / "faceprivacy")
    return Path(base) / "unlearn"


def load_images(paths: list[Path], size: int) -> np.ndarray:
    """Decode and resize face crops to (N, size, size, 3) uint8 (kept in memory only)."""
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR))
        except OSError as e:
            raise InputError(f"cannot read image {p}: {e}") from e
    return out


def teacher_labels(ds: FaceDataset, cache: Path | None = None) -> np.ndarray:
    """Teacher class (gender x age group) for every image of ``ds``; computed once and cached as labels
    only (no images, no embeddings) under a key of the file list and the teacher models."""
    from .teacher import AGE_EDGES, TEACHER_ID, AgeGenderTeacher, combined_label

    key_src = "\n".join(f"{p.parent.name}/{p.name}:{p.stat().st_size}" for p in ds.paths)
    key = hashlib.sha256(f"{TEACHER_ID}\n{key_src}".encode()).hexdigest()[:20]
    cdir = cache if cache is not None else cache_dir()
    f = cdir / f"teacher_{key}.npz"
    if f.is_file():
        z = np.load(f)
        return combined_label(z["p_female"], z["age"])
    teacher = AgeGenderTeacher()
    from PIL import Image

    faces = []
    for p in ds.paths:
        with Image.open(p) as im:
            faces.append(np.asarray(im.convert("RGB")))
    r = teacher.predict(faces)
    cdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(f, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, p_female=r["p_female"].astype(np.float32), age=r["age"].astype(np.float32),
                     age_edges=np.asarray(AGE_EDGES))
    return r["label"]


@dataclass
class TaskData:
    """All images of the task in memory with labels, identities and the split.

    ``train_fit`` = training images minus one held-out support image per training identity; the original
    model is trained on ``train_fit``; ``support[i]`` is the support image index of training identity i."""

    x: np.ndarray
    y: np.ndarray
    ident: np.ndarray
    names: list[str]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    support: dict[int, int] = field(default_factory=dict)

    @property
    def train_fit(self) -> np.ndarray:
        held = set(self.support.values())
        return np.asarray([i for i in self.train if i not in held], dtype=np.int64)

    @property
    def train_identities(self) -> np.ndarray:
        return np.unique(self.ident[self.train])


def hold_out_supports(ident: np.ndarray, train: np.ndarray, seed: int = 0, min_images: int = 2) -> dict[int, int]:
    """One random image per training identity (with >= min_images images) that is never trained on."""
    rng = np.random.default_rng(seed)
    out: dict[int, int] = {}
    for i in np.unique(ident[train]):
        rows = train[ident[train] == i]
        if len(rows) >= min_images:
            out[int(i)] = int(rng.choice(rows))
    return out


def load_task_data(root: str | Path, size: int = 64, cache: Path | None = None) -> TaskData:
    """The CelebA subset as a 1-SHUI task: project identity split (seed 0), train/val/test indices,
    teacher labels, supports held out of training."""
    root = Path(root)
    if (root / "celeba_subset_aligned112").is_dir():
        root = root / "celeba_subset_aligned112"
    ds = celeba_subset(root)
    split = identity_split(ds)
    index = {p: i for i, p in enumerate(ds.paths)}
    parts = {k: np.asarray(sorted(index[p] for p in v.paths), dtype=np.int64) for k, v in split.items()}
    y = teacher_labels(ds, cache)
    x = load_images(ds.paths, size)
    td = TaskData(x=x, y=np.asarray(y, np.int64), ident=ds.labels.astype(np.int64), names=ds.names,
                  train=parts["train"], val=parts["val"], test=parts["test"])
    td.support = hold_out_supports(td.ident, td.train)
    return td


@dataclass
class ForgetRequest:
    """One 1-SHUI request: K forget identities, their support images and the resulting index sets."""

    identities: np.ndarray
    support: np.ndarray
    forget: np.ndarray
    retain: np.ndarray
    seed: int

    @property
    def k(self) -> int:
        return len(self.identities)


def make_request(td: TaskData, k: int, seed: int, min_images: int | None = None) -> ForgetRequest:
    """Draw K forget identities among training identities (> 1 trained image each, > 5 when K = 1, as in
    the paper); forget = their trained images, retain = the rest of ``train_fit``."""
    if k < 1:
        raise InputError("k must be >= 1")
    fit = td.train_fit
    counts = {int(i): int(np.sum(td.ident[fit] == i)) for i in td.support}
    need = min_images if min_images is not None else (6 if k == 1 else 2)
    cands = sorted(i for i, c in counts.items() if c >= need)
    if len(cands) < k:
        raise InputError(f"only {len(cands)} training identities qualify, asked to forget {k}")
    rng = np.random.default_rng(10_000 + seed)
    ids = np.sort(rng.choice(cands, size=k, replace=False))
    mask = np.isin(td.ident[fit], ids)
    return ForgetRequest(identities=ids, support=np.asarray([td.support[int(i)] for i in ids], np.int64),
                         forget=fit[mask], retain=fit[~mask], seed=seed)
