"""A written scan keeps every voxel outside the removed region byte-identical: same header bytes (NIfTI
version, q/sform fields, dtype, scl_slope/scl_inter), same stored values. Real datakit heads plus
synthetic scaled, NIfTI-2, qform-0 and big-endian files."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from faceprivacy.mri.io import load_volume, save_like


def _raw_bytes(p: Path) -> bytes:
    b = p.read_bytes()
    return gzip.decompress(b) if p.name.endswith(".gz") else b


def _zero_block(v):
    """Zero a block in the middle of the front (a stand-in for a defacer's cut)."""
    d = v.data.copy()
    nx, ny, nz = v.shape
    changed = np.zeros(v.shape, bool)
    changed[nx // 3: 2 * nx // 3, 2 * ny // 3:, : nz // 3] = True
    d[changed] = 0
    return d, changed


def _check_identical_outside(src: Path, out: Path, v, changed) -> None:
    a, b = nib.load(src), nib.load(out)
    assert type(a) is type(b)
    off = int(a.dataobj.offset)
    ra, rb = _raw_bytes(src), _raw_bytes(out)
    assert ra[:off] == rb[:off], "header/extension bytes changed"
    assert a.dataobj.slope == b.dataobj.slope and a.dataobj.inter == b.dataobj.inter
    assert a.get_data_dtype() == b.get_data_dtype()
    ua = np.asanyarray(a.dataobj.get_unscaled())
    ub = np.asanyarray(b.dataobj.get_unscaled())
    from faceprivacy.mri.io import to_source_orientation

    ch = to_source_orientation(v, changed).reshape(ua.shape)
    assert np.array_equal(ua[~ch], ub[~ch])
    # the removed voxels read back as (the nearest representable value to) zero
    assert np.all(np.abs(np.asanyarray(b.dataobj)[ch]) <= abs(a.dataobj.slope) / 2 + 1e-6)


def test_every_datakit_head_unchanged_outside_the_cut(datakit, tmp_path):
    heads = sorted((datakit / "mri_heads").glob("*/*.nii*"))
    assert len(heads) >= 4
    for src in heads:
        v = load_volume(src)
        d, changed = _zero_block(v)
        out = tmp_path / f"{src.name.split('.')[0]}_out.nii.gz"
        save_like(v, d, out)
        _check_identical_outside(src, out, v, changed)


def test_spm_scaled_uint8_keeps_its_values(datakit, tmp_path):
    """SPM's single_subj_T1.nii is uint8 with slope 1/256: values are real, not 0/1."""
    src = datakit / "mri_heads" / "colin27_spm12_2mm" / "single_subj_T1.nii"
    v = load_volume(src)
    assert 0.5 < float(v.data.max()) <= 1.0
    out = tmp_path / "spm.nii"
    save_like(v, v.data, out)
    assert _raw_bytes(out) == src.read_bytes()[: len(_raw_bytes(out))]


def _synthetic(kind: str, tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    data = rng.integers(1, 255, (24, 28, 20)).astype(np.uint8)
    aff = np.diag([-2.0, 2.0, 2.5, 1.0])
    aff[:3, 3] = [24, -30, -25]
    if kind == "nifti2":
        img = nib.Nifti2Image(data.astype(np.int16), aff)
    else:
        img = nib.Nifti1Image(data, aff)
    if kind == "scaled_uint8":
        img.header.set_slope_inter(1 / 255, 0.0)
    if kind == "scaled_int16_inter":
        img = nib.Nifti1Image(data.astype(np.int16) * 10, aff)
        img.header.set_slope_inter(0.37, -12.5)
    if kind == "qform0":
        img.header.set_qform(None, code=0)
        hdr = img.header
        hdr["quatern_b"], hdr["quatern_c"], hdr["qoffset_x"] = 0.25, -0.5, 123.0  # unused junk must stay
        img.header.set_sform(aff, code=2)
    if kind == "float32":
        img = nib.Nifti1Image(data.astype(np.float32) * 1.37, aff)
    p = tmp_path / f"{kind}.nii{'.gz' if kind != 'qform0' else ''}"
    nib.save(img, p)
    if kind == "big_endian":
        img2 = nib.Nifti1Image(data.astype(">i2"), aff, nib.Nifti1Header(endianness=">"))
        nib.save(img2, p)
        assert nib.load(p).header.endianness == ">"
    return p


@pytest.mark.parametrize("kind", ["scaled_uint8", "scaled_int16_inter", "nifti2", "qform0", "float32",
                                  "big_endian"])
def test_synthetic_files_unchanged_outside_the_cut(kind, tmp_path):
    src = _synthetic(kind, tmp_path)
    v = load_volume(src)
    d, changed = _zero_block(v)
    out = tmp_path / f"{kind}_out.nii.gz"
    save_like(v, d, out)
    _check_identical_outside(src, out, v, changed)
    if kind == "nifti2":
        assert isinstance(nib.load(out), nib.Nifti2Image)
    if kind == "qform0":
        h = nib.load(out).header
        assert int(h["qform_code"]) == 0 and float(h["quatern_b"]) == 0.25 and float(h["qoffset_x"]) == 123.0
    if kind == "scaled_uint8":
        back = nib.load(out).get_fdata()
        assert back.max() <= 1.0 and len(np.unique(back)) > 100  # not rounded to 0/1


def test_unchanged_write_is_the_same_file_content(tmp_path):
    src = _synthetic("scaled_int16_inter", tmp_path)
    v = load_volume(src)
    out = tmp_path / "same.nii.gz"
    save_like(v, v.data, out)
    assert _raw_bytes(out) == _raw_bytes(src)


@pytest.mark.parametrize("kind", ["LPS", "uint8_scaled", "1x1x1.5mm", "rotx20"])
def test_eval_copies_hold_the_same_head(kind, tmp_path):
    """eval-deface's re-stored copies describe the same head in world space (LPS/uint8 exactly, up to
    quantisation) and are written as the kind says."""
    from faceprivacy.mri.evaluate import make_copy, unchanged_identical

    src = _synthetic("float32", tmp_path)
    v = load_volume(src)
    p, g = make_copy(src, kind, tmp_path / f"copy_{kind}.nii.gz")
    c = load_volume(p)
    img = nib.load(p)
    if kind == "LPS":
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        np.testing.assert_allclose(c.affine, v.affine, atol=1e-5)
        np.testing.assert_allclose(c.data, v.data, atol=0.5)
    if kind == "uint8_scaled":
        assert img.get_data_dtype() == np.uint8 and img.dataobj.slope != 1.0
        np.testing.assert_allclose(c.data, v.data, atol=float(v.data.max()) / 255)
    if kind == "1x1x1.5mm":
        np.testing.assert_allclose(img.header.get_zooms(), (1.0, 1.0, 1.5))
    if kind == "rotx20":
        assert g is not None and abs(np.degrees(np.arccos(g[1, 1])) - 20) < 1e-6
    d, changed = _zero_block(c)
    out = tmp_path / f"out_{kind}.nii"
    save_like(c, d, out)
    assert unchanged_identical(p, out, c, changed)
    assert not unchanged_identical(p, out, c, np.zeros_like(changed))
