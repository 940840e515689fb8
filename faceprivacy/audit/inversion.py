"""Inversion attacks: face embedding -> face image in a generator's latent space (ID2image-style).

(a) :class:`LatentMapper`: an MLP trained on training identities to regress the generator-encoder latent
    of an image from its embedding (needs no access to the recognizer at attack time).
(b) :func:`whitebox_refine`: gradient descent on the latent through a differentiable copy of the attacked
    recognizer (e.g. the torch port of dlib's ResNet), starting from the mapper's latent.
(c) :func:`blackbox_refine`: gradient-free refinement (antithetic NES with rank fitness shaping) that only
    *queries* the attacked recognizer with uint8 images, in the top principal directions of the training
    latents, starting from the mapper's latent.

Images passed to/from the generator are float (N, 3, R, R) in [-1, 1] in the generator's ArcFace
layout; :func:`to_crops112` turns them into the uint8 (N, 112, 112, 3) ArcFace crops that embedders see.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..models.generator import Generator

#: differentiable recognizer: images (N, 3, R, R) in [-1, 1] -> (N, D) unit-norm embeddings
DiffEmbed = Callable[[torch.Tensor], torch.Tensor]
#: black-box recognizer: uint8 (N, 112, 112, 3) ArcFace crops -> (N, D) numpy embeddings
QueryEmbed = Callable[[np.ndarray], np.ndarray]


def module_device(m: nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU when it has none)."""
    for t in list(m.parameters()) + list(m.buffers()):
        return t.device
    return torch.device("cpu")


def images_to_tensor(crops: np.ndarray, resolution: int) -> torch.Tensor:
    """uint8 (N, 112, 112, 3) crops -> float (N, 3, R, R) in [-1, 1] (resized when R != 112)."""
    x = torch.as_tensor(np.asarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=True)
    return x


def to_crops112(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, R, R) in [-1, 1] -> uint8 (N, 112, 112, 3) ArcFace crops."""
    x = images.detach().float()
    if x.shape[-1] != 112:
        x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def quantize_ste(images: torch.Tensor) -> torch.Tensor:
    """Round [-1, 1] images to the uint8 grid in the forward pass, identity gradient (straight-through)."""
    x255 = (images.clamp(-1, 1) + 1) * 127.5
    q = x255 + (x255.round() - x255).detach()
    return q / 127.5 - 1.0


@torch.no_grad()
def encode_latents(generator: Generator, crops: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Generator-encoder latents (N, L) (flattened) of uint8 112x112 ArcFace crops."""
    out = []
    dev = module_device(generator)
    for i in range(0, len(crops), batch):
        x = images_to_tensor(crops[i:i + batch], generator.resolution).to(dev)
        out.append(generator.encode(x).reshape(len(x), -1).float())
    return torch.cat(out)


