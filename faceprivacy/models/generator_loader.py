"""``load_generator(backend)``: one entry point for the generator backends (bundled ``lite``, user ``stylegan2``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.errors import InputError, ModelLoadError
from ..core.paths import weights_dir
from .generator import Generator

BACKENDS = ("lite", "stylegan2")


def default_lite_weights() -> Path:
    """Path of the shipped ``lite`` generator weights."""
    return weights_dir() / "lite" / "lite_g.pt"


def load_lite(weights: str | os.PathLike | None = None, device: str = "cpu") -> Generator:
    """The bundled ``lite`` generator (eval mode, float32) from its weights file (default: the shipped one)."""
    import torch

    from .lite import LiteGenerator
    p = Path(weights) if weights is not None else default_lite_weights()
    if not p.is_file():
        raise ModelLoadError(f"lite generator weights not found: {p}")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file for the user
        raise ModelLoadError(f"could not read lite generator weights {p}: {e}") from e
    return LiteGenerator.from_saved(blob).to(device).eval()


def load_generator(backend: str = "lite", weights: str | os.PathLike | None = None, device: str = "cpu",
                   **kwargs: Any) -> Generator:
    """A :class:`Generator` for ``backend`` ("lite" default, bundled; "stylegan2" needs user checkpoints,
    ``weights`` is its ``generator_ckpt``; other ``kwargs`` such as ``encoder_ckpt`` go to
    ``faceprivacy.models.stylegan2_backend.load_stylegan2``)."""
    if backend == "lite":
        if kwargs:
            raise InputError(f"unexpected options for the lite backend: {sorted(kwargs)}")
        return load_lite(weights, device)
    if backend == "stylegan2":
        from .stylegan2_backend import load_stylegan2  # imported lazily (large module)
        if weights is not None:
            kwargs.setdefault("generator_ckpt", weights)
        if "generator_ckpt" not in kwargs:
            raise InputError("the stylegan2 backend needs a checkpoint: pass weights=<g_ema .pt>")
        return load_stylegan2(device=device, **kwargs)
    raise InputError(f"unknown generator backend {backend!r} (choose from {', '.join(BACKENDS)})")
