"""What the RiDDLE trainers share (``train.py``, the proxy/decoder trainer, and ``surrogate.py``, the
surrogate trainer): tensor conversion, encoding/decoding whole crop sets, the differentiable dlib descriptor of
ArcFace-layout crops, the identity hinge, and the validation measurement both trainers select with."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..crops import blend_np
from .encryptor import LatentEncryptor, random_keys


def to_tensor(crops: np.ndarray, device="cpu") -> torch.Tensor:
    """uint8 (N,H,W,3) -> float (N,3,H,W) in [-1, 1]."""
    return torch.from_numpy(np.array(crops, dtype=np.uint8)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N,3,H,W) in [-1, 1] -> uint8 (N,H,W,3)."""
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode_all(gen, crops: np.ndarray, bs: int = 64, device="cpu") -> torch.Tensor:
    """Generator latents (N, D) float32 of uint8 crops."""
    return torch.cat([gen.encode(to_tensor(crops[i:i + bs], device)).reshape(min(bs, len(crops) - i), -1).cpu()
                      for i in range(0, len(crops), bs)])


@torch.no_grad()
def decode_all(gen, z: torch.Tensor, bs: int = 64, device="cpu") -> np.ndarray:
    """uint8 crops decoded from flat latents."""
    shape = tuple(gen.latent_shape)
    return np.concatenate([to_uint8(gen.decode(z[i:i + bs].float().to(device).reshape(-1, *shape)))
                           for i in range(0, len(z), bs)])


def _eye_fit() -> np.ndarray:
    """dlib-150 chip pixel -> ArcFace-112 pixel from the eye centres of both templates (fallback only)."""
    from ...core.chip import ARCFACE_TEMPLATE_112, DLIB_CHIP_TEMPLATE_5PT

    t = (DLIB_CHIP_TEMPLATE_5PT + 0.25) / 1.5 * 150
    src = np.stack([(t[2] + t[3]) / 2, (t[0] + t[1]) / 2])  # image-left eye, image-right eye
    dst = ARCFACE_TEMPLATE_112[:2]
    s = np.linalg.norm(dst[1] - dst[0]) / np.linalg.norm(src[1] - src[0])
    tr = dst.mean(0) - s * src.mean(0)
    return np.array([[s, 0, tr[0]], [0, s, tr[1]]])


_EYE_FIT = _eye_fit()


