"""``stylegan2`` generator backend: user-supplied StyleGAN2 (+ e4e/pSp encoder) checkpoints.

No pretrained face generator can be downloaded here, so this backend only *loads* weights the user
already has, in the widely used PyTorch StyleGAN2 checkpoint layout (the ``g_ema`` state dict written by
rosinality's stylegan2-pytorch trainer and its ``convert_weight.py``, and embedded as ``decoder.*`` in
e4e/pSp checkpoints). The architecture below is written for this project from the published design:

* mapping ``style.*``: PixelNorm followed by ``n_mlp`` equalised linear layers (lr multiplier 0.01)
  with a bias + leaky-ReLU(0.2) * sqrt(2) activation; index 0 of the Sequential is the (parameter-free)
  PixelNorm, so the layers are ``style.1`` .. ``style.8``;
* synthesis: a learned 4x4 constant ``input.input``; ``conv1`` + ``to_rgb1`` at 4x4; then per resolution
  8 .. R two modulated 3x3 convolutions ``convs.{2i}`` (2x up-sampling by a transposed convolution
  followed by a [1,3,3,1] blur) and ``convs.{2i+1}``, and a 1x1 ``to_rgbs.{i}`` whose output is added to
  the up-sampled (blurred) RGB skip of the previous resolution; per-layer noise with fixed buffers
  ``noises.noise_{j}``; W+ latents have ``n_latent = 2 log2(R) - 2`` rows (14/16/18 for 256/512/1024).

Channel widths follow the standard table: ``width`` (512) up to 32x32, then
``width * 32 * channel_multiplier / res`` (256/128/64/32 x channel_multiplier/2 ... for 64..1024).
``width`` only exists so tests can build a narrow instance with exactly the same key names.

``load_stylegan2(generator_ckpt, encoder_ckpt=None)`` returns a ``Generator`` (models/generator.py):
``decode`` W+ (N, n_latent, 512) -> images in [-1, 1] at the checkpoint resolution (FFHQ alignment),
``encode`` through an e4e/pSp encoder (see ``faceprivacy.models.e4e``), ``sample_latents`` maps
z ~ N(0, I) through the mapping network, with optional truncation towards the mean W.
"""

from __future__ import annotations

import argparse
import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelLoadError
from .generator import Generator

BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)


# ----------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------


def _kernel2d(taps: tuple[float, ...] = BLUR_KERNEL, gain: float = 1.0) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D kernel (sums to ``gain``)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Zero-insertion up-sampling by ``up``, zero padding (before, after) on both axes, then FIR filtering.

    The filter is applied as a true convolution (kernel flipped), per channel.
    """
    n, c, h, w = x.shape
    if up > 1:
        z = x.new_zeros(n, c, h * up, w * up)
        z[:, :, ::up, ::up] = x
        x = z
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    kh, kw = kernel.shape
    k = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device).view(1, 1, kh, kw).expand(c, 1, kh, kw)
    return F.conv2d(x, k, groups=c)


class PixelNorm(nn.Module):
    """Normalises each latent vector to unit RMS (first op of the mapping network)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


