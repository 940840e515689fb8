"""Datasets, splits and pair readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceprivacy.core.data import (
    celeba_subset,
    identity_folder_dataset,
    identity_split,
    read_lfw_pairs,
    read_pairs_csv,
)
from faceprivacy.core.errors import InputError


def _make_folder(root: Path, n_ids: int = 10, per: int = 3) -> None:
    for i in range(n_ids):
        d = root / f"id{i:02d}"
        d.mkdir(parents=True)
        for j in range(per):
            Image.new("RGB", (16, 16), (i * 20, j * 30, 0)).save(d / f"{j}.png")


def test_identity_folder_and_split_disjoint_deterministic(tmp_path: Path) -> None:
    _make_folder(tmp_path, 20)
    ds = identity_folder_dataset(tmp_path)
    assert len(ds) == 60 and len(ds.identities) == 20
    sp = identity_split(ds, seed=3)
    sets = [set(sp[k].identities) for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(s) for s in sets) == 20
    assert identity_split(ds, seed=3)["test"].identities == sp["test"].identities
    assert identity_split(ds, seed=4)["test"].identities != sp["test"].identities


def test_missing_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        identity_folder_dataset(tmp_path / "nope")
    with pytest.raises(InputError):
        identity_folder_dataset(tmp_path)  # empty


def test_lfw_pairs_reader(tmp_path: Path) -> None:
    (tmp_path / "pairs.txt").write_text("2 1\nAnn 1 2\nAnn 1 Bob 3\nBob 1 2\nAnn 2 Bob 1\n")
    pl = read_lfw_pairs(tmp_path / "pairs.txt", tmp_path / "lfw")
    assert len(pl) == 4
    assert pl.same.tolist() == [True, False, True, False]
    assert pl.fold.tolist() == [0, 0, 1, 1]
    assert pl.b[1] == tmp_path / "lfw" / "Bob" / "Bob_0003.jpg"
    (tmp_path / "bad.txt").write_text("1 1\nA B C D E\n")
    with pytest.raises(InputError):
        read_lfw_pairs(tmp_path / "bad.txt", tmp_path)


def test_celeba_subset_real(celeba_root: Path) -> None:
    ds = celeba_subset(celeba_root)
    assert len(ds.identities) == 239 and len(ds) > 4900
    assert np.isfinite(ds.meta["det_score"]).mean() > 0.99
    sp = identity_split(ds)
    assert set(sp["train"].identities).isdisjoint(sp["test"].identities)
    pl = read_pairs_csv(celeba_root / "pairs_10fold.csv", celeba_root / "images")
    assert len(pl) > 4000 and all(p.exists() for p in pl.a[:50])
