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

``stylegan2_backend.load_stylegan2(generator_ckpt, encoder_ckpt=None)`` returns a ``Generator`` (models/generator.py):
``decode`` W+ (N, n_latent, 512) -> images in [-1, 1] at the checkpoint resolution (FFHQ alignment),
``encode`` through an e4e/pSp encoder (see ``faceprivacy.models.e4e``), ``sample_latents`` maps
z ~ N(0, I) through the mapping network, with optional truncation towards the mean W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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
