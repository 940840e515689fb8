"""The interface every anonymization method implements (no heavy imports: the CLI lists names from here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

#: registered method names; the first is the default of ``faceprivacy anonymize``
METHODS = ("donor", "riddle", "blur", "pixelate", "mask")
DEFAULT_METHOD = METHODS[0]
#: methods whose output depends on a key (they always need a passphrase)
KEYED_METHODS = ("donor", "riddle")


@dataclass
class AnonResult:
    """Anonymized crops (N, S, S, 3) uint8; for ``riddle`` the float64 encrypted latents (N, *shape); for
    methods that change only part of the crop, the soft paste-back masks (N, S, S) in [0, 1]."""

    crops: np.ndarray
    z_enc: np.ndarray | None = None
    masks: np.ndarray | None = None


class Method(ABC):
    """An anonymization method on aligned crops of side ``crop_size`` (the ArcFace layout, padded by
    ``crop_pad`` of the layout's side on every side)."""

    name: str = "method"
    keyed: bool = False
    crop_pad: float = 0.0
    generator_name: str | None = None
    encryptor_id: str | None = None

    @abstractmethod
    def crop_size(self, face_px: float) -> int:
        """Side of the aligned crop to work on for a face whose box is ``face_px`` wide."""

    @abstractmethod
    def anonymize(self, crops: np.ndarray, keys: list[bytes] | None = None) -> AnonResult:
        """Anonymize a batch of aligned uint8 crops (one 32-byte face key each for keyed methods)."""

    def decrypt(self, z_enc: np.ndarray, keys: list[bytes]) -> np.ndarray:
        """Decode the decryption of stored encrypted latents under ``keys`` -> uint8 crops."""
        raise NotImplementedError(f"method {self.name} has no latent to decrypt")

    def plausible(self, anon_crops: np.ndarray, keys: list[bytes]) -> AnonResult:
        """What a wrong key shows (``recover --plausible``): another stranger made from the *anonymized*
        crops alone (nothing sealed is needed). Keyed methods only."""
        if not self.keyed:
            raise NotImplementedError(f"method {self.name} is not keyed")
        return self.anonymize(anon_crops, keys)
