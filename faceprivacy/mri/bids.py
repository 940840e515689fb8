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


def select_participants(scans: list[BidsT1], labels: list[str] | None) -> list[BidsT1]:
    """The scans of the given participant labels (``01`` or ``sub-01``); all scans when ``labels`` is
    empty. Raises InputError for a label with no T1w scan."""
    if not labels:
        return scans
    want = {lab.removeprefix("sub-") for lab in labels}
    have = {s.subject.removeprefix("sub-") for s in scans}
    missing = sorted(want - have)
    if missing:
        raise InputError(f"no T1w scan for participant(s) {', '.join(missing)} "
                         f"(found: {', '.join(sorted(have))})")
    return [s for s in scans if s.subject.removeprefix("sub-") in want]


def write_dataset_description(deriv_root: str | Path, method: str) -> Path:
    """The derivative dataset's ``dataset_description.json`` (BIDS requires one). An existing one from an
    earlier run is merged: its GeneratedBy entries (one per method) are kept."""
    from .. import __version__

    p = Path(deriv_root) / "dataset_description.json"
    entry = {"Name": "faceprivacy", "Version": __version__, "Description": f"faceprivacy deface --method {method}"}
    gen: list[dict] = []
    if p.is_file():
        try:
            old = json.loads(p.read_text())
            gen = [g for g in old.get("GeneratedBy", []) if isinstance(g, dict)]
        except (ValueError, AttributeError):
            gen = []
    gen = [g for g in gen if g.get("Description") != entry["Description"]] + [entry]
    methods = [g["Description"].rsplit(" ", 1)[-1] for g in gen if str(g.get("Description", "")).startswith(
        "faceprivacy deface --method ")]
    d = {"Name": f"faceprivacy defaced ({', '.join(methods) or method})", "BIDSVersion": "1.9.0",
         "DatasetType": "derivative", "GeneratedBy": gen}
    atomic_write_text(p, json.dumps(d, indent=2) + "\n")
    return p
