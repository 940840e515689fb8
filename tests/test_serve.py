"""``faceprivacy serve``: the HTTP handler in process (token, Host check, size limit, content types, bad uploads,
a real anonymize -> recover round trip on a datakit face), the option checks, and a clean SIGTERM stop."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceprivacy.core.errors import InputError
from faceprivacy.deid.web import (
    TOKEN_HEADER,
    Result,
    ResultStore,
    check_host,
    check_max_upload,
    check_port,
    safe_name,
)
from faceprivacy.deid.web_screenshot import PASSPHRASE, multipart, running

ROOT = Path(__file__).resolve().parents[1]
#: one UTKFace crop (200x200 JPEG, one frontal face) from the datakit
UTK_FACE = "utkface_crop_part1/images/100_1_0_20170110183726390.jpg.chip.jpg"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with running("blur", workdir=tmp_path_factory.mktemp("serve_work")) as (app, server):
        yield app, server


@pytest.fixture(scope="module")
def face_png(datakit) -> bytes:
    """The datakit face as PNG bytes (PNG in, PNG out: recovery is bit-exact)."""
    p = datakit / UTK_FACE
    if not p.is_file():
        pytest.skip(f"{p} not in the datakit")
    buf = io.BytesIO()
    Image.open(p).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def _req(srv, method: str, path: str, body: bytes | None = None, headers: dict | None = None, token: bool = True,
         host: str | None = None):
    app, server = srv
    h = {TOKEN_HEADER: app.token} if token else {}
    h.update(headers or {})
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    c.putrequest(method, path, skip_host=True)
    c.putheader("Host", host if host is not None else f"127.0.0.1:{server.port}")
    for k, v in h.items():
        c.putheader(k, v)
    if body is not None:
        c.putheader("Content-Length", str(len(body)))
    c.endheaders(body)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def _post(srv, path: str, fields: dict, files: list, **kw):
    ctype, body = multipart(fields, files)
    return _req(srv, "POST", path, body, {"Content-Type": ctype, **kw.pop("headers", {})}, **kw)


def _error(data: bytes) -> str:
    return json.loads(data)["error"]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


# ----- access control -------------------------------------------------------------------------------------

def test_every_request_needs_the_token(srv) -> None:
    app, server = srv
    for method, path in (("GET", "/"), ("GET", "/result/" + "0" * 32), ("GET", "/r/" + "0" * 32 + "/before"),
                         ("GET", "/card/" + "0" * 32), ("GET", "/nope"), ("POST", "/api/anonymize"),
                         ("POST", "/api/recover")):
        st, h, data = _req(srv, method, path, b"" if method == "POST" else None, token=False)
        assert st == 403 and "token" in _error(data), (method, path)
        assert h["content-type"].startswith("application/json")
    st, _, data = _req(srv, "GET", "/?token=" + "x" * len(app.token), token=False)
    assert st == 403
    st, _, _ = _req(srv, "GET", f"/?token={app.token[:-1]}", token=False)
    assert st == 403
    st, h, _ = _req(srv, "GET", f"/?token={app.token}", token=False)  # the printed URL
    assert st == 200 and h["content-type"] == "text/html; charset=utf-8"
    assert _req(srv, "GET", "/")[0] == 200  # the header the page's scripts send
    assert len(app.token) >= 32 and app.url("127.0.0.1", server.port).endswith(f"?token={app.token}")


def test_host_header_is_checked_against_dns_rebinding(srv) -> None:
    _, server = srv
    for host in ("evil.example", f"evil.example:{server.port}", f"127.0.0.1:{server.port + 1}", "127.0.0.1", ""):
        st, _, data = _req(srv, "GET", "/", host=host)
        assert st == 403 and "Host" in _error(data), host
    assert _req(srv, "GET", "/", host=f"localhost:{server.port}")[0] == 200
    assert _req(srv, "GET", "/", host=f"LOCALHOST:{server.port}")[0] == 200


def test_cross_origin_posts_are_refused(srv, face_png) -> None:
    _, server = srv
    st, _, data = _post(srv, "/api/anonymize", {"method": "blur"}, [("a.png", face_png)],
                        headers={"Origin": "http://evil.example"})
    assert st == 403 and "cross-origin" in _error(data)
    st, _, data = _post(srv, "/api/anonymize", {"method": "blur"}, [("a.png", face_png)], headers={"Origin": "null"})
    assert st == 403


def test_upload_limit_is_enforced_before_reading(srv) -> None:
    app, server = srv
    old = app.max_upload
    app.max_upload = 4096
    try:
        st, h, data = _post(srv, "/api/anonymize", {"method": "blur"}, [("a.png", b"\0" * 5000)])
        assert st == 413 and "over the limit" in _error(data) and "--max-upload-mb" in _error(data)
        # a client that only announces a huge body gets the answer without sending it
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(f"POST /api/anonymize HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{TOKEN_HEADER}: {app.token}\r\n"
                  f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {10**12}\r\n\r\n".encode())
        assert s.recv(200).startswith(b"HTTP/1.0 413")
        s.close()
        for tok in (app.token, "wrong"):  # Expect: 100-continue gets the refusal instead of "100 Continue"
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(f"POST /api/anonymize HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{TOKEN_HEADER}: {tok}\r\n"
                      f"Expect: 100-continue\r\nContent-Length: {10**9}\r\n\r\n".encode())
            assert s.recv(200).startswith(b"HTTP/1.0 413" if tok == app.token else b"HTTP/1.0 403")
            s.close()
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(f"POST /api/anonymize HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n{TOKEN_HEADER}: {app.token}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        assert s.recv(200).startswith(b"HTTP/1.0 411")
        s.close()
    finally:
        app.max_upload = old


def test_content_types_security_headers_and_no_listing(srv) -> None:
    st, h, data = _req(srv, "GET", "/")
    assert st == 200
    csp = h["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    page = data.decode()
    assert page.count(f'nonce="{nonce}"') == 2  # the one style and the one script; nothing else runs
    for k, v in (("x-content-type-options", "nosniff"), ("cache-control", "no-store"),
                 ("referrer-policy", "no-referrer"), ("x-frame-options", "DENY")):
        assert h[k] == v
    assert h["server"] == "faceprivacy"  # no Python version
    for path in ("/faceprivacy/", "/../../etc/passwd", "/r/", "/static/", "/deid/web.py", "/result/xyz"):
        st, h, data = _req(srv, "GET", path)
        assert st == 404 and h["content-type"].startswith("application/json"), path
    assert _req(srv, "PUT", "/")[0] == 501


# ----- bad uploads: 400 and one clear line ------------------------------------------------------------

def test_bad_uploads_get_400_with_a_clear_message(srv, face_png) -> None:
    app, _ = srv
    noise = _png(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    cases = [
        ({"method": "blur"}, [("notes.txt", b"hello")], "not a file type this page reads"),
        ({"method": "blur"}, [("text.jpg", b"this is not a jpeg")], "not an image file"),
        ({"method": "blur"}, [("empty.png", b"")], "empty"),
        ({"method": "blur"}, [("a.png", face_png), ("b.png", face_png)], "one photo per request"),
        ({"method": "blur"}, [], "one photo per request"),
        ({"method": "swirl"}, [("a.png", face_png)], "unknown method"),
        ({"method": "donor"}, [("a.png", face_png)], "needs a passphrase"),
        ({"method": "blur", "passphrase": "short"}, [("a.png", face_png)], "passphrase too short"),
        ({"method": "blur"}, [("noise.png", noise)], "no face found"),
        ({"method": "blur"}, [("trunc.png", face_png[:300])], "truncated"),
    ]
    for fields, files, want in cases:
        st, h, data = _post(srv, "/api/anonymize", fields, files)
        msg = _error(data)
        assert st == 400 and want in msg, (fields, [f[0] for f in files], st, msg)
        assert "\n" not in msg and "Traceback" not in msg
        assert str(app.workdir) not in msg and "/tmp" not in msg  # the user's file name, not the temp path
    st, _, data = _req(srv, "POST", "/api/anonymize", b"plain body", {"Content-Type": "text/plain"})
    assert st == 400 and "multipart/form-data" in _error(data)
    for fields, files, want in (({}, [("a.zip", b"PK not a zip")], "passphrase"),
                                ({"passphrase": PASSPHRASE}, [("a.zip", b"PK not a zip")], "not a readable zip"),
                                ({"passphrase": PASSPHRASE}, [("a.png", face_png)], "no faceprivacy recovery record"),
                                ({"passphrase": PASSPHRASE}, [("a.fpx", b"x")], "send the .zip")):
        st, _, data = _post(srv, "/api/recover", fields, files)
        assert st == 400 and want in _error(data), (want, _error(data))
    assert not any(app.workdir.iterdir()), "temp files left behind"


def test_zip_bombs_and_paths_in_zips_are_refused(srv) -> None:
    app, _ = srv
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("../../evil.png", b"\0" * (app.max_upload + 10))
    st, _, data = _post(srv, "/api/recover", {"passphrase": PASSPHRASE}, [("b.zip", buf.getvalue())])
    assert st == 413 and "unpacks to more than" in _error(data)
    assert safe_name("../../etc/passwd.png", "x.png") == "passwd.png"
    assert safe_name("C:\\Users\\me\\My Photo (1).JPG", "x.png") == "My_Photo_1_.JPG"
    assert safe_name(".hidden.png", "x.png") == "hidden.png" and safe_name("", "x.png") == "x.png"


# ----- the real pipeline --------------------------------------------------------------------------------

@pytest.mark.slow
def test_anonymize_and_recover_round_trip_on_a_datakit_face(srv, face_png, tmp_path, caplog) -> None:
    """donor + passphrase through the page: a zip of image + sealed record; recovery through the page (zip, or
    the two files) gives the original pixels back; a wrong passphrase is one clear 400; the CLI recovers the
    downloaded files too. Neither passphrase nor token shows up in any log."""
    app, server = srv
    caplog.set_level(logging.DEBUG)
    original = np.asarray(Image.open(io.BytesIO(face_png)).convert("RGB"))
    st, _, data = _post(srv, "/api/anonymize", {"method": "donor", "passphrase": PASSPHRASE},
                        [("face.png", face_png)])
    assert st == 200, data
    j = json.loads(data)
    assert j["faces"] == 1 and j["method"] == "donor" and j["recoverable"]
    st, h, z = _req(srv, "GET", f"/r/{j['id']}/download")
    assert st == 200 and h["content-type"] == "application/zip"
    assert h["content-disposition"] == 'attachment; filename="face_anonymized.zip"'
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        assert sorted(zf.namelist()) == ["face_anonymized.png", "face_anonymized.png.fpx"]
        anon_png, record = zf.read("face_anonymized.png"), zf.read("face_anonymized.png.fpx")
    anon = np.asarray(Image.open(io.BytesIO(anon_png)).convert("RGB"))
    assert anon.shape == original.shape and np.abs(anon.astype(int) - original).mean() > 2
    for part in ("before", "after"):
        st, h, img = _req(srv, "GET", f"/r/{j['id']}/{part}")
        assert st == 200 and h["content-type"] == "image/jpeg" and Image.open(io.BytesIO(img)).size == (200, 200)
    st, h, page = _req(srv, "GET", j["page"])
    assert st == 200 and f"/r/{j['id']}/before?token=" in page.decode() and f"/r/{j['id']}/after?token=" in page.decode()
    st, _, card = _req(srv, "GET", j["card"])
    assert st == 200 and "1 face anonymized with donor" in card.decode()

    # recover: the zip, then the two files; both exact
    for files in ([("face_anonymized.zip", z)],
                  [("face_anonymized.png", anon_png), ("face_anonymized.png.fpx", record)]):
        st, _, data = _post(srv, "/api/recover", {"passphrase": PASSPHRASE}, files)
        assert st == 200, data
        r = json.loads(data)
        assert r["mode"] == "exact"
        st, h, rec = _req(srv, "GET", f"/r/{r['id']}/download")
        assert st == 200 and h["content-type"] == "image/png"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(rec)).convert("RGB")), original)
    st, _, data = _post(srv, "/api/recover", {"passphrase": "a wrong passphrase!"}, [("face_anonymized.zip", z)])
    assert st == 400 and "passphrase" in _error(data).lower()

    # the downloaded files recover with the CLI as well (same record, same passphrase bytes)
    (tmp_path / "face_anonymized.png").write_bytes(anon_png)
    (tmp_path / "face_anonymized.png.fpx").write_bytes(record)
    (tmp_path / "pw.txt").write_text(PASSPHRASE + "\n")
    from faceprivacy.cli import main

    assert main(["-q", "recover", str(tmp_path / "face_anonymized.png"), "-o", str(tmp_path / "r.png"),
                 "--passphrase-file", str(tmp_path / "pw.txt")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png").convert("RGB")), original)

    logs = caplog.text
    assert PASSPHRASE not in logs and app.token not in logs
    assert not any(app.workdir.iterdir()), "temp files left behind"


def test_plain_blur_jpeg_and_forget(srv, datakit) -> None:
    """A keyless method without a passphrase: a plain image (no record) in the zip; JPEG stays JPEG; Forget
    drops the result from memory."""
    jpg = (datakit / UTK_FACE).read_bytes()
    st, _, data = _post(srv, "/api/anonymize", {"method": "blur"}, [("face.jpg", jpg)])
    assert st == 200, data
    j = json.loads(data)
    assert not j["recoverable"] and any("plain output" in n for n in j["notes"])
    st, _, z = _req(srv, "GET", f"/r/{j['id']}/download")
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        assert zf.namelist() == ["face_anonymized.jpg"]
    st, _, data = _req(srv, "POST", f"/r/{j['id']}/forget", b"")
    assert st == 200 and json.loads(data)["forgotten"]
    assert _req(srv, "GET", f"/r/{j['id']}/after")[0] == 404
    assert _req(srv, "GET", f"/result/{j['id']}")[0] == 404


# ----- pieces -------------------------------------------------------------------------------------------------

def test_result_store_is_bounded() -> None:
    s = ResultStore(max_items=2, ttl_s=3600, max_bytes=10**6)
    rs = [s.put(Result("anonymize", f"{i}.png", b"b", b"a", b"d", "d.zip", "application/zip")) for i in range(3)]
    assert s.get(rs[0].id) is None and s.get(rs[2].id) is not None and len(s) == 2
    s.put(Result("anonymize", "big.png", b"b" * 2 * 10**6, b"", b"", "d.zip", "application/zip"))
    assert len(s) == 0  # over the byte budget on its own: not kept
    s = ResultStore(ttl_s=0.05)
    r = s.put(Result("anonymize", "x.png", b"b", b"a", b"d", "d.zip", "application/zip"))
    time.sleep(0.1)
    assert s.get(r.id) is None


def test_option_checks() -> None:
    for ok, want in (("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1"),
                     ("127.0.0.2", "127.0.0.2")):
        assert check_host(ok) == want
    for bad in ("0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.com", "", "127.0.0.1:80"):
        with pytest.raises(InputError, match="loopback"):
            check_host(bad)
    assert check_port(0) == 0 and check_port(65535) == 65535
    for bad in (-1, 65536, 99999):
        with pytest.raises(InputError, match="out of range"):
            check_port(bad)
    assert check_max_upload(1) == 2**20
    for bad in (0, -3, float("nan"), 5000):
        with pytest.raises(InputError):
            check_max_upload(bad)


def test_serve_options_reach_the_commands_it_runs(tmp_path) -> None:
    """--threads, --data and the model options of serve are the options of every anonymize / recover it runs."""
    from faceprivacy.cli import build_parser
    from faceprivacy.core.options import resolve
    from faceprivacy.deid.web import CliPipeline, passed_options

    args = resolve(build_parser().parse_args(["serve", "--threads", "1", "--data", "DK", "--donor-bank", "b.npz"]))
    pipe = CliPipeline(args._anonymize_parser, args._recover_parser, passed_options(args))
    for parser, argv in ((pipe.anonymize_parser, ["x.png", "-o", "y.png"]), (pipe.recover_parser, ["y.png"])):
        a = pipe._args(parser, argv + pipe.extra)
        assert (a.threads, a.data, str(a.donor_bank)) == (1, "DK", "b.npz")
    plain = resolve(build_parser().parse_args(["serve"]))
    assert passed_options(plain) == ["--threads", str(plain.threads)]


def test_a_port_in_use_is_one_clear_error(srv, tmp_path) -> None:
    from faceprivacy.deid.web import App, Server

    app, server = srv
    other = App(app.pipeline, workdir=tmp_path / "w")
    try:
        with pytest.raises(InputError, match=rf"cannot listen on 127.0.0.1:{server.port}: .*--port 0"):
            Server(other, "127.0.0.1", server.port)
    finally:
        other.close()
    assert not (tmp_path / "w").exists()


@pytest.mark.network
def test_serve_prints_the_url_and_stops_cleanly_on_sigterm(tmp_path) -> None:
    """The real command: prints the URL with the token, answers, and on SIGTERM exits 0 having removed its
    temp folder (TMPDIR points into tmp_path here)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "FACEPRIVACY_QUIET": "1",
           "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "faceprivacy", "serve", "--port", "0", "--method", "blur"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = p.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
        assert m, line + p.stderr.read() if p.poll() is not None else line
        port, token = int(m.group(1)), m.group(2)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", f"/?token={token}")
        assert c.getresponse().status == 200
        c.close()
        assert any(tmp_path.iterdir())  # its private work folder
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        err = p.stderr.read()
        assert "Traceback" not in err and "stopped" in err
        assert not any(tmp_path.iterdir()), "work folder left behind"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.slow
