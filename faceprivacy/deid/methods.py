"""Face anonymization methods behind one interface (``base.Method``), by name: keyed donor morphing
(``donor``, the default, in ``donor.py``), the keyed latent encryptor (``riddle``) and the classical baselines
(Gaussian blur, pixelate, solid mask). Each works on aligned square crops."""

from __future__ import annotations

import numpy as np

from ..core.keys import subkey
from .base import METHODS, AnonResult, Method
from .riddle.encryptor import EncryptorConfig, FaceKey

__all__ = ["METHODS", "AnonResult", "Method", "Blur", "Pixelate", "SolidMask", "Riddle", "make_method"]


def _baseline_size(face_px: float) -> int:
    return int(np.clip(round(face_px * 1.6 / 16) * 16, 64, 512))


class Blur(Method):
    """Gaussian blur with sigma = ``strength`` x crop side (default 0.06: strong, the usual 'blur faces')."""

    name = "blur"

    def __init__(self, strength: float = 0.06):
        self.strength = strength

    def crop_size(self, face_px: float) -> int:
        return _baseline_size(face_px)

    def anonymize(self, crops: np.ndarray, keys: list[bytes] | None = None) -> AnonResult:
        from scipy.ndimage import gaussian_filter

        s = self.strength * crops.shape[1]
        out = np.stack([gaussian_filter(c.astype(np.float32), sigma=(s, s, 0), mode="nearest") for c in crops])
        return AnonResult(np.clip(out + 0.5, 0, 255).astype(np.uint8))


class Pixelate(Method):
    """Mosaic of ``blocks`` x ``blocks`` cells over the aligned crop (block means)."""

    name = "pixelate"

    def __init__(self, blocks: int = 8):
        self.blocks = blocks

    def crop_size(self, face_px: float) -> int:
        return _baseline_size(face_px)

    def anonymize(self, crops: np.ndarray, keys: list[bytes] | None = None) -> AnonResult:
        n, s = crops.shape[0], crops.shape[1]
        edges = np.linspace(0, s, self.blocks + 1).round().astype(int)
        out = crops.astype(np.float32).copy()
        for i in range(self.blocks):
            for j in range(self.blocks):
                y0, y1, x0, x1 = edges[i], edges[i + 1], edges[j], edges[j + 1]
                out[:, y0:y1, x0:x1] = out[:, y0:y1, x0:x1].mean(axis=(1, 2), keepdims=True)
        return AnonResult(np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(n, s, s, 3))


class SolidMask(Method):
    """A solid fill (default mid-grey) over the face."""

    name = "mask"

    def __init__(self, color: tuple[int, int, int] = (128, 128, 128)):
        self.color = np.asarray(color, np.uint8)

    def crop_size(self, face_px: float) -> int:
        return _baseline_size(face_px)

    def anonymize(self, crops: np.ndarray, keys: list[bytes] | None = None) -> AnonResult:
        return AnonResult(np.broadcast_to(self.color, crops.shape).copy())


class Riddle(Method):
    """Keyed, reversible de-identification: encode -> exact-invertible keyed encryptor -> decode."""

    name = "riddle"
    keyed = True

    def __init__(self, generator, encryptor, batch_size: int = 16):
        import torch

        self.generator = generator.eval()
        self.device = next(generator.parameters()).device if any(True for _ in generator.parameters()) \
            else torch.device("cpu")
        self.encryptor = encryptor.for_inference().to(self.device)
        self.cfg: EncryptorConfig = encryptor.cfg
        self.batch_size = batch_size
        self.generator_name = getattr(generator, "name", "generator")
        self.encryptor_id = encryptor.meta.get("id")
        self._torch = torch
        d = int(np.prod(generator.latent_shape))
        if d != self.cfg.latent_dim:
            raise ValueError(f"encryptor latent_dim {self.cfg.latent_dim} != generator latent size {d}")

    def crop_size(self, face_px: float) -> int:
        return int(self.generator.resolution)

    def face_keys(self, keys: list[bytes]):
        """Per-face (rotation, password latent) tensors in float64 from 32-byte face keys."""
        from .riddle.encryptor import stack_keys

        return stack_keys([FaceKey.from_key(subkey(k, "deid/face"), self.cfg) for k in keys],
                          dtype=self._torch.float64, device=self.device)

    def _to_tensor(self, crops: np.ndarray):
        t = self._torch.from_numpy(np.array(crops, dtype=np.uint8)).to(self.device).permute(0, 3, 1, 2).float()
        return t / 127.5 - 1.0

    @staticmethod
    def _to_uint8(x) -> np.ndarray:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)
        return x.cpu().numpy()

    def encode(self, crops: np.ndarray):
        """uint8 crops -> generator latents (float32 tensor)."""
        with self._torch.no_grad():
            return self.generator.encode(self._to_tensor(crops))

    def decode(self, z) -> np.ndarray:
        """Latents -> uint8 crops."""
        with self._torch.no_grad():
            return self._to_uint8(self.generator.decode(self._torch.as_tensor(z).float().to(self.device)))

    def anonymize(self, crops: np.ndarray, keys: list[bytes] | None = None) -> AnonResult:
        if keys is None or len(keys) != len(crops):
            raise ValueError("riddle needs one key per face")
        outs, zs = [], []
        torch = self._torch
        for i in range(0, len(crops), self.batch_size):
            with torch.no_grad():
                z = self.encode(crops[i:i + self.batch_size]).double()
                rot, cond = self.face_keys(keys[i:i + self.batch_size])
                ze = self.encryptor.encrypt(z, rot, cond)
            zs.append(ze.cpu().numpy())  # float64: the record keeps it at full precision (exact inverse)
            outs.append(self.decode(ze.float()))
        return AnonResult(np.concatenate(outs), np.concatenate(zs))

    def plausible(self, anon_crops: np.ndarray, keys: list[bytes]) -> AnonResult:
        """Wrong key: re-encode the anonymized face and decrypt that latent under the wrong key (the sealed
        encrypted latent is not needed, so nothing about it has to be public)."""
        torch = self._torch
        with torch.no_grad():
            z = self.encode(anon_crops).double()
        return AnonResult(self.decrypt(z.cpu().numpy(), keys))

    def decrypt(self, z_enc: np.ndarray, keys: list[bytes]) -> np.ndarray:
        torch = self._torch
        with torch.no_grad():
            rot, cond = self.face_keys(keys)
            z = self.encryptor.decrypt(torch.as_tensor(z_enc, dtype=torch.float64, device=self.device), rot, cond)
        return self.decode(z.float())


def make_method(name: str, generator=None, encryptor=None, **kw) -> Method:
    """Method by name (``riddle`` needs a generator and an encryptor; ``donor`` loads the bundled bank)."""
    if name == "donor":
        from .donor import DonorMorph

        return DonorMorph(**kw)
    if name == "blur":
        return Blur(**kw)
    if name == "pixelate":
        return Pixelate(**kw)
    if name == "mask":
        return SolidMask(**kw)
    if name == "riddle":
        if generator is None or encryptor is None:
            raise ValueError("method riddle needs a generator and an encryptor")
        return Riddle(generator, encryptor, **kw)
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
