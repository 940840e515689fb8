"""The sealed recovery record that travels with an anonymized image (PNG iTXt chunk or sidecar ``.fpx``).

Layout (version 1)::

    b"FPX1" | u32 header length | header (UTF-8 JSON, public, authenticated) | sealed payload

* **header** (readable without the passphrase, bound to the payload as AES-GCM associated data, so any
  change is detected by the right passphrase): format version, scrypt salt and cost, method, generator and
  encryptor ids, image size, SHA-256 of the anonymized pixels, a 64-bit key-check value (to tell "wrong
  passphrase" from "tampered record"), and per face: its box, the 2x3 alignment affine, the crop size,
  the HKDF label of its key and (method ``riddle``) the **encrypted latent** ``f_k(z)``. The encrypted
  latent reveals nothing the image does not already show (it decodes to the anonymized face); it is what
  ``--plausible`` decrypts under a wrong key, like RiDDLE.
* **payload** (AES-256-GCM under ``HKDF(scrypt(passphrase, salt), "deid/seal")``): per face the original
  pixels of the frame region the face's paste-back touched, PNG-compressed (lossless), so the right
  passphrase restores the input *bit-exactly*. With ``pixels=False`` the payload holds no pixels and
  recovery decodes the exactly-decrypted latent instead (generator-reconstruction quality).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import AuthenticationError, InputError
from ..core.keys import SCRYPT_N, SCRYPT_P, SCRYPT_R, derive_master_key, open_sealed, seal, subkey

MAGIC = b"FPX1"
RECORD_VERSION = 1
PNG_KEY = "faceprivacy-deid"
SIDECAR_SUFFIX = ".fpx"
MAX_RECORD_BYTES = 256 * 1024 * 1024


@dataclass
class FaceEntry:
    """Public per-face data: where the face is, how it was aligned, and its encrypted latent (if any)."""

    box: list[float]
    affine: list[list[float]]
    crop_size: int
    key_purpose: str
    region: list[int]  # x1, y1, x2, y2 of the frame pixels the paste-back changed
    z_enc: list[float] | None = None
    z_shape: list[int] | None = None


@dataclass
class RecordHeader:
    """The public, authenticated part of the record."""

    method: str
    salt: str
    image_shape: list[int]
    pixel_sha256: str
    kcv: str
    faces: list[FaceEntry] = field(default_factory=list)
    generator: str | None = None
    encryptor: str | None = None
    consistent: bool = False
    has_pixels: bool = True
    scrypt: list[int] = field(default_factory=lambda: [SCRYPT_N, SCRYPT_R, SCRYPT_P])
    version: int = RECORD_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> RecordHeader:
        try:
            d = json.loads(data.decode("utf-8"))
            faces = [FaceEntry(**f) for f in d.pop("faces")]
            h = cls(faces=faces, **d)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as e:
            raise InputError(f"recovery record header is corrupt: {e}") from None
        if h.version != RECORD_VERSION:
            raise InputError(f"unsupported recovery record version {h.version}")
        return h

    @property
    def salt_bytes(self) -> bytes:
        return base64.b64decode(self.salt)


def pixel_digest(img: np.ndarray) -> str:
    """SHA-256 over shape + bytes of a uint8 image (binds the record to the anonymized pixels)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    return hashlib.sha256(struct.pack("<3I", *img.shape) + img.tobytes()).hexdigest()


def key_check_value(master: bytes) -> str:
    """64-bit check value of the master key (wrong passphrase vs tampered record, clearer errors)."""
    return subkey(master, "deid/kcv", 8).hex()


def master_from_header(passphrase: bytes, header: RecordHeader) -> bytes:
    """Re-derive the master key from a passphrase and the header's salt/cost."""
    n, r, p = header.scrypt
    if not (2 ** 10 <= n <= 2 ** 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise InputError("recovery record has out-of-range scrypt parameters")
    return derive_master_key(passphrase, header.salt_bytes, n=n, r=r, p=p)


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _png_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def build_record(master: bytes, header: RecordHeader, originals: list[np.ndarray] | None) -> bytes:
    """Serialise and seal: ``originals[i]`` are the frame pixels of ``header.faces[i].region`` before face i."""
    header.has_pixels = originals is not None
    header.kcv = key_check_value(master)
    hj = header.to_json()
    parts = []
    for arr in originals or []:
        b = _png_bytes(arr)
        parts.append(struct.pack("<I", len(b)) + b)
    payload = struct.pack("<I", len(parts)) + b"".join(parts)
    aad = MAGIC + hj
    return MAGIC + struct.pack("<I", len(hj)) + hj + seal(subkey(master, "deid/seal"), payload, aad=aad)


def parse_record(blob: bytes) -> tuple[RecordHeader, bytes, bytes]:
    """Split a record into (header, aad, sealed payload) without any key; structural damage -> InputError."""
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise InputError("not a faceprivacy recovery record (bad magic)")
    (hlen,) = struct.unpack("<I", blob[4:8])
    if hlen > len(blob) - 8:
        raise InputError("recovery record is truncated")
    hj = blob[8:8 + hlen]
    return RecordHeader.from_json(hj), MAGIC + hj, blob[8 + hlen:]


def open_record(blob: bytes, passphrase: bytes) -> tuple[RecordHeader, bytes, list[np.ndarray]]:
    """Authenticate and decrypt: -> (header, master key, original region pixels (empty without pixels)).

    Raises AuthenticationError("wrong passphrase") when the key-check value differs, and
    AuthenticationError("tampered") when the key is right but the record fails authentication.
    """
    header, aad, sealed = parse_record(blob)
    master = master_from_header(passphrase, header)
    if not hmac.compare_digest(key_check_value(master), header.kcv):
        raise AuthenticationError("wrong passphrase for this recovery record")
    try:
        payload = open_sealed(subkey(master, "deid/seal"), sealed, aad=aad)
    except AuthenticationError:
        raise AuthenticationError("recovery record failed authentication: it was tampered with") from None
    (n,) = struct.unpack("<I", payload[:4])
    pos, originals = 4, []
    for _ in range(n):
        (ln,) = struct.unpack("<I", payload[pos:pos + 4])
        originals.append(_png_decode(payload[pos + 4:pos + 4 + ln]))
        pos += 4 + ln
    return header, master, originals


# ----- containers -----------------------------------------------------------------------------------

def sidecar_path(image_path: str | Path) -> Path:
    """``photo.jpg`` -> ``photo.jpg.fpx``."""
    p = Path(image_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def encode_png_with_record(img: np.ndarray, record: bytes) -> bytes:
    """PNG bytes of ``img`` with the record in an iTXt chunk (base64)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(PNG_KEY, base64.b64encode(record).decode("ascii"), zip=False)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_record(image_path: str | Path) -> bytes:
    """The record of an anonymized image: its PNG iTXt chunk, else the sidecar ``.fpx``; else InputError."""
    from ..core.imageio import read_image_text  # the one safe loader: bombs, truncation -> InputError

    image_path = Path(image_path)
    text = read_image_text(image_path)
    if PNG_KEY in text:
        try:
            return base64.b64decode(text[PNG_KEY].encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            raise InputError(f"the recovery record in {image_path} is corrupt (bad base64)") from None
    side = sidecar_path(image_path)
    if side.is_file():
        if side.stat().st_size > MAX_RECORD_BYTES:
            raise InputError(f"sidecar {side} is too large")
        return side.read_bytes()
    raise InputError(f"{image_path} carries no faceprivacy recovery record (no PNG chunk, no {side.name})")
