"""The bundled ``lite`` generator: a small adversarial Wasserstein autoencoder for 112x112 ArcFace crops.

Design (and why). No pretrained face generator, VGG/LPIPS or torchvision is available and the training
budget is minutes on one GPU with ~13k faces (CelebA train identities + re-aligned UTKFace). A StyleGAN
trained from scratch needs far more data and time before its inversion keeps identity, so we train an
*autoencoder whose latent has a known prior* instead:

* **Encoder** (deterministic conv net) -> latent ``z`` = ``[global (512) | spatial (C_s x S x S)]``,
  flattened to one vector (``latent_shape = (512 + C_s*S*S,)``; shipped: C_s=4, S=14, 1296 dims). The global part carries identity and
  appearance (it drives every decoder layer through FiLM), the small spatial part carries layout
  (pose, expression, hair outline), which a pure vector could not reconstruct well enough for the
  identity targets at this data size.
* **Prior**: ``z`` is pushed towards N(0, I) with a sliced-Wasserstein penalty on each batch (WAE style),
  so ``sample_latents`` draws N(0, I) and decodes faces; the decoder also sees small latent noise and
  prior samples during training, which keeps the space smooth for latent-space editing.
* **Decoder**: a mapping MLP on the global part, a learned 7x7 constant (the spatial part is added at
  S x S), then FiLM-modulated conv blocks 7 -> 14 -> 28 -> 56 -> 112.
* **Losses** (see :mod:`faceprivacy.models.train_lite`): L1 on an image pyramid, discriminator
  feature matching (our stand-in for a perceptual loss), the dlib ResNet identity distance through the
  differentiable ArcFace-112 -> dlib-150 chip warp, and a non-saturating GAN loss with lazy R1 on both
  reconstructions and prior samples. MobileFaceNet is never used in training (it is the independent
  evaluator).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .generator import Generator


@dataclass
class LiteConfig:
    """Architecture hyper-parameters (stored with the weights)."""

    global_dim: int = 512
    spatial_ch: int = 4
    spatial_res: int = 14  # 7 or 14: where the spatial latent sits in the encoder/decoder
    base: int = 7
    enc_ch: tuple[int, ...] = (32, 64, 128, 192, 256)  # 112, 56, 28, 14, 7
    dec_ch: tuple[int, ...] = (256, 192, 128, 64, 32)  # 7, 14, 28, 56, 112
    style_dim: int = 256
    map_layers: int = 2

    @property
    def latent_dim(self) -> int:
        return self.global_dim + self.spatial_ch * self.spatial_res * self.spatial_res

    @classmethod
    def tiny(cls) -> LiteConfig:
        """A very small configuration for CI tests."""
        return cls(global_dim=32, spatial_ch=2, spatial_res=7, enc_ch=(8, 8, 16, 16, 16), dec_ch=(16, 16, 16, 8, 8),
                   style_dim=16, map_layers=1)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> LiteConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class EncBlock(nn.Module):
    """Residual downsampling block (conv, conv-stride-2, 1x1 skip)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.c2 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(_act(self.c1(_act(x))))
        return (h + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class LiteEncoder(nn.Module):
    """112x112 image -> flat latent ``[global | spatial]``."""

    def __init__(self, cfg: LiteConfig):
        super().__init__()
        c = cfg.enc_ch
        self.cfg = cfg
        self.stem = nn.Conv2d(3, c[0], 3, padding=1)
        if cfg.spatial_res not in (7, 14):
            raise ValueError("spatial_res must be 7 or 14")
        self.blocks = nn.ModuleList([EncBlock(c[i], c[i + 1]) for i in range(4)])
        self.spatial = nn.Conv2d(c[4] if cfg.spatial_res == 7 else c[3], cfg.spatial_ch, 1)
        red = max(cfg.global_dim // 16, 8)
        self.reduce = nn.Conv2d(c[4], red, 1)
        self.glob = nn.Sequential(nn.Linear(red * cfg.base * cfg.base, cfg.global_dim), nn.LeakyReLU(0.2),
                                  nn.Linear(cfg.global_dim, cfg.global_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h14 = h
        for i, b in enumerate(self.blocks):
            h = b(h)
            if i == 2:
                h14 = h
        h = _act(h)
        g = self.glob(self.reduce(h).flatten(1))
        s = self.spatial(h if self.cfg.spatial_res == 7 else _act(h14)).flatten(1)
        return torch.cat([g, s], 1)


class FiLMConv(nn.Module):
    """3x3 conv whose output is scaled/shifted per channel by an affine map of the style vector."""

    def __init__(self, cin: int, cout: int, style_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.aff = nn.Linear(style_dim, 2 * cout)
        nn.init.zeros_(self.aff.weight)
        nn.init.zeros_(self.aff.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.aff(w).unsqueeze(-1).unsqueeze(-1).chunk(2, 1)
        return _act(self.conv(x) * (1 + gamma) + beta)


class LiteDecoder(nn.Module):
    """Flat latent -> 112x112 image in [-1, 1]."""

    def __init__(self, cfg: LiteConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.dec_ch
        layers: list[nn.Module] = []
        d = cfg.global_dim
        for _ in range(cfg.map_layers):
            layers += [nn.Linear(d, cfg.style_dim), nn.LeakyReLU(0.2)]
            d = cfg.style_dim
        self.mapping = nn.Sequential(*layers)
        self.const = nn.Parameter(torch.randn(1, c[0], cfg.base, cfg.base) * 0.5)
        self.sin = nn.Conv2d(cfg.spatial_ch, c[0], 1)
        self.first = FiLMConv(c[0], c[0], cfg.style_dim)
        self.ups = nn.ModuleList()
        for i in range(4):
            self.ups.append(nn.ModuleList([FiLMConv(c[i], c[i + 1], cfg.style_dim),
                                           FiLMConv(c[i + 1], c[i + 1], cfg.style_dim)]))
        self.rgb = nn.Conv2d(c[4], 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        g, s = z[:, :cfg.global_dim], z[:, cfg.global_dim:]
        w = self.mapping(g)
        s = s.reshape(-1, cfg.spatial_ch, cfg.spatial_res, cfg.spatial_res)
        h = self.const.expand(z.shape[0], -1, -1, -1)
        if cfg.spatial_res == 7:
            h = h + self.sin(s)
        h = self.first(h, w)
        for i, (a, b) in enumerate(self.ups):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            if i == 0 and cfg.spatial_res == 14:
                h = h + self.sin(s)
            h = b(a(h, w), w)
        return torch.tanh(self.rgb(h))


class LiteGenerator(Generator):
    """The bundled generator: ``encode``/``decode`` 112x112 ArcFace crops, N(0, I) prior on the latent."""

    name = "lite"
    alignment = "arcface112"
    resolution = 112

    def __init__(self, cfg: LiteConfig | None = None):
        super().__init__()
        self.cfg = cfg or LiteConfig()
        self.latent_shape = (self.cfg.latent_dim,)
        self.encoder = LiteEncoder(self.cfg)
        self.decoder = LiteDecoder(self.cfg)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) in [-1, 1] -> (N, latent_dim)."""
        if images.ndim != 4 or images.shape[1:] != (3, self.resolution, self.resolution):
            raise ValueError(f"expected (N, 3, {self.resolution}, {self.resolution}) images, "
                             f"got {tuple(images.shape)}")
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, latent_dim) -> (N, 3, 112, 112) in [-1, 1]."""
        if latents.ndim != 2 or latents.shape[1] != self.cfg.latent_dim:
            raise ValueError(f"expected (N, {self.cfg.latent_dim}) latents, got {tuple(latents.shape)}")
        return self.decoder(latents)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """N(0, I) draws (the prior the encoder was regularised towards)."""
        dev = next(self.parameters()).device
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device="cpu").to(dev)

    def split_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Split flat latents into (global (N, G), spatial (N, C_s, 7, 7)) parts."""
        c = self.cfg
        return z[:, :c.global_dim], z[:, c.global_dim:].reshape(-1, c.spatial_ch, c.spatial_res, c.spatial_res)

    def state_for_saving(self, half: bool = True) -> dict:
        """Config + (optionally fp16) weights in one plain dict for ``torch.save``."""
        sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
              for k, v in self.state_dict().items()}
        return {"format": "faceprivacy-lite-v1", "config": self.cfg.to_dict(), "state_dict": sd}

    @classmethod
    def from_saved(cls, blob: dict) -> LiteGenerator:
        """Inverse of :meth:`state_for_saving` (weights returned in float32, eval mode)."""
        from ..core.errors import InputError
        if not isinstance(blob, dict) or blob.get("format") != "faceprivacy-lite-v1":
            raise InputError("not a faceprivacy lite generator file (missing format tag)")
        g = cls(LiteConfig.from_dict(blob["config"]))
        sd = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
        missing, unexpected = g.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise InputError(f"lite weights do not match the architecture: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return g.eval()


class LiteDiscriminator(nn.Module):
    """Residual discriminator for 112x112 images; ``forward`` returns (logits, list of feature maps)."""

    def __init__(self, ch: tuple[int, ...] = (32, 64, 128, 256, 256)):
        super().__init__()
        self.stem = nn.Conv2d(3, ch[0], 3, padding=1)
        self.blocks = nn.ModuleList([EncBlock(ch[i], ch[i + 1]) for i in range(4)])
        self.head = nn.Sequential(nn.Conv2d(ch[4] + 1, ch[4], 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(ch[4], 64, 1), nn.LeakyReLU(0.2),
                                  nn.Flatten(), nn.Linear(64 * 49, 256), nn.LeakyReLU(0.2),
                                  nn.Linear(256, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        h = self.stem(x)
        for b in self.blocks:
            h = b(h)
            feats.append(h)
        std = h.float().std(0, keepdim=True).mean().to(h.dtype)  # minibatch-stddev feature
        h = torch.cat([h, std.expand(h.shape[0], 1, *h.shape[2:])], 1)
        return self.head(_act(h)).squeeze(1), feats


def count_params(m: nn.Module) -> int:
    """Number of parameters of a module."""
    return sum(p.numel() for p in m.parameters())
