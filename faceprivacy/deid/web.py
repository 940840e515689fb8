"""``faceprivacy serve``: a small local web page over the anonymize / recover pipeline.

Drop photos, pick the method and a passphrase, see before and after side by side, download the anonymized
image with its sealed recovery record (one .zip), and recover with the passphrase. Every request runs the
``anonymize`` / ``recover`` commands' own parsers and pipelines (``deid.cli.anonymize_parsed`` /
``recover_parsed`` -> ``deid.batch``), so the page and the CLI share defaults and code.

Secure by default, like a notebook server:

* binds to a loopback address only (127.0.0.1 by default; any other ``--host`` is refused before binding);
* a random per-launch token (``secrets``, 192 bits) that every request must carry (``?token=`` or the
  ``X-FacePrivacy-Token`` header; compared in constant time); the URL printed on start holds it;
* the ``Host`` header must name the loopback address and port (defeats DNS rebinding); a POST with an
  ``Origin`` must come from the page itself;
* uploads over ``--max-upload-mb`` are refused from their ``Content-Length`` before any byte is read;
* passphrases travel in the POST body, are never logged (the access log, ``-v`` only, has no query
  strings) and never written; uploads and outputs live in a private (0700) temp folder only while the
  pipeline runs (atomic writes) and are removed right after; results are kept in memory (at most
  ``MAX_RESULTS``, ``RESULT_TTL_S``) until forgotten or the server stops;
* every response has an exact content type, ``nosniff``, ``no-store``, no referrer, no framing, and the page
  a strict Content-Security-Policy (scripts and styles by per-launch nonce); nothing is served from disk,
  so there is no directory listing.
"""

from __future__ import annotations

import argparse
import email.policy
import html
import io
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..core.data import IMAGE_EXTS  # the image types the page takes: the CLI's
from ..core.errors import FacePrivacyError, InputError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_MAX_UPLOAD_MB = 25.0
#: results kept in memory (oldest dropped first), their lifetime, and the memory they may take together
MAX_RESULTS = 24
RESULT_TTL_S = 3600
MAX_RESULT_BYTES = 512 * 1024 * 1024
#: longest side of the before/after previews shown on the page (downloads keep full size)
PREVIEW_SIDE = 1024
#: at most this many members in an uploaded .zip (the page's own zip has two)
MAX_ZIP_MEMBERS = 8
TOKEN_HEADER = "X-FacePrivacy-Token"
SIDECAR_EXT = ".fpx"
#: what the page says about each method
METHOD_HELP = {
    "donor": "keyed morph of real donor faces (default)",
    "riddle": "keyed latent encryptor (slower)",
    "blur": "Gaussian blur (baseline)",
    "pixelate": "pixelation (baseline)",
    "mask": "solid mask (baseline)",
}
SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_ID = r"([0-9a-f]{32})"


# ----- options ----------------------------------------------------------------------------------------

def add_serve_args(p: argparse.ArgumentParser, methods: Sequence[str], default_method: str) -> None:
    """The options of ``faceprivacy serve`` (the de-identification CLI adds the model options)."""
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="loopback address to listen on: 127.0.0.1, ::1 or localhost (others are refused)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (0: any free port)")
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help="largest upload accepted, in MB (refused from its size, before it is read)")
    p.add_argument("--method", choices=methods, default=default_method, help="method preselected on the page")


def check_host(host: str) -> str:
    """The loopback IP literal to bind for ``host``; InputError for anything else (no DNS lookup)."""
    h = (host or "").strip()
    if h.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(h.strip("[]"))
    except ValueError:
        raise InputError(f"--host {host!r} is not a loopback address: serve listens on 127.0.0.1 or ::1 only "
                         "(the page holds your photos; use SSH port forwarding to reach it from elsewhere)") from None
    if not ip.is_loopback:
        raise InputError(f"--host {host} is not a loopback address: serve listens on 127.0.0.1 or ::1 only "
                         "(the page holds your photos; use SSH port forwarding to reach it from elsewhere)")
    return str(ip)


def check_port(port: int) -> int:
    if not 0 <= int(port) <= 65535:
        raise InputError(f"--port {port} is out of range (0-65535; 0 picks a free port)")
    return int(port)


def check_max_upload(mb: float) -> int:
    """``--max-upload-mb`` -> bytes; InputError unless 0 < mb <= 1024."""
    if not (mb == mb and 0 < mb <= 1024):
        raise InputError(f"--max-upload-mb {mb} must be above 0 and at most 1024")
    return int(mb * 1024 * 1024)


# ----- the pipeline the page calls ---------------------------------------------------------------------

