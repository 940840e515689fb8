"""Recognizer split into a frozen lower *trunk* and a trainable upper *head*.

Federated fine-tuning only trains the head; each client runs the trunk once per image (features cached
in memory, never sent anywhere), which makes thousands of simulated clients cheap on a laptop CPU.

Backbones (``build_split(name)``):

- ``"tiny"``: identity trunk over 64-d synthetic features + a small MLP head (tests, smoke runs, Flower test).
- ``"dlib-fc"`` / ``"dlib-level0"`` / ``"dlib-level1"``: the torch port of dlib's ResNet
  (``faceprivacy.models.dlib_resnet``) with only the final fc, or also the last one/two residual levels,
  trainable. Inputs are 112x112 ArcFace crops (the CelebA subset layout), warped to dlib's 150x150 chip
  layout with ``faceprivacy.core.chip.arcface112_to_dlib150``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.errors import InputError

BACKBONES = ("tiny", "dlib-fc", "dlib-level0", "dlib-level1")


@dataclass
class SplitModel:
    """``trunk(images) -> features`` (frozen) and ``head(features) -> (N, D)`` (trainable)."""

    name: str
    trunk: nn.Module
    head: nn.Module
    #: how ``trunk`` wants its input: "vector" (already features), "arcface112" (uint8 crops)
    input_kind: str = "vector"
    info: dict = field(default_factory=dict)

    def embed(self, trunk_feats: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of trunk features with the current head."""
        from .algorithm import embed_features

        return embed_features(self.head, trunk_feats)


def build_split(name: str, seed: int = 0, weights: str | os.PathLike | None = None) -> SplitModel:
    """Construct a named backbone split (see the module docstring)."""
    if name == "tiny":
        from .synthetic import tiny_head

        return SplitModel("tiny", nn.Identity(), tiny_head(64, 16, seed=seed), "vector", {"in_dim": 64})
    if name.startswith("dlib-"):
        return _dlib_split(name.split("-", 1)[1], weights)
    raise InputError(f"unknown backbone {name!r}; choose one of {BACKBONES}")


def _dlib_split(level: str, weights: str | os.PathLike | None) -> SplitModel:
    from ..models.dlib_resnet import load_dlib_resnet
    from .dlib_split import split_dlib_resnet

    model = load_dlib_resnet(weights) if weights else load_dlib_resnet()
    trunk, head = split_dlib_resnet(model, level)
    return SplitModel(f"dlib-{level}", trunk, head, "arcface112", {"level": level})


@torch.no_grad()
def trunk_features(split: SplitModel, images: np.ndarray | torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Run the frozen trunk over a batch of inputs (uint8 (N,112,112,3) crops, or vectors for ``tiny``)."""
    split.trunk.eval()
    if split.input_kind == "vector":
        return split.trunk(torch.as_tensor(np.asarray(images), dtype=torch.float32))
    from ..core.chip import arcface112_to_dlib150

    out = []
    for i in range(0, len(images), batch):
        x = torch.as_tensor(np.asarray(images[i:i + batch])).permute(0, 3, 1, 2).float()
        out.append(split.trunk(arcface112_to_dlib150(x)).float())
    return torch.cat(out) if out else torch.zeros(0)


def load_crops(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Load aligned crops as uint8 (N, H, W, 3) RGB with core.imageio (safe loading)."""
    from ..core.imageio import load_image

    imgs = [load_image(Path(p)) for p in paths]
    if not imgs:
        return np.zeros((0, 112, 112, 3), np.uint8)
    return np.stack(imgs)


def dataset_features(split: SplitModel, paths: Sequence[str | os.PathLike], batch: int = 64,
                     progress_desc: str | None = None) -> torch.Tensor:
    """Trunk features of the images at ``paths`` (loaded in chunks to bound memory)."""
    from ..core.progress import progress

    chunks = []
    starts = range(0, len(paths), batch)
    for i in progress(starts, desc=progress_desc or "trunk features", disable=progress_desc is None,
                      total=len(starts)):
        chunks.append(trunk_features(split, load_crops(paths[i:i + batch]), batch))
    if not chunks:
        raise InputError("no images to embed")
    return torch.cat(chunks)
