"""A screenshot of ``faceprivacy serve`` with a before/after pair, taken by headless Chromium.

``python -m faceprivacy.deid.web_screenshot -o docs/serve_screenshot.png`` starts the server in this process
(127.0.0.1, a free port), anonymizes a photo through the page's own HTTP endpoint, and has Chromium (Debian's
``chromium`` package) capture the result page. The screenshot test (``tests/test_serve_browser.py``) runs the
same code. Default photo: scikit-image's astronaut (public domain, NASA).
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import InputError
from .web import TOKEN_HEADER, App, CliPipeline, Server

PASSPHRASE = "correct horse battery staple"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary on PATH, or None."""
    for name in BROWSERS:
        p = shutil.which(name)
        if p:
            return p
    return None


@contextmanager
def running(method: str = "blur", max_upload: int = 25 * 2**20, workdir: Path | None = None) -> Iterator[tuple[App, Server]]:
    """An ``App`` + ``Server`` on 127.0.0.1 (free port) wired to the real ``anonymize`` / ``recover`` parsers,
    serving from a thread; stopped and cleaned up on exit."""
    from ..cli import build_parser
    from ..core.options import resolve

    args = resolve(build_parser().parse_args(["serve", "--port", "0", "--method", method]))
    from .base import KEYED_METHODS, METHODS

    app = App(CliPipeline(args._anonymize_parser, args._recover_parser), max_upload=max_upload, methods=METHODS,
              default_method=method, keyed=KEYED_METHODS, workdir=workdir)
    server = Server(app, "127.0.0.1", 0)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield app, server
    finally:
        server.shutdown()
        server.server_close()
        app.close()
        t.join(10)


def multipart(fields: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """A multipart/form-data body (what the page's FormData sends) -> (content type, body)."""
    b = "----fp" + uuid.uuid4().hex
    out = b""
    for k, v in fields.items():
        out += f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + v.encode("utf-8") + b"\r\n"
    for name, data in files:
        out += (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={b}", out + f"--{b}--\r\n".encode()


def post_photo(server: Server, token: str, name: str, data: bytes, method: str,
               passphrase: str = PASSPHRASE) -> dict:
    """POST one photo to ``/api/anonymize`` as the page does -> the JSON answer (InputError if refused)."""
    ctype, body = multipart({"method": method, "passphrase": passphrase}, [(name, data)])
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    c.request("POST", "/api/anonymize", body=body, headers={"Content-Type": ctype, TOKEN_HEADER: token})
    r = c.getresponse()
    j = json.loads(r.read())
    c.close()
    if r.status != 200:
        raise InputError(f"anonymize via the page failed ({r.status}): {j.get('error')}")
    return j


def screenshot(url: str, out: Path, size: tuple[int, int] = (1200, 1180), timeout: float = 120) -> Path:
    """Headless Chromium's screenshot of ``url`` into ``out`` (PNG); InputError when it cannot."""
    exe = find_chromium()
    if exe is None:
        raise InputError("no chromium found (Debian: apt-get install chromium)")
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="fp-chromium-") as profile:
        shot = Path(profile) / "shot.png"
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-extensions", "--disable-sync", "--disable-background-networking", "--mute-audio",
               f"--user-data-dir={profile}/profile", f"--window-size={size[0]},{size[1]}",
               "--virtual-time-budget=5000", f"--screenshot={shot}", url]
        try:
            subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise InputError(f"chromium took over {timeout:.0f} s") from None
        if not shot.is_file():
            raise InputError("chromium wrote no screenshot")
        from ..core.fileio import atomic_write_bytes

        atomic_write_bytes(out, shot.read_bytes())
    return out


def astronaut_png() -> bytes:
    """scikit-image's astronaut (512x512, public domain) as PNG bytes."""
    import io

    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    return buf.getvalue()


def make_screenshot(out: Path, photo: Path | None = None, method: str = "donor",
                    size: tuple[int, int] = (1200, 1180)) -> dict:
    """Serve in-process, anonymize ``photo`` (default: the astronaut) with ``method`` through the page's
    endpoint, and capture ``/result/<id>`` -> the JSON answer of the upload plus ``screenshot``."""
    name, data = (photo.name, photo.read_bytes()) if photo else ("astronaut.png", astronaut_png())
    with running(method) as (app, server):
        j = post_photo(server, app.token, name, data, method)
        shot = screenshot(app.url("127.0.0.1", server.port, j["page"]), out, size)
    return {**j, "screenshot": str(shot)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m faceprivacy.deid.web_screenshot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, default=Path("docs/serve_screenshot.png"), help="PNG to write")
    ap.add_argument("--photo", type=Path, default=None, help="photo to anonymize (default: the astronaut)")
    ap.add_argument("--method", default="donor", help="method (default donor)")
    ap.add_argument("--size", type=int, nargs=2, default=(1200, 1180), metavar=("W", "H"), help="window size")
    a = ap.parse_args(argv)
    try:
        res = make_screenshot(a.out, a.photo, a.method, tuple(a.size))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {res['screenshot']} ({res['faces']} face(s), {res['method']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
