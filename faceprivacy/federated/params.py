"""A head's trainable parameters as one flat vector or as named arrays (what crosses the network)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def head_vector(head: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``head`` as one flat float32 vector (a copy)."""
    return torch.nn.utils.parameters_to_vector([p.detach() for p in head.parameters()]).float().clone()


def load_head_vector(head: nn.Module, vec: torch.Tensor) -> None:
    """Write a flat parameter vector back into ``head`` (in place, no autograd history)."""
    i = 0
    with torch.no_grad():  # copy (vector_to_parameters would alias ``vec`` and let training overwrite it)
        for p in head.parameters():
            n = p.numel()
            p.copy_(vec[i:i + n].view_as(p))
            i += n
    if i != vec.numel():
        raise ValueError(f"parameter vector has {vec.numel()} values, the head needs {i}")


def head_state_arrays(head: nn.Module) -> dict[str, np.ndarray]:
    """Head parameters as a name -> numpy array dict (what crosses the network)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in head.named_parameters()}


def load_head_state_arrays(head: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Load a name -> array dict produced by :func:`head_state_arrays`; raises ValueError on a mismatch."""
    params = dict(head.named_parameters())
    if set(arrays) != set(params):
        raise ValueError(f"head parameter names differ: missing {sorted(set(params) - set(arrays))[:3]}, "
                         f"unexpected {sorted(set(arrays) - set(params))[:3]}")
    with torch.no_grad():
        for k, p in params.items():
            a = np.asarray(arrays[k])
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"shape of {k}: expected {tuple(p.shape)}, got {a.shape}")
            p.copy_(torch.from_numpy(a.astype(np.float32)))
