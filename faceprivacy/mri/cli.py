"""MRI commands: ``faceprivacy deface IN OUT [--method mask|shear|reface]`` (a file or a BIDS folder)
and ``faceprivacy mri-audit BIDS_DIR`` (JSON + HTML report with renders)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``deface`` and ``mri-audit`` sub-commands."""
    from ..core.options import add_common, add_deprecated, add_out, command

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
    p.add_argument("--json", help="also write the checks/timings JSON here (default: none)")
    add_common(p)
    p.set_defaults(func=_deface_cmd)

    a = command(sub, "mri-audit", "deface, attack and score a BIDS folder: JSON + HTML report",
                examples=["faceprivacy mri-audit bids/", "faceprivacy mri-audit bids/ --methods mask shear -o audit/",
                          "faceprivacy mri-audit bids/ --embedders dlib --synthetic 8"])
    a.add_argument("bids_dir", help="BIDS folder with T1w scans")
    a.add_argument("--out", default="out/mri_audit", help="report folder")
    a.add_argument("--methods", nargs="+", default=["mask", "shear", "reface"], metavar="METHOD",
                   help="defacing methods compared side by side")
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


def _deface_out(args: argparse.Namespace) -> Path:
    from ..core.options import derived_path

    inp = Path(args.input)
    return inp / "derivatives" / "faceprivacy" if inp.is_dir() else derived_path(inp, "defaced", ".nii.gz")


def _deface_cmd(args: argparse.Namespace) -> int:
    from ..core.fileio import atomic_write_json
    from ..core.options import Summary, stage
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
            stage(len(rows), len(scans), f"{dest}  {r.timings['total_s']:.1f}s")
        write_dataset_description(out_root, args.method)
        if args.json:
            atomic_write_json(args.json, rows)
        out = Summary(f"defaced {len(rows)} T1w scan(s) with {args.method}", written=[r["output"] for r in rows])
        out.number("brain voxels removed, all scans (0 is the goal)", sum(r["brain_voxels_removed"] for r in rows))
        out.number("face coverage, lowest scan (1.0 is the goal)", min(r["face_coverage"] for r in rows))
        out.wrote(args.json).then(f"faceprivacy mri-audit {inp}   # does the defaced face still identify?")
        return out.print()
    v = load_volume(inp)
    tpl = load_template(args.data)
    r = deface(v, tpl, args.method, args.settings, threads=args.threads)
    save_like(v, r.data, args.output)
    info = {"input": str(inp), "output": args.output, "method": args.method, **r.checks, **r.timings}
    if args.json:
        atomic_write_json(args.json, info)
    out = Summary(f"defaced {inp.name} with {args.method} in {r.timings['total_s']:.1f} s", written=[args.output])
    out.number("brain voxels removed (0 is the goal)", r.checks["brain_voxels_removed"])
    out.number("face coverage (1.0 is the goal)", r.checks["face_coverage"])
    out.wrote(args.json).then("faceprivacy mri-audit BIDS_DIR   # re-identification attack on a BIDS folder")
    return out.print()


def _audit_cmd(args: argparse.Namespace) -> int:
    from .audit import run_audit

    res = run_audit(args.bids_dir, args.out, methods=args.methods, data_root=args.data,
                    recognizers=args.recognizers, weights=args.weights, n_synthetic=args.synthetic,
                    seed=args.seed)
    from ..core.options import Summary

    return Summary(f"audited {', '.join(args.methods)} on {args.bids_dir}").wrote(res["json"], res["html"]) \
        .then(f"open {res['html']}").print()
