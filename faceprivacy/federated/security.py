"""Secure defaults of a FedFace deployment: TLS material, SuperNode keys, and the app pinned by hash.

* **TLS.** :func:`ensure_tls` returns the CA / server certificate / server key the SuperLink uses; when the
  operator gives none, it creates a private CA (EC P-384, 5 years) and a server certificate for the bind host
  (plus ``localhost`` / ``127.0.0.1``), written once into the server's folder and reused on the next start.
  Nodes verify the SuperLink with that CA (``fed-client --root-certificates``).
* **Node authentication.** Flower's SuperNode authentication: each node signs its requests with its own EC
  key (OpenSSH format); the SuperLink accepts only keys registered with it. :func:`generate_node_key` makes a
  key pair, :func:`read_authorized_keys` reads the operator's authorised-keys file (one public key a line).
* **App pinning.** Flower 1.41 verifies app signatures only for apps fetched from Flower Hub (``--trusted-
  entities`` needs a Hub licence record), so a local deployment pins the FedFace app by hash instead: the app
  bundle (FAB) is built deterministically from a fixed project file (:func:`fedface_app_hash`), the run's
  settings travel separately in ``--run-config``, and every node (and the server) runs Flower's app processes
  through :mod:`faceprivacy.federated.guard`, which refuses any bundle whose SHA-256 differs before a byte of
  it is unpacked or imported.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import stat
import sys
import tempfile
from pathlib import Path

from ..core.errors import InputError

APP_HASH_ENV = "FACEPRIVACY_APP_SHA256"
#: Flower's app-process commands; the guard pins the two FedFace uses and refuses the others
GUARDED_COMMANDS = {"flwr-clientapp": "clientapp", "flwr-serverapp": "serverapp", "flwr-agentapp": "refuse",
                    "flwr-connector": "refuse", "flwr-model": "refuse", "flwr-simulation": "refuse"}


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_tls(folder: str | os.PathLike, host: str = "127.0.0.1") -> dict[str, str]:
    """CA + server certificate + key for the SuperLink in ``folder`` (created once, then reused)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    d = Path(folder)
    paths = {"ssl-ca-certfile": d / "ca.crt", "ssl-certfile": d / "server.pem", "ssl-keyfile": d / "server.key"}
    if all(p.exists() for p in paths.values()):
        return {k: str(v) for k, v in paths.items()}
    d.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "faceprivacy FedFace CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
          .not_valid_after(now + _dt.timedelta(days=5 * 365))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP384R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for h in {host} - {"localhost", "127.0.0.1", "0.0.0.0", "::", ""}:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _dt.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write_private(paths["ssl-keyfile"], key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    _write_private(d / "ca.key", ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    paths["ssl-certfile"].write_bytes(cert.public_bytes(pem))
    paths["ssl-ca-certfile"].write_bytes(ca.public_bytes(pem))
    return {k: str(v) for k, v in paths.items()}


def check_tls_files(ssl: dict[str, str | None]) -> dict[str, str]:
    """Absolute paths of operator-given TLS files (all three or none); raises :class:`InputError`."""
    given = {k: v for k, v in ssl.items() if v}
    if given and len(given) != 3:
        raise InputError("give all of --ssl-certfile, --ssl-keyfile and --ssl-ca-certfile, or none of them "
                         "(fed-server then creates its own CA)")
    out = {}
    for k, v in given.items():
        p = Path(str(v)).expanduser().resolve()
        if not p.is_file():
            raise InputError(f"--{k} file not found: {v}")
        out[k] = str(p)
    return out


def generate_node_key(path: str | os.PathLike) -> tuple[Path, Path]:
    """A SuperNode key pair: ``path`` (OpenSSH EC P-384 private key, mode 600) and ``path.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    p = Path(path)
    _write_private(p, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.NoEncryption()))
    pub = p.with_name(p.name + ".pub")
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                  serialization.PublicFormat.OpenSSH) + b"\n")
    return p, pub


def read_authorized_keys(path: str | os.PathLike) -> list[str]:
    """The public keys of an authorised-keys file (``ecdsa-sha2-nistp{256,384,521} AAAA...``, one a line)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    p = Path(path)
    if not p.is_file():
        raise InputError(f"authorised-keys file not found: {path}")
    keys = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            k = load_ssh_public_key(" ".join(line.split()[:2]).encode())
        except (ValueError, TypeError) as e:
            raise InputError(f"{path}:{i}: not an OpenSSH public key ({e})") from None
        if not isinstance(k, ec.EllipticCurvePublicKey):
            raise InputError(f"{path}:{i}: SuperNode keys must be ECDSA (ssh-keygen -t ecdsa -b 384)")
        keys.append(" ".join(line.split()[:2]))
    if not keys:
        raise InputError(f"{path} holds no public key")
    return keys


def check_node_key(path: str | os.PathLike) -> str:
    """Absolute path of a node's private key, after checking it is an OpenSSH EC key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    p = Path(path).expanduser().resolve()
    try:
        k = load_ssh_private_key(p.read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"cannot read node key {path}: {e}") from None
    if not isinstance(k, ec.EllipticCurvePrivateKey):
        raise InputError(f"node key {path} must be an ECDSA key (ssh-keygen -t ecdsa -b 384 -N '')")
    return str(p)


def fedface_app_hash() -> str:
    """SHA-256 of the FedFace app bundle as ``flwr run`` builds it (deterministic: fixed dates, fixed files)."""
    from flwr.cli.build import build_fab_from_disk

    from .deploy import write_flower_project

    with tempfile.TemporaryDirectory() as tmp:
        fab = build_fab_from_disk(write_flower_project(Path(tmp) / "app"))
    return hashlib.sha256(fab).hexdigest()


def write_guard_shims(folder: str | os.PathLike) -> Path:
    """A folder of executables named like Flower's app commands that run them through the guard.

    Put first on ``PATH`` of a SuperNode / SuperLink (with ``FACEPRIVACY_APP_SHA256`` set): Flower's executor
    launches ``flwr-clientapp`` / ``flwr-serverapp`` by name, so every app process passes the hash check.
    """
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    for cmd, role in GUARDED_COMMANDS.items():
        p = d / cmd
        p.write_text(f"#!{sys.executable}\nimport sys\nfrom faceprivacy.federated.guard import main\n"
                     f"sys.exit(main({role!r}))\n")
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return d
