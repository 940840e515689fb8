"""MRI command surface: output paths refused before any work, BIDS-app arguments, merged
dataset_description.json."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest

from faceprivacy.cli import main as cli_main
from faceprivacy.core.errors import InputError
from faceprivacy.mri.bids import find_t1w, select_participants, write_dataset_description


def _head(p):
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.integers(0, 300, (20, 24, 22)).astype(np.int16), np.eye(4)), p)
    return p


@pytest.mark.parametrize("case", ["same", "png", "folder"])
def test_bad_output_refused_before_any_work(tmp_path, capsys, case):
    src = _head(tmp_path / "in.nii.gz")
    out = {"same": src, "png": tmp_path / "out.png", "folder": tmp_path}[case]
    before = src.read_bytes()
    t0 = time.perf_counter()
    rc = cli_main(["deface", str(src), str(out), "--data", str(tmp_path / "no_datakit")])
    assert rc == 2 and time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert err.startswith("error:") and "template" not in err and "Traceback" not in err
    assert src.read_bytes() == before
    assert not (tmp_path / "out.png").exists()


def test_dataset_description_keeps_every_method(tmp_path):
    write_dataset_description(tmp_path, "mask")
    write_dataset_description(tmp_path, "reface")
    write_dataset_description(tmp_path, "mask")
    d = json.loads((tmp_path / "dataset_description.json").read_text())
    descs = [g["Description"] for g in d["GeneratedBy"]]
    assert descs == ["faceprivacy deface --method reface", "faceprivacy deface --method mask"]
    assert "mask" in d["Name"] and "reface" in d["Name"] and d["DatasetType"] == "derivative"


def _bids(tmp_path):
    for sub in ("01", "02", "03"):
        d = tmp_path / "bids" / f"sub-{sub}" / "anat"
        d.mkdir(parents=True)
        _head(d / f"sub-{sub}_T1w.nii.gz")
    return tmp_path / "bids"


def test_participant_labels(tmp_path):
    scans = find_t1w(_bids(tmp_path))
    assert [s.subject for s in select_participants(scans, ["01", "sub-03"])] == ["sub-01", "sub-03"]
    assert len(select_participants(scans, None)) == 3
    with pytest.raises(InputError, match="04"):
        select_participants(scans, ["04"])


def test_mri_audit_is_a_bids_app(tmp_path, capsys):
    """`mri-audit BIDS_DIR OUT_DIR participant --participant-label X` parses; an unknown label is one
    clean error line (exit 2) and nothing is written."""
    bids = _bids(tmp_path)
    out = tmp_path / "out"
    rc = cli_main(["mri-audit", str(bids), str(out), "participant", "--participant-label", "09",
                   "--data", str(tmp_path / "no_datakit")])
    assert rc == 2 and "09" in capsys.readouterr().err
    assert not out.exists()
    from faceprivacy.cli import build_parser
    from faceprivacy.mri.cli import audit_output_dir

    default = bids / "derivatives" / "faceprivacy"
    a = build_parser().parse_args(["mri-audit", str(bids), "participant", "--participant-label", "01"])
    assert audit_output_dir(a.bids_dir, a.output_dir) == default and a.participant_label == ["01"]
    a = build_parser().parse_args(["mri-audit", str(bids)])
    assert audit_output_dir(a.bids_dir, a.output_dir) == default and a.analysis_level == "participant"
    a = build_parser().parse_args(["mri-audit", str(bids), str(out), "participant"])
    assert audit_output_dir(a.bids_dir, a.output_dir) == out


def test_eval_deface_without_datakit_is_one_clean_error(tmp_path, capsys):
    rc = cli_main(["eval-deface", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "datakit" in capsys.readouterr().err
    rc = cli_main(["eval-deface", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--heads", "nobody"])
    assert rc == 2
    assert not (tmp_path / "o").exists()
