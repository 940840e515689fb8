"""Embedders behind one interface: shapes, normalisation, identity separation on real CelebA crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceprivacy.core.data import celeba_subset, identity_split, load_images
from faceprivacy.core.embedders import embed_arcface_crops, get_embedder
from faceprivacy.core.errors import InputError, ModelLoadError


def test_unknown_embedder_and_missing_data(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        get_embedder("nope")
    with pytest.raises(ModelLoadError):
        get_embedder("mobilefacenet", str(tmp_path))


@pytest.fixture(scope="module")
def crops(celeba_root: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = identity_split(celeba_subset(celeba_root))["test"]
    ids = ds.identities[:6]
    sub = ds.select_identities(ids)
    keep = np.concatenate([np.where(sub.labels == lab)[0][:4] for lab in np.unique(sub.labels)])
    sub = sub.subset(keep)
    return load_images(sub.paths), sub.labels


@pytest.mark.parametrize("name", ["dlib", "mobilefacenet", "mobilefacenet-onnx"])
def test_identity_separation(crops, celeba_root: Path, name: str) -> None:
    imgs, labels = crops
    emb = get_embedder(name, str(celeba_root.parent))
    f = embed_arcface_crops(emb, imgs)
    assert f.shape == (len(imgs), emb.dim)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    sims = f @ f.T
    same = labels[:, None] == labels[None]
    off = ~np.eye(len(f), dtype=bool)
    gen, imp = sims[same & off], sims[~same]
    from faceprivacy.core.metrics import auc

    a = auc(np.r_[gen, imp], np.r_[np.ones(len(gen), bool), np.zeros(len(imp), bool)])
    assert a > 0.95, (name, a, gen.mean(), imp.mean())
    # rank-1 leave-one-out identification on 6 identities
    np.fill_diagonal(sims, -9)
    assert (labels[sims.argmax(1)] == labels).mean() >= 0.8


def test_wrong_crop_size_rejected(celeba_root: Path) -> None:
    emb = get_embedder("mobilefacenet", str(celeba_root.parent))
    with pytest.raises(ValueError):
        emb.embed(np.zeros((2, 150, 150, 3), np.uint8))
