"""A separate test root (``--test-data ROOT``): every identity of another data folder is a test identity,
while models, probes and thresholds come from the training root.

Accepted layouts (aligned 112x112 ArcFace crops, like the datakit's CelebA subset):

- a datakit folder holding ``celeba_subset_aligned112/``;
- a CelebA-subset-like folder holding ``images/<identity>/<file>`` (``labels.csv`` optional);
- a plain folder of identity folders ``<identity>/<file>``.

Refused (``InputError``): a root that is not a folder, holds no images, or shares identity names with the
training identities (that would not be a held-out test).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .data import FaceDataset, celeba_subset, identity_folder_dataset
from .errors import InputError


def load_test_root(root: str | os.PathLike, min_images: int = 1) -> FaceDataset:
    """All images of all identities under a separate test root (see the module docstring for layouts)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"test data folder not found: {root}")
    if (root / "celeba_subset_aligned112").is_dir():
        ds = celeba_subset(root / "celeba_subset_aligned112")
    elif (root / "images").is_dir():
        ds = celeba_subset(root)
    else:
        ds = identity_folder_dataset(root)
    if min_images > 1:
        keep = [n for n in ds.identities if sum(1 for lab in ds.labels if ds.names[lab] == n) >= min_images]
        if not keep:
            raise InputError(f"no identity under {root} has {min_images} or more images")
        ds = ds.select_identities(keep)
    return ds


def require_disjoint(train_identities: Iterable[str], test: FaceDataset, what: str = "training") -> None:
    """Refuse a test set that shares people (identity folder names) with the ``what`` identities."""
    shared = sorted(set(train_identities) & set(test.identities))
    if shared:
        more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
        raise InputError(f"--test-data shares {len(shared)} identities with the {what} identities "
                         f"({', '.join(shared[:3])}{more}): a test set must hold other people")
