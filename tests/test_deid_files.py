"""Files of the de-identification front-end: opt-in records, markers, folder runs that keep the format and
skip their own output, lossy-format honesty, colour profiles, passphrase and scrypt policy, score filter."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageCms

from faceprivacy.core.errors import InputError
from faceprivacy.core.keys import SCRYPT_N, check_passphrase_strength, derive_master_key, new_salt
from faceprivacy.deid.batch import anonymize_paths, recover_paths
from faceprivacy.deid.methods import Blur, make_method
from faceprivacy.deid.pipeline import Deidentifier, is_anonymized, read_anonymized
from faceprivacy.deid.record import (
    RecordBody,
    RecordHeader,
    build_record,
    open_record,
    parse_record,
    read_record,
)

PW = b"correct horse battery staple"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="module")
def detector(astronaut):
    """The real detector's faces on the astronaut, replayed (keeps these tests fast)."""
    from faceprivacy.core.detect import FaceDetector

    faces = FaceDetector().detect(astronaut)

    class Replay:
        def detect(self, img):
            return faces if img.shape == astronaut.shape else []

    return Replay()


def _run(inp, out, passphrase, detector, **kw):
    return anonymize_paths(inp, out, passphrase, make_method("blur"), detector=detector, **kw)


def test_default_score_threshold_drops_the_suit_hit(astronaut) -> None:
    from faceprivacy.core.detect import FaceDetector

    assert len(FaceDetector(min_score=0.0).boxes(astronaut)) == 2  # the face and a 0.12 hit on the suit
    kept = FaceDetector().boxes(astronaut)
    assert len(kept) == 1 and kept[0][1] > 1.0
    assert FaceDetector(min_size=200).boxes(astronaut) == []


def test_plain_output_has_marker_and_no_record(tmp_path, astronaut, detector) -> None:
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    s = _run(tmp_path / "a.png", tmp_path / "o.png", None, detector)
    assert s["written"] == 1 and not s["recoverable"]
    assert is_anonymized(tmp_path / "o.png")
    with pytest.raises(InputError, match="plain anonymized image"):
        read_anonymized(tmp_path / "o.png")
    with pytest.raises(InputError, match="already anonymized"):
        _run(tmp_path / "o.png", tmp_path / "o2.png", None, detector)


def test_keyed_method_needs_a_passphrase_and_weak_ones_are_refused(tmp_path, astronaut, detector) -> None:
    Image.fromarray(astronaut).save(tmp_path / "a.png")

    class Keyed(Blur):
        keyed = True

    with pytest.raises(InputError, match="needs a passphrase"):
        anonymize_paths(tmp_path / "a.png", tmp_path / "o.png", None, Keyed(), detector=detector)
    for weak in (b"abc", b"aaaaaaaaaaaa", b"1212121212"):
        with pytest.raises(InputError, match="passphrase too"):
            check_passphrase_strength(weak)
    check_passphrase_strength(PW)
    assert not (tmp_path / "o.png").exists()


def test_new_records_use_scrypt_2_17_and_old_records_still_open(tmp_path, astronaut, detector) -> None:
    assert SCRYPT_N >= 2 ** 17
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    _run(tmp_path / "a.png", tmp_path / "o.png", PW, detector)
    header, _, _ = parse_record(read_record(tmp_path / "o.png"))
    assert header.scrypt[0] == 2 ** 17
    # a record made with the old cost (2^15) opens with the right passphrase
    salt = new_salt()
    import base64

    old = RecordHeader(method="blur", salt=base64.b64encode(salt).decode(), image_shape=[8, 8, 3],
                       pixel_sha256="0" * 64, kcv="", scrypt=[2 ** 15, 8, 1])
    rec = build_record(derive_master_key(PW, salt, n=2 ** 15), old, RecordBody(), [])
    assert open_record(rec, PW).header.scrypt[0] == 2 ** 15


