"""Generator backends behind one interface (see issue #8).

A ``Generator`` maps aligned face crops to latents and back. Images are float tensors
(N, 3, R, R) in [-1, 1], RGB, in the backend's ``alignment`` layout ("arcface112" scaled to R for
the bundled ``lite`` backend; "ffhq" for StyleGAN2/e4e). Latents have shape (N, *latent_shape).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn


class Generator(nn.Module, ABC):
    """encode(images) -> latents; decode(latents) -> images; sample_latents(n) -> latents."""

    resolution: int = 112
    latent_shape: tuple[int, ...] = (512,)
    alignment: str = "arcface112"
    name: str = "generator"

    @abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, R, R) in [-1, 1] -> (N, *latent_shape)."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, *latent_shape) -> (N, 3, R, R) in [-1, 1]."""

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random latents whose decodings are faces (backend-specific prior)."""
        raise NotImplementedError
