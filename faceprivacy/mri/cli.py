"""MRI commands: ``faceprivacy deface IN OUT [--method mask|shear|reface]`` (a file or a BIDS folder)
and ``faceprivacy mri-audit BIDS_DIR [OUT_DIR] [participant]`` (a BIDS app: JSON + HTML report with
renders). The handlers parse, call ``mri.batch`` / ``mri.audit`` and print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``deface`` and ``mri-audit`` sub-commands."""
    from ..core.options import RUN_DIR_SHOWN, add_common, add_deprecated, add_out, command, default_run_dir

    p = command(sub, "deface", "deface a T1w NIfTI (or every T1w of a BIDS folder) without FSL",
                examples=["faceprivacy deface head.nii.gz                    # -> head_defaced.nii.gz",
                          "faceprivacy deface bids/ --method reface          # -> bids/derivatives/faceprivacy/",
                          "faceprivacy deface head.nii.gz -o anon.nii.gz --settings careful --json checks.json"])
    p.add_argument("input", help="a .nii/.nii.gz file or a BIDS folder")
    p.add_argument("output", nargs="?", default=argparse.SUPPRESS, help="output path, same as -o")
    add_out(p, _deface_out, "INPUT_defaced.nii.gz for a file, BIDS_DIR/derivatives/faceprivacy for a BIDS folder",
            dest="output", help="output .nii.gz (file) or derivatives folder (BIDS folder)")
    p.add_argument("--method", choices=("mask", "shear", "reface"), default="mask",
                   help="mask: remove the face with a registered template mask; shear: quickshear-style plane; "
                        "reface: replace the face with a generated one")
    p.add_argument("--settings", choices=("fast", "careful"), default="fast", help="registration settings")
    p.add_argument("--data", help="datakit root holding the pydeface template (default: auto)")
    p.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="BIDS mode: only these participants (01 or sub-01; default: all)")
    p.add_argument("--json", help="also write the checks/timings JSON here (default: none)")
    add_common(p)
    p.set_defaults(func=_deface_cmd)

    a = command(sub, "mri-audit", "deface, attack and score a BIDS folder: JSON + HTML report "
                "(a BIDS app: mri-audit BIDS_DIR [OUT_DIR] [participant])",
                examples=["faceprivacy mri-audit bids/        # -> bids/derivatives/faceprivacy/",
                          "faceprivacy mri-audit bids/ out/ participant --participant-label 01 02",
                          "faceprivacy mri-audit bids/ --methods mask shear --embedders dlib"])
    a.add_argument("bids_dir", help="BIDS dataset folder")
    a.add_argument("output_dir", nargs="?", default=argparse.SUPPRESS, help="report folder, same as -o")
    add_out(a, lambda args: audit_output_dir(args.bids_dir, None), "BIDS_DIR/derivatives/faceprivacy",
            dest="output_dir", help="report folder (mri_audit.json, mri_audit.html)")
    a.add_argument("analysis_level", nargs="?", choices=("participant",), default="participant",
                   help="BIDS app analysis level (only 'participant')")
    a.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="only these participants (01 or sub-01); the others still join the re-ID gallery "
                        "(default: all)")
    a.add_argument("--methods", nargs="+", default=["mask", "shear", "reface"], choices=("mask", "shear", "reface"),
                   metavar="METHOD", help="defacing methods compared side by side: mask shear reface")
    a.add_argument("--data", help="datakit root (template; MobileFaceNet for re-ID)")
    a.add_argument("--embedders", dest="recognizers", nargs="+", default=["dlib", "mobilefacenet"], metavar="NAME",
                   help="face recognizers of the re-identification attack")
    add_deprecated(a, "--recognizers", "recognizers", nargs="+")
    a.add_argument("--reface-weights", dest="weights", help="refacing U-Net weights (default: bundled)")
    add_deprecated(a, "--weights", "weights")
    a.add_argument("--synthetic", type=int, default=4,
                   help="synthetic identities (deformed copies of each scan) added to the re-ID gallery")
    a.add_argument("--seed", type=int, default=0, help="random seed")
    add_common(a)
    a.set_defaults(func=_audit_cmd)

    e = command(sub, "eval-deface", "the defacers on every real datakit head and re-stored copies "
                "(header rotations, 1x1x1.5 mm, LPS, scaled uint8) vs quickshear: JSON + HTML table",
                examples=["faceprivacy eval-deface", "faceprivacy eval-deface --quick -o eval_quick/"])
    e.add_argument("--data", help="datakit root (default: auto)")
    add_out(e, default_run_dir("eval-deface"), RUN_DIR_SHOWN.format(cmd="deface"), help="report folder")
    e.add_argument("--quick", action="store_true", help="one 20-degree rotation per head, no other copies")
    e.add_argument("--heads", nargs="+", help="subset of the datakit heads (default: all)")
    add_common(e)
    e.set_defaults(func=_eval_cmd)


