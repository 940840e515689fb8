"""The sealed recovery record that travels with an anonymized image (PNG iTXt chunk or sidecar ``.fpx``).

Layout (version 2)::

    b"FPX1" | u32 header length | header (UTF-8 JSON, public) | AES-256-GCM(payload)

* **header** (public): only what decryption needs and nothing derived from a face: format version, scrypt
  salt and cost, method (and generator/encryptor ids), image size, SHA-256 of the anonymized pixels, and a
  64-bit key-check value. Everything but the key-check value is the AES-GCM associated data, so the right
  passphrase detects any change; the key-check value is checked *after* decryption, so it only tells "wrong
  passphrase" (decryption fails and the value differs) from "tampered" (decryption fails but the value
  matches, or decryption succeeds and the value was changed).
* **payload** (AES-256-GCM under ``HKDF(scrypt(passphrase, salt), "deid/seal")``): a JSON body with every
  face-derived value (per face: box, alignment affine, crop size and padding, HKDF label of its key, changed
  region, and for ``riddle`` the encrypted latent ``f_k(z)``; the ``--consistent`` flag), then per face the
  original pixels of the frame region its paste-back touched, PNG-compressed, so the right passphrase
  restores the input bit-exactly. With ``pixels=False`` no pixels are sealed (``riddle`` recovery then
  decodes the exactly decrypted latent).

``--plausible`` needs nothing sealed: a wrong key re-anonymizes the faces of the anonymized image.
Version 1 records (the faces and latents in the public header) are still read.
"""

from __future__ import annotations

import base64
import binascii
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
RECORD_VERSION = 2
PNG_KEY = "faceprivacy-deid"
SIDECAR_SUFFIX = ".fpx"
MAX_RECORD_BYTES = 256 * 1024 * 1024


class WrongPassphraseError(AuthenticationError):
    """The passphrase does not open this record (``recover --plausible`` may show another stranger)."""


class TamperedRecordError(AuthenticationError):
    """The record was changed after it was made (never answered with a plausible stranger)."""


@dataclass
class FaceEntry:
    """Per-face data (sealed): where the face is, how it was aligned, its key label and encrypted latent."""

    box: list[float]
    affine: list[list[float]]
    crop_size: int
    key_purpose: str
    region: list[int]  # x1, y1, x2, y2 of the frame pixels the paste-back changed
    z_enc: str | None = None  # base64 of little-endian float64
    z_shape: list[int] | None = None
    crop_pad: float = 0.0


