"""e4e / pSp encoders (image -> StyleGAN2 W+) in the checkpoint layout of the public e4e and pSp releases.

Written for this project from the published architecture (no code copied):

* ``input_layer``: 3x3 conv (no bias) -> BatchNorm -> PReLU, 64 channels, stride 1 (input 256x256);
* ``body``: the IR-SE-50 trunk, 24 bottleneck units in four stages (3, 4, 14, 3 units; 64/128/256/512
  channels; the first unit of each stage has stride 2). A unit is ``res_layer`` = BN, 3x3 conv, PReLU,
  3x3 conv (stride), BN, squeeze-excitation (``fc1``/``fc2`` 1x1 convs, reduction 16), plus a shortcut that
  is a stride-s 1x1 max-pool when the width is unchanged, else ``shortcut_layer`` = 1x1 conv + BN;
* feature pyramid: c1 = unit 6 (128 ch, 64x64), c2 = unit 20 (256 ch, 32x32), c3 = unit 23 (512 ch,
  16x16); p2 = up(c3) + ``latlayer1``(c2), p1 = up(p2) + ``latlayer2``(c1) (bilinear, align_corners);
* ``styles.{i}`` (``map2style``/GradualStyleBlock): stride-2 3x3 convs + leaky ReLU(0.01) down to 1x1
  (4/5/6 convs for the coarse rows 0-2 on c3, middle rows 3-6 on p2, fine rows 7.. on p1), then an
  equalised linear layer;
* pSp (``GradualStyleEncoder``) stacks the row codes; e4e (``Encoder4Editing``) uses row 0 as a shared w
  and adds rows 1.. as offsets to it. Both add the checkpoint's ``latent_avg`` afterwards.

``width`` / ``input_size`` / ``style_dim`` only exist so tests can build narrow instances with the same keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ModelLoadError
from .checkpoint import clean_state_dict, first_keys, load_matching, strip_prefix
from .stylegan2 import EqualLinear

#: IR-50 stage layout: (units, relative width) — widths are width * (1, 2, 4, 8)
IR50_STAGES = ((3, 1), (4, 2), (14, 4), (3, 8))
C1_UNIT, C2_UNIT, C3_UNIT = 6, 20, 23
COARSE_END, MIDDLE_END = 3, 7


class SEModule(nn.Module):
    """Squeeze-and-excitation gate (keys ``fc1.weight``, ``fc2.weight``)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * g


