"""Full-frame anonymize/recover on real CelebA faces (tiny random generator), bad inputs, CLI."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from deid_tiny import TinyGenerator, tiny_encryptor

from faceprivacy.core.errors import AuthenticationError, InputError, NoFaceError
from faceprivacy.deid.methods import Riddle, make_method
from faceprivacy.deid.pipeline import Deidentifier, read_anonymized, write_anonymized
from faceprivacy.deid.record import (
    PNG_KEY,
    TamperedRecordError,
    WrongPassphraseError,
    parse_record,
    read_record,
    sidecar_path,
)


@pytest.fixture(scope="module")
def canvas(celeba_root):
    """Six real CelebA faces (two identities' worth of photos) on one 300x420 canvas."""
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.core.imageio import load_image

    ds = celeba_subset(celeba_root)
    img = np.full((300, 420, 3), 200, np.uint8)
    for i, p in enumerate(ds.paths[:6]):
        y, x = (i // 3) * 150 + 20, (i % 3) * 140 + 14
        img[y:y + 112, x:x + 112] = load_image(p)
    return img


@pytest.fixture(scope="module")
def detector():
    from faceprivacy.core.detect import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="module")
def riddle():
    return Riddle(TinyGenerator(), tiny_encryptor())


@pytest.fixture(scope="module")
def anonymized(canvas, detector, riddle):
    d = Deidentifier(riddle, detector=detector)
    return d, d.anonymize(canvas, b"correct horse")


def test_many_faces_anonymized_and_recovered_exactly(canvas, anonymized):
    d, out = anonymized
    assert out.n_faces == 6
    assert out.image.shape == canvas.shape
    for f in out.faces:  # every face region changed
        x1, y1, x2, y2 = f["region"]
        assert np.abs(out.image[y1:y2, x1:x2].astype(int) - canvas[y1:y2, x1:x2]).mean() > 5
    rec, mode = d.recover(out.image, out.record, b"correct horse")
    assert mode == "exact" and np.array_equal(rec, canvas)


def test_latent_recovery_matches_reconstruction(canvas, anonymized, riddle):
    import torch

    from faceprivacy.core.align import arcface_crop
    from faceprivacy.core.keys import subkey
    from faceprivacy.deid.record import open_record

    d, out = anonymized
    rec, mode = d.recover(out.image, out.record, b"correct horse", from_latent=True)
    assert mode == "latent" and not np.array_equal(rec, out.image)
    # the sealed encrypted latent decrypts exactly to the generator's latent of the original crop
    opened = open_record(out.record, b"correct horse")
    master = opened.master
    faces = d.detect(canvas)
    for face in opened.body.faces:
        det = min(faces, key=lambda f: np.abs(f.box - np.asarray(face.box)).sum())
        crop, _ = arcface_crop(canvas, det.arcface5, 32)
        z = riddle.encode(crop[None]).double()
        ze = torch.as_tensor(np.frombuffer(base64.b64decode(face.z_enc), "<f8").copy().reshape(1, *face.z_shape))
        back = riddle.encryptor.decrypt(ze, *riddle.face_keys([subkey(master, face.key_purpose)]))
        assert (back - z).abs().max() < 1e-4  # float32 encoder batch effects only


def test_wrong_passphrase_and_plausible(canvas, anonymized):
    d, out = anonymized
    with pytest.raises(WrongPassphraseError):
        d.recover(out.image, out.record, b"wrong")
    # the tiny random generator draws no detectable face, so the face positions are given here
    rec, mode = d.recover(out.image, out.record, b"wrong", plausible=True, faces=d.detect(canvas))
    assert mode == "plausible"
    assert np.abs(rec.astype(int) - out.image).mean() > 1  # another stranger pasted in


def test_tampered_record_and_image(anonymized):
    d, out = anonymized
    rec = bytearray(out.record)
    rec[-40] ^= 1  # payload
    with pytest.raises(TamperedRecordError):
        d.recover(out.image, bytes(rec), b"correct horse")
    with pytest.raises(TamperedRecordError):  # never a plausible stranger for a tampered record
        d.recover(out.image, bytes(rec), b"correct horse", plausible=True)
    header, hj, _ = parse_record(out.record)
    hj2 = hj.replace(b'"method":"riddle"', b'"method":"riddlf"')
    rec2 = out.record[:8] + hj2 + out.record[8 + len(hj):]
    with pytest.raises(TamperedRecordError):
        d.recover(out.image, rec2, b"correct horse", plausible=True)
    with pytest.raises(InputError):
        d.recover(out.image, b"XXXX" + out.record[4:], b"correct horse")
    img = out.image.copy()
    img[0, 0] ^= 1
    with pytest.raises(AuthenticationError, match="changed"):
        d.recover(img, out.record, b"correct horse")


def test_no_face_and_tiny_face(canvas, detector, riddle):
    d = Deidentifier(riddle, detector=detector)
    with pytest.raises(NoFaceError):
        d.anonymize(np.full((120, 160, 3), 90, np.uint8), b"pw")
    # a 16-px face is below the HOG detector's reach: documented as "not found" (NoFaceError, nothing written)
    from PIL import Image

    small = np.asarray(Image.fromarray(canvas[20:132, 14:126]).resize((16, 16)))
    img = np.full((100, 100, 3), 200, np.uint8)
    img[40:56, 40:56] = small
    with pytest.raises(NoFaceError):
        d.anonymize(img, b"pw")


@pytest.mark.parametrize("name", ["blur", "pixelate", "mask"])
def test_baselines_roundtrip(canvas, detector, name):
    d = Deidentifier(make_method(name), detector=detector)
    out = d.anonymize(canvas, b"pw")
    assert out.n_faces == 6 and not np.array_equal(out.image, canvas)
    rec, mode = d.recover(out.image, out.record, b"pw")
    assert mode == "exact" and np.array_equal(rec, canvas)
    with pytest.raises(AuthenticationError):  # nothing to decrypt without the key
        d.recover(out.image, out.record, b"nope", plausible=True)


def test_consistent_mode_one_key_per_person(canvas, detector, riddle):
    from faceprivacy.core.keys import derive_master_key
    from faceprivacy.deid.record import open_record

    d = Deidentifier(riddle, detector=detector)
    salt = b"s" * 16
    master = derive_master_key(b"pw", salt)
    a = d.anonymize(canvas, b"pw", salt=salt, master=master, consistent=True)
    b = d.anonymize(canvas, b"pw", salt=salt, master=master, consistent=True)
    c = d.anonymize(canvas, b"pw", salt=salt, master=master, consistent=False)
    assert np.array_equal(a.image, b.image)  # the same people later in the batch -> the same strangers
    assert not np.array_equal(a.image, c.image)
    # the canvas holds six photos of a few people: faces are grouped into per-person keys, never one
    # batch key, and two faces of one photo never share one
    purposes = [f.key_purpose for f in open_record(a.record, b"pw").body.faces]
    assert all(p.startswith("deid/person/") for p in purposes)
    assert len(set(purposes)) == len(purposes)
    # the key labels are sealed: the public header names no face and no key
    _, hj, _ = parse_record(a.record)
    assert b"person" not in hj and b"box" not in hj


def test_files_png_chunk_and_jpeg_sidecar(tmp_path, canvas, anonymized, detector):
    d, out = anonymized
    write_anonymized(tmp_path / "a.png", out.image, out.record)
    from PIL import Image

    with Image.open(tmp_path / "a.png") as im:
        assert PNG_KEY in im.text
    img, rec = read_anonymized(tmp_path / "a.png")
    assert np.array_equal(d.recover(img, rec, b"correct horse")[0], canvas)
    # JPEG: record goes to a sidecar and binds to the decoded JPEG pixels
    dj = Deidentifier(make_method("blur"), detector=detector)
    o = dj.anonymize(canvas, b"pw", out_ext=".jpg")
    write_anonymized(tmp_path / "b.jpg", o.image, o.record)
    assert sidecar_path(tmp_path / "b.jpg").is_file()
    img, rec = read_anonymized(tmp_path / "b.jpg")
    back, mode = dj.recover(img, rec, b"pw")
    regions = [f["region"] for f in o.faces]
    x1, y1, x2, y2 = regions[0]
    assert np.array_equal(back[y1:y2, x1:x2], canvas[y1:y2, x1:x2])  # faces restored exactly
    Image.fromarray(canvas).save(tmp_path / "plain.png")
    with pytest.raises(InputError, match="no faceprivacy recovery record"):
        read_record(tmp_path / "plain.png")


def test_cli_end_to_end(tmp_path, canvas, monkeypatch, riddle):
    from PIL import Image

    from faceprivacy.cli import main
    from faceprivacy.deid import cli as dcli

    monkeypatch.setattr(dcli, "load_riddle", lambda *a, **k: riddle)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(canvas).save(src / "group.jpg", quality=97)
    Image.fromarray(np.full((64, 64, 3), 30, np.uint8)).save(src / "empty.png")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    pw = tmp_path / "pw.txt"
    pw.write_text("correct horse\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("battery staple\n")
    assert main(["-q", "anonymize", str(src / "group.jpg"), str(src / "group.jpg"), "--passphrase-file",
                 str(pw)]) == 2  # refuses to overwrite the original
    assert main(["-q", "anonymize", str(src / "corrupt.jpg"), str(tmp_path / "c.png"), "--passphrase-file",
                 str(pw), "--method", "blur"]) == 2
    assert main(["-q", "anonymize", str(src / "empty.png"), str(tmp_path / "e.png"), "--passphrase-file",
                 str(pw), "--method", "blur"]) == 2
    assert not (tmp_path / "e.png").exists()
    # two inputs were skipped (no face, corrupt): exit 3; PNG output for a bit-exact round trip
    assert main(["-q", "anonymize", str(src), str(tmp_path / "out"), "--passphrase-file", str(pw),
                 "--format", "png"]) == 3
    out = tmp_path / "out" / "group.png"
    assert out.is_file() and not (tmp_path / "out" / "empty.png").exists()
    assert main(["-q", "recover", str(out), str(tmp_path / "r.png"), "--passphrase-file", str(pw)]) == 0
    from faceprivacy.core.imageio import load_image

    orig = load_image(src / "group.jpg")
    assert np.array_equal(load_image(tmp_path / "r.png"), orig)
    assert main(["-q", "recover", str(out), str(tmp_path / "w.png"), "--passphrase-file", str(bad)]) == 2
    assert not (tmp_path / "w.png").exists()
    assert main(["-q", "recover", str(out), str(tmp_path / "w.png"), "--passphrase-file", str(bad),
                 "--plausible"]) == 0
    assert not np.array_equal(load_image(tmp_path / "w.png"), orig)


def test_crop_and_paste_back_keep_the_detail_of_the_photo():
    """A face cropped from a photo at a sub-pixel placement and pasted back unchanged keeps its fine detail
    (bilinear sampling twice smoothed it: the pasted face read softer than the photo around it)."""
    from scipy.ndimage import gaussian_filter, laplace

    from faceprivacy.core.align import ARCFACE_TEMPLATE
    from faceprivacy.deid.pipeline import _default_paste, padded_crop

    rng = np.random.default_rng(3)
    tex = gaussian_filter(rng.standard_normal((220, 220, 3)), (1.0, 1.0, 0))  # photo-like fine texture
    img = np.clip(128 + 60 * tex / tex.std(), 0, 255).astype(np.uint8)
    five = ARCFACE_TEMPLATE * 1.37 + [31.3, 27.8]  # a face ~150 px wide, off the pixel grid
    crop, m = padded_crop(img, five, 168, pad=0.25)
    out = _default_paste(img, crop, m, np.ones((168, 168)))
    box = (slice(60, 160), slice(60, 160))

    def energy(a):
        return np.abs(laplace(a[box].astype(np.float64).mean(-1))).mean()

    assert energy(out) > 0.85 * energy(img)  # bilinear twice kept 60 % here, bicubic 101 %
    assert np.abs(out[box].astype(int) - img[box]).mean() < 25


def test_warp_affine_bicubic_and_bilinear_agree_on_smooth_images():
    from faceprivacy.core.align import warp_affine

    yy, xx = np.mgrid[0:64, 0:64]
    img = np.stack([xx * 3, yy * 3, (xx + yy) * 1.5], -1).astype(np.uint8)
    m = np.array([[1.1, 0.05, -2.3], [-0.05, 1.1, 1.7]])
    a = warp_affine(img, m, (64, 64)).astype(int)
    b = warp_affine(img, m, (64, 64), resample="bicubic").astype(int)
    assert np.abs(a - b)[8:56, 8:56].max() <= 2
