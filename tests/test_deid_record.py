"""The recovery record: nothing face-derived in the public header (linkage attack), typed errors for a
wrong passphrase vs a tampered record, clean one-line errors for a corrupt header, version-1 records."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from faceprivacy.core.errors import InputError
from faceprivacy.deid.record import (
    MAGIC,
    RecordHeader,
    TamperedRecordError,
    WrongPassphraseError,
    key_check_value,
    open_record,
    parse_record,
)


@pytest.fixture(scope="module")
def people(celeba_root):
    """Frames of 3 validation people x 2 photos each (one face per 200x200 frame)."""
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.core.imageio import load_image

    val = identity_split(celeba_subset(celeba_root))["val"]
    ids = sorted(set(val.labels.tolist()))[:3]
    out = {}
    for i in ids:
        frames = []
        for p in [p for p, lab in zip(val.paths, val.labels, strict=True) if lab == i][:2]:
            img = np.full((200, 200, 3), 120, np.uint8)
            img[44:156, 44:156] = load_image(p)
            frames.append(img)
        out[int(i)] = frames
    return out


@pytest.fixture(scope="module")
def records(people):
    from faceprivacy.core.detect import FaceDetector
    from faceprivacy.deid.methods import make_method
    from faceprivacy.deid.pipeline import Deidentifier

    d = Deidentifier(make_method("blur"), detector=FaceDetector())
    return d, {(i, k): d.anonymize(f, b"pw") for i, fr in people.items() for k, f in enumerate(fr)}


def _numbers(x):
    if isinstance(x, bool):
        return []
    if isinstance(x, int | float):
        return [x]
    if isinstance(x, dict):
        return [v for val in x.values() for v in _numbers(val)]
    if isinstance(x, list):
        return [v for val in x for v in _numbers(val)]
    return []


def test_header_linkage_attack_finds_nothing(records):
    """An attacker holding the public headers cannot tell two photos of one person from two people: with
    the random salt, its key-check value and the pixel digest removed, every header is byte-identical."""
    _, recs = records
    stripped = {}
    for key, out in recs.items():
        header, hj, _ = parse_record(out.record)
        d = json.loads(hj)
        assert not any(isinstance(v, float) for v in _numbers(d))  # no face-derived floats
        assert set(d) == {"version", "method", "salt", "image_shape", "pixel_sha256", "kcv", "generator",
                          "encryptor", "scrypt"}
        for k in ("salt", "kcv", "pixel_sha256"):
            d.pop(k)
        stripped[key] = json.dumps(d, sort_keys=True)
    assert len(set(stripped.values())) == 1
    # and the random fields differ between every two records, same person or not
    salts = [parse_record(o.record)[0].salt for o in recs.values()]
    assert len(set(salts)) == len(salts)


def test_wrong_passphrase_vs_tampered(records, people):
    d, recs = records
    out = recs[(next(iter(people)), 0)]
    with pytest.raises(WrongPassphraseError):
        open_record(out.record, b"not it")
    # a changed key-check value with the right passphrase is tampering, never "wrong passphrase"
    header, hj, sealed = parse_record(out.record)
    bad_kcv = "0" * 16 if header.kcv != "0" * 16 else "1" * 16
    hj2 = hj.replace(header.kcv.encode(), bad_kcv.encode())
    rec2 = MAGIC + struct.pack("<I", len(hj2)) + hj2 + sealed
    with pytest.raises(TamperedRecordError):
        open_record(rec2, b"pw")
    with pytest.raises(TamperedRecordError):
        d.recover(out.image, rec2, b"pw", plausible=True)
    # a changed method name: the key-check value matches, decryption fails -> tampered
    hj3 = hj.replace(b'"method":"blur"', b'"method":"mask"')
    with pytest.raises(TamperedRecordError):
        open_record(MAGIC + struct.pack("<I", len(hj3)) + hj3 + sealed, b"pw")


@pytest.mark.parametrize("field,value", [
    ("scrypt", ["a", 8, 1]), ("scrypt", [2 ** 40, 8, 1]), ("scrypt", [3000, 8, 1]), ("scrypt", 5),
    ("salt", "!!notbase64"), ("salt", 7), ("image_shape", [10, "x", 3]), ("kcv", 12), ("kcv", "zz"),
    ("version", "2"), ("method", None), ("pixel_sha256", "00"),
])
def test_corrupt_header_fields_are_one_clean_error(records, people, field, value):
    _, recs = records
    out = recs[(next(iter(people)), 0)]
    _, hj, sealed = parse_record(out.record)
    d = json.loads(hj)
    d[field] = value
    hj2 = json.dumps(d).encode()
    with pytest.raises(InputError):
        open_record(MAGIC + struct.pack("<I", len(hj2)) + hj2 + sealed, b"pw")


def test_cli_tampered_header_exits_2_without_traceback(tmp_path, records, people, capsys):
    from faceprivacy.cli import main
    from faceprivacy.deid.record import encode_png_with_record

    _, recs = records
    out = recs[(next(iter(people)), 0)]
    _, hj, sealed = parse_record(out.record)
    d = json.loads(hj)
    d["scrypt"] = ["N", 8, 1]
    hj2 = json.dumps(d).encode()
    (tmp_path / "t.png").write_bytes(encode_png_with_record(out.image, MAGIC + struct.pack("<I", len(hj2))
                                                            + hj2 + sealed))
    (tmp_path / "pw.txt").write_text("pw\n")
    rc = main(["recover", str(tmp_path / "t.png"), str(tmp_path / "r.png"), "--passphrase-file",
               str(tmp_path / "pw.txt"), "--plausible"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "scrypt" in err
    assert not (tmp_path / "r.png").exists()


def test_version_1_records_still_open(records, people):
    """A version-1 record (faces in the public header, whole header as associated data) opens."""
    from faceprivacy.core.keys import derive_master_key, seal, subkey
    from faceprivacy.deid.record import _png_bytes

    d, recs = records
    out = recs[(next(iter(people)), 0)]
    header, _, _ = parse_record(out.record)
    opened = open_record(out.record, b"pw")
    master = derive_master_key(b"pw", header.salt_bytes, *header.scrypt)
    h1 = {"method": "blur", "salt": header.salt, "image_shape": header.image_shape,
          "pixel_sha256": header.pixel_sha256, "kcv": key_check_value(master), "generator": None,
          "encryptor": None, "consistent": False, "has_pixels": True, "scrypt": header.scrypt, "version": 1,
          "faces": [{"box": f.box, "affine": f.affine, "crop_size": f.crop_size, "key_purpose": f.key_purpose,
                     "region": f.region, "z_enc": None, "z_shape": None} for f in opened.body.faces]}
    hj = json.dumps(h1, separators=(",", ":"), sort_keys=True).encode()
    png = _png_bytes(opened.originals[0])
    payload = struct.pack("<I", 1) + struct.pack("<I", len(png)) + png
    rec = MAGIC + struct.pack("<I", len(hj)) + hj + seal(subkey(master, "deid/seal"), payload, aad=MAGIC + hj)
    back, mode = d.recover(out.image, rec, b"pw")
    frame = people[next(iter(people))][0]
    assert mode == "exact" and np.array_equal(back, frame)
    with pytest.raises(WrongPassphraseError):
        open_record(rec, b"nope")
    assert base64.b64decode(header.salt)  # the salt is plain base64


def test_header_roundtrip_validates():
    h = RecordHeader(method="donor", salt=base64.b64encode(b"x" * 16).decode(), image_shape=[4, 4, 3],
                     pixel_sha256="0" * 64, kcv="0" * 16)
    assert RecordHeader.from_json(h.to_json()) == h
