"""Key handling: passphrase -> scrypt master key (salt stored with the output) -> HKDF sub-keys for
separate purposes, and AES-GCM sealing of records. Never raw seeds: every key comes from a KDF.

>>> salt = new_salt()
>>> mk = derive_master_key(b"correct horse", salt)
>>> rec = seal(mk, b"secret", aad=b"v1")
>>> open_sealed(mk, rec, aad=b"v1")
b'secret'
"""

from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import AuthenticationError, InputError

SALT_BYTES = 16
NONCE_BYTES = 12
#: scrypt cost of new records (N=2^17, r=8, p=1: 128 MiB, ~0.3-0.5 s): the OWASP minimum for keys that
#: guard data anyone can attack offline. Records store their own cost, so older (2^15) records still open.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 17, 8, 1
#: shortest passphrase accepted for new records (old ones open with whatever they were made with)
MIN_PASSPHRASE_CHARS = 10
#: fewest distinct characters in a new passphrase ("aaaaaaaaaa" and "1212121212" are refused)
MIN_PASSPHRASE_DISTINCT = 5


def new_salt() -> bytes:
    """A fresh random salt (stored beside every output that a passphrase protects)."""
    return os.urandom(SALT_BYTES)


def read_passphrase_file(path: str | os.PathLike) -> bytes:
    """Read a passphrase from a file, or from standard input for ``-`` (one line, trailing newline
    stripped); empty passphrases are refused."""
    if str(path) == "-":
        import sys

        data = sys.stdin.buffer.readline(4096) if hasattr(sys.stdin, "buffer") else sys.stdin.readline().encode()
        data = data.rstrip(b"\r\n")
        if not data:
            raise InputError("no passphrase on standard input")
        return data
    p = os.fspath(path)
    if os.path.isdir(p):
        raise InputError(f"passphrase file {p} is a folder")
    try:
        with open(p, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as e:
        raise InputError(f"cannot read passphrase file {p}: {e.strerror}") from None
    if len(data) > 64 * 1024:
        raise InputError(f"passphrase file {p} is over 64 KiB: is it the right file?")
    data = data.rstrip(b"\r\n")
    if not data:
        raise InputError(f"passphrase file {p} is empty")
    return data


def prompt_passphrase(confirm: bool = True) -> bytes:
    """Ask for a passphrase on the terminal without echo (twice when ``confirm``)."""
    import getpass
    import sys

    if not sys.stdin.isatty():
        raise InputError("a passphrase is needed: pass --passphrase-file FILE, or --passphrase-file - to "
                         "read it from standard input")
    try:
        pw = getpass.getpass("passphrase: ").encode("utf-8")
        if confirm and getpass.getpass("passphrase again: ").encode("utf-8") != pw:
            raise InputError("the two passphrases differ")
    except EOFError:
        raise InputError("no passphrase given") from None
    if not pw:
        raise InputError("empty passphrase")
    return pw


def check_passphrase_strength(passphrase: bytes | str) -> None:
    """Refuse passphrases too weak to protect a record attacked offline: shorter than
    ``MIN_PASSPHRASE_CHARS`` characters or with fewer than ``MIN_PASSPHRASE_DISTINCT`` distinct ones."""
    text = passphrase.decode("utf-8", "replace") if isinstance(passphrase, bytes) else passphrase
    if len(text) < MIN_PASSPHRASE_CHARS:
        raise InputError(f"passphrase too short ({len(text)} characters): use at least {MIN_PASSPHRASE_CHARS}, "
                         "e.g. four random words")
    if len(set(text)) < MIN_PASSPHRASE_DISTINCT:
        raise InputError(f"passphrase too weak: it uses {len(set(text))} distinct characters "
                         f"(at least {MIN_PASSPHRASE_DISTINCT})")


def derive_master_key(passphrase: bytes | str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R,
                      p: int = SCRYPT_P) -> bytes:
    """scrypt(passphrase, salt) -> 32-byte master key."""
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if len(salt) < 8:
        raise ValueError("salt must be at least 8 bytes")
    # scrypt needs 128 * r * n bytes (+ a little); allow up to the largest cost a record may declare
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=129 * r * n + (1 << 20), dklen=32)


def subkey(master: bytes, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256 sub-key bound to a purpose label (e.g. ``"deid/latent"``, ``"deid/seal"``, ``"face/3"``)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=purpose.encode("utf-8")).derive(master)


def key_to_gaussian(key: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic standard-normal array from a key (SHA-256 counter-mode stream -> Box-Muller).

    Used to turn a derived key into a "password latent"; independent of numpy's RNG implementation.
    """
    n = int(np.prod(shape))
    m = n + (n % 2)
    nbytes = m * 4
    stream = bytearray()
    ctr = 0
    while len(stream) < nbytes:
        stream += hashlib.sha256(key + struct.pack("<Q", ctr)).digest()
        ctr += 1
    u = np.frombuffer(bytes(stream[:nbytes]), dtype="<u4").astype(np.float64)
    u = (u + 0.5) / 2.0 ** 32
    u1, u2 = u[0::2], u[1::2]
    rad = np.sqrt(-2.0 * np.log(u1))
    z = np.concatenate([rad * np.cos(2 * np.pi * u2), rad * np.sin(2 * np.pi * u2)])
    return z[:n].reshape(shape).astype(np.float32)


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM: nonce || ciphertext+tag. ``aad`` is authenticated but not encrypted."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, record: bytes, aad: bytes = b"") -> bytes:
    """Inverse of ``seal``; wrong key or any tampering raises AuthenticationError."""
    if len(record) < NONCE_BYTES + 16:
        raise AuthenticationError("sealed record is truncated")
    try:
        return AESGCM(key).decrypt(record[:NONCE_BYTES], record[NONCE_BYTES:], aad)
    except InvalidTag:
        raise AuthenticationError("authentication failed: wrong passphrase or tampered record") from None


def password_latent(master: bytes, purpose: str = "deid/latent", dim: int = 64) -> np.ndarray:
    """The "password latent" that conditions a keyed network: HKDF sub-key for ``purpose`` -> Gaussian (dim,)."""
    return key_to_gaussian(subkey(master, purpose), (dim,))


def key_rotation(key: bytes, dim: int) -> np.ndarray:
    """Deterministic Haar-distributed orthogonal (dim, dim) matrix from a key (QR of a key Gaussian, sign-fixed).

    A keyed rotation of an isotropic code keeps its distribution (a rotated face code is still a plausible
    code) and is exactly invertible by its transpose.
    """
    g = key_to_gaussian(key, (dim, dim)).astype(np.float64)
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.where(np.diag(r) == 0, 1.0, np.diag(r)))[None, :]
    return q


def face_purpose(face_index: int | None, consistent: bool = False) -> str:
    """HKDF label of the key for one face: shared by every face with ``consistent`` (one anonymous identity
    per person across a batch), otherwise distinct per face index within the file."""
    if consistent or face_index is None:
        return "deid/latent"
    return f"deid/latent/face/{int(face_index)}"