def _bias_lrelu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's fused activation: leaky ReLU(0.2) of (x + per-channel bias), gain sqrt(2)."""
    shape = [1, -1] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.reshape(shape), 0.2) * math.sqrt(2.0)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored unscaled, scaled by lr_mul/sqrt(fan_in)."""

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.lr_mul = lr_mul
        self.scale = lr_mul / math.sqrt(in_dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return _bias_lrelu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    """[1,3,3,1] low-pass applied after a stride-2 transposed convolution (buffer ``kernel``)."""

    def __init__(self, pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", _kernel2d(gain=gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR up-sampling of the RGB skip path (buffer ``kernel``, gain 4 to keep the mean)."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", _kernel2d(gain=factor * factor))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (per-sample weights via grouped conv), optional demodulation and 2x up."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.k = in_ch, out_ch, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            # transposed conv (stride 2, no padding) gives 2H + k - 2 samples; the blur trims back to 2H
            p = (len(BLUR_KERNEL) - 2) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, _, h, wd = x.shape
        s = self.modulation(w)  # (N, in)
        weight = self.weight * self.scale * s.view(n, 1, self.in_ch, 1, 1)  # (N, out, in, k, k)
        if self.demodulate:
            d = torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4)) + 1e-8)
            weight = weight * d.view(n, self.out_ch, 1, 1, 1)
        x = x.reshape(1, n * self.in_ch, h, wd)
        if self.upsample:
            wt = weight.transpose(1, 2).reshape(n * self.in_ch, self.out_ch, self.k, self.k)
            out = F.conv_transpose2d(x, wt, stride=2, padding=0, groups=n)
            out = out.view(n, self.out_ch, out.shape[-2], out.shape[-1])
            return self.blur(out)
        out = F.conv2d(x, weight.reshape(n * self.out_ch, self.in_ch, self.k, self.k),
                       padding=self.k // 2, groups=n)
        return out.view(n, self.out_ch, out.shape[-2], out.shape[-1])


class NoiseInjection(nn.Module):
    """Adds per-pixel noise scaled by one learned scalar ``weight``."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Per-channel bias + scaled leaky ReLU (parameter ``bias`` of shape (C,))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _bias_lrelu(x, self.bias)


