"""Split the torch port of dlib's face ResNet into a frozen trunk and a trainable head.

``level`` picks how much is trainable: ``"fc"`` (the final 256->128 fc on pooled features),
``"level0"`` (the last residual_down block, 3x3x256 -> 1x1x256, + fc) or ``"level1"`` (the last two dlib
levels, 8x8x128 -> 1x1x256, + fc). Deeper heads adapt more but cost more per client step.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError

#: number of residual blocks (of 14) kept in the trunk for each split level
TRUNK_BLOCKS = {"fc": 14, "level0": 13, "level1": 10}


class DlibTrunk(nn.Module):
    """dlib ResNet stem + the first ``k`` residual blocks (+ global average pool when all 14 are kept)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.mean = model.mean.clone()
        self.stem = model.stem
        self.blocks = nn.Sequential(*list(model.blocks)[:k])
        self.pool = k == len(model.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,150,150) RGB 0..255 -> trunk features."""
        x = (x - self.mean.to(x.device)) * (1.0 / 256.0)
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return x.mean(dim=(2, 3)) if self.pool else x.contiguous()


def _block_1x1(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A residual_down block whose convs produce a 1x1 map, as two matrix products (same numbers, same
    gradients: the 3x3 taps that only ever see zero padding get zero gradient either way, ~5x less work)."""
    from ..models.dlib_resnet import add_zero_padded

    c1, c2 = block.conv1, block.conv2
    n = x.shape[0]
    y = F.relu(F.linear(x[:, :, :3, :3].reshape(n, -1), c1.weight.reshape(c1.out_channels, -1), c1.bias))
    y = F.linear(y, c2.weight[:, :, 1, 1], c2.bias)
    return F.relu(add_zero_padded(y.view(n, -1, 1, 1), F.avg_pool2d(x, 2, 2)))


def _is_1x1_down(block: nn.Module, x: torch.Tensor) -> bool:
    c1 = getattr(block, "conv1", None)
    return (getattr(block, "down", False) and c1 is not None and c1.stride == (2, 2) and c1.padding == (0, 0)
            and c1.kernel_size == (3, 3) and x.shape[2] in (3, 4) and x.shape[3] in (3, 4))


class DlibHead(nn.Module):
    """The trainable top of dlib's ResNet: remaining residual blocks, global average pool, fc (no bias)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*list(model.blocks)[k:])
        self.fc = model.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features -> (N,128) raw descriptors (as dlib's fc outputs them)."""
        if len(self.blocks):
            for b in self.blocks:
                x = _block_1x1(b, x) if _is_1x1_down(b, x) else b(x)
            x = x.mean(dim=(2, 3))
        return self.fc(x)


def split_dlib_resnet(model: nn.Module, level: str = "level0") -> tuple[nn.Module, nn.Module]:
    """(frozen trunk, trainable head) copies of a ``DlibResNet``; ``head(trunk(x)) == model(x)``."""
    if level not in TRUNK_BLOCKS:
        raise InputError(f"unknown dlib split {level!r}; choose one of {sorted(TRUNK_BLOCKS)}")
    m = copy.deepcopy(model).float().to(memory_format=torch.contiguous_format)
    k = TRUNK_BLOCKS[level]
    trunk = DlibTrunk(m, k).eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    head = DlibHead(m, k)
    for p in head.parameters():
        p.requires_grad_(True)
    return trunk, head
