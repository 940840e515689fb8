"""File and BIDS front-end of the defacers: every input and output is checked before the expensive work,
and a BIDS run is one unit (all scans defaced, or nothing written).

``deface_file``: refuse a bad output path (suffix, existing folder, the input itself) before loading the
template; load, deface, write like the input. ``deface_bids``: validate every scan and destination first,
deface each into a staging folder inside the derivatives folder, and move the files into place only
when all succeeded; ``dataset_description.json`` keeps the methods of earlier runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from .bids import derivative_path, find_t1w, select_participants, write_dataset_description
from .deface import METHODS, deface
from .io import check_output_path, load_volume, save_like
from .template import load_template


@dataclass(frozen=True)
class DefaceOptions:
    """The options shared by file and BIDS mode."""

    method: str = "mask"
    settings: str = "fast"
    data_root: str | Path | None = None
    threads: int | None = 2

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.settings not in ("fast", "careful"):
            raise InputError(f"unknown settings {self.settings!r}; choose fast or careful")


def _row(inp: Path, out: Path, method: str, r) -> dict:
    return {"input": str(inp), "output": str(out), "method": method, **r.checks, **r.timings}


def deface_file(inp: str | Path, out: str | Path, *, options: DefaceOptions = DefaceOptions()) -> dict:
    """Deface one NIfTI file into ``out`` (checked before anything else is done)."""
    inp, out = Path(inp), Path(out)
    check_output_path(out, [inp])
    v = load_volume(inp)
    tpl = load_template(options.data_root)
    r = deface(v, tpl, method=options.method, settings=options.settings, threads=options.threads)
    save_like(v, r.data, out)
    return _row(inp, out, options.method, r)


def deface_bids(bids_dir: str | Path, out_root: str | Path | None = None, *,
                options: DefaceOptions = DefaceOptions(), participant_labels: list[str] | None = None,
                on_scan=None) -> list[dict]:
    """Deface every T1w of a BIDS folder into ``out_root`` (default BIDS_DIR/derivatives/faceprivacy).

    Validates all scans and destinations first; the results are written to a staging folder and moved
    into place only when every scan was defaced, so a refusal (e.g. brain in the cut) leaves the
    derivative folder as it was. ``on_scan(row)`` is called after each scan (progress)."""
    bids = Path(bids_dir)
    scans = select_participants(find_t1w(bids), participant_labels)
    root = Path(out_root) if out_root else bids / "derivatives" / "faceprivacy"
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder")
    dests = [derivative_path(bids, s, options.method, root) for s in scans]
    for s, d in zip(scans, dests, strict=True):
        check_output_path(d, [s.path])
    vols = [load_volume(s.path) for s in scans]  # every scan readable before any work
    tpl = load_template(options.data_root)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".faceprivacy-staging-", dir=root))
    rows: list[dict] = []
    try:
        staged = []
        for s, v, d in zip(scans, vols, dests, strict=True):
            r = deface(v, tpl, method=options.method, settings=options.settings, threads=options.threads)
            tmp = stage / d.relative_to(root)
            save_like(v, r.data, tmp)
            staged.append((tmp, d))
            rows.append(_row(s.path, d, options.method, r))
            if on_scan is not None:
                on_scan(rows[-1])
        for tmp, d in staged:
            d.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, d)
        write_dataset_description(root, options.method)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(stage)
    return rows
