"""Tiny random generator + encryptor for the de-identification tests (no trained weights needed)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from faceprivacy.deid.riddle.encryptor import EncryptorConfig, LatentEncryptor
from faceprivacy.models.generator import Generator


class TinyGenerator(Generator):
    """32x32 linear 'generator': 8x8 pooled image -> 64-d latent -> image (random but deterministic)."""

    resolution = 32
    latent_shape = (64,)
    name = "tiny"

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.enc = nn.Linear(3 * 8 * 8, 64)
        self.dec = nn.Linear(64, 3 * 8 * 8)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(images, 8).flatten(1)
        return self.enc(x)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dec(latents)).view(-1, 3, 8, 8)
        return nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, 64, generator=generator)


def tiny_encryptor(seed: int = 0, trained_like: bool = True) -> LatentEncryptor:
    """A fitted tiny encryptor (random identities), couplings perturbed so they are not the identity map."""
    cfg = EncryptorConfig(latent_dim=64, pca_dim=32, id_dim=12, key_dim=8, n_coupling=2, hidden=16)
    enc = LatentEncryptor(cfg)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(20), 8)
    z = rng.normal(size=(20, 64))[labels] + 0.5 * rng.normal(size=(160, 64))
    enc.fit_linear(z, labels)
    if trained_like:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in enc.couplings:
                w = layer.net[-1].weight
                w.copy_(torch.randn(w.shape, generator=g) * 0.05)
    enc.meta["id"] = "tiny"
    return enc
