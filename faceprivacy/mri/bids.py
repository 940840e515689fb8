"""BIDS batch mode: find ``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` and map each to its place under
``derivatives/faceprivacy/`` (same sub/ses/anat layout, ``desc-<method>`` entity added)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from ..core.fileio import atomic_write_text

T1W_RE = re.compile(r"^(?P<stem>sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_[a-z]+-[A-Za-z0-9]+)*)_T1w\.nii(\.gz)?$")


@dataclass
class BidsT1:
    """One T1w scan of a BIDS dataset."""

    path: Path
    subject: str
    session: str | None
    rel_dir: Path  # sub-X[/ses-Y]/anat
    stem: str  # file name without _T1w.nii[.gz]


def find_t1w(bids_dir: str | Path) -> list[BidsT1]:
    """All T1w scans of a BIDS folder (sorted); raises InputError if it is not a BIDS folder."""
    root = Path(bids_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    out: list[BidsT1] = []
    for p in sorted(root.glob("sub-*/anat/*_T1w.nii*")) + sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii*")):
        m = T1W_RE.match(p.name)
        if not m:
            continue
        sub = p.relative_to(root).parts[0]
        ses = p.relative_to(root).parts[1] if p.relative_to(root).parts[1].startswith("ses-") else None
        out.append(BidsT1(p, sub, ses, p.parent.relative_to(root), m.group("stem")))
    if not out:
        raise InputError(f"{root}: no sub-*/[ses-*/]anat/*_T1w.nii[.gz] files found")
    return out


def derivative_path(bids_dir: str | Path, scan: BidsT1, method: str, out_root: str | Path | None = None) -> Path:
    """``derivatives/faceprivacy/sub-X/[ses-Y/]anat/<stem>_desc-<method>_T1w.nii.gz``."""
    base = Path(out_root) if out_root else Path(bids_dir) / "derivatives" / "faceprivacy"
    return base / scan.rel_dir / f"{scan.stem}_desc-{method}_T1w.nii.gz"


def write_dataset_description(deriv_root: str | Path, method: str) -> Path:
    """The derivative dataset's ``dataset_description.json`` (BIDS requires one)."""
    from .. import __version__

    d = {"Name": f"faceprivacy defaced ({method})", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
         "GeneratedBy": [{"Name": "faceprivacy", "Version": __version__,
                          "Description": f"faceprivacy deface --method {method}"}]}
    p = Path(deriv_root) / "dataset_description.json"
    atomic_write_text(p, json.dumps(d, indent=2) + "\n")
    return p
