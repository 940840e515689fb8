"""MobileFaceNet (Chen et al. 2018), written from the state-dict layout of the public CASIA-WebFace
checkpoint in the datakit (``068.ckpt``): 112x96 RGB input, (x - 127.5) / 128, 128-D output.

Used only as an *independent* recognizer for evaluation: nothing in faceprivacy trains against it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..core.errors import ModelLoadError

#: (expansion t, out channels c, repeats n, first stride s) per stage
SETTINGS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class ConvBlock(nn.Module):
    """conv -> BN (-> PReLU); ``groups`` for depthwise, ``act=False`` for the linear blocks."""

    def __init__(self, cin: int, cout: int, k: int | tuple[int, int], s: int = 1, p: int = 0,
                 groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise (stride s), 1x1 project; residual iff shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        h = cin * t
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h), nn.PReLU(h),
            nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.PReLU(h),
            nn.Conv2d(h, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileFaceNet(nn.Module):
    """Input float (N, 3, 112, 96) RGB in 0..255 (normalised inside); output (N, 128) raw features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.dw_conv1 = ConvBlock(64, 64, 3, 1, 1, groups=64)
        blocks: list[nn.Module] = []
        cin = 64
        for t, c, n, s in SETTINGS:
            for i in range(n):
                blocks.append(Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = ConvBlock(128, 512, 1)
        self.linear7 = ConvBlock(512, 512, (7, 6), groups=512, act=False)
        self.linear1 = ConvBlock(512, 128, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 127.5) / 128.0
        x = self.dw_conv1(self.conv1(x))
        x = self.conv2(self.blocks(x))
        return self.linear1(self.linear7(x)).flatten(1)


def load_mobilefacenet(ckpt: str | os.PathLike) -> MobileFaceNet:
    """Load the CASIA MobileFaceNet checkpoint (``{'net_state_dict': ...}`` or a bare state dict)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise ModelLoadError(f"MobileFaceNet checkpoint not found: {ckpt}")
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as e:  # corrupt/foreign file
        raise ModelLoadError(f"cannot read MobileFaceNet checkpoint {ckpt}: {e}") from None
    sd = obj.get("net_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{ckpt} holds no state dict")
    net = MobileFaceNet()
    missing, unexpected = net.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ModelLoadError(f"{ckpt}: not a MobileFaceNet checkpoint (missing {len(missing)} keys, e.g. "
                             f"{missing[:3]}; unexpected {len(unexpected)}, e.g. {unexpected[:3]})")
    return net.eval()
