"""MRI I/O: canonical RAS on load, faithful write-back, and clear errors (nothing written) on bad input."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from faceprivacy.cli import main as cli_main
from faceprivacy.core.errors import InputError
from faceprivacy.mri.bids import derivative_path, find_t1w
from faceprivacy.mri.io import load_volume, obliquity_deg, save_like


def _las_img(dtype=np.int16, shape=(20, 24, 22)):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 300, shape).astype(dtype)
    aff = np.diag([-2.0, 2.0, 2.5, 1.0])
    aff[:3, 3] = [20, -30, -25]
    return nib.Nifti1Image(data, aff), data


def test_load_canonical_and_roundtrip(tmp_path):
    img, data = _las_img()
    p = tmp_path / "in.nii.gz"
    nib.save(img, p)
    v = load_volume(p)
    assert nib.aff2axcodes(v.affine) == ("R", "A", "S")
    np.testing.assert_allclose(v.data, data[::-1].astype(np.float32))  # x flipped to R
    out = tmp_path / "out.nii.gz"
    save_like(v, v.data * 2, out)
    back = nib.load(out)
    assert back.get_data_dtype() == np.int16
    np.testing.assert_allclose(back.affine, img.affine)
    assert nib.aff2axcodes(back.affine) == ("L", "A", "S")
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.clip(data * 2, -32768, 32767))


def test_refuses_to_overwrite_input(tmp_path):
    img, _ = _las_img()
    p = tmp_path / "in.nii"
    nib.save(img, p)
    v = load_volume(p)
    with pytest.raises(InputError):
        save_like(v, v.data, p)


def _bad_files(tmp_path):
    img, data = _las_img(np.float32)
    cases = {}
    p = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10, 3), np.float32), np.eye(4)), p)
    cases["4-D"] = p
    d = data.copy()
    d[3, 3, 3] = np.nan
    p = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(d, img.affine), p)
    cases["NaN"] = p
    ob = np.eye(4)
    t = np.radians(40)
    ob[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    p = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(data, ob), p)
    cases["oblique"] = p
    sing = np.eye(4)
    sing[2, 2] = 0.0
    p = tmp_path / "singular.nii"
    hdr_img = nib.Nifti1Image(data, np.eye(4))
    nib.save(hdr_img, p)
    raw = bytearray(p.read_bytes())  # write a singular sform/qform directly into the header
    h = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw)))
    h.set_sform(sing, 1)
    h.set_qform(None, 0)
    raw[:348] = h.binaryblock
    p.write_bytes(bytes(raw))
    cases["singular"] = p
    good = tmp_path / "good.nii.gz"
    nib.save(img, good)
    blob = good.read_bytes()
    p = tmp_path / "truncated.nii.gz"
    p.write_bytes(blob[: len(blob) // 2])
    cases["truncated"] = p
    p = tmp_path / "text.nii.gz"
    p.write_bytes(gzip.compress(b"this is not a nifti file" * 20))
    cases["non-NIfTI gz"] = p
    p = tmp_path / "image.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    cases["non-NIfTI suffix"] = p
    return cases


def test_bad_inputs_raise_input_error(tmp_path):
    for name, p in _bad_files(tmp_path).items():
        with pytest.raises(InputError):
            load_volume(p)
            pytest.fail(f"{name} accepted")


def test_cli_bad_input_writes_nothing(tmp_path, capsys):
    for name, p in _bad_files(tmp_path).items():
        out = tmp_path / f"out_{p.stem}.nii.gz"
        rc = cli_main(["deface", str(p), str(out), "--data", str(tmp_path)])
        assert rc == 2, name
        assert not out.exists(), name
    err = capsys.readouterr().err
    assert "error:" in err
    assert "template" not in err  # the input was rejected before the template was even looked for


def test_obliquity_and_small_real_oblique_accepted():
    a = np.eye(4)
    t = np.radians(3)
    a[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    assert abs(obliquity_deg(a) - 3) < 1e-6


def test_bids_discovery(tmp_path):
    img, _ = _las_img()
    for rel in ("sub-01/anat/sub-01_T1w.nii.gz", "sub-02/ses-a/anat/sub-02_ses-a_run-1_T1w.nii.gz",
                "sub-02/ses-a/anat/sub-02_ses-a_T2w.nii.gz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, tmp_path / rel)
    scans = find_t1w(tmp_path)
    assert [s.stem for s in scans] == ["sub-01", "sub-02_ses-a_run-1"]
    d = derivative_path(tmp_path, scans[1], "mask")
    assert d == tmp_path / "derivatives/faceprivacy/sub-02/ses-a/anat/sub-02_ses-a_run-1_desc-mask_T1w.nii.gz"
    with pytest.raises(InputError):
        find_t1w(tmp_path / "sub-01" / "anat")