class CliPipeline:
    """The anonymize and recover commands' parsers and pipelines: a request becomes the command line
    ``anonymize IN -o OUT --method M --sidecar [model options]`` (or ``recover IN -o OUT ...``), parsed by
    that command's own parser (its defaults: detector, thresholds, ...) and run by its own code. Methods are
    loaded once and kept."""

    def __init__(self, anonymize_parser: argparse.ArgumentParser, recover_parser: argparse.ArgumentParser,
                 extra: Sequence[str] = ()) -> None:
        self.anonymize_parser = anonymize_parser
        self.recover_parser = recover_parser
        self.extra = list(extra)
        self._methods: dict[str, object] = {}

    def _args(self, parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
        from ..core.options import resolve

        return resolve(parser.parse_args(argv))

    def method(self, name: str, args: argparse.Namespace):
        from .cli import _method_by_name

        if name not in self._methods:
            self._methods[name] = _method_by_name(name, args)
        return self._methods[name]

    def anonymize(self, inp: Path, out: Path, method: str, passphrase: bytes | None) -> dict:
        from .cli import anonymize_parsed

        args = self._args(self.anonymize_parser,
                          [str(inp), "-o", str(out), "--method", method, "--sidecar", *self.extra])
        return anonymize_parsed(args, passphrase, method=self.method(method, args))

    def recover(self, inp: Path, out: Path, passphrase: bytes) -> dict:
        from .cli import recover_parsed

        args = self._args(self.recover_parser, [str(inp), "-o", str(out), *self.extra])
        return recover_parsed(args, passphrase, method_by_name=self.method)

    def anonymize_video(self, inp: Path, out: Path, method: str, passphrase: bytes | None):
        from .cli import anonymize_video_parsed

        args = self._args(self.anonymize_parser, [str(inp), "-o", str(out), "--method", method, *self.extra])
        return anonymize_video_parsed(args, passphrase, method=self.method(method, args))

    def recover_video(self, inp: Path, out: Path, passphrase: bytes):
        from .cli import recover_video_parsed

        args = self._args(self.recover_parser, [str(inp), "-o", str(out), *self.extra])
        return recover_video_parsed(args, passphrase)

    def preload(self, method: str) -> None:
        """Load ``method`` now, so a bad ``--donor-bank`` fails before the server starts."""
        self.method(method, self._args(self.anonymize_parser, ["x.png", "--method", method, *self.extra]))


def video_module():
    """``faceprivacy.deid.video`` when this install has it (and PyAV), else None: the page then takes photos
    only."""
    try:
        from . import video
    except ImportError:
        return None
    return video


# ----- results kept in memory --------------------------------------------------------------------------

@dataclass
class Result:
    """One processed upload: previews, the download, and what the page says about it."""

    kind: str  # "anonymize" | "recover"
    name: str
    before: bytes
    after: bytes
    download: bytes
    download_name: str
    download_type: str
    info: dict = field(default_factory=dict)
    id: str = field(default_factory=lambda: secrets.token_hex(16))
    created: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return len(self.before) + len(self.after) + len(self.download)


class ResultStore:
    """Results by id in memory only, oldest dropped first (count, age and total size bounded)."""

    def __init__(self, max_items: int = MAX_RESULTS, ttl_s: float = RESULT_TTL_S,
                 max_bytes: int = MAX_RESULT_BYTES) -> None:
        self.max_items, self.ttl_s, self.max_bytes = max_items, ttl_s, max_bytes
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = time.monotonic()
        for k in [k for k, r in self._items.items() if now - r.created > self.ttl_s]:
            del self._items[k]
        while self._items and (len(self._items) > self.max_items
                               or sum(r.size for r in self._items.values()) > self.max_bytes):
            self._items.popitem(last=False)

    def put(self, r: Result) -> Result:
        with self._lock:
            self._items[r.id] = r
            self._expire()
        return r

    def get(self, rid: str) -> Result | None:
        with self._lock:
            self._expire()
            return self._items.get(rid)

    def forget(self, rid: str) -> bool:
        with self._lock:
            return self._items.pop(rid, None) is not None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


# ----- the application -----------------------------------------------------------------------------------

class BadRequest(Exception):
    """A request the page refuses, with its HTTP status and one clear line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """A parsed multipart/form-data body: text fields and files (name, bytes)."""

    fields: dict[str, str]
    files: list[tuple[str, bytes]]


class App:
    """What every request shares: the token, the allowed Host values, limits, the pipeline, the results and
    the private work folder (created 0700 at start, removed at stop)."""

    def __init__(self, pipeline, *, token: str | None = None, max_upload: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20),
                 methods: Sequence[str] = tuple(METHOD_HELP), default_method: str = "donor",
                 keyed: Sequence[str] = ("donor", "riddle"), workdir: Path | None = None) -> None:
        self.pipeline = pipeline
        self.token = token or secrets.token_urlsafe(24)
        self.max_upload = max_upload
        self.methods = tuple(methods)
        self.default_method = default_method
        self.keyed = tuple(keyed)
        vid = video_module()
        self.video_exts: tuple[str, ...] = tuple(vid.VIDEO_EXTS) if vid else ()
        self.results = ResultStore()
        self.allowed_hosts: set[str] = set()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="faceprivacy-serve-"))
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        #: one anonymize / recover at a time (the CPU is the limit; methods are shared objects)
        self.work_lock = threading.Lock()

    def bind_hosts(self, host: str, port: int) -> None:
        """Host header values that name this server (DNS-rebinding defence)."""
        names = {"127.0.0.1", "localhost"} if ":" not in host else {"[::1]", "localhost"}
        names.add(f"[{host}]" if ":" in host else host)
        self.allowed_hosts = {f"{n}:{port}" for n in names}

    def url(self, host: str, port: int, path: str = "/") -> str:
        h = f"[{host}]" if ":" in host else host
        return f"http://{h}:{port}{path}?token={self.token}"

    def close(self, wait_s: float = 60.0) -> None:
        """Forget every result and remove the work folder (after a running job finishes, up to ``wait_s``)."""
        got = self.work_lock.acquire(timeout=wait_s)
        try:
            self.results.clear()
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            if got:
                self.work_lock.release()

    # ----- the two jobs -----
    def anonymize(self, up: Upload) -> Result:
        if len(up.files) != 1:
            raise BadRequest(400, "send one photo per request (form field 'file')")
        name, data = up.files[0]
        name = safe_name(name, "photo.png")
        ext = Path(name).suffix.lower()
        if ext not in IMAGE_EXTS + self.video_exts:
            raise BadRequest(400, f"{name}: not a file type this page reads ({', '.join(IMAGE_EXTS + self.video_exts)})")
        if not data:
            raise BadRequest(400, f"{name}: the file is empty (0 bytes)")
        method = up.fields.get("method") or self.default_method
        if method not in self.methods:
            raise BadRequest(400, f"unknown method {method!r} (one of {', '.join(self.methods)})")
        pw = up.fields.get("passphrase", "")
        if method in self.keyed and not pw:
            raise BadRequest(400, f"method {method} is keyed: it needs a passphrase")
        passphrase = pw.encode("utf-8") if pw else None
        if ext in self.video_exts:
            return self._anonymize_video(name, data, method, passphrase)
        from ..core.imageio import WRITABLE_FORMATS, image_format

        out_ext = ext if image_format(ext) in WRITABLE_FORMATS else ".png"
        with self.work_lock, self._workspace() as ws:
            inp = ws / "in" / name
            out = ws / "out" / f"{Path(name).stem}_anonymized{out_ext}"
            _write(inp, data)
            summary = self._run(ws, lambda: self.pipeline.anonymize(inp, out, method, passphrase))
            files = [out] + ([out.with_name(out.name + SIDECAR_EXT)] if passphrase else [])
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for f in files:
                    zf.writestr(f.name, f.read_bytes())
            before, after = _preview(inp), _preview(out)
        notes = []
        if passphrase:
            notes.append("the .zip holds the anonymized image and its sealed recovery record (.fpx): keep both, "
                         "and the passphrase, to recover the original faces")
        else:
            notes.append("plain output: no copy of the original faces is kept (give a passphrase to keep one)")
        if summary.get("lossy") and passphrase:
            notes.append("JPEG/WebP output: recovery restores the faces exactly, not the frame bit for bit")
        notes += [_clean(n, ws) for n in summary.get("notes", [])]
        stem = Path(out.name).stem
        return self.results.put(Result(
            "anonymize", name, before, after, buf.getvalue(), f"{stem}.zip", "application/zip",
            {"faces": summary.get("faces", 0), "method": method, "recoverable": bool(passphrase), "notes": notes,
             "image": out.name}))

    def _anonymize_video(self, name: str, data: bytes, method: str, passphrase: bytes | None) -> Result:
        """A clip through the anonymize command's video pipeline: lossless .mkv (+ .fpx) in the zip; the
        previews are one frame (the one with the most faces)."""
        with self.work_lock, self._workspace() as ws:
            inp = ws / "in" / name
            out = ws / "out" / f"{Path(name).stem}_anonymized.mkv"
            _write(inp, data)
            res = self._run(ws, lambda: self.pipeline.anonymize_video(inp, out, method, passphrase))
            files = [out] + ([out.with_name(out.name + SIDECAR_EXT)] if passphrase else [])
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
                for f in files:
                    zf.writestr(f.name, f.read_bytes())
            k = _busiest_frame(res)
            before, after = _video_preview(inp, k), _video_preview(out, k)
        notes = [f"{res.frames} frames, {res.people} person(s) in {res.tracks} track(s), {res.faces} face-frames "
                 f"changed; the pictures show frame {k + 1}"]
        if res.fallback:
            notes.append(f"{res.fallback} face-frame(s) could not be aligned and were blurred instead")
        if passphrase:
            exact = (res.recovery or {}).get("exact")
            notes.append("the .zip holds the anonymized clip (lossless .mkv) and its sealed recovery record (.fpx)"
                         + ("; recovery is bit-exact (checked on every frame)" if exact else ""))
        else:
            notes.append("plain output: no copy of the original faces is kept (give a passphrase to keep one)")
        notes += [_clean(n, ws) for n in res.notes]
        return self.results.put(Result(
            "anonymize", name, before, after, buf.getvalue(), f"{Path(out.name).stem}.zip", "application/zip",
            {"faces": res.faces, "method": method, "recoverable": bool(passphrase), "notes": notes,
             "image": out.name, "video": True, "frames": res.frames, "people": res.people}))

    def recover(self, up: Upload) -> Result:
        pw = up.fields.get("passphrase", "")
        if not pw:
            raise BadRequest(400, "recovery needs the passphrase the photo was anonymized with")
        entries: list[tuple[str, bytes]] = []
        for name, data in up.files:
            if name.lower().endswith(".zip"):
                entries += _unzip(data, self.max_upload)
            else:
                entries.append((name, data))
        media = IMAGE_EXTS + self.video_exts
        images = [(safe_name(n, "image.png"), d) for n, d in entries if Path(n).suffix.lower() in media]
        records = [d for n, d in entries if n.lower().endswith(SIDECAR_EXT)]
        if len(images) != 1 or len(records) > 1:
            raise BadRequest(400, "send the .zip this page gave you, or one anonymized image with its .fpx record "
                                  f"(got {len(images)} image(s) and {len(records)} record(s))")
        name, data = images[0]
        if not data:
            raise BadRequest(400, f"{name}: the file is empty (0 bytes)")
        if Path(name).suffix.lower() in self.video_exts:
            return self._recover_video(name, data, records[0] if records else None, pw.encode("utf-8"))
        with self.work_lock, self._workspace() as ws:
            inp = ws / "in" / name
            out = ws / "out" / f"{Path(name).stem.removesuffix('_anonymized')}_recovered.png"
            if records:  # sidecar first, image last: the order the pipeline writes them in
                _write(inp.with_name(inp.name + SIDECAR_EXT), records[0])
            _write(inp, data)
            summary = self._run(ws, lambda: self.pipeline.recover(inp, out, pw.encode("utf-8")))
            before, after = _preview(inp), _preview(out)
            download = out.read_bytes()
        mode = (summary.get("modes") or ["?"])[0]
        notes = {"exact": ["exact: the recovered image equals the original bit for bit"],
                 "faces-exact": ["faces-exact: the faces are the original pixels; the rest of the frame went "
                                 "through JPEG/WebP and is not bit-identical"],
                 "latent": ["latent: the faces were decoded from the decrypted latent (no sealed pixels)"]}
        return self.results.put(Result("recover", name, before, after, download, out.name, "image/png",
                                       {"mode": mode, "notes": notes.get(mode, [])}))

    def _recover_video(self, name: str, data: bytes, record: bytes | None, passphrase: bytes) -> Result:
        with self.work_lock, self._workspace() as ws:
            inp = ws / "in" / name
            out = ws / "out" / f"{Path(name).stem.removesuffix('_anonymized')}_recovered.mkv"
            if record is not None:
                _write(inp.with_name(inp.name + SIDECAR_EXT), record)
            _write(inp, data)
            res = self._run(ws, lambda: self.pipeline.recover_video(inp, out, passphrase))
            k = res.frames // 2
            before, after = _video_preview(inp, k), _video_preview(out, k)
            download = out.read_bytes()
        notes = [f"{res.frames} frames, {res.faces} face-frames restored (lossless .mkv); the pictures show "
                 f"frame {k + 1}"] + [_clean(n, ws) for n in res.notes]
        return self.results.put(Result("recover", name, before, after, download, out.name, "video/x-matroska",
                                       {"mode": "video", "notes": notes, "video": True}))

    def _workspace(self):
        return _Workspace(self.workdir)

    def _run(self, ws: Path, fn):
        try:
            return fn()
        except FacePrivacyError as e:
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise BadRequest(400, _clean(lines[0], ws)) from None


class _Workspace:
    """A private temp folder for one job (``in/``, ``out/``), removed however the job ends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(dir=self.root))
        (self.path / "in").mkdir()
        (self.path / "out").mkdir()
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    from ..core.fileio import atomic_write_bytes

    atomic_write_bytes(path, data)


