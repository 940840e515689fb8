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

from ..core.progress import progress
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
    for _ in progress(range(epochs), desc="mapper epochs", unit="epoch"):
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
                    ste: bool = True, basis: torch.Tensor | None = None,
                    basis_std: torch.Tensor | None = None, bf16: bool | None = None,
                    aux: list[tuple[DiffEmbed, torch.Tensor, float]] | None = None, augment: float = 0.0,
                    callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Refine latents ``z0`` (N, L) so that ``diff_embed(decode(z))`` matches unit-norm ``target`` (N, D).

    Adam on a whitened offset ``z = z0 + z_std * d``; loss = 1 - cos + ``reg`` * mean(d^2). ``ste``
    rounds decoded images to uint8 in the forward pass so the result survives saving. With ``basis``
    (k, L) and ``basis_std`` (k,) the offset lives in the span of the training latents' top principal
    directions, ``z = z0 + d @ (basis_std * basis)``, so the image stays near the generator's face manifold
    (the *on-manifold* attack: fewer adversarial textures, more recognisable to another recognizer).
    ``bf16`` (default: where the CPU has native bfloat16) runs the forward/backward passes under bfloat16
    autocast with the latent and Adam in float32: on one core of the project's CPU ~4x faster per step, and on
    16 held-out training-root targets after 10 steps the same mean cosine (0.982 vs 0.982, float32 re-decode).
    ``aux`` adds ``weight * (1 - cos(embed(img), target))`` terms for other recognizers the attacker holds (an
    ensemble: fewer textures that only fool one network). ``augment`` > 0 scores each step on a randomly
    shifted (up to ``augment`` of the width) and mirrored copy of the image (expectation over
    transformations). ``callback(step, z)`` sees the latents after each step (e.g. budget curves).
    """
    import contextlib
    import copy

    target = torch.as_tensor(target, dtype=torch.float32).to(z0.device)
    if bf16 is None:
        bf16 = native_bf16(z0.device)
    if bf16:
        generator = copy.deepcopy(generator).to(memory_format=torch.channels_last)
    cast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if basis is not None:
        dirs = (basis * (basis_std if basis_std is not None else 1.0)[:, None]).float().to(z0.device)
        d = torch.zeros(len(z0), dirs.shape[0], device=z0.device, requires_grad=True)

        def offset() -> torch.Tensor:
            return d @ dirs
    else:
        scale = (z_std if z_std is not None else torch.ones(z0.shape[1])).float().to(z0.device)
        d = torch.zeros_like(z0, requires_grad=True)

        def offset() -> torch.Tensor:
            return scale * d
    aux = [(f, torch.as_tensor(t, dtype=torch.float32).to(z0.device), float(w)) for f, t, w in (aux or [])]
    gen_aug = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam([d], lr=lr)
    for step in range(steps):
        with cast():
            img = generator.decode((z0 + offset()).reshape(-1, *generator.latent_shape))
            if ste:
                img = quantize_ste(img.float())
            if augment > 0:
                img = _jitter(img.float(), augment, gen_aug)
            e = diff_embed(img).float()
            loss = (1 - (e * target).sum(1)).sum()
            for f, t, w in aux:
                loss = loss + w * (1 - (f(img).float() * t).sum(1)).sum()
        loss = loss + reg * (d ** 2).mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step + 1, (z0 + offset()).detach())
    return (z0 + offset()).detach()


def _jitter(img: torch.Tensor, frac: float, gen: torch.Generator) -> torch.Tensor:
    """Random integer shift (up to ``frac`` of the width, reflect-padded) and a coin-flip mirror per image."""
    n, _, h, w = img.shape
    p = max(1, int(round(frac * w)))
    padded = F.pad(img, (p, p, p, p), mode="reflect")
    dx, dy = torch.randint(0, 2 * p + 1, (2, n), generator=gen).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], torch.flip(out, dims=[3]), out)


def pca_basis(latents: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` principal directions (k, L) of training latents and their standard deviations (k,)."""
    zc = latents.float() - latents.float().mean(0)
    _, s, vh = torch.linalg.svd(zc, full_matrices=False)
    k = min(k, vh.shape[0])
    return vh[:k], s[:k] / max(1.0, (len(zc) - 1) ** 0.5)


