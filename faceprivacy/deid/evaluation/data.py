"""Who is evaluated, against whom, and where thresholds come from.

* Evaluation root: ``test_data`` if given, else ``data``. ``identities``: ``test`` / ``val`` (the standard
  identity split of that root) or ``all`` (every identity of it).
* Probes: the first ``per_id`` photos of each evaluated person (at most ``max_ids`` people, seeded pick);
  gallery: one *other* photo of each evaluated person plus one photo of each distractor (the root's other
  identities, at most ``max_distractors``); chance rank-1 = 1 / gallery size.
* Thresholds (cosine at the FAR) and the reference bank of real strangers come from the *training*
  identities of ``data``, never from evaluated people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import InputError


def crop_root(root: Path) -> Path:
    """The aligned CelebA folder of a datakit (or the folder itself)."""
    root = Path(root)
    sub = root / "celeba_subset_aligned112"
    return sub if sub.is_dir() else root


@dataclass
class EvalData:
    """Crops (uint8, 112x112 ArcFace layout) and integer identity labels of every set the evaluation uses."""

    x: np.ndarray  # probes
    y: np.ndarray
    probe_paths: list[str]
    xg: np.ndarray  # gallery (one photo per identity)
    yg: np.ndarray
    names: list[str]  # label -> identity name
    n_eval_ids: int
    n_distractors: int
    x_thr: np.ndarray  # threshold set (training identities of the training root)
    y_thr: np.ndarray
    bank: np.ndarray  # one photo per training identity (reference strangers; never evaluated)
    eval_root: str
    train_root: str
    identities: str

    @property
    def chance_rank1(self) -> float:
        return 1.0 / len(self.yg)


def load_eval_data(data: Path, test_data: Path | None = None, identities: str = "test", per_id: int = 4,
                   max_ids: int = 0, max_distractors: int | None = None, max_thr: int = 800,
                   max_bank: int | None = None, seed: int = 0) -> EvalData:
    """Select and load the sets of the module doc."""
    from ...core.data import celeba_subset, identity_split
    from ..crops import load_crops

    if identities not in ("test", "val", "all"):
        raise InputError(f"--identities must be test, val or all, not {identities!r}")
    train_root = crop_root(data)
    eval_root = crop_root(test_data) if test_data is not None else train_root
    for r in {train_root, eval_root}:
        if not (r / "labels.csv").is_file() and not r.is_dir():
            raise InputError(f"data root not found: {r}")
    ds_tr = celeba_subset(train_root)
    ds_ev = ds_tr if eval_root == train_root else celeba_subset(eval_root)
    eval_ids = list(ds_ev.identities if identities == "all" else identity_split(ds_ev)[identities].identities)
    rng = np.random.default_rng(seed)
    if max_ids and len(eval_ids) > max_ids:
        eval_ids = [eval_ids[i] for i in np.sort(rng.choice(len(eval_ids), max_ids, replace=False))]
    # probes + gallery
    names: list[str] = []
    probe_idx, probe_lab, gal_idx, gal_lab = [], [], [], []
    rows_of: dict[str, list[int]] = {}
    for i, lab in enumerate(ds_ev.labels):
        rows_of.setdefault(ds_ev.names[lab], []).append(i)
    for name in eval_ids:
        rows = rows_of.get(name, [])
        if len(rows) < 2:
            continue
        k = min(per_id, len(rows) - 1)
        names.append(name)
        probe_idx += rows[:k]
        probe_lab += [len(names) - 1] * k
        gal_idx.append(rows[k])
        gal_lab.append(len(names) - 1)
    if len(names) < 2:
        raise InputError(f"fewer than 2 identities with 2+ photos to evaluate under {eval_root}")
    n_eval = len(names)
    others = [nm for nm in ds_ev.identities if nm not in set(eval_ids)]
    if max_distractors is not None:
        others = others[:max_distractors]
    for name in others:
        names.append(name)
        gal_idx.append(rows_of[name][0])
        gal_lab.append(len(names) - 1)
    # thresholds and the stranger bank: training identities of the training root
    tr = identity_split(ds_tr)["train"]
    excluded = set(eval_ids) if eval_root == train_root else set()
    tr_rows = [i for i, lab in enumerate(tr.labels) if tr.names[lab] not in excluded]
    thr_rows = np.sort(rng.permutation(tr_rows)[:max_thr]) if len(tr_rows) > max_thr else np.array(tr_rows, int)
    first: dict[int, int] = {}
    for i in tr_rows:
        first.setdefault(int(tr.labels[i]), i)
    bank_rows = sorted(first.values())[:max_bank] if max_bank else sorted(first.values())
    probe_paths = [str(ds_ev.paths[i]) for i in probe_idx]
    return EvalData(x=load_crops(probe_paths), y=np.array(probe_lab), probe_paths=probe_paths,
                    xg=load_crops([ds_ev.paths[i] for i in gal_idx]), yg=np.array(gal_lab), names=names,
                    n_eval_ids=n_eval, n_distractors=len(others),
                    x_thr=load_crops([tr.paths[i] for i in thr_rows]), y_thr=np.asarray(tr.labels)[thr_rows],
                    bank=load_crops([tr.paths[i] for i in bank_rows]), eval_root=str(eval_root),
                    train_root=str(train_root), identities=identities)