def test_a_short_clip_round_trip(srv, tmp_path) -> None:
    """With ``faceprivacy.deid.video`` present, a clip goes through the anonymize command's video pipeline:
    a zip of the lossless .mkv and its record, one frame as the before/after pair, and recovery through the
    page gives back every frame of the input bit for bit."""
    video = pytest.importorskip("faceprivacy.deid.video", reason="no video pipeline in this build")
    synth = pytest.importorskip("faceprivacy.deid.video.synth")
    from skimage import data

    face = np.ascontiguousarray(data.astronaut()[30:230, 110:310])
    frames, _ = synth.make_frames([face], 10, 240, 320, 150, seed=0)
    clip = synth.write_clip(tmp_path / "clip.mkv", frames, fps=10, codec="ffv1", audio=False)
    st, _, data_ = _post(srv, "/api/anonymize", {"method": "blur", "passphrase": PASSPHRASE},
                         [("clip.mkv", clip.read_bytes())])
    assert st == 200, data_
    j = json.loads(data_)
    assert j["video"] and j["frames"] == 10 and j["faces"] >= 8 and j["recoverable"]
    st, h, z = _req(srv, "GET", f"/r/{j['id']}/download")
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        assert sorted(zf.namelist()) == ["clip_anonymized.mkv", "clip_anonymized.mkv.fpx"]
    for part in ("before", "after"):
        st, h, img = _req(srv, "GET", f"/r/{j['id']}/{part}")
        assert st == 200 and h["content-type"] == "image/jpeg" and Image.open(io.BytesIO(img)).size == (320, 240)
    st, _, card = _req(srv, "GET", j["card"])
    assert "face-frames anonymized with blur" in card.decode() and "Download clip + recovery record" in card.decode()
    for name, blob in (("bad.mp4", b"not a video at all" * 10), ("cut.mkv", clip.read_bytes()[:2000])):
        st, _, err = _post(srv, "/api/anonymize", {"method": "blur"}, [(name, blob)])
        assert st == 400 and "\n" not in _error(err) and "/tmp" not in _error(err), (name, st, err)
    st, _, data_ = _post(srv, "/api/recover", {"passphrase": PASSPHRASE}, [("clip_anonymized.zip", z)])
    assert st == 200, data_
    r = json.loads(data_)
    st, h, rec = _req(srv, "GET", f"/r/{r['id']}/download")
    assert st == 200 and h["content-type"] == "video/x-matroska"
    (tmp_path / "rec.mkv").write_bytes(rec)
    cmp = video.compare_videos(clip, tmp_path / "rec.mkv")
    assert cmp["frames"] == 10 and cmp["identical_frames"] == 10, cmp
