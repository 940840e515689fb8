"""The one interface every face recognizer sits behind.

An ``Embedder`` takes a batch of *aligned crops in its own layout* (``alignment`` says which:
``"dlib150"`` = dlib's 150x150 chip with padding 0.25, ``"arcface112"`` = the standard 112x112
ArcFace 5-point crop) as uint8 RGB (N, H, W, 3) and returns L2-normalised (N, D) float32 features.
Use ``core.align`` to produce the crops from full images; ``core.pipeline`` does both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Embedder(ABC):
    """Abstract face embedder: ``embed(batch) -> (N, D)`` unit-norm features."""

    name: str = "embedder"
    #: (height, width) of the crops ``embed`` expects
    input_size: tuple[int, int] = (112, 112)
    #: alignment layout of the expected crops: "dlib150" or "arcface112"
    alignment: str = "arcface112"
    #: distance/similarity convention used by ``score``: higher = more similar (cosine)
    dim: int = 128

    @abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed a uint8 (N, H, W, 3) RGB batch of aligned crops into unit-norm (N, D) float32."""

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity of paired unit-norm features (N, D) x (N, D) -> (N,)."""
        return np.sum(np.asarray(a) * np.asarray(b), axis=1)

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        """Validate the batch shape/dtype, so a wrong crop size fails clearly instead of silently."""
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[-1] != 3 or tuple(batch.shape[1:3]) != tuple(self.input_size):
            raise ValueError(f"{self.name} expects (N, {self.input_size[0]}, {self.input_size[1]}, 3) "
                             f"uint8 crops in {self.alignment} layout, got {batch.shape}")
        return batch


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