class ConstantInput(nn.Module):
    """The learned 4x4 starting tensor of the synthesis network (parameter ``input``)."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, n: int) -> torch.Tensor:
        return self.input.expand(n, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> biased leaky ReLU (keys ``conv.*``, ``noise.weight``, ``activate.bias``)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the up-sampled previous RGB."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


def stylegan2_channels(size: int, channel_multiplier: int = 2, width: int = 512) -> dict[int, int]:
    """Feature channels per resolution (4 .. size) of the standard StyleGAN2 config table."""
    out = {}
    for lg in range(2, int(math.log2(size)) + 1):
        res = 2**lg
        out[res] = width if res <= 32 else max(1, width * 32 * channel_multiplier // res)
    return out


class StyleGAN2(nn.Module):
    """The StyleGAN2 generator network (``g_ema`` state-dict layout); forward(W+) -> raw images."""

    def __init__(self, size: int = 256, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 width: int = 512, lr_mlp: float = 0.01) -> None:
        super().__init__()
        lg = int(math.log2(size))
        if size < 8 or 2**lg != size:
            raise ValueError(f"StyleGAN2 size must be a power of two >= 8, got {size}")
        self.size, self.style_dim, self.n_mlp = size, style_dim, n_mlp
        self.channel_multiplier, self.width = channel_multiplier, width
        self.log_size = lg
        self.n_latent = 2 * lg - 2
        self.num_layers = 2 * (lg - 2) + 1
        ch = stylegan2_channels(size, channel_multiplier, width)
        self.channels = ch

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)],
        )
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], style_dim)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for j in range(self.num_layers):
            r = 2 ** ((j + 5) // 2)  # layer 0 at 4x4, then two layers per resolution
            self.noises.register_buffer(f"noise_{j}", torch.randn(1, 1, r, r))
        prev = ch[4]
        for k in range(3, lg + 1):
            c = ch[2**k]
            self.convs.append(StyledConv(prev, c, style_dim, upsample=True))
            self.convs.append(StyledConv(c, c, style_dim))
            self.to_rgbs.append(ToRGB(c, style_dim))
            prev = c

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, style_dim) -> w (N, style_dim)."""
        return self.style(z)

    def forward(self, wplus: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """W+ (N, n_latent, style_dim) or W (N, style_dim) -> raw RGB (N, 3, size, size), roughly [-1, 1].

        ``noise_mode``: "const" uses the stored ``noises`` buffers (deterministic), "random" draws fresh noise,
        "none" disables noise.
        """
        if wplus.ndim == 2:
            wplus = wplus.unsqueeze(1).expand(-1, self.n_latent, -1)
        if wplus.ndim != 3 or wplus.shape[1] != self.n_latent or wplus.shape[2] != self.style_dim:
            raise ValueError(f"expected W+ of shape (N, {self.n_latent}, {self.style_dim}), got {tuple(wplus.shape)}")
        if noise_mode == "const":
            noises: list[torch.Tensor | None] = [getattr(self.noises, f"noise_{j}") for j in range(self.num_layers)]
        elif noise_mode == "random":
            noises = [None] * self.num_layers
        elif noise_mode == "none":
            noises = [torch.zeros((), device=wplus.device, dtype=wplus.dtype)] * self.num_layers
        else:
            raise ValueError(f"noise_mode must be const|random|none, got {noise_mode!r}")
        n = wplus.shape[0]
        x = self.conv1(self.input(n), wplus[:, 0], noises[0])
        rgb = self.to_rgb1(x, wplus[:, 1])
        for i in range(len(self.to_rgbs)):
            li = 2 * i + 1  # latent row / noise index of the up-sampling conv at this resolution
            x = self.convs[2 * i](x, wplus[:, li], noises[li])
            x = self.convs[2 * i + 1](x, wplus[:, li + 1], noises[li + 1])
            rgb = self.to_rgbs[i](x, wplus[:, li + 2], rgb)
        return rgb


def build_stylegan2(size: int = 256, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                    width: int = 512) -> StyleGAN2:
    """A randomly initialised StyleGAN2 network with the standard key layout (tests, key listings)."""
    return StyleGAN2(size, style_dim, n_mlp, channel_multiplier, width)


# ----------------------------------------------------------------------------------------------------------
# checkpoint reading / validation
# ----------------------------------------------------------------------------------------------------------


def _first(keys: list[str], k: int = 5) -> str:
    return ", ".join(keys[:k]) + (", ..." if len(keys) > k else "")


def read_checkpoint(path: str | Path, trusted: bool = False) -> Any:
    """torch.load a checkpoint safely (weights_only, argparse.Namespace allowed); ModelLoadError otherwise.

    ``trusted=True`` falls back to full unpickling, which can run code: only for files you trust.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"checkpoint not found: {p}")
    with p.open("rb") as fh:
        head = fh.read(4)
    if not (zipfile.is_zipfile(p) or head[:1] == b"\x80"):  # torch zip format or legacy pickle stream
        raise ModelLoadError(f"{p}: not a PyTorch checkpoint (neither a torch zip archive nor a pickle stream)")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            if trusted:
                try:
                    return torch.load(p, map_location="cpu", weights_only=False)
                except Exception as e2:
                    raise ModelLoadError(f"{p}: not a readable PyTorch checkpoint ({e2})") from e2
            raise ModelLoadError(
                f"{p}: checkpoint contains Python objects that safe loading refuses ({msg}); "
                "re-save it as a plain state dict, or pass trusted=True if you trust the file") from e
        raise ModelLoadError(f"{p}: not a PyTorch checkpoint (torch.load failed: {msg})") from e


def _strip(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}


def _clean_state_dict(sd: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    """Drop DataParallel ``module.`` prefixes; every value must be a tensor."""
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str):
            raise ModelLoadError(f"{where}: state dict has a non-string key {k!r}")
        if k.startswith("module."):
            k = k[len("module."):]
        if not isinstance(v, torch.Tensor):
            raise ModelLoadError(f"{where}: entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k] = v
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_matching(module: nn.Module, sd: Mapping[str, torch.Tensor], what: str, assign: bool = False) -> None:
    """Strictly load ``sd`` into ``module``; on any mismatch raise ModelLoadError naming the keys.

    The message lists the first few missing / unexpected / wrongly shaped keys and their counts.
    ``num_batches_tracked`` buffers absent from old files are tolerated. ``assign=True`` adopts the file's
    tensors (use it for modules built on the meta device: no random initialisation cost).
    """
    expected = module.state_dict()
    sd = dict(sd)
    for k, v in list(sd.items()):  # activation biases saved as (1, C, 1, 1) by some forks
        if k in expected and k.endswith("activate.bias") and v.numel() == expected[k].numel():
            sd[k] = v.reshape(expected[k].shape)
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    bad = [f"{k} {tuple(sd[k].shape)} vs expected {tuple(expected[k].shape)}"
           for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {_first(unexpected)})")
        if bad:
            parts.append(f"{len(bad)} shape mismatches (e.g. {_first(bad, 3)})")
        raise ModelLoadError(f"{what}: " + "; ".join(parts) + f" [file has {len(sd)} keys, layout expects "
                             f"{len(expected)}]")
    for k, v in expected.items():
        if k not in sd:
            sd[k] = torch.zeros(v.shape, dtype=v.dtype)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    module.load_state_dict(sd, strict=True, assign=assign)


_RGB = re.compile(r"^to_rgbs\.(\d+)\.")
_MLP = re.compile(r"^style\.(\d+)\.weight$")


def infer_stylegan2_config(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Guess size / style_dim / n_mlp / channel_multiplier / width from a ``g_ema`` state dict.

    Falls back to the FFHQ-256 defaults for anything it cannot see (the strict load then names what is wrong).
    """
    cfg = {"size": 256, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "width": 512}
    mlp = sorted(int(m.group(1)) for k in sd if (m := _MLP.match(k)))
    if mlp:
        cfg["n_mlp"] = max(mlp)
        w = sd[f"style.{mlp[0]}.weight"]
        if w.ndim == 2:
            cfg["style_dim"] = int(w.shape[1])
    rgbs = {int(m.group(1)) for k in sd if (m := _RGB.match(k))}
    if rgbs:
        cfg["size"] = 2 ** (max(rgbs) + 3)
    else:
        nz = [k for k in sd if k.startswith("noises.noise_")]
        if nz:
            cfg["size"] = 2 ** ((len(nz) - 1) // 2 + 2)
    inp = sd.get("input.input")
    if isinstance(inp, torch.Tensor) and inp.ndim == 4:
        cfg["width"] = int(inp.shape[1])
    if cfg["size"] >= 64:
        last = f"to_rgbs.{int(math.log2(cfg['size'])) - 3}.conv.weight"
        wl = sd.get(last)
        if isinstance(wl, torch.Tensor) and wl.ndim == 5:
            c_last = int(wl.shape[2])
            cfg["channel_multiplier"] = max(1, round(c_last * cfg["size"] / (cfg["width"] * 32)))
    return cfg


def generator_state_dict(ckpt: Any, where: str) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Find the generator weights in a checkpoint object: ``g_ema``, e4e/pSp ``decoder.*``, or top level.

    Returns (state dict, latent_avg or None).
    """
    if not isinstance(ckpt, Mapping):
        raise ModelLoadError(f"{where}: expected a checkpoint dict, got {type(ckpt).__name__}")
    lat = ckpt.get("latent_avg")
    lat = lat if isinstance(lat, torch.Tensor) else None
    if isinstance(ckpt.get("g_ema"), Mapping):
        return _clean_state_dict(ckpt["g_ema"], where + "['g_ema']"), lat
    sd_root = ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    dec = _strip(sd_root, "decoder.") or _strip(sd_root, "module.decoder.")
    if dec:
        return _clean_state_dict(dec, where + " decoder.*"), lat
    if _is_state_dict(ckpt):
        return _clean_state_dict(ckpt, where), lat
    if isinstance(ckpt.get("g"), Mapping):
        return _clean_state_dict(ckpt["g"], where + "['g']"), lat
    top = [str(k) for k in ckpt.keys()]
    raise ModelLoadError(
        f"{where}: no StyleGAN2 generator weights found (looked for 'g_ema', a 'state_dict' with 'decoder.*' "
        f"keys, or a top-level state dict); top-level keys: {_first(top, 8)}")


# ----------------------------------------------------------------------------------------------------------
# the Generator backend
# ----------------------------------------------------------------------------------------------------------


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
    from . import e4e  # local import: e4e imports this module

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
