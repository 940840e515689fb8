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


#: label modes of the task (``--task``): ``image`` = the teacher's label of each image (the first task,
#: per-image label noise); ``identity`` = one label per person, the majority vote of the teacher over all of
#: that person's photos (mean P(female) >= 0.5, median expected age -> age group)
TASKS = ("image", "identity")


def teacher_labels(ds: FaceDataset, cache: Path | None = None) -> np.ndarray:
    """Teacher class (gender x age group) for every image of ``ds`` (see :func:`teacher_outputs`)."""
    from .teacher import combined_label

    p_female, age = teacher_outputs(ds, cache)
    return combined_label(p_female, age)


def identity_labels(p_female: np.ndarray, age: np.ndarray, ident: np.ndarray) -> np.ndarray:
    """Identity-consistent teacher labels: every photo of a person gets the class of (mean P(female),
    median teacher age) over all that person's photos, so the label is a property of the person."""
    from .teacher import combined_label

    p_female, age, ident = np.asarray(p_female, float), np.asarray(age, float), np.asarray(ident)
    pf, ag = np.empty(len(ident)), np.empty(len(ident))
    for i in np.unique(ident):
        m = ident == i
        pf[m] = p_female[m].mean()
        ag[m] = np.median(age[m])
    return combined_label(pf, ag)


def teacher_outputs(ds: FaceDataset, cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Teacher P(female) and expected age for every image of ``ds``; computed once and cached as labels
    only (no images, no embeddings) under a key of the file list and the teacher models."""
    from .teacher import AGE_EDGES, TEACHER_ID, AgeGenderTeacher

    key_src = "\n".join(f"{p.parent.name}/{p.name}:{p.stat().st_size}" for p in ds.paths)
    key = hashlib.sha256(f"{TEACHER_ID}\n{key_src}".encode()).hexdigest()[:20]
    cdir = cache if cache is not None else cache_dir()
    f = cdir / f"teacher_{key}.npz"
    if f.is_file():
        z = np.load(f)
        return z["p_female"], z["age"]
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
    return np.asarray(r["p_female"], np.float32), np.asarray(r["age"], np.float32)


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
    task: str = "image"

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


def embed_images(paths: list[Path], embedder: str, data_root: Path | None = None, batch: int = 64) -> np.ndarray:
    """Descriptors (N, D) float32 of aligned 112x112 face crops by a frozen core embedder (kept in memory,
    never written to disk)."""
    from ..core.embedders import embed_arcface_crops, get_embedder
    from ..core.progress import progress

    emb = get_embedder(embedder, data_root)
    out = []
    for s in progress(range(0, len(paths), batch), desc=f"embed ({embedder})"):
        out.append(np.asarray(embed_arcface_crops(emb, load_images(paths[s:s + batch], 112)), np.float32))
    return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def load_task_data(root: str | Path, size: int = 64, cache: Path | None = None, task: str = "image",
                   embedder: str | None = None, test_root: str | Path | None = None) -> TaskData:
    """The CelebA subset as a 1-SHUI task: project identity split (seed 0), train/val/test indices,
    teacher labels (per image, or per identity for ``task="identity"``), supports held out of training.
    With ``embedder`` the inputs ``x`` are that frozen embedder's descriptors instead of resized images.
    With ``test_root`` the test rows are every image of that separate folder (``core.testset``) instead of
    the split's test identities; it must not share people with the training or validation identities."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    root = Path(root)
    kit = root
    if (root / "celeba_subset_aligned112").is_dir():
        root = root / "celeba_subset_aligned112"
    else:
        kit = root.parent
    ds = celeba_subset(root)
    split = identity_split(ds)
    tds = None
    if test_root is not None:  # checked before any image is embedded or labelled
        from ..core.testset import load_test_root, require_disjoint

        tds = load_test_root(test_root)
        require_disjoint(split["train"].identities + split["val"].identities, tds, "training and validation")
    index = {p: i for i, p in enumerate(ds.paths)}
    parts = {k: np.asarray(sorted(index[p] for p in v.paths), dtype=np.int64) for k, v in split.items()}
    from .teacher import combined_label

    p_female, age = teacher_outputs(ds, cache)
    ident = ds.labels.astype(np.int64)
    y = combined_label(p_female, age) if task == "image" else identity_labels(p_female, age, ident)
    x = load_images(ds.paths, size) if not embedder else embed_images(ds.paths, embedder, kit)
    names, test = list(ds.names), parts["test"]
    if tds is not None:
        tpf, tage = teacher_outputs(tds, cache)
        tident = tds.labels.astype(np.int64) + len(names)
        ty = combined_label(tpf, tage) if task == "image" else identity_labels(tpf, tage, tident)
        tx = load_images(tds.paths, size) if not embedder else embed_images(tds.paths, embedder, kit)
        test = np.arange(len(x), len(x) + len(tx), dtype=np.int64)
        x, y, ident = np.concatenate([x, tx]), np.concatenate([y, ty]), np.concatenate([ident, tident])
        names += list(tds.names)
    td = TaskData(x=x, y=np.asarray(y, np.int64), ident=ident, names=names,
                  train=parts["train"], val=parts["val"], test=test, task=task)
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