def _clean(msg: str, ws: Path) -> str:
    """A pipeline message without the private temp paths (the user sees their own file names)."""
    for sub in ("in", "out", ""):
        msg = msg.replace(f"{ws / sub}{os.sep}" if sub else f"{ws}{os.sep}", "")
    return msg


def safe_name(name: str, default: str) -> str:
    """A file name safe to create and show: the last path part, letters/digits/._- only, no leading dot."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip("._")[-100:]
    if not Path(base).stem:
        return default
    return base


def _unzip(data: bytes, limit: int) -> list[tuple[str, bytes]]:
    """The files of an uploaded .zip (names only, never paths), refusing bombs and encrypted members."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        raise BadRequest(400, "the .zip is not a readable zip file") from None
    if len(infos) > MAX_ZIP_MEMBERS:
        raise BadRequest(400, f"the .zip holds {len(infos)} files; expected the image and its .fpx record")
    out, total = [], 0
    for i in infos:
        if i.flag_bits & 0x1:
            raise BadRequest(400, "the .zip is encrypted; send the files it holds instead")
        try:
            with zf.open(i) as f:
                blob = f.read(limit + 1 - total)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError):
            raise BadRequest(400, f"the .zip member {safe_name(i.filename, '?')} is corrupt") from None
        total += len(blob)
        if total > limit:
            raise BadRequest(413, f"the .zip unpacks to more than {limit // 2**20} MB (the upload limit)")
        out.append((safe_name(i.filename, "file"), blob))
    return out


