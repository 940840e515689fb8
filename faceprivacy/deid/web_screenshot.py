"""A screenshot of ``faceprivacy serve`` with a before/after pair, taken by headless Chromium.

``python -m faceprivacy.deid.web_screenshot -o docs/serve_screenshot.png`` starts the server in this process
(127.0.0.1, a free port), opens the page in headless Chromium (Debian's ``chromium`` package) driven over the
DevTools protocol, gives the photo to the page's file input (what a drop does), types a passphrase, clicks
Anonymize and captures the page with its before/after pair. The browser test (``tests/test_serve_browser.py``)
uses the same pieces. Default photo: scikit-image's astronaut (public domain, NASA).
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
import time
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


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
    messages ending in NUL, commands on fd 3, answers on fd 4): open a page, evaluate JavaScript, give a file
    input its files (what a drop does), take a screenshot. For tests and the docs screenshot only."""

    def __init__(self, size: tuple[int, int] = (1200, 1180), timeout: float = 60) -> None:
        import os

        exe = find_chromium()
        if exe is None:
            raise InputError("no chromium found (Debian: apt-get install chromium)")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="fp-chromium-")
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                 "--disable-extensions", "--disable-sync", "--disable-background-networking", "--mute-audio",
                 f"--user-data-dir={self._profile.name}/profile", f"--window-size={size[0]},{size[1]}",
                 "--remote-debugging-pipe", "about:blank"]
        script = f'exec 3<&{to_r} 4>&{from_w}; exec "$0" "$@"'
        self.proc = subprocess.Popen(["bash", "-c", script, exe, *flags], pass_fds=(to_r, from_w),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]

    def _read(self) -> dict:
        import os
        import select

        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_r], [], [], left)[0]:
                raise InputError("chromium did not answer in time")
            chunk = os.read(self._from_r, 1 << 20)
            if not chunk:
                raise InputError("chromium closed the DevTools pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """One DevTools command -> its result (events in between are dropped)."""
        import os

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read()
            if m.get("id") == self._id:
                if "error" in m:
                    raise InputError(f"chromium: {method}: {m['error'].get('message')}")
                return m.get("result", {})

    def eval(self, js: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": js, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise InputError(f"page script failed: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def wait(self, js: str, timeout: float = 120) -> object:
        """Poll ``js`` until it is truthy -> its value (InputError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.eval(js)
            if v:
                return v
            time.sleep(0.2)
        raise InputError(f"timed out waiting for: {js}")

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete' && document.documentElement.dataset.ready === '1'", 30)

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Give the file input ``selector`` these files and fire its change event (a drop does the same)."""
        root = self.call("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        self.call("DOM.setFileInputFiles", {"nodeId": node, "files": [str(Path(p).resolve()) for p in paths]})

    def screenshot(self, out: Path, full_page: bool = True) -> Path:
        """PNG of the page (``full_page``: the whole document, not only the window) into ``out``."""
        import base64

        from ..core.fileio import atomic_write_bytes

        params: dict = {"format": "png"}
        if full_page:
            w, h = self.eval("[document.documentElement.clientWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": w, "height": h, "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        atomic_write_bytes(Path(out), base64.b64decode(data))
        return Path(out)

    def close(self) -> None:
        import os

        for fd in (self._to_w, self._from_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def astronaut_png() -> bytes:
    """scikit-image's astronaut (512x512, public domain) as PNG bytes."""
    import io

    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    return buf.getvalue()


def fill(b: Browser, passphrase: str, method: str | None = None, confirm: str | None = None) -> None:
    """Type the anonymize form's passphrase (twice) and pick ``method``, as a user does."""
    js = (f"document.getElementById('anon-pw').value = {json.dumps(passphrase)};"
          f"document.getElementById('anon-pw2').value = {json.dumps(passphrase if confirm is None else confirm)};")
    if method:
        js += f"document.getElementById('method').value = {json.dumps(method)};"
    b.eval(js + "1")


CARDS = "document.querySelectorAll('#results .card').length"
IMAGES_LOADED = ("Array.from(document.images).length >= 2 && "
                 "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


def make_screenshot(out: Path, photo: Path | None = None, method: str = "donor",
                    size: tuple[int, int] = (1200, 1180)) -> dict:
    """Serve in-process, open the page in headless Chromium, drop ``photo`` (default: the astronaut) on it,
    anonymize with ``method`` and a passphrase, and capture the page with its before/after pair."""
    with tempfile.TemporaryDirectory(prefix="fp-shot-") as td:
        if photo is None:
            photo = Path(td) / "astronaut.png"
            photo.write_bytes(astronaut_png())
        with running(method) as (app, server), Browser(size) as b:
            b.open(app.url("127.0.0.1", server.port))
            b.set_files("#anon-input", [photo])
            fill(b, PASSPHRASE, method)
            b.eval("document.getElementById('anon-go').click(); 1")
            b.wait(f"{CARDS} || document.getElementById('status').className.includes('bad')", 600)
            status = b.eval("document.getElementById('status').textContent")
            if not b.eval(CARDS):
                raise InputError(f"the page refused the photo: {status}")
            b.wait(IMAGES_LOADED, 30)
            shot = b.screenshot(out)
            text = b.eval("document.querySelector('#results .card h3').textContent")
    return {"screenshot": str(shot), "status": status, "card": text}


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
    print(f"wrote {res['screenshot']} ({res['card']}; {res['status']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
