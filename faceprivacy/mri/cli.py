"""MRI commands: ``faceprivacy deface IN OUT [--method mask|shear|reface]`` (a file or a BIDS folder)
and ``faceprivacy mri-audit BIDS_DIR`` (JSON + HTML report with renders)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``deface`` and ``mri-audit`` sub-commands."""
    p = sub.add_parser("deface", help="deface a T1w NIfTI (or every T1w of a BIDS folder) without FSL")
    p.add_argument("input", help="a .nii/.nii.gz file or a BIDS folder")
    p.add_argument("output", nargs="?", help="output .nii.gz (file mode) or derivatives folder (BIDS mode; "
                   "default BIDS_DIR/derivatives/faceprivacy)")
    p.add_argument("--method", choices=("mask", "shear", "reface"), default="mask")
    p.add_argument("--settings", choices=("fast", "careful"), default="fast", help="registration settings")
    p.add_argument("--data", help="datakit root holding the pydeface template (default: auto)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the checks/timings JSON here")
    p.set_defaults(func=_deface_cmd)

    a = sub.add_parser("mri-audit", help="deface, attack and score a BIDS folder: JSON + HTML report")
    a.add_argument("bids_dir")
    a.add_argument("--out", default="out/mri_audit", help="report folder")
    a.add_argument("--methods", nargs="+", default=["mask", "shear", "reface"])
    a.add_argument("--data", help="datakit root (template; MobileFaceNet for re-ID)")
    a.add_argument("--recognizers", nargs="+", default=["dlib", "mobilefacenet"])
    a.add_argument("--weights", help="refacing U-Net weights (default: bundled)")
    a.add_argument("--synthetic", type=int, default=4,
                   help="synthetic identities (deformed copies of each scan) added to the re-ID gallery")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_audit_cmd)


def _deface_cmd(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.fileio import atomic_write_json
    from .bids import derivative_path, find_t1w, write_dataset_description
    from .deface import deface
    from .io import load_volume, save_like
    from .template import load_template

    inp = Path(args.input)
    if inp.is_dir():
        scans = find_t1w(inp)
        out_root = Path(args.output) if args.output else inp / "derivatives" / "faceprivacy"
        # validate everything first: one bad scan must not leave a half-written derivative folder
        vols = [load_volume(s.path) for s in scans]
        tpl = load_template(args.data)
        rows = []
        for s, v in zip(scans, vols, strict=True):
            r = deface(v, tpl, args.method, args.settings, threads=args.threads)
            dest = derivative_path(inp, s, args.method, out_root)
            save_like(v, r.data, dest)
            rows.append({"input": str(s.path), "output": str(dest), **r.checks, **r.timings})
            print(f"{dest}  {r.timings['total_s']:.1f}s  brain voxels removed {r.checks['brain_voxels_removed']}")
        write_dataset_description(out_root, args.method)
        if args.json:
            atomic_write_json(args.json, rows)
        return 0
    if not args.output:
        raise InputError("file mode needs an OUTPUT path")
    v = load_volume(inp)
    tpl = load_template(args.data)
    r = deface(v, tpl, args.method, args.settings, threads=args.threads)
    save_like(v, r.data, args.output)
    info = {"input": str(inp), "output": args.output, "method": args.method, **r.checks, **r.timings}
    if args.json:
        atomic_write_json(args.json, info)
    print(json.dumps({k: (round(x, 3) if isinstance(x, float) else x) for k, x in info.items()}))
    return 0


def _audit_cmd(args: argparse.Namespace) -> int:
    from .audit import run_audit

    res = run_audit(args.bids_dir, args.out, methods=args.methods, data_root=args.data,
                    recognizers=args.recognizers, weights=args.weights, n_synthetic=args.synthetic,
                    seed=args.seed)
    print(f"wrote {res['json']} and {res['html']}")
    return 0
