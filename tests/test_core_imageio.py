"""Safe image loading: formats, EXIF, bad inputs; CLI bad-input behaviour."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceprivacy.cli import main
from faceprivacy.core.errors import InputError
from faceprivacy.core.imageio import load_image, save_image


def _png_with_header(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h but carries one tiny IDAT (a decompression-bomb header)."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)


def test_modes_convert_to_rgb(tmp_path: Path, rgb: np.ndarray) -> None:
    Image.fromarray(rgb).convert("L").save(tmp_path / "g.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "i16.png")
    for name in ("g.png", "a.png", "c.jpg", "p.png", "i16.png"):
        out = load_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (40, 60, 3), name
    # 16-bit is scaled, not clipped: values survive the round trip
    np.testing.assert_array_equal(load_image(tmp_path / "i16.png")[..., 0], rgb[..., 0])
    # RGBA with full alpha equals the RGB
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgb)


def test_exif_orientation_applied(tmp_path: Path, rgb: np.ndarray) -> None:
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "o.jpg")
    assert out.shape == (60, 40, 3)


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "huge", "missing", "tiny"])
def test_bad_inputs_raise(tmp_path: Path, rgb: np.ndarray, kind: str) -> None:
    p = tmp_path / f"bad_{kind}.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "text":
        p.write_text("not an image at all")
    elif kind == "huge":
        p = tmp_path / "huge.png"
        p.write_bytes(_png_with_header(30000, 30000))
    elif kind == "tiny":
        Image.fromarray(rgb[:3, :3]).save(p)
    with pytest.raises(InputError) as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_save_image_atomic_and_roundtrip(tmp_path: Path, rgb: np.ndarray) -> None:
    save_image(tmp_path / "x.png", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "x.png"), rgb)
    assert [f.name for f in tmp_path.iterdir()] == ["x.png"]  # no temp files left behind


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "huge"])
def test_cli_bad_input_clear_error_nothing_written(tmp_path: Path, rgb: np.ndarray, kind: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "in.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG")
        p.write_bytes(buf.getvalue()[:200])
    elif kind == "text":
        p.write_text("hello")
    else:
        p.write_bytes(_png_with_header(30000, 30000))
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "emb.npy"
    rc = main(["-q", "embed", str(p), "--embedder", "dlib-native", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error:") and "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == before


def test_cli_no_face(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = tmp_path / "flat.png"
    save_image(p, np.full((120, 120, 3), 128, np.uint8))
    rc = main(["-q", "embed", str(p), "--embedder", "dlib-native", "--out", str(tmp_path / "e.npy")])
    assert rc == 2
    assert "no face" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()