class DlibArc(nn.Module):
    """Differentiable dlib descriptor of 112x112 ArcFace-layout images in [-1, 1] (fixed warp + torch port)."""

    def __init__(self, device="cpu", state_path: str | Path | None = None):
        super().__init__()
        if state_path is not None:  # a saved DlibResNet state dict (used where dlib's .dat is not installed)
            from ...models.dlib_resnet import DlibResNet

            self.net = DlibResNet()
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            self.net.load_state_dict({k: v.float() for k, v in state.items()})
            self.net = self.net.to(device).eval()
        else:
            from ...models.dlib_resnet import load_dlib_resnet

            self.net = load_dlib_resnet(device=device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ...core import chip

        if x.shape[-1] != 112:
            x = F.interpolate(x, size=112, mode="bilinear", align_corners=False)
        x = (x.clamp(-1, 1) + 1) * 127.5
        if np.any(chip.ARCFACE112_FROM_DLIB150):
            chips = chip.arcface112_to_dlib150(x, border="replicate")
        else:  # constant not fitted yet on this branch: eye-centre similarity between the two templates
            chips = chip.warp_affine_dlib(x, _EYE_FIT, (150, 150), border="replicate")
        return F.normalize(self.net(chips), dim=1)

    @torch.no_grad()
    def embed_uint8(self, crops: np.ndarray, bs: int = 64, device="cpu") -> np.ndarray:
        return torch.cat([self(to_tensor(crops[i:i + bs], device)).cpu()
                          for i in range(0, len(crops), bs)]).numpy()


def load_generator(generator, generator_weights, device):
    """A generator backend by name (or the object itself), frozen in eval mode on ``device``."""
    if not isinstance(generator, str):
        return generator
    from ...models.generator_loader import load_generator as _load

    kw = {"backend": generator}
    if generator_weights is not None:
        kw["weights"] = generator_weights
    return _load(**kw).to(device).eval()


def weights_id(enc: LatentEncryptor) -> str:
    """Short hash of an encryptor's weights (its ``meta["id"]``)."""
    h = hashlib.sha256()
    for k, v in enc.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def cosine_hinge(a: torch.Tensor, b: torch.Tensor, margin: float) -> torch.Tensor:
    """RiDDLE's identity hinge: mean ``max(0, cos(a_i, b_i) - margin)`` over rows of unit-norm descriptors."""
    return F.relu((a * b).sum(1) - margin).mean()


def keyed_losses(e0: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, fw: torch.Tensor, w: torch.Tensor,
                 y1: torch.Tensor, y2: torch.Tensor, yw: torch.Tensor, v: torch.Tensor, margin: float,
                 p_dim: int) -> dict[str, torch.Tensor]:
    """The loss terms both encryptor trainers share, from identity features of key 1, key 2 and the wrong-key
    decryption (``f1``, ``f2``, ``fw``; ``e0`` the source's) and the whitened latents (``w`` source, ``y1``,
    ``y2``, ``yw``): ``id`` (away from the source), ``wrong`` (a wrong key is another stranger), ``div`` (two
    keys differ), ``attr`` (the part outside the identity basis ``v`` is kept), ``prior`` (codes stay
    latent-shaped)."""
    def hinge(a, b):
        return cosine_hinge(a, b, margin)

    def comp(a):
        return a - (a @ v) @ v.T

    allc = torch.cat([y1, y2, yw])
    n0 = (w ** 2).sum(1) / p_dim
    return {"id": hinge(f1, e0) + 0.5 * hinge(f2, e0),
            "wrong": hinge(fw, e0) + hinge(fw, f1),
            "div": hinge(f1, f2),
            "attr": ((comp(y1) - comp(w)) ** 2).mean() + ((comp(y2) - comp(w)) ** 2).mean(),
            "prior": sum((((y ** 2).sum(1) / p_dim - n0) ** 2).mean() for y in (y1, y2, yw))
            + (allc.mean(0) ** 2).mean() + ((allc.var(0) - 1) ** 2).mean()}


@torch.no_grad()
def decode_blend_embed(gen, dlib, z: torch.Tensor, x_src: np.ndarray, bs: int = 64,
                       device: str = "cpu") -> torch.Tensor:
    """dlib descriptors (N, 128) of the decodings of flat latents ``z`` blended into ``x_src``."""
    out = []
    for i in range(0, len(z), bs):
        crops = blend_np(x_src[i:i + bs], decode_all(gen, z[i:i + bs], bs=bs, device=device))
        out.append(torch.as_tensor(dlib.embed_uint8(crops, bs=bs, device=device)))
    return torch.cat(out)


def encrypt_outputs(enc: LatentEncryptor, z: torch.Tensor, g: torch.Generator, device: str = "cpu"):
    """Flat latents under key A, key B and the decryption of A's output under B (float32, no grad)."""
    with torch.no_grad():
        w, r = enc.whiten(z.to(device))
        ra, ca = random_keys(len(z), enc.cfg, g, device=device)
        rb, cb = random_keys(len(z), enc.cfg, g, device=device)
        ya = enc.encrypt_white(w, ra, ca)
        yb = enc.encrypt_white(w, rb, cb)
        yw = enc.decrypt_white(ya, rb, cb)
        return [enc.unwhiten(y, r) for y in (ya, yb, yw)]


def val_score(m: dict) -> float:
    """The selection rule on validation: the sum of the five rates (verification vs source and vs other
    photos, rank-1, wrong key vs source, two keys verified as one person); lower is better."""
    return (m["verif_vs_source"] + m["verif_vs_other_photos"] + m["wrong_key_verif_vs_source"]
            + m["two_keys_verified_same"] + m["rank1_other_photos"])


def val_measure(enc: LatentEncryptor, gen, dlib, z_va, e_va, y_va, x_va, thr: float, seed: int = 123,
                device: str = "cpu", extra_fn=None) -> dict:
    """Real decoder + dlib on validation identities, outputs blended as in a full frame (eval protocol).

    ``extra_fn(enc, z_va, e_va, (za, zb, zw), (fa, fb, fw), thr) -> dict`` adds entries (the surrogate
    trainer reports how well its surrogate predicts these real descriptors)."""
    g = torch.Generator().manual_seed(seed)
    za, zb, zw = (zz.cpu() for zz in encrypt_outputs(enc.float(), z_va, g, device=device))
    fa, fb, fw = (decode_blend_embed(gen, dlib, zz, x_va, device=device).numpy() for zz in (za, zb, zw))
    extra = extra_fn(enc, z_va, e_va, (za, zb, zw), (fa, fb, fw), thr) if extra_fn is not None else {}
    e = e_va.numpy()
    y = y_va.numpy()
    same = y[:, None] == y[None, :]
    np.fill_diagonal(same, False)
    s = fa @ e.T
    gal_sc = np.where(np.eye(len(e), dtype=bool), -9, s)  # rank-1 among the *other* val photos
    w, _ = enc.whiten(za.to(device))
    return {"verif_vs_source": float(((fa * e).sum(1) >= thr).mean()),
            "verif_vs_other_photos": float((s[same] >= thr).mean()),
            "rank1_other_photos": float((y[np.argmax(gal_sc, 1)] == y).mean()),
            "wrong_key_verif_vs_source": float(((fw * e).sum(1) >= thr).mean()),
            "wrong_key_verif_vs_anon": float(((fw * fa).sum(1) >= thr).mean()),
            "two_keys_verified_same": float(((fa * fb).sum(1) >= thr).mean()),
            "mean_cos_to_source": float((fa * e).sum(1).mean()),
            "mean_cos_two_keys": float((fa * fb).sum(1).mean()),
            "whitened_norm_per_dim": float((w.norm(dim=1) ** 2 / w.shape[1]).mean()), **extra}