def native_bf16(dev: torch.device) -> bool:
    """True on a CPU with native bfloat16 matrix units (AMX / AVX512-BF16), where bf16 convolutions are fast."""
    try:
        return dev.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_decoder(generator: Generator, bf16: bool | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The attacker's own decoding function for black-box queries: flattened latents (N, L) -> float32 images.

    On a CPU with native bfloat16 (AMX / AVX512-BF16, ``bf16=None`` detects it) it decodes with a bfloat16,
    channels-last copy of the generator (measured ~2x faster per image on one core for ``lite``; mean pixel
    change 0.5 grey levels). The black-box attack keeps the uint8 crops it actually queried, so this rounding
    never changes a reported result; elsewhere it is plain :func:`decode_latents`.
    """
    import copy

    dev = module_device(generator)
    if bf16 is None:
        bf16 = native_bf16(dev)
    if not bf16:
        return lambda z: decode_latents(generator, z)
    g16 = copy.deepcopy(generator).to(torch.bfloat16).to(memory_format=torch.channels_last).eval()

    @torch.no_grad()
    def dec(z: torch.Tensor) -> torch.Tensor:
        out = []
        z = z.to(dev)
        for i in range(0, len(z), 32):  # 32 was the fastest batch per image on one core
            out.append(g16.decode(z[i:i + 32].to(torch.bfloat16).reshape(-1, *generator.latent_shape)).float())
        return torch.cat(out)
    return dec


@dataclass
class BlackBoxResult:
    """Refined latents, best score reached per target, queries (mean per target, and each target's own), the
    query count at which each target first reached ``stop_score`` (inf: never), and the best uint8 crop each
    target queried (the attack's output image: exactly what the recognizer scored ``best_score`` on)."""

    z: torch.Tensor
    best_score: np.ndarray
    queries: float
    queries_per_target: np.ndarray
    first_success: np.ndarray
    crops: np.ndarray | None = None

    def success_curve(self, budgets: tuple[int, ...] | None = None) -> list[dict]:
        """Fraction of targets that reached the stop score within each query budget."""
        if budgets is None:
            top = int(self.queries_per_target.max()) if len(self.queries_per_target) else 1
            budgets = tuple(sorted({b for b in (1, 17, 33, 65, 129, 257, 513, 1025, 2049) if b < top} | {top}))
        return [{"queries": int(b), "success": float(np.mean(self.first_success <= b))} for b in budgets]


@torch.no_grad()
def blackbox_refine(generator: Generator, query: QueryEmbed, target: np.ndarray, z0: torch.Tensor,
                    basis: torch.Tensor, basis_std: torch.Tensor, iters: int = 40, pop: int = 16,
                    sigma: float = 0.5, lr: float = 0.3, seed: int = 0,
                    score_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                    stop_score: float | None = None, patience: int = 0,
                    restart_sigma: float = 1.5,
                    decode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> BlackBoxResult:
    """NES (antithetic, rank-shaped, Adam step) on subspace coefficients; only queries ``query``.

    Each iteration queries ``pop`` images per *active* target (``pop/2`` antithetic pairs); the best
    candidate seen is kept (elitism). A target stops once its best score reaches ``stop_score`` (the
    attacker's acceptance threshold, calibrated on its own training people), so the budget goes to the hard
    targets. With ``patience`` > 0, a target whose best has not improved for that many iterations restarts
    from its best point with fresh Adam moments and a search radius ``restart_sigma`` times larger.
    ``score_fn(emb, target)`` defaults to the cosine of row pairs. ``decode`` (flattened latents -> images;
    default :func:`decode_latents`) is the attacker's generator, e.g. :func:`fast_decoder`.
    """
    decode = decode or (lambda zz: decode_latents(generator, zz))
    score_fn = score_fn or (lambda e, t: np.sum(e * t, axis=1))
    g = torch.Generator().manual_seed(seed)
    n, k = len(z0), basis.shape[0]
    half = max(1, pop // 2)
    dev = z0.device
    dirs = (basis * basis_std[:, None]).to(dev)  # (k, L): unit step = one standard deviation along a component
    c = torch.zeros(n, k, device=dev)
    m_t = torch.zeros(n, k, device=dev)
    v_t = torch.zeros(n, k, device=dev)
    t_i = np.zeros(n, int)
    sig = np.full(n, float(sigma))
    stale = np.zeros(n, int)
    target = np.asarray(target, np.float32)

    def evaluate(rows: np.ndarray, coefs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """coefs (r, P, k) -> scores (r, P) and the queried crops (r, P, 112, 112, 3)."""
        r, p = coefs.shape[:2]
        z = (z0[rows][:, None, :] + coefs @ dirs).reshape(r * p, -1)
        crops = to_crops112(decode(z))
        emb = query(crops)
        return score_fn(emb, np.repeat(target[rows], p, axis=0)).reshape(r, p), crops.reshape(r, p, *crops.shape[1:])

    best_c = c.clone()
    everyone = np.arange(n)
    s0, c0 = evaluate(everyone, c[:, None, :])
    best, best_crops = s0[:, 0], c0[:, 0].copy()
    used = np.ones(n)
    first = np.full(n, np.inf)
    if stop_score is not None:
        first[best >= stop_score] = 1
    for _ in progress(range(iters), desc="black-box NES", unit="iter"):
        active = everyone if stop_score is None else everyone[~np.isfinite(first)]
        if len(active) == 0:
            break
        ta = torch.as_tensor(active, device=dev)
        eps = torch.randn(len(active), half, k, generator=g).to(dev)
        sg = torch.as_tensor(sig[active], dtype=torch.float32, device=dev)[:, None, None]
        cand = torch.cat([c[ta][:, None] + sg * eps, c[ta][:, None] - sg * eps], 1)
        s, crops = evaluate(active, cand)
        used[active] += 2 * half
        smax = s.max(1)
        imp = smax > best[active]
        if imp.any():
            rows = active[imp]
            best_crops[rows] = crops[np.flatnonzero(imp), s.argmax(1)[imp]]
            best_c[torch.as_tensor(rows, device=dev)] = cand[torch.as_tensor(np.flatnonzero(imp), device=dev),
                                                              torch.as_tensor(s.argmax(1)[imp], device=dev)]
            best[rows] = smax[imp]
        stale[active] = np.where(imp, 0, stale[active] + 1)
        if stop_score is not None:
            hit = active[(best[active] >= stop_score) & ~np.isfinite(first[active])]
            first[hit] = used[hit]
        ranks = s.argsort(1).argsort(1).astype(np.float32)
        w = torch.as_tensor(ranks / (s.shape[1] - 1) - 0.5, device=dev)  # centred ranks in [-0.5, 0.5]
        grad = ((w[:, :half] - w[:, half:])[:, :, None] * eps).sum(1) / (half * sg[:, :, 0])
        t_i[active] += 1
        tt = torch.as_tensor(t_i[active], dtype=torch.float32, device=dev)[:, None]
        m_t[ta] = 0.9 * m_t[ta] + 0.1 * grad
        v_t[ta] = 0.999 * v_t[ta] + 0.001 * grad ** 2
        c[ta] = c[ta] + lr * (m_t[ta] / (1 - 0.9 ** tt)) / ((v_t[ta] / (1 - 0.999 ** tt)).sqrt() + 1e-8)
        if patience > 0:
            restart = active[stale[active] >= patience]
            if len(restart):
                tr = torch.as_tensor(restart, device=dev)
                c[tr], m_t[tr], v_t[tr] = best_c[tr], 0.0, 0.0
                t_i[restart], stale[restart] = 0, 0
                sig[restart] = np.minimum(sig[restart] * restart_sigma, 4 * sigma)
    return BlackBoxResult(z0 + best_c @ dirs, best, float(used.mean()), used, first, best_crops)


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