@dataclass
class RecordHeader:
    """The public part of the record (nothing derived from a face)."""

    method: str
    salt: str
    image_shape: list[int]
    pixel_sha256: str
    kcv: str = ""
    generator: str | None = None
    encryptor: str | None = None
    scrypt: list[int] = field(default_factory=lambda: [SCRYPT_N, SCRYPT_R, SCRYPT_P])
    version: int = RECORD_VERSION

    def to_json(self, with_kcv: bool = True) -> bytes:
        d = asdict(self)
        if not with_kcv:
            d.pop("kcv")
        return json.dumps(d, separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> RecordHeader:
        """Parse and validate every field's type and range; any problem -> one-line InputError."""
        try:
            d = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"recovery record header is corrupt: {e}") from None
        if not isinstance(d, dict):
            raise InputError("recovery record header is corrupt: not an object")
        version = d.get("version")
        if version not in (1, RECORD_VERSION) or isinstance(version, bool):
            raise InputError(f"unsupported recovery record version {version!r}")
        known = {"method", "salt", "image_shape", "pixel_sha256", "kcv", "generator", "encryptor", "scrypt",
                 "version"}
        extra = set(d) - known
        if version == RECORD_VERSION and extra:
            raise InputError(f"recovery record header is corrupt: unknown field {sorted(extra)[0]!r}")
        if version == 1 and not (isinstance(d.get("faces", []), list)
                                 and all(isinstance(f, dict) for f in d.get("faces", []))):
            raise InputError("recovery record header is corrupt: bad faces")
        h = cls(**{k: d[k] for k in known if k in d}) if _has(d, ("method", "salt", "image_shape",
                                                                    "pixel_sha256")) else None
        if h is None:
            raise InputError("recovery record header is corrupt: a required field is missing")
        h.validate()
        return h

    def validate(self) -> None:
        def bad(what: str) -> InputError:
            return InputError(f"recovery record header is corrupt: bad {what}")

        if not isinstance(self.method, str) or not self.method:
            raise bad("method")
        for name in ("generator", "encryptor"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise bad(name)
        if not isinstance(self.salt, str):
            raise bad("salt")
        try:
            salt = base64.b64decode(self.salt.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError, binascii.Error):
            raise bad("salt") from None
        if not 8 <= len(salt) <= 64:
            raise bad("salt")
        sh = self.image_shape
        if not (isinstance(sh, list) and len(sh) == 3 and all(_is_int(v) and v > 0 for v in sh) and sh[2] == 3
                and sh[0] * sh[1] <= 2 ** 31):
            raise bad("image size")
        if not (isinstance(self.pixel_sha256, str) and len(self.pixel_sha256) == 64 and _is_hex(self.pixel_sha256)):
            raise bad("pixel digest")
        if not (isinstance(self.kcv, str) and len(self.kcv) == 16 and _is_hex(self.kcv)):
            raise bad("key-check value")
        sc = self.scrypt
        if not (isinstance(sc, list) and len(sc) == 3 and all(_is_int(v) for v in sc)):
            raise bad("scrypt parameters")
        n, r, p = sc
        if not (2 ** 14 <= n <= 2 ** 20 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4
                and 128 * n * r <= 2 ** 30):
            raise InputError("recovery record has out-of-range scrypt parameters")

    @property
    def salt_bytes(self) -> bytes:
        return base64.b64decode(self.salt)


@dataclass
class RecordBody:
    """The sealed JSON part of the payload."""

    faces: list[FaceEntry] = field(default_factory=list)
    consistent: bool = False
    has_pixels: bool = True

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode("utf-8")

    @classmethod
    def from_dict(cls, d: dict) -> RecordBody:
        try:
            faces = [FaceEntry(**f) for f in d.get("faces", [])]
            return cls(faces=faces, consistent=bool(d.get("consistent", False)),
                       has_pixels=bool(d.get("has_pixels", True)))
        except (TypeError, AttributeError) as e:
            raise InputError(f"recovery record body is corrupt: {e}") from None


@dataclass
class OpenedRecord:
    """A record opened with the right passphrase."""

    header: RecordHeader
    master: bytes
    body: RecordBody
    originals: list[np.ndarray]


def _has(d: dict, keys) -> bool:
    return all(k in d for k in keys)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_hex(s: str) -> bool:
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return True


def pixel_digest(img: np.ndarray) -> str:
    """SHA-256 over shape + bytes of a uint8 image (binds the record to the anonymized pixels)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    return hashlib.sha256(struct.pack("<3I", *img.shape) + img.tobytes()).hexdigest()


def key_check_value(master: bytes) -> str:
    """64-bit check value of the master key (wrong passphrase vs tampered record, clearer errors)."""
    return subkey(master, "deid/kcv", 8).hex()


def master_from_header(passphrase: bytes, header: RecordHeader) -> bytes:
    """Re-derive the master key from a passphrase and the header's salt/cost (validated at parse time)."""
    n, r, p = header.scrypt
    try:
        return derive_master_key(passphrase, header.salt_bytes, n=n, r=r, p=p)
    except (ValueError, MemoryError) as e:
        raise InputError(f"recovery record's scrypt parameters cannot be used here: {e}") from None


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _png_decode(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        raise InputError("recovery record holds corrupt pixels") from None


def _aad(header: RecordHeader) -> bytes:
    return MAGIC + header.to_json(with_kcv=False)


def build_record(master: bytes, header: RecordHeader, body: RecordBody,
                 originals: list[np.ndarray] | None) -> bytes:
    """Serialise and seal: ``originals[i]`` are the frame pixels of ``body.faces[i].region`` before face i."""
    body.has_pixels = originals is not None
    bj = body.to_json()
    parts = [struct.pack("<I", len(bj)) + bj, struct.pack("<I", len(originals or []))]
    for arr in originals or []:
        b = _png_bytes(arr)
        parts.append(struct.pack("<I", len(b)) + b)
    return seal_payload(master, header, b"".join(parts))


def seal_payload(master: bytes, header: RecordHeader, payload: bytes) -> bytes:
    """The record bytes for any sealed ``payload`` (images: ``build_record``'s; videos: ``deid.video``'s):
    sets the header's key-check value and version, seals under ``HKDF(master, "deid/seal")``."""
    header.kcv = key_check_value(master)
    header.version = RECORD_VERSION
    hj = header.to_json()
    return MAGIC + struct.pack("<I", len(hj)) + hj + seal(subkey(master, "deid/seal"), payload, aad=_aad(header))


def parse_record(blob: bytes) -> tuple[RecordHeader, bytes, bytes]:
    """Split a record into (header, raw header JSON, sealed payload) without any key; structural damage ->
    InputError."""
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise InputError("not a faceprivacy recovery record (bad magic)")
    (hlen,) = struct.unpack("<I", blob[4:8])
    if hlen > len(blob) - 8:
        raise InputError("recovery record is truncated")
    hj = blob[8:8 + hlen]
    return RecordHeader.from_json(hj), hj, blob[8 + hlen:]


def _read_u32(buf: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(buf):
        raise InputError("recovery record payload is truncated")
    return struct.unpack("<I", buf[pos:pos + 4])[0], pos + 4


def _pixels(payload: bytes, pos: int) -> list[np.ndarray]:
    n, pos = _read_u32(payload, pos)
    originals = []
    for _ in range(n):
        ln, pos = _read_u32(payload, pos)
        originals.append(_png_decode(payload[pos:pos + ln]))
        pos += ln
    return originals


def open_record(blob: bytes, passphrase: bytes) -> OpenedRecord:
    """Authenticate and decrypt.

    Raises WrongPassphraseError when decryption fails and the key-check value differs, TamperedRecordError
    when the key is right (key-check value matches, or decryption succeeds) but something was changed.
    """
    header, hj, sealed = parse_record(blob)
    master = master_from_header(passphrase, header)
    kcv_ok = hmac.compare_digest(key_check_value(master), header.kcv)
    if header.version == 1:
        return _open_v1(header, hj, sealed, master, kcv_ok)
    payload = _open_v2(header, sealed, master, kcv_ok)
    blen, pos = _read_u32(payload, 0)
    try:
        body = RecordBody.from_dict(json.loads(payload[pos:pos + blen].decode("utf-8")))
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise InputError("recovery record body is corrupt") from None
    return OpenedRecord(header, master, body, _pixels(payload, pos + blen))


def open_payload(blob: bytes, passphrase: bytes) -> tuple[RecordHeader, bytes, bytes]:
    """(header, master key, decrypted payload) of a version-2 record, with ``open_record``'s errors
    (``deid.video`` keeps its own payload layout inside the same envelope)."""
    header, _, sealed = parse_record(blob)
    if header.version != RECORD_VERSION:
        raise InputError(f"unsupported recovery record version {header.version!r} here")
    master = master_from_header(passphrase, header)
    kcv_ok = hmac.compare_digest(key_check_value(master), header.kcv)
    return header, master, _open_v2(header, sealed, master, kcv_ok)


def _open_v2(header: RecordHeader, sealed: bytes, master: bytes, kcv_ok: bool) -> bytes:
    try:
        payload = open_sealed(subkey(master, "deid/seal"), sealed, aad=_aad(header))
    except AuthenticationError:
        if kcv_ok:
            raise TamperedRecordError("recovery record failed authentication: it was tampered with") from None
        raise WrongPassphraseError("wrong passphrase for this recovery record") from None
    if not kcv_ok:
        raise TamperedRecordError("recovery record's key-check value was tampered with")
    return payload


def _open_v1(header: RecordHeader, hj: bytes, sealed: bytes, master: bytes, kcv_ok: bool) -> OpenedRecord:
    """Version 1: faces in the public header, the whole header as associated data, pixels only sealed."""
    if not kcv_ok:
        raise WrongPassphraseError("wrong passphrase for this recovery record")
    try:
        payload = open_sealed(subkey(master, "deid/seal"), sealed, aad=MAGIC + hj)
    except AuthenticationError:
        raise TamperedRecordError("recovery record failed authentication: it was tampered with") from None
    d = json.loads(hj.decode("utf-8"))
    body = RecordBody.from_dict({"faces": d.get("faces", []), "consistent": d.get("consistent", False),
                                 "has_pixels": d.get("has_pixels", True)})
    return OpenedRecord(header, master, body, _pixels(payload, 0))


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