def _deface_out(args: argparse.Namespace) -> Path:
    from ..core.options import derived_path

    inp = Path(args.input)
    return inp / "derivatives" / "faceprivacy" if inp.is_dir() else derived_path(inp, "defaced", ".nii.gz")


def _deface_cmd(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.fileio import atomic_write_json
    from ..core.options import Summary, quiet
    from .batch import DefaceOptions, deface_bids, deface_file

    inp = Path(args.input)
    if args.json and Path(args.json).is_dir():  # checked before any work, like the output path
        raise InputError(f"{args.json}: is a folder; give a .json file")
    opts = DefaceOptions(method=args.method, settings=args.settings, data_root=args.data, threads=args.threads)
    if inp.is_dir():
        def show(row: dict) -> None:  # one line per finished scan (stderr; the summary follows on stdout)
            if not quiet():
                print(f"{row['output']}  {row['total_s']:.1f}s  brain voxels removed {row['brain_voxels_removed']} "
                      f"(independent mask)  face coverage {row['face_coverage']:.2f}", file=sys.stderr, flush=True)

        rows = deface_bids(inp, args.output, options=opts, participant_labels=args.participant_label,
                           on_scan=show)
        if args.json:
            atomic_write_json(args.json, rows)
        out = Summary(f"defaced {len(rows)} T1w scan(s) with {args.method}", written=[r["output"] for r in rows])
        if rows:
            out.number("brain voxels removed, all scans (0 is the goal)", sum(r["brain_voxels_removed"] for r in rows))
            out.number("face coverage, lowest scan (1.0 is the goal)", min(r["face_coverage"] for r in rows))
        out.wrote(args.json).then(f"faceprivacy mri-audit {inp}   # does the defaced face still identify?")
        return out.print()
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    info = deface_file(inp, args.output, options=opts)
    if args.json:
        atomic_write_json(args.json, info)
    out = Summary(f"defaced {inp.name} with {args.method} in {info['total_s']:.1f} s", written=[str(args.output)])
    out.number("brain voxels removed (0 is the goal)", info["brain_voxels_removed"])
    out.number("face coverage (1.0 is the goal)", info["face_coverage"])
    out.wrote(args.json).then("faceprivacy mri-audit BIDS_DIR   # re-identification attack on a BIDS folder")
    return out.print()


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
    from ..core.options import Summary

    return Summary(f"audited {', '.join(args.methods)} on {args.bids_dir}").wrote(res["json"], res["html"]) \
        .then(f"open {res['html']}").print()


def _eval_cmd(args: argparse.Namespace) -> int:
    from ..core.errors import InputError
    from ..core.options import Summary
    from ..core.paths import default_data_root
    from .evaluate import HEADS, EvalConfig, run_eval

    root = args.data or default_data_root()
    if root is None or not Path(root).is_dir():
        raise InputError(f"datakit not found: {root}; pass --data")
    cfg = EvalConfig(heads=tuple(args.heads or HEADS), threads=args.threads,
                     **({"rotations": (20.0,), "axes": ("x",), "copies": ()} if args.quick else {}))
    res = run_eval(root, args.out, cfg)
    s = res["summary"]
    out = Summary(f"evaluated {', '.join(cfg.methods)} on {len(cfg.heads)} head(s) and their re-stored copies")
    for m in cfg.methods:
        out.details.append(f"{m}: {s[m]['rows']} scans, {s[m]['refused']} refused, "
                           f"{s[m]['rows_with_brain_removed_independent']} with brain removed, face coverage min "
                           f"{s[m]['face_coverage_min']}, unchanged voxels identical: {s[m]['all_unchanged_byte_identical']}")
    return out.wrote(res["json"], res["html"]).then(f"open {res['html']}").print()
