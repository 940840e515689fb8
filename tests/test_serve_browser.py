"""``faceprivacy serve`` in a real browser: headless Chromium (Debian's ``chromium``) driven over the DevTools
protocol does what a user does: gives a photo to the page (as a drop does), types the passphrase, clicks
Anonymize, sees the before/after pair, downloads the zip, recovers it, tries a wrong passphrase, forgets a
result; and the page's screenshot is not blank. Skipped without chromium; blur and a 256-px photo keep it to
seconds. ``python -m faceprivacy.deid.web_screenshot`` makes the committed docs/serve_screenshot.png the same
way, with the default method."""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile

import numpy as np
import pytest
from PIL import Image

from faceprivacy.deid.web_screenshot import (
    CARDS,
    IMAGES_LOADED,
    PASSPHRASE,
    Browser,
    fill,
    find_chromium,
    running,
)

pytestmark = [pytest.mark.network, pytest.mark.slow,
              pytest.mark.skipif(find_chromium() is None, reason="chromium not installed")]

STATUS = "document.getElementById('status')"


def _face_png(path) -> None:
    from skimage import data

    Image.fromarray(np.ascontiguousarray(data.astronaut()[20:276, 80:336])).save(path)


def test_the_page_in_chromium_anonymize_download_recover_forget(tmp_path) -> None:
    photo = tmp_path / "face.png"
    _face_png(photo)
    with running("blur", workdir=tmp_path / "work") as (app, server), Browser((1000, 1000)) as b:
        b.open(app.url("127.0.0.1", server.port))
        # the page's own checks, before anything is sent
        b.set_files("#anon-input", [photo])
        assert b.eval("document.getElementById('anon-files').textContent") == "face.png"
        fill(b, PASSPHRASE, "blur", confirm=PASSPHRASE + "x")
        b.eval("document.getElementById('anon-go').click(); 1")
        assert b.eval(f"{STATUS}.textContent") == "the two passphrases differ"
        assert len(app.results) == 0

        fill(b, PASSPHRASE, "blur")
        b.eval("document.getElementById('anon-go').click(); 1")
        b.wait(f"{CARDS} || {STATUS}.className.includes('bad')", 300)
        assert b.eval(f"{STATUS}.textContent") == "done: 1 photo(s)"
        assert "1 face anonymized with blur" in b.eval("document.querySelector('#results .card h3').textContent")
        b.wait(IMAGES_LOADED, 30)
        shot = np.asarray(Image.open(b.screenshot(tmp_path / "shot.png")).convert("RGB")).astype(np.int16)
        assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 2000, "blank screenshot"
        pair = b.eval("Array.from(document.querySelectorAll('#results .card img')).map(i => "
                      "[i.getBoundingClientRect().left, i.getBoundingClientRect().top, i.naturalWidth])")
        assert len(pair) == 2 and pair[1][0] > pair[0][0] and abs(pair[1][1] - pair[0][1]) < 2, "not side by side"

        # the download link, as the browser would follow it (same token, same bytes)
        href = b.eval("document.querySelector('#results .card a.button').href")
        with urllib.request.urlopen(href, timeout=30) as r:
            assert r.headers["Content-Type"] == "application/zip"
            z = r.read()
        with zipfile.ZipFile(io.BytesIO(z)) as zf:
            assert sorted(zf.namelist()) == ["face_anonymized.png", "face_anonymized.png.fpx"]
        (tmp_path / "face_anonymized.zip").write_bytes(z)

        # recover: a wrong passphrase first (one clear line), then the right one
        b.set_files("#rec-input", [tmp_path / "face_anonymized.zip"])
        b.eval("document.getElementById('rec-pw').value = 'not the passphrase'; "
               "document.getElementById('rec-go').click(); 1")
        b.wait("!document.getElementById('rec-go').disabled", 120)
        assert b.eval(f"{STATUS}.className") == "status bad"
        assert "passphrase" in b.eval(f"{STATUS}.textContent").lower()
        b.eval(f"document.getElementById('rec-pw').value = {json.dumps(PASSPHRASE)}; "
               "document.getElementById('rec-go').click(); 1")
        b.wait("!document.getElementById('rec-go').disabled", 120)
        assert b.eval(f"{STATUS}.textContent") == "recovered"
        assert "recovered (exact)" in b.eval("document.querySelector('#results .card h3').textContent")

        # forget: the card goes, and so does the result in the server's memory
        assert len(app.results) == 2
        b.eval("document.querySelector('#results .card button.forget').click(); 1")
        b.wait(f"{CARDS} === 1", 30)
        b.wait(f"{STATUS}.textContent === 'forgotten'", 10)
        assert len(app.results) == 1
