"""MRI commands: ``faceprivacy deface IN OUT [--method mask|shear|reface]`` (a file or a BIDS folder)
and ``faceprivacy mri-audit BIDS_DIR [OUT_DIR] [participant]`` (a BIDS app: JSON + HTML report with
renders). The handlers parse, call ``mri.batch`` / ``mri.audit`` and print."""

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
    p.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="BIDS mode: only these participants (01 or sub-01)")
    p.add_argument("--json", help="also write the checks/timings JSON here")
    p.set_defaults(func=_deface_cmd)

    a = sub.add_parser("mri-audit", help="deface, attack and score a BIDS folder: JSON + HTML report "
                       "(a BIDS app: mri-audit BIDS_DIR [OUT_DIR] [participant])")
    a.add_argument("bids_dir", help="BIDS dataset folder")
    a.add_argument("output_dir", nargs="?",
                   help="report folder (default BIDS_DIR/derivatives/faceprivacy)")
    a.add_argument("analysis_level", nargs="?", choices=("participant",), default="participant",
                   help="BIDS app analysis level (only 'participant')")
    a.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="only these participants (01 or sub-01); the others still join the re-ID gallery")
    a.add_argument("--methods", nargs="+", default=["mask", "shear", "reface"], choices=("mask", "shear", "reface"))
    a.add_argument("--data", help="datakit root (template; MobileFaceNet for re-ID)")
    a.add_argument("--recognizers", nargs="+", default=["dlib", "mobilefacenet"])
    a.add_argument("--weights", help="refacing U-Net weights (default: bundled)")
    a.add_argument("--synthetic", type=int, default=4,
                   help="synthetic identities (deformed copies of each scan) added to the re-ID gallery")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_audit_cmd)

    e = sub.add_parser("eval-deface", help="the defacers on every real datakit head and re-stored copies "
                       "(header rotations, 1x1x1.5 mm, LPS, scaled uint8) vs quickshear: JSON + HTML table")
    e.add_argument("--data", help="datakit root (default: auto)")
    e.add_argument("--out", default="out/eval_deface", help="report folder")
    e.add_argument("--quick", action="store_true", help="one 20-degree rotation per head, no other copies")
    e.add_argument("--heads", nargs="+", help="subset of the datakit heads (default: all)")
    e.add_argument("--threads", type=int, default=2)
    e.set_defaults(func=_eval_cmd)


def _deface_cmd(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.fileio import atomic_write_json
    from .batch import DefaceOptions, deface_bids, deface_file

    inp = Path(args.input)
    if args.json and Path(args.json).is_dir():  # checked before any work, like the output path
        raise InputError(f"{args.json}: is a folder; give a .json file")
    opts = DefaceOptions(method=args.method, settings=args.settings, data_root=args.data, threads=args.threads)
    if inp.is_dir():
        def show(row: dict) -> None:
            print(f"{row['output']}  {row['total_s']:.1f}s  brain voxels removed {row['brain_voxels_removed']} "
                  f"(independent mask)  face coverage {row['face_coverage']:.2f}")

        rows = deface_bids(inp, args.output, options=opts, participant_labels=args.participant_label,
                           on_scan=show)
        if args.json:
            atomic_write_json(args.json, rows)
        return 0
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    if not args.output:
        raise InputError("file mode needs an OUTPUT path")
    info = deface_file(inp, args.output, options=opts)
    if args.json:
        atomic_write_json(args.json, info)
    print(json.dumps({k: (round(x, 3) if isinstance(x, float) else x) for k, x in info.items()}))
    return 0


def audit_output_dir(bids_dir: str, output_dir: str | None) -> Path:
    """OUT_DIR, or BIDS_DIR/derivatives/faceprivacy when it is left out (``mri-audit BIDS participant``
    names the level in OUT_DIR's place unless a folder of that name exists)."""
    if output_dir is None or (output_dir == "participant" and not Path(output_dir).exists()):
        return Path(bids_dir) / "derivatives" / "faceprivacy"
    return Path(output_dir)


def _audit_cmd(args: argparse.Namespace) -> int:
    from .audit import run_audit

    out = audit_output_dir(args.bids_dir, args.output_dir)
    res = run_audit(args.bids_dir, out, methods=args.methods, data_root=args.data,
                    recognizers=args.recognizers, weights=args.weights, n_synthetic=args.synthetic,
                    seed=args.seed, participant_labels=args.participant_label)
    print(f"wrote {res['json']} and {res['html']}")
    return 0


def _eval_cmd(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.paths import default_data_root
    from .evaluate import HEADS, EvalConfig, run_eval

    root = args.data or default_data_root()
    if root is None or not Path(root).is_dir():
        raise InputError(f"datakit not found: {root}; pass --data")
    cfg = EvalConfig(heads=tuple(args.heads or HEADS), threads=args.threads,
                     **({"rotations": (20.0,), "axes": ("x",), "copies": ()} if args.quick else {}))
    res = run_eval(root, args.out, cfg)
    s = res["summary"]
    for m in cfg.methods:
        print(f"{m}: {s[m]['rows']} scans, {s[m]['refused']} refused, {s[m]['rows_with_brain_removed_independent']} "
              f"with brain removed, face coverage min {s[m]['face_coverage_min']}, unchanged voxels identical: "
              f"{s[m]['all_unchanged_byte_identical']}")
    print(f"wrote {res['json']} and {res['html']}")
    return 0
