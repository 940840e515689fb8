"""The bad-input corpus (``tests/badinput_corpus.py``) through the CLI entry point, in process.

For every case: the documented exit code (2 with one ``error:`` line on stderr for bad input), no
traceback, every input byte-identical afterwards, no output except the documented ones, no temp files.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from badinput_corpus import PASS, Case, build_library, cases

from faceprivacy.cli import main

CASES = cases()
#: a case that runs longer than this has started real work instead of refusing its input
CASE_TIMEOUT_S = 90


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    return build_library(tmp_path_factory.mktemp("badinput_library"))


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            out[rel] = "dir"
    return out


def _setup(case: Case, d: Path, library: Path) -> None:
    from PIL import Image

    for name in case.uses:
        src = library / name
        if src.is_dir():
            shutil.copytree(src, d / name)
        else:
            shutil.copy2(src, d / name)
    if case.setup == "links":
        (d / "FACE_LINK.png").symlink_to(d / "face.png")
        os.link(d / "face.png", d / "hard.png")
    elif case.setup == "x_faces":
        # drawing x.png would write x_faces.png, which is the second input
        shutil.copy2(library / "face.png", d / "x.png")
        shutil.copy2(library / "face.png", d / "x_faces.png")
    elif case.setup == "dir_npy":
        (d / "adir.npy").mkdir()
        shutil.copy2(library / "face.png", d / "face.png")
    elif case.setup == "readonly":
        (d / "ro").mkdir()
        os.chmod(d / "ro", 0o555)
    elif case.setup in ("collide", "mixed", "outinside"):
        (d / "in").mkdir()
        shutil.copy2(library / "face.jpg", d / "in" / "a.jpg")
        if case.setup == "collide":
            shutil.copy2(library / "face.png", d / "in" / "a.png")
        if case.setup == "mixed":
            shutil.copy2(library / "noface.png", d / "in" / "b.png")
        if case.setup == "outinside":
            (d / "in" / "anon").mkdir()
            Image.open(library / "plain.png").save(d / "in" / "anon" / "old.png")


def _param(c: Case):
    marks = []
    if c.skip:
        marks.append(pytest.mark.skip(reason=f"known defect, not run: {c.skip}"))
    elif c.known:
        marks.append(pytest.mark.xfail(reason=f"known defect: {c.known}", strict=False))
    return pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input_case(case: Case, library: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    if case.setup == "readonly" and os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder is still writable")
    d = tmp_path / "case"
    d.mkdir()
    case = Case(**{**case.__dict__, "argv": list(case.argv)})
    _setup(case, d, library)
    before = _snapshot(d)
    argv = ["-q"] + [a.replace("{d}", str(d)) for a in case.argv]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((case.stdin or "").encode())))
    monkeypatch.chdir(d)  # commands with default output folders write inside the case folder

    def _timeout(*_):
        raise TimeoutError(f"case ran over {CASE_TIMEOUT_S} s: it started work instead of refusing its input")

    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code if isinstance(e.code, int) else 2
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        if case.setup == "readonly":
            os.chmod(d / "ro", 0o755)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    want = case.rc if isinstance(case.rc, tuple) else (case.rc,)
    assert rc in want, f"exit {rc}, expected {want}; stderr: {err[-500:]}"
    if rc == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert lines and "error:" in lines[-1], f"no error line on stderr: {err[-500:]}"
        assert len([ln for ln in lines if "error:" in ln]) == 1, err
    after = _snapshot(d)
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"inputs changed or removed: {changed}"
    new = sorted(set(after) - set(before))
    allowed = set(case.makes) | {str(Path(m).parent) for m in case.makes if "/" in m}
    allowed |= {m + ".fpx" for m in case.makes}
    stray = [n for n in new if n not in allowed]
    assert not stray, f"stray or partial outputs: {stray}"
    assert not any(".tmp" in Path(n).name for n in after), "temp file left behind"


def test_corpus_covers_every_command() -> None:
    from faceprivacy.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)
    covered = {c.argv[0] for c in CASES if c.argv}
    assert commands <= covered, f"commands without bad-input cases: {sorted(commands - covered)}"
    assert len(CASES) >= 150


def test_library_images_decode_as_documented(library: Path) -> None:
    """The valid variants really are CMYK / 16-bit / palette / RGBA / EXIF-rotated (a silent generator bug
    would make the corpus test nothing)."""
    from PIL import Image

    modes = {n: Image.open(library / n).mode for n in ("cmyk.jpg", "gray16.png", "palette.png", "rgba.png")}
    assert modes == {"cmyk.jpg": "CMYK", "gray16.png": "I;16", "palette.png": "P", "rgba.png": "RGBA"}
    assert Image.open(library / "exif_rotated.jpg").getexif().get(0x0112) == 6
    assert (library / "bomb.gif").stat().st_size < 64
    assert PASS in (library / "pw.txt").read_text()
    assert np.asarray(Image.open(library / "noface.png")).std() == 0