@torch.no_grad()
def decode_latents(generator: Generator, z: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Decode flattened latents (N, L) into images (N, 3, R, R) in [-1, 1]."""
    out = []
    z = z.to(module_device(generator))
    for i in range(0, len(z), batch):
        out.append(generator.decode(z[i:i + batch].reshape(-1, *generator.latent_shape)).float())
    return torch.cat(out)


class LatentMapper(nn.Module):
    """MLP from a (unit-norm or binary) template to a flattened generator latent (whitened targets)."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: int = 1024, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU()]
            d = hidden
        layers.append(nn.Linear(d, latent_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("z_mean", torch.zeros(latent_dim))
        self.register_buffer("z_std", torch.ones(latent_dim))
        self.register_buffer("x_mean", torch.zeros(in_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Templates (N, in_dim) -> latents (N, latent_dim)."""
        return self.net(x - self.x_mean) * self.z_std + self.z_mean


def train_mapper(templates: np.ndarray, latents: torch.Tensor, epochs: int = 200, lr: float = 1e-3,
                 hidden: int = 1024, depth: int = 3, weight_decay: float = 1e-4, seed: int = 0,
                 generator: Generator | None = None, diff_embed: DiffEmbed | None = None,
                 id_weight: float = 0.0, id_steps: int = 0, batch: int = 128) -> LatentMapper:
    """Fit a :class:`LatentMapper` by MSE on whitened latents (training identities only).

    With ``diff_embed`` and ``id_weight > 0`` it is then fine-tuned for ``id_steps`` steps with an extra
    identity loss ``1 - cos(diff_embed(decode(mapper(e))), e)`` (the attacker's own copy of the recognizer).
    """
    torch.manual_seed(seed)
    dev = latents.device
    x = torch.as_tensor(np.asarray(templates), dtype=torch.float32, device=dev)
    z = latents.float()
    m = LatentMapper(x.shape[1], z.shape[1], hidden, depth).to(dev)
    m.z_mean.copy_(z.mean(0))
    m.z_std.copy_(z.std(0) + 1e-6)
    m.x_mean.copy_(x.mean(0))
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    g = torch.Generator().manual_seed(seed)
    zn = (z - m.z_mean) / m.z_std
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g).to(dev)
        for i in range(0, len(x), batch):
            b = perm[i:i + batch]
            pred = m.net(x[b] - m.x_mean)
            loss = F.mse_loss(pred, zn[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    if diff_embed is not None and generator is not None and id_weight > 0 and id_steps > 0:
        opt = torch.optim.AdamW(m.parameters(), lr=lr * 0.3, weight_decay=weight_decay)
        for step in range(id_steps):
            b = torch.randint(0, len(x), (min(batch, 32),), generator=g).to(dev)
            pred = m.net(x[b] - m.x_mean)
            img = generator.decode((pred * m.z_std + m.z_mean).reshape(-1, *generator.latent_shape))
            e = diff_embed(img)
            loss = F.mse_loss(pred, zn[b]) + id_weight * (1 - (e * x[b]).sum(1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            del step
    m.eval()
    return m


@torch.no_grad()
def map_templates(mapper: LatentMapper, templates: np.ndarray) -> torch.Tensor:
    """Mapper latents (N, L) for templates (N, D)."""
    return mapper(torch.as_tensor(np.asarray(templates), dtype=torch.float32, device=module_device(mapper)))


def whitebox_refine(generator: Generator, diff_embed: DiffEmbed, target: torch.Tensor, z0: torch.Tensor,
                    steps: int = 100, lr: float = 0.05, reg: float = 1e-3, z_std: torch.Tensor | None = None,
                    ste: bool = True) -> torch.Tensor:
    """Refine latents ``z0`` (N, L) so that ``diff_embed(decode(z))`` matches unit-norm ``target`` (N, D).

    Adam on a whitened offset ``z = z0 + z_std * d``; loss = 1 - cos + ``reg`` * mean(d^2). ``ste``
    rounds decoded images to uint8 in the forward pass so the result survives saving.
    """
    target = torch.as_tensor(target, dtype=torch.float32).to(z0.device)
    scale = (z_std if z_std is not None else torch.ones(z0.shape[1])).float().to(z0.device)
    d = torch.zeros_like(z0, requires_grad=True)
    opt = torch.optim.Adam([d], lr=lr)
    for _ in range(steps):
        img = generator.decode((z0 + scale * d).reshape(-1, *generator.latent_shape))
        if ste:
            img = quantize_ste(img)
        e = diff_embed(img)
        loss = (1 - (e * target).sum(1)).sum() + reg * (d ** 2).mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (z0 + scale * d).detach()


def pca_basis(latents: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` principal directions (k, L) of training latents and their standard deviations (k,)."""
    zc = latents.float() - latents.float().mean(0)
    _, s, vh = torch.linalg.svd(zc, full_matrices=False)
    k = min(k, vh.shape[0])
    return vh[:k], s[:k] / max(1.0, (len(zc) - 1) ** 0.5)


@dataclass
class BlackBoxResult:
    """Refined latents, best cosine reached per target, queries used per target."""

    z: torch.Tensor
    best_score: np.ndarray
    queries: int


@torch.no_grad()
def blackbox_refine(generator: Generator, query: QueryEmbed, target: np.ndarray, z0: torch.Tensor,
                    basis: torch.Tensor, basis_std: torch.Tensor, iters: int = 40, pop: int = 16,
                    sigma: float = 0.5, lr: float = 0.3, seed: int = 0,
                    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> BlackBoxResult:
    """NES (antithetic, rank-shaped, Adam step) on subspace coefficients; only queries ``query``.

    Each iteration queries ``pop`` images per target (``pop/2`` antithetic pairs); the best candidate seen
    is kept (elitism). ``score_fn(emb, target)`` defaults to the cosine of row pairs.
    """
    score_fn = score_fn or (lambda e, t: np.sum(e * t, axis=1))
    g = torch.Generator().manual_seed(seed)
    n, k = len(z0), basis.shape[0]
    half = max(1, pop // 2)
    dev = z0.device
    dirs = (basis * basis_std[:, None]).to(dev)  # (k, L): unit step = one standard deviation along a component
    c = torch.zeros(n, k, device=dev)
    m_t = torch.zeros(n, k, device=dev)
    v_t = torch.zeros(n, k, device=dev)
    target = np.asarray(target, np.float32)

    def evaluate(coefs: torch.Tensor) -> np.ndarray:  # coefs (n, P, k) -> scores (n, P)
        p = coefs.shape[1]
        z = (z0[:, None, :] + coefs @ dirs).reshape(n * p, -1)
        crops = to_crops112(decode_latents(generator, z))
        emb = query(crops)
        return score_fn(emb, np.repeat(target, p, axis=0)).reshape(n, p)

    best_c = c.clone()
    best = evaluate(c[:, None, :])[:, 0]
    queries = 1
    for t in range(1, iters + 1):
        eps = torch.randn(n, half, k, generator=g).to(dev)
        cand = torch.cat([c[:, None] + sigma * eps, c[:, None] - sigma * eps], 1)
        s = evaluate(cand)
        queries += 2 * half
        imp = s.max(1) > best
        if imp.any():
            idx = torch.as_tensor(s.argmax(1), device=dev)
            sel = torch.as_tensor(imp, device=dev)
            best_c[sel] = cand[torch.arange(n, device=dev), idx][sel]
            best = np.maximum(best, s.max(1))
        ranks = s.argsort(1).argsort(1).astype(np.float32)
        w = torch.as_tensor(ranks / (s.shape[1] - 1) - 0.5, device=dev)  # centred ranks in [-0.5, 0.5]
        grad = ((w[:, :half] - w[:, half:])[:, :, None] * eps).sum(1) / (half * sigma)
        m_t = 0.9 * m_t + 0.1 * grad
        v_t = 0.999 * v_t + 0.001 * grad ** 2
        c = c + lr * (m_t / (1 - 0.9 ** t)) / ((v_t / (1 - 0.999 ** t)).sqrt() + 1e-8)
    return BlackBoxResult(z0 + best_c @ dirs, best, queries)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of paired rows."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


class Timer:
    """Tiny wall-clock timer (``with Timer() as t: ...; t.seconds``)."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