class IRUnit(nn.Module):
    """IR / IR-SE bottleneck unit: residual branch ``res_layer`` + max-pool or conv ``shortcut_layer``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, se: bool = True) -> None:
        super().__init__()
        self.stride = stride
        if in_ch == out_ch:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                                nn.BatchNorm2d(out_ch))
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if se:
            layers.append(SEModule(out_ch))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class Map2Style(nn.Module):
    """Strided convs down to 1x1, then an equalised linear layer -> one W row (keys ``convs.*``, ``linear.*``)."""

    def __init__(self, in_ch: int, out_ch: int, n_down: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(n_down):
            mods += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*mods)
        self.linear = EqualLinear(out_ch, out_ch)
        self.out_ch = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if x.shape[-1] != 1 or x.shape[-2] != 1:
            raise ValueError(f"map2style expected a 1x1 map after its convs, got {tuple(x.shape[-2:])} "
                             "(wrong encoder input size)")
        return self.linear(x.flatten(1))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class PSPEncoder(nn.Module):
    """IR-SE-50 feature-pyramid encoder; ``arch`` "e4e" (w0 + deltas) or "psp" (independent rows)."""

    def __init__(self, n_styles: int = 14, arch: str = "e4e", width: int = 64, style_dim: int = 512,
                 input_size: int = 256, se: bool = True, in_ch: int = 3) -> None:
        super().__init__()
        if arch not in ("e4e", "psp"):
            raise ValueError(f"arch must be e4e or psp, got {arch!r}")
        lg = int(math.log2(input_size))
        if 2**lg != input_size or input_size < 32:
            raise ValueError(f"encoder input size must be a power of two >= 32, got {input_size}")
        self.arch, self.n_styles, self.input_size, self.style_dim = arch, n_styles, input_size, style_dim
        self.input_layer = nn.Sequential(nn.Conv2d(in_ch, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                         nn.PReLU(width))
        units: list[nn.Module] = []
        prev = width
        for n_units, mult in IR50_STAGES:
            ch = width * mult
            for u in range(n_units):
                units.append(IRUnit(prev, ch, 2 if u == 0 else 1, se=se))
                prev = ch
        self.body = nn.Sequential(*units)
        top, c2_ch, c1_ch = width * 8, width * 4, width * 2
        base = lg - 4  # c3 is input/16: log2 of its side = convs needed for the coarse rows
        self.styles = nn.ModuleList()
        for i in range(n_styles):
            extra = 0 if i < COARSE_END else (1 if i < MIDDLE_END else 2)
            self.styles.append(Map2Style(top, style_dim, base + extra))
        self.latlayer1 = nn.Conv2d(c2_ch, top, 1)
        self.latlayer2 = nn.Conv2d(c1_ch, top, 1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images -> (c1, c2, c3) pyramid features."""
        x = self.input_layer(x)
        c1 = c2 = None
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == C1_UNIT:
                c1 = x
            elif i == C2_UNIT:
                c2 = x
        assert c1 is not None and c2 is not None
        return c1, c2, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) in [-1, 1] -> codes (N, n_styles, style_dim) *before* adding latent_avg."""
        c1, c2, c3 = self.features(x)
        p2 = _upsample_add(c3, self.latlayer1(c2)) if self.n_styles > COARSE_END else None
        p1 = _upsample_add(p2, self.latlayer2(c1)) if self.n_styles > MIDDLE_END else None
        rows = []
        for i, block in enumerate(self.styles):
            feat = c3 if i < COARSE_END else (p2 if i < MIDDLE_END else p1)
            rows.append(block(feat))
        codes = torch.stack(rows, dim=1)
        if self.arch == "e4e":
            codes = torch.cat([codes[:, :1], codes[:, :1] + codes[:, 1:]], dim=1)
        return codes


def build_encoder(n_styles: int = 14, arch: str = "e4e", width: int = 64, style_dim: int = 512,
                  input_size: int = 256, se: bool = True) -> PSPEncoder:
    """A randomly initialised e4e/pSp encoder with the release key layout (tests, key listings)."""
    return PSPEncoder(n_styles, arch, width, style_dim, input_size, se)


def encoder_state_dict(ckpt: Any, where: str) -> dict[str, torch.Tensor] | None:
    """The ``encoder.*`` weights of an e4e/pSp checkpoint (prefix stripped), or None when absent."""
    if not isinstance(ckpt, Mapping):
        return None
    root = ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    enc = strip_prefix(root, "encoder.") or strip_prefix(root, "module.encoder.")
    if enc:
        return clean_state_dict(enc, where + " encoder.*")
    if "input_layer.0.weight" in root and "styles.0.linear.weight" in root:  # bare encoder state dict
        return clean_state_dict(root, where)
    return None


def has_encoder_weights(ckpt: Any) -> bool:
    """True when the checkpoint object carries e4e/pSp encoder weights."""
    try:
        return encoder_state_dict(ckpt, "") is not None
    except ModelLoadError:
        return False


def _opts(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    o = ckpt.get("opts")
    if o is None:
        return {}
    if isinstance(o, Mapping):
        return dict(o)
    return dict(getattr(o, "__dict__", {}))


def infer_encoder_config(sd: Mapping[str, torch.Tensor], opts: Mapping[str, Any]) -> dict[str, Any]:
    """Encoder hyper-parameters from key shapes (+ ``opts.encoder_type``): arch, width, style_dim, sizes."""
    etype = str(opts.get("encoder_type", "Encoder4Editing"))
    archs = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp"}
    if etype not in archs:
        raise ModelLoadError(f"unsupported encoder_type {etype!r} in checkpoint opts (supported: "
                             f"{', '.join(archs)})")
    cfg: dict[str, Any] = {"arch": archs[etype], "width": 64, "style_dim": 512, "input_size": 256, "se": True}
    w = sd.get("input_layer.0.weight")
    if isinstance(w, torch.Tensor) and w.ndim == 4:
        cfg["width"] = int(w.shape[0])
    lin = sd.get("styles.0.linear.weight")
    if isinstance(lin, torch.Tensor) and lin.ndim == 2:
        cfg["style_dim"] = int(lin.shape[0])
    n_conv = len({k.split(".")[3] for k in sd if k.startswith("styles.0.convs.") and k.endswith(".weight")})
    if n_conv:
        cfg["input_size"] = 16 * 2**n_conv
    cfg["se"] = any(".res_layer.5.fc1." in k for k in sd) or not any(k.startswith("body.") for k in sd)
    n = len({int(k.split(".")[1]) for k in sd if k.startswith("styles.") and k.split(".")[1].isdigit()})
    cfg["n_styles"] = n
    return cfg


def encoder_from_checkpoint(ckpt: Any, where: str, n_latent: int, style_dim: int,
                            fallback_avg: torch.Tensor | None = None) -> tuple[PSPEncoder, torch.Tensor | None]:
    """Build + strictly load the encoder of an e4e/pSp checkpoint; returns (encoder, latent_avg for W+).

    The latent average comes from the checkpoint (``latent_avg``: (512,), (1, 512) or (n_latent, 512)); if the
    checkpoint has none and ``opts.start_from_latent_avg`` is not False, ``fallback_avg`` (the generator's
    mean W) is used.
    """
    sd = encoder_state_dict(ckpt, where)
    if sd is None:
        top = [str(k) for k in ckpt.keys()] if isinstance(ckpt, Mapping) else []
        raise ModelLoadError(f"{where}: no e4e/pSp encoder weights (expected a 'state_dict' with 'encoder.*' keys "
                             f"such as encoder.input_layer.0.weight); top-level keys: {first_keys(top, 8)}")
    opts = _opts(ckpt)
    cfg = infer_encoder_config(sd, opts)
    n_styles = cfg.pop("n_styles") or n_latent
    if n_styles != n_latent:
        raise ModelLoadError(f"{where}: encoder predicts {n_styles} W+ rows but the generator has {n_latent} "
                             f"(stylegan_size mismatch: use the encoder trained for this generator's resolution)")
    if cfg["style_dim"] != style_dim:
        raise ModelLoadError(f"{where}: encoder style dim {cfg['style_dim']} != generator style dim {style_dim}")
    try:
        with torch.device("meta"):
            enc = PSPEncoder(n_styles=n_styles, **cfg)
    except ValueError as e:
        raise ModelLoadError(f"{where}: cannot build an e4e/pSp encoder from this file ({e})") from e
    load_matching(enc, sd, f"{where}: not an e4e/pSp encoder of the expected layout (arch={cfg['arch']}, "
                           f"IR{'-SE' if cfg['se'] else ''}-50)", assign=True)
    avg = ckpt.get("latent_avg") if isinstance(ckpt, Mapping) else None
    if isinstance(avg, torch.Tensor):
        if avg.shape[-1] != style_dim or avg.numel() not in (style_dim, n_latent * style_dim):
            raise ModelLoadError(f"{where}: latent_avg has shape {tuple(avg.shape)}, expected ({style_dim},) or "
                                 f"({n_latent}, {style_dim})")
        avg = avg.float().reshape(-1, style_dim).clone()
    else:
        avg = None
        if opts.get("start_from_latent_avg", True) and fallback_avg is not None:
            avg = fallback_avg.reshape(1, style_dim).clone()
    if avg is not None and not opts.get("start_from_latent_avg", True):
        avg = None
    return enc, avg