def test_folder_keeps_format_skips_its_output_and_anonymized_files(tmp_path, astronaut, detector) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "a.jpg", quality=95)
    Image.fromarray(astronaut).save(src / "b.png")
    Image.fromarray(astronaut).save(src / "c.bmp")
    out = src / "anon"
    s = _run(src, out, PW, detector)
    assert s["written"] == 3 and not s["skipped"]
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "a.jpg.fpx", "b.png", "c.png"]
    assert Image.open(out / "a.jpg").format == "JPEG" and Image.open(out / "b.png").format == "PNG"
    assert s["lossy"] == [str(out / "a.jpg")]
    # a second run does not re-anonymize its own output (inside the input folder); written plain this time,
    # it leaves no stale sidecar of the first run beside the new a.jpg
    s2 = _run(src, out, None, detector)
    assert s2["written"] == 3 and sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png", "c.png"]
    # a file already anonymized elsewhere, dropped into the input folder, is skipped with a note
    (src / "old.png").write_bytes((out / "b.png").read_bytes())
    s3 = _run(src, tmp_path / "o3", None, detector)
    assert s3["written"] == 3 and any("already anonymized" in n for n in s3["notes"])


def test_recover_says_faces_exact_for_jpeg_and_exact_for_png(tmp_path, astronaut, detector) -> None:
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    _run(tmp_path / "a.png", tmp_path / "o.png", PW, detector)
    _run(tmp_path / "a.png", tmp_path / "o.jpg", PW, detector)

    def factory(name):
        return make_method(name)

    r = recover_paths(tmp_path / "o.png", tmp_path / "r.png", PW, factory)
    assert r["modes"] == ["exact"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png").convert("RGB")), astronaut)
    r = recover_paths(tmp_path / "o.jpg", tmp_path / "rj.png", PW, factory)
    assert r["modes"] == ["faces-exact"]
    r = recover_paths(tmp_path / "o.png", tmp_path / "r2.jpg", PW, factory)
    assert r["modes"] == ["faces-exact"]


def test_colour_profile_is_kept(tmp_path, astronaut, detector) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(astronaut).save(tmp_path / "a.jpg", quality=95, icc_profile=icc)
    _run(tmp_path / "a.jpg", tmp_path / "o.jpg", None, detector)
    assert Image.open(tmp_path / "o.jpg").info.get("icc_profile") == icc


def test_float_images_are_refused_not_cast(astronaut, detector) -> None:
    d = Deidentifier(make_method("blur"), detector=detector)
    with pytest.raises(InputError, match="RGB uint8"):
        d.anonymize(astronaut / 255.0, PW)


def test_sidecar_outputs_use_one_quality(tmp_path, astronaut, detector) -> None:
    """The record's pixel hash and the JPEG on disk come from the same encoder settings."""
    from faceprivacy.core.imageio import JPEG_QUALITY, roundtrip

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    _run(tmp_path / "a.png", tmp_path / "o.webp", PW, detector)
    img, rec = read_anonymized(tmp_path / "o.webp")
    assert np.array_equal(roundtrip(img, "WEBP", JPEG_QUALITY).shape, img.shape)
    assert recover_paths(tmp_path / "o.webp", tmp_path / "r.png", PW, make_method)["written"] == 1


def test_plain_rewrite_removes_an_earlier_runs_sidecar(tmp_path, astronaut, detector) -> None:
    """A plain output written over a recoverable one must not leave the old record beside it."""
    Image.fromarray(astronaut).save(tmp_path / "a.jpg", quality=95)
    _run(tmp_path / "a.jpg", tmp_path / "o.jpg", "correct horse battery", detector)
    assert (tmp_path / "o.jpg.fpx").is_file()
    _run(tmp_path / "a.jpg", tmp_path / "o.jpg", None, detector)
    assert not (tmp_path / "o.jpg.fpx").exists()


def test_photos_are_anonymized_and_recovered_with_one_blas_thread(tmp_path, astronaut, detector, monkeypatch) -> None:
    """The donor morph's many small matrix products: anonymize_paths and recover_paths limit BLAS to one thread
    (``core.threads.one_blas_thread``; docs/benchmarks.md) and restore it afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from faceprivacy.deid.methods import Blur

    def blas() -> set:
        return {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"}

    seen = []
    orig = Blur.anonymize

    def anonymize(self, *a, **k):
        seen.append(blas())
        return orig(self, *a, **k)

    monkeypatch.setattr(Blur, "anonymize", anonymize)
    src = tmp_path / "a.png"
    Image.fromarray(astronaut).save(src)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas()
        _run(src, tmp_path / "o.png", PW, detector)
        assert blas() == before
    assert seen and all(s <= {1} for s in seen)
    assert hasattr(recover_paths, "__wrapped__")  # recover (its --plausible strangers) runs under the same limit
