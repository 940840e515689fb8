"""The ``stylegan2`` generator backend: a user's StyleGAN2 ``g_ema`` checkpoint (architecture in
``stylegan2``) plus an optional e4e/pSp encoder (``e4e``), behind the project's ``Generator`` interface.
``load_stylegan2(generator_ckpt, encoder_ckpt=None)`` reads the files through ``checkpoint``."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelLoadError
from . import e4e
from .checkpoint import generator_state_dict, infer_stylegan2_config, load_matching, read_checkpoint
from .generator import Generator
from .stylegan2 import StyleGAN2


class StyleGAN2Backend(Generator):
    """StyleGAN2 decoder (+ optional e4e/pSp encoder) behind the project's ``Generator`` interface."""

    alignment = "ffhq"
    name = "stylegan2"

    def __init__(self, g_ema: StyleGAN2, encoder: nn.Module | None = None,
                 encoder_latent_avg: torch.Tensor | None = None, mean_w: torch.Tensor | None = None,
                 truncation: float = 1.0, noise_mode: str = "const") -> None:
        super().__init__()
        self.g_ema = g_ema
        self.encoder = encoder
        self.resolution = g_ema.size
        self.latent_shape = (g_ema.n_latent, g_ema.style_dim)
        self.truncation = float(truncation)
        self.noise_mode = noise_mode
        self.register_buffer("encoder_latent_avg", encoder_latent_avg, persistent=False)
        self.register_buffer("_mean_w", mean_w, persistent=False)

    @property
    def mean_w(self) -> torch.Tensor:
        """Mean W (style_dim,): the checkpoint's ``latent_avg`` or the mean mapping of 4096 seeded z."""
        if self._mean_w is None:
            p = next(self.g_ema.parameters())
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(4096, self.g_ema.style_dim, generator=gen).to(p)
            with torch.no_grad():
                self._mean_w = self.g_ema.mapping(z).mean(0)
        return self._mean_w

    def truncate(self, latents: torch.Tensor, psi: float) -> torch.Tensor:
        """Pull W/W+ latents towards the mean W by factor ``psi`` (1 = unchanged, 0 = the mean face)."""
        m = self.mean_w.to(latents)
        return m + psi * (latents - m)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """W+ (N, n_latent, style_dim) (or W (N, style_dim)) -> images (N, 3, R, R) clamped to [-1, 1]."""
        p = next(self.g_ema.parameters())
        return self.g_ema(latents.to(device=p.device, dtype=p.dtype), noise_mode=self.noise_mode).clamp(-1, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """FFHQ-aligned images (N, 3, H, W) in [-1, 1] -> W+ via the e4e/pSp encoder (+ its latent_avg)."""
        if self.encoder is None:
            raise ModelLoadError("this stylegan2 generator has no encoder: pass encoder_ckpt (an e4e or pSp "
                                 "checkpoint) to load_stylegan2, or use a checkpoint that contains 'encoder.*'")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
        p = next(self.encoder.parameters())
        x = images.to(device=p.device, dtype=p.dtype)
        s = self.encoder.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > s)
        codes = self.encoder(x)
        if self.encoder_latent_avg is not None:
            codes = codes + self.encoder_latent_avg.to(codes)
        return codes

    def sample_latents(self, n: int, generator: torch.Generator | None = None,
                       truncation: float | None = None) -> torch.Tensor:
        """W+ of ``n`` random faces: mapping(z), z ~ N(0, I) (CPU generator), truncated, repeated per layer."""
        p = next(self.g_ema.parameters())
        z = torch.randn(n, self.g_ema.style_dim, generator=generator).to(p)
        w = self.g_ema.mapping(z)
        psi = self.truncation if truncation is None else float(truncation)
        if psi != 1.0:
            w = self.truncate(w, psi)
        return w.unsqueeze(1).repeat(1, self.g_ema.n_latent, 1)


def load_stylegan2(generator_ckpt: str | Path, encoder_ckpt: str | Path | None = None, device: str = "cpu",
                   truncation: float = 1.0, trusted: bool = False) -> StyleGAN2Backend:
    """Load a StyleGAN2 ``g_ema`` checkpoint (and optionally an e4e/pSp encoder) as a ``Generator``.

    ``generator_ckpt``: a rosinality/convert_weight file (``{"g_ema": sd, "latent_avg": ...}``), a bare state
    dict, or an e4e/pSp checkpoint (its ``decoder.*``; its ``encoder.*`` is then used too unless
    ``encoder_ckpt`` is given). Wrong files raise ModelLoadError naming missing/unexpected keys.
    """
    gpath = Path(generator_ckpt)
    ck = read_checkpoint(gpath, trusted=trusted)
    sd, lat = generator_state_dict(ck, str(gpath))
    cfg = infer_stylegan2_config(sd)
    try:
        with torch.device("meta"):  # no weights allocated until the file's tensors are adopted
            g = StyleGAN2(**cfg)
    except (ValueError, KeyError) as e:
        raise ModelLoadError(f"{gpath}: cannot build a StyleGAN2 from this file ({e})") from e
    load_matching(g, sd, f"{gpath}: not a StyleGAN2 generator (g_ema) state dict of the expected layout "
                         f"(inferred size={cfg['size']}, style_dim={cfg['style_dim']})", assign=True)
    g.eval().requires_grad_(False)

    mean_w = None
    if lat is not None and lat.numel() >= cfg["style_dim"] and lat.shape[-1] == cfg["style_dim"]:
        mean_w = lat.reshape(-1, cfg["style_dim"])[0].float().clone()

    enc, enc_avg = None, None
    if encoder_ckpt is not None:
        epath = Path(encoder_ckpt)
        eck = read_checkpoint(epath, trusted=trusted)
        enc, enc_avg = e4e.encoder_from_checkpoint(eck, str(epath), n_latent=g.n_latent,
                                                   style_dim=g.style_dim, fallback_avg=mean_w)
    elif e4e.has_encoder_weights(ck):
        enc, enc_avg = e4e.encoder_from_checkpoint(ck, str(gpath), n_latent=g.n_latent,
                                                   style_dim=g.style_dim, fallback_avg=mean_w)
    if enc is not None:
        enc.eval().requires_grad_(False)
    backend = StyleGAN2Backend(g, enc, enc_avg, mean_w, truncation=truncation)
    return backend.to(device)
