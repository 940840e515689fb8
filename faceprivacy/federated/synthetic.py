"""Synthetic one-identity clients (clustered trunk features) for tests, timing benchmarks and smoke runs.

Each identity is a random centre in trunk-feature space; its images are the centre plus Gaussian noise.
Nothing here is a face: use it to exercise the machinery, never to report recognition accuracy.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def synthetic_clients(n_clients: int, per_client: int | tuple[int, int], dim: int | tuple[int, ...] = 64,
                      noise: float = 0.6, seed: int = 0) -> tuple[list[torch.Tensor], np.ndarray]:
    """``n_clients`` lists of trunk features of shape ``(n_i, *dim)``; ``n_i`` fixed or uniform in a range.

    Returns (client feature list, identity label of each client).
    """
    shape = (dim,) if isinstance(dim, int) else tuple(dim)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    feats = []
    for _ in range(n_clients):
        n = per_client if isinstance(per_client, int) else int(rng.integers(per_client[0], per_client[1] + 1))
        centre = torch.randn(shape, generator=g)
        feats.append(centre + noise * torch.randn((n, *shape), generator=g))
    return feats, np.arange(n_clients)


def tiny_head(in_dim: int = 64, out_dim: int = 16, seed: int = 0) -> nn.Module:
    """A small MLP head (Linear-ReLU-Linear) with fixed seed: the 'pretrained' model of synthetic runs."""
    g = torch.Generator().manual_seed(seed)
    head = nn.Sequential(nn.Linear(in_dim, 2 * out_dim), nn.ReLU(), nn.Linear(2 * out_dim, out_dim))
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p.shape[-1]) ** 0.5))
    return head
