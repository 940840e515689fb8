"""Robust server-side aggregation of node updates (what one bad node can do to the global model).

Every accepted update is first clipped to L2 norm ``max_norm`` (on by default in the Flower strategy); then
the updates are combined with **equal weights** — a node's own ``num-examples`` claim never weights it — by
the mean, the coordinate-wise median, or the coordinate-wise trimmed mean (``trim`` of the values cut from
each end). With clipping and equal weights, one node moves the mean by at most ``max_norm / n``.
"""

from __future__ import annotations

import math

import torch


def clip_update(delta: torch.Tensor, max_norm: float) -> tuple[torch.Tensor, bool]:
    """``delta`` scaled down to L2 norm ``max_norm`` if it is longer (``max_norm <= 0``: unchanged)."""
    if max_norm <= 0:
        return delta, False
    n = float(delta.norm())
    if n <= max_norm:
        return delta, False
    return delta * (max_norm / n), True


def aggregate(deltas: list[torch.Tensor], method: str = "mean", trim: float = 0.2) -> torch.Tensor:
    """Equal-weight combination of flat updates: ``mean``, ``median`` or ``trimmed-mean``."""
    if not deltas:
        raise ValueError("aggregate needs at least one update")
    if method == "mean":
        out = torch.zeros_like(deltas[0], dtype=torch.float32)
        for d in deltas:
            out.add_(d.float())
        return out / len(deltas)
    stack = torch.stack([d.float() for d in deltas])
    if method == "median":
        return stack.median(dim=0).values if len(deltas) % 2 else stack.quantile(0.5, dim=0)
    if method == "trimmed-mean":
        k = int(math.floor(trim * len(deltas)))
        if k == 0:
            return stack.mean(0)
        s = stack.sort(dim=0).values
        return s[k:len(deltas) - k].mean(0)
    raise ValueError(f"unknown aggregation {method!r}")