def _preview(path: Path) -> bytes:
    """A JPEG of the image at ``path`` (longest side <= ``PREVIEW_SIDE``) for the page only."""
    from PIL import Image

    from ..core.imageio import load_image

    im = Image.fromarray(load_image(path))
    im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _busiest_frame(res) -> int:
    """The frame with the most tracked faces (the middle one when none)."""
    from collections import Counter

    counts = Counter(i for t in getattr(res, "track_list", []) for i in getattr(t, "box", {}))
    if not counts:
        return max(0, res.frames // 2)
    best = max(counts.values())
    mid = res.frames / 2
    return min((i for i, c in counts.items() if c == best), key=lambda i: abs(i - mid))


def _video_preview(path: Path, k: int) -> bytes:
    """A JPEG of frame ``k`` of a clip (longest side <= ``PREVIEW_SIDE``)."""
    from PIL import Image

    from .video.io import iter_frames

    frame = None
    for i, f in enumerate(iter_frames(path)):
        frame = f
        if i >= k:
            break
    if frame is None:
        raise BadRequest(400, f"{path.name}: the clip has no frames")
    im = Image.fromarray(frame)
    im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def parse_multipart(content_type: str, body: bytes) -> Upload:
    """multipart/form-data -> ``Upload`` (byte-exact files), or BadRequest."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise BadRequest(400, "expected a multipart/form-data upload (a form with the photo)")
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\nMIME-Version: 1.0\r\n\r\n"
    msg = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart() or msg.defects:
        raise BadRequest(400, "the upload is not a well-formed multipart/form-data body")
    fields: dict[str, str] = {}
    files: list[tuple[str, bytes]] = []
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files.append((str(filename), payload))
        elif name:
            try:
                fields[str(name)] = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(400, f"form field {name!r} is not UTF-8 text") from None
    return Upload(fields, files)


# ----- HTTP -------------------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    """Routes: ``GET /`` (the page), ``GET /result/<id>`` (the page with one result), ``GET /card/<id>`` (one
    result's HTML), ``GET /r/<id>/before|after|download``, ``POST /api/anonymize``, ``POST /api/recover``,
    ``POST /r/<id>/forget``. Each one checks the Host header and the token first."""

    timeout = 120  # seconds a client may stall mid-request

    def version_string(self) -> str:
        return "faceprivacy"  # no Python version in the Server header

    @property
    def app(self) -> App:
        return self.server.app  # type: ignore[attr-defined]

    # ----- logging: never the query string (the token) or a body (the passphrase) -----
    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s", fmt % args)

    def log_request(self, code="-", size="-") -> None:
        log.debug("%s %s -> %s", getattr(self, "command", "?"), urlsplit(getattr(self, "path", "")).path, code)

    def log_error(self, fmt: str, *args) -> None:
        log.debug("request refused: %s", fmt % args)

    # ----- responses -----
    def _send(self, status: int, body: bytes, ctype: str, extra: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (*SECURITY_HEADERS, *extra):
            self.send_header(k, v)
        self.end_headers()
        if getattr(self, "command", "") != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors of the HTTP layer itself (bad request line, unsupported method) in the same JSON form."""
        self.close_connection = True
        try:
            self._error(code, message or self.responses.get(code, ("error",))[0])
        except OSError:
            pass

    # ----- checks every request passes -----
    def _guard(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in self.app.allowed_hosts:
            self._error(403, "this server answers only to its loopback address (Host header refused)")
            return False
        q = parse_qs(urlsplit(self.path).query)
        given = self.headers.get(TOKEN_HEADER) or (q.get("token") or [""])[0]
        if not secrets.compare_digest(given.encode("utf-8", "replace"), self.app.token.encode("ascii")):
            self._error(403, "missing or wrong token: open the URL that faceprivacy serve printed")
            return False
        return True

    def _same_origin(self) -> bool:
        origin = self.headers.get("Origin")
        if origin is None:
            return True
        if origin.lower().removeprefix("http://") not in self.app.allowed_hosts:
            self._error(403, "cross-origin request refused")
            return False
        return True

    def handle_expect_100(self) -> bool:
        """``Expect: 100-continue``: refuse a request without the token or over the limit before the client
        sends its body (curl does this for large uploads)."""
        if not self._guard():
            return False
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            n = 0
        if n > self.app.max_upload:
            self.close_connection = True
            self._error(413, f"upload of {n / 2**20:.1f} MB is over the limit of {self.app.max_upload / 2**20:.0f} MB "
                             "(faceprivacy serve --max-upload-mb)")
            return False
        return super().handle_expect_100()

    def _body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self._error(411, "send the upload with a Content-Length (chunked uploads are not accepted)")
            return None
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._error(411, "the upload has no valid Content-Length")
            return None
        if n < 0:
            self.close_connection = True
            self._error(400, "negative Content-Length")
            return None
        if n > self.app.max_upload:
            self.close_connection = True  # the body is never read
            self._error(413, f"upload of {n / 2**20:.1f} MB is over the limit of {self.app.max_upload / 2**20:.0f} MB "
                             "(faceprivacy serve --max-upload-mb)")
            return None
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            self._error(400, "the upload ended early")
            return None
        return data

    # ----- methods -----
    def do_GET(self) -> None:
        if not self._guard():
            return
        path = urlsplit(self.path).path
        app = self.app
        if path == "/":
            return self._page(None)
        if m := re.fullmatch(rf"/result/{_ID}", path):
            r = app.results.get(m.group(1))
            return self._page(r) if r else self._error(404, "no such result (forgotten, expired, or the server "
                                                            "restarted)")
        if m := re.fullmatch(rf"/card/{_ID}", path):
            r = app.results.get(m.group(1))
            if r is None:
                return self._error(404, "no such result")
            return self._send(200, render_card(r, app.token).encode("utf-8"), "text/html; charset=utf-8")
        if m := re.fullmatch(rf"/r/{_ID}/(before|after|download)", path):
            r = app.results.get(m.group(1))
            if r is None:
                return self._error(404, "no such result")
            if m.group(2) == "download":
                return self._send(200, r.download, r.download_type,
                                  [("Content-Disposition", f'attachment; filename="{r.download_name}"')])
            return self._send(200, r.before if m.group(2) == "before" else r.after, "image/jpeg")
        return self._error(404, "not found")

    def do_POST(self) -> None:
        if not self._guard() or not self._same_origin():
            return
        path = urlsplit(self.path).path
        if m := re.fullmatch(rf"/r/{_ID}/forget", path):
            self._body()
            return self._json(200, {"forgotten": self.app.results.forget(m.group(1))})
        if path not in ("/api/anonymize", "/api/recover"):
            return self._error(404, "not found")
        body = self._body()
        if body is None:
            return
        try:
            up = parse_multipart(self.headers.get("Content-Type", ""), body)
            del body
            r = self.app.anonymize(up) if path == "/api/anonymize" else self.app.recover(up)
        except BadRequest as e:
            return self._error(e.status, str(e))
        except Exception:  # a bug: the page says so, the terminal has the traceback
            log.exception("serve: %s failed", path)
            return self._error(500, "internal error (details in the terminal that runs faceprivacy serve)")
        self._json(200, {"id": r.id, "kind": r.kind, "card": f"/card/{r.id}", "page": f"/result/{r.id}", **r.info})

    def _page(self, result: Result | None) -> None:
        nonce = secrets.token_urlsafe(16)
        body = render_page(self.app, nonce, result).encode("utf-8")
        csp = (f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
               "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
        self._send(200, body, "text/html; charset=utf-8", [("Content-Security-Policy", csp)])


class Server(ThreadingHTTPServer):
    """The HTTP server of one ``App``; never looks its own name up in DNS."""

    daemon_threads = True

    def __init__(self, app: App, host: str, port: int) -> None:
        import socket

        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        try:
            super().__init__((host, port), Handler)
        except OSError as e:
            hint = " (pick another --port, or --port 0 for any free one)" if e.errno in (98, 48) else ""
            raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
        app.bind_hosts(host, self.server_address[1])

    def server_bind(self) -> None:
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    @property
    def port(self) -> int:
        return int(self.server_address[1])


# ----- the command -------------------------------------------------------------------------------------------

def passed_options(args: argparse.Namespace) -> list[str]:
    """serve's own model options, threads and datakit, as options of every anonymize / recover command line."""
    extra: list[str] = []
    for flag, val in (("--donor-bank", args.donor_bank), ("--generator", args.generator),
                      ("--generator-weights", args.generator_weights), ("--encryptor", args.encryptor),
                      ("--threads", args.threads), ("--data", args.data)):
        if val is not None and not (flag == "--generator" and val == "lite"):
            extra += [flag, str(val)]
    return extra


def serve(args: argparse.Namespace) -> int:
    """``faceprivacy serve``: check the options, load the preselected method, listen, print the URL, serve
    until Ctrl-C or SIGTERM, then forget every result and remove the temp folder."""
    from .base import KEYED_METHODS, METHODS

    host = check_host(args.host)
    port = check_port(args.port)
    max_upload = check_max_upload(args.max_upload_mb)
    pipeline = CliPipeline(args._anonymize_parser, args._recover_parser, passed_options(args))
    pipeline.preload(args.method)
    app = App(pipeline, max_upload=max_upload, methods=METHODS, default_method=args.method, keyed=KEYED_METHODS)
    try:
        server = Server(app, host, port)
    except BaseException:
        app.close(0)
        raise
    url = app.url(host, server.port)
    print(f"faceprivacy serve: {url}\n"
          "  open it in a browser on this machine; the URL holds this launch's access token (do not share it)\n"
          "  photos and results stay in this process's memory until you forget them or stop the server\n"
          "  Ctrl-C stops it", flush=True)

    def _stop(signum, frame):  # SIGTERM ends serve_forever like Ctrl-C does
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        server.server_close()
        app.close()
    print("faceprivacy serve: stopped; results forgotten, temp folder removed", file=sys.stderr, flush=True)
    return 0


# ----- HTML ----------------------------------------------------------------------------------------------------

def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def render_card(r: Result, token: str) -> str:
    """One result: before and after side by side, what was done, the download and a forget button."""
    t = f"?token={_e(token)}"
    base = f"/r/{r.id}"
    thing = "clip" if r.info.get("video") else "image"
    if r.kind == "anonymize":
        faces = r.info.get("faces", 0)
        unit = "face-frame" if r.info.get("video") else "face"
        what = f"{faces} {unit}{'s' if faces != 1 else ''} anonymized with {r.info.get('method')}"
        labels = ("before: original", f"after: {r.info.get('method')}")
        dl = (f"Download {thing} + recovery record (.zip)" if r.info.get("recoverable")
              else f"Download the anonymized {thing} (.zip)")
    else:
        what = f"recovered ({r.info.get('mode')})"
        labels = ("anonymized", "recovered")
        dl = f"Download the recovered {thing} ({Path(r.download_name).suffix})"
    notes = "".join(f"<li>{_e(n)}</li>" for n in r.info.get("notes", []))
    return (f'<article class="card" id="r-{r.id}">'
            f'<h3>{_e(r.name)} <span class="what">{_e(what)}</span></h3>'
            f'<div class="pair">'
            f'<figure><img src="{base}/before{t}" alt="{_e(labels[0])}"><figcaption>{_e(labels[0])}</figcaption></figure>'
            f'<figure><img src="{base}/after{t}" alt="{_e(labels[1])}"><figcaption>{_e(labels[1])}</figcaption></figure>'
            f'</div>'
            f'<ul class="notes">{notes}</ul>'
            f'<p class="actions"><a class="button" href="{base}/download{t}" download="{_e(r.download_name)}">{_e(dl)}</a> '
            f'<button type="button" class="forget" data-forget="{r.id}">Forget</button></p>'
            f'</article>')


def render_page(app: App, nonce: str, result: Result | None = None) -> str:
    """The single page (inline CSS and JS, allowed by nonce), with ``result``'s card already in place."""
    cfg = {"token": app.token, "max_bytes": app.max_upload, "methods": list(app.methods),
           "keyed": list(app.keyed), "default": app.default_method, "min_chars": _min_chars()}
    options = "".join(f'<option value="{_e(m)}"{" selected" if m == app.default_method else ""}>{_e(m)} — '
                      f'{_e(METHOD_HELP.get(m, m))}</option>' for m in app.methods)
    cards = render_card(result, app.token) if result else ""
    cfg_json = json.dumps(cfg).replace("<", "\\u003c")
    return (PAGE.replace("{{NONCE}}", nonce).replace("{{OPTIONS}}", options).replace("{{CARDS}}", cards)
            .replace("{{CFG}}", cfg_json).replace("{{MAXMB}}", f"{app.max_upload / 2**20:.0f}")
            .replace("{{EXTS}}", _e(" ".join(IMAGE_EXTS + app.video_exts)))
            .replace("{{WHAT}}", "photos or short clips" if app.video_exts else "photos")
            .replace("{{ACCEPT}}", _e(",".join(("image/*", ".pgm", ".tif", ".tiff") + (("video/*",) + app.video_exts
                                                                                     if app.video_exts else ())))))


def _min_chars() -> int:
    from ..core.keys import MIN_PASSPHRASE_CHARS

    return MIN_PASSPHRASE_CHARS


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>faceprivacy</title>
<style nonce="{{NONCE}}">
:root { --fg:#1d232b; --mute:#5b6573; --line:#d5dae1; --acc:#1f5fbf; --bad:#b3261e; --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg);
       margin: 0; padding: 18px 26px; }
header h1 { font-size: 20px; margin: 0 0 2px; }
header p { margin: 0 0 14px; color: var(--mute); font-size: 13px; }
.panels { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
section.panel { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
section.panel h2 { font-size: 16px; margin: 0 0 8px; }
.drop { border: 2px dashed var(--line); border-radius: 8px; padding: 14px; text-align: center; color: var(--mute);
        cursor: pointer; margin-bottom: 8px; }
.drop.over { border-color: var(--acc); color: var(--acc); }
.drop .files { color: var(--fg); font-size: 13px; margin-top: 4px; }
label { display: block; font-size: 13px; color: var(--mute); margin: 6px 0 2px; }
select, input[type=password] { width: 100%; padding: 6px 8px; font: inherit; border: 1px solid var(--line);
                               border-radius: 6px; }
button, a.button { display: inline-block; margin-top: 10px; padding: 7px 14px; font: inherit; border-radius: 6px;
                   border: 1px solid var(--acc); background: var(--acc); color: #fff; cursor: pointer;
                   text-decoration: none; }
button.forget { background: #fff; color: var(--fg); border-color: var(--line); }
button:disabled { opacity: .5; cursor: wait; }
.status { min-height: 1.4em; margin: 12px 0 4px; font-size: 14px; }
.status.bad { color: var(--bad); }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; margin: 12px 0; }
.card h3 { font-size: 15px; margin: 0 0 8px; }
.card .what { font-weight: normal; color: var(--mute); margin-left: 8px; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
figure { margin: 0; text-align: center; }
figure img { width: 100%; max-width: 440px; max-height: 440px; object-fit: contain; border-radius: 4px;
             background: #eee; }
figcaption { font-size: 13px; color: var(--mute); margin-top: 4px; }
ul.notes { margin: 8px 0 0; padding-left: 18px; font-size: 13px; color: var(--mute); }
.actions { margin: 0; }
input[type=file] { display: none; }
</style></head>
<body>
<header><h1>faceprivacy — de-identify faces on this machine</h1>
<p>Served on a loopback address only; every request carries this launch's token. Photos stay in the server's memory
until you press Forget or stop it; nothing is written to disk but short-lived temp files. Passphrases are never
stored.</p></header>
<div class="panels">
<section class="panel" id="anon">
<h2>Anonymize</h2>
<div class="drop" id="anon-drop" tabindex="0">Drop {{WHAT}} here or click to choose ({{EXTS}}; up to {{MAXMB}} MB each)
<div class="files" id="anon-files"></div></div>
<input type="file" id="anon-input" multiple accept="{{ACCEPT}}">
<label for="method">Method</label><select id="method">{{OPTIONS}}</select>
<label for="anon-pw">Passphrase (keeps the originals sealed in the download; needed for donor and riddle)</label>
<input type="password" id="anon-pw" autocomplete="new-password" spellcheck="false">
<label for="anon-pw2">Passphrase again</label>
<input type="password" id="anon-pw2" autocomplete="new-password" spellcheck="false">
<button type="button" id="anon-go">Anonymize</button>
</section>
<section class="panel" id="rec">
<h2>Recover</h2>
<div class="drop" id="rec-drop" tabindex="0">Drop the .zip from Anonymize (or the anonymized file and its .fpx record)
<div class="files" id="rec-files"></div></div>
<input type="file" id="rec-input" multiple>
<label for="rec-pw">Passphrase</label>
<input type="password" id="rec-pw" autocomplete="current-password" spellcheck="false">
<button type="button" id="rec-go">Recover</button>
</section>
</div>
<div class="status" id="status" role="status" aria-live="polite"></div>
<main id="results">{{CARDS}}</main>
<script type="application/json" id="cfg">{{CFG}}</script>
<script nonce="{{NONCE}}">
"use strict";
const cfg = JSON.parse(document.getElementById("cfg").textContent);
const $ = (id) => document.getElementById(id);
const H = {"X-FacePrivacy-Token": cfg.token};
function say(msg, bad) { const s = $("status"); s.textContent = msg; s.className = bad ? "status bad" : "status"; }
function picker(drop, input, list, onFiles) {
  let files = [];
  const show = () => { $(list).textContent = files.map((f) => f.name).join(", "); };
  const set = (fl) => { files = Array.from(fl); show(); onFiles(files); };
  $(drop).addEventListener("click", () => $(input).click());
  $(drop).addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $(input).click(); });
  $(input).addEventListener("change", () => set($(input).files));
  $(drop).addEventListener("dragover", (e) => { e.preventDefault(); $(drop).classList.add("over"); });
  $(drop).addEventListener("dragleave", () => $(drop).classList.remove("over"));
  $(drop).addEventListener("drop", (e) => { e.preventDefault(); $(drop).classList.remove("over");
                                            set(e.dataTransfer.files); });
}
let anonFiles = [], recFiles = [];
picker("anon-drop", "anon-input", "anon-files", (f) => { anonFiles = f; });
picker("rec-drop", "rec-input", "rec-files", (f) => { recFiles = f; });
async function post(url, fd) {
  const r = await fetch(url, {method: "POST", headers: H, body: fd, credentials: "omit", cache: "no-store"});
  let j = null;
  try { j = await r.json(); } catch (e) { j = {error: "the server answered " + r.status}; }
  if (!r.ok) throw new Error(j.error || ("the server answered " + r.status));
  return j;
}
async function addCard(j) {
  const r = await fetch(j.card, {headers: H, cache: "no-store"});
  if (r.ok) $("results").insertAdjacentHTML("afterbegin", await r.text());
}
function busy(on) { $("anon-go").disabled = on; $("rec-go").disabled = on; }
$("anon-go").addEventListener("click", async () => {
  const method = $("method").value, pw = $("anon-pw").value;
  if (!anonFiles.length) return say("choose or drop a photo first", true);
  if (pw !== $("anon-pw2").value) return say("the two passphrases differ", true);
  if (cfg.keyed.includes(method) && !pw) return say("method " + method + " needs a passphrase", true);
  if (pw && pw.length < cfg.min_chars) return say("passphrase too short: use at least " + cfg.min_chars +
                                                  " characters, e.g. four random words", true);
  busy(true);
  let done = 0, failed = [];
  for (const [i, f] of anonFiles.entries()) {
    if (f.size > cfg.max_bytes) { failed.push(f.name + ": over the upload limit"); continue; }
    say("anonymizing " + f.name + " (" + (i + 1) + " of " + anonFiles.length + ") ...");
    const fd = new FormData();
    fd.append("method", method); fd.append("passphrase", pw); fd.append("file", f, f.name);
    try { await addCard(await post("/api/anonymize", fd)); done++; } catch (e) { failed.push(f.name + ": " + e.message); }
  }
  busy(false);
  say(failed.length ? failed.join("; ") : "done: " + done + " photo(s)", failed.length > 0);
});
$("rec-go").addEventListener("click", async () => {
  const pw = $("rec-pw").value;
  if (!recFiles.length) return say("choose or drop the .zip (or the image and its .fpx) first", true);
  if (!pw) return say("recovery needs the passphrase", true);
  const total = recFiles.reduce((a, f) => a + f.size, 0);
  if (total > cfg.max_bytes) return say("over the upload limit", true);
  const fd = new FormData();
  fd.append("passphrase", pw);
  for (const f of recFiles) fd.append("file", f, f.name);
  busy(true); say("recovering ...");
  try { await addCard(await post("/api/recover", fd)); say("recovered"); } catch (e) { say(e.message, true); }
  busy(false);
});
$("results").addEventListener("click", async (e) => {
  const id = e.target.getAttribute && e.target.getAttribute("data-forget");
  if (!id) return;
  try { await fetch("/r/" + id + "/forget", {method: "POST", headers: H}); } catch (err) { /* gone already */ }
  const card = $("r-" + id); if (card) card.remove();
  say("forgotten");
});
document.documentElement.dataset.ready = "1";
</script>
</body></html>
"""
