"""Reading and validating PyTorch checkpoints of the StyleGAN2 family: safe ``torch.load``, state-dict
cleaning (prefix stripping, tensors only), strict-but-explaining ``load_matching``, and the StyleGAN2 ``g_ema``
layout (where a file keeps its generator; its size, style width and mapping depth). Shared by the StyleGAN2
backend and the e4e/pSp encoder loader."""

from __future__ import annotations

import argparse
import math
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.errors import ModelLoadError


def first_keys(keys: list[str], k: int = 5) -> str:
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


def strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith(prefix)}


def clean_state_dict(sd: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
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
            parts.append(f"{len(missing)} missing keys (e.g. {first_keys(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {first_keys(unexpected)})")
        if bad:
            parts.append(f"{len(bad)} shape mismatches (e.g. {first_keys(bad, 3)})")
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
        return clean_state_dict(ckpt["g_ema"], where + "['g_ema']"), lat
    sd_root = ckpt.get("state_dict") if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    dec = strip_prefix(sd_root, "decoder.") or strip_prefix(sd_root, "module.decoder.")
    if dec:
        return clean_state_dict(dec, where + " decoder.*"), lat
    if _is_state_dict(ckpt):
        return clean_state_dict(ckpt, where), lat
    if isinstance(ckpt.get("g"), Mapping):
        return clean_state_dict(ckpt["g"], where + "['g']"), lat
    top = [str(k) for k in ckpt.keys()]
    raise ModelLoadError(
        f"{where}: no StyleGAN2 generator weights found (looked for 'g_ema', a 'state_dict' with 'decoder.*' "
        f"keys, or a top-level state dict); top-level keys: {first_keys(top, 8)}")
