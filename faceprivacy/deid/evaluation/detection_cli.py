"""CLI: ``faceprivacy eval-detection`` (registered by ``deid.cli.register``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``eval-detection``."""
    from ...core.detect import ANONYMIZE_DETECTOR, DETECTORS
    from ...core.options import RUN_DIR_SHOWN, add_common, add_out, command, default_run_dir
    from ..base import DEFAULT_METHOD, METHODS

    d = command(sub, "eval-detection", "missed-face benchmark: recall by face size and pose, false positives and "
                                       "time per megapixel of every detector, and faces still recognizable after "
                                       "the whole anonymize pipeline",
                examples=["faceprivacy eval-detection --quick",
                          "faceprivacy eval-detection --identities val --pipeline-detectors retinaface hog",
                          "faceprivacy eval-detection --detectors hog retinaface --pipeline-detectors -o eval_det/"])
    d.add_argument("--identities", choices=("test", "val"), default="test",
                   help="CelebA identities and UTKFace half the faces come from (val: for choosing, test: claims)")
    add_out(d, default_run_dir("eval-detection"), RUN_DIR_SHOWN.format(cmd="detection"), type=Path,
            help="report folder (eval_detection.json, eval_detection.html)")
    d.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS,
                   help="detectors compared in the same run")
    d.add_argument("--pipeline-detectors", nargs="*", default=[ANONYMIZE_DETECTOR], choices=DETECTORS,
                   help="detectors run through the whole anonymize pipeline (none: skip that part)")
    d.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="anonymization method of the pipeline")
    d.add_argument("--faces", type=int, default=None,
                   help="faces per source set, CelebA and UTKFace each (default 150; --quick 6)")
    d.add_argument("--empty", type=int, default=None, help="face-free scenes (default 8; --quick 1)")
    d.add_argument("--face-px", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="face sizes, ground-truth box side in px (default 16 400; --quick 24 120)")
    d.add_argument("--cnn-max-mp", type=float, default=None,
                   help="megapixels dlib's slow MMOD (cnn) runs on, smallest scenes first (default 2.0)")
    d.add_argument("--far", type=float, default=1e-3, help="false accept rate of the judge's threshold")
    d.add_argument("--seed", type=int, default=0, help="seed of the scene set")
    d.add_argument("--occluded", type=float, default=None, metavar="FRACTION",
                   help="fraction of faces partly covered (mask, eye band or one side; default 0.3)")
    d.add_argument("--floors", type=float, nargs="*", default=None, metavar="SCORE",
                   help="weak-tier floors swept (recall and FP/MP counting weak detections; the default floor of "
                        "anonymize is always measured)")
    d.add_argument("--no-safety", action="store_true",
                   help="pipeline without the post-replacement safety net (for comparison)")
    d.add_argument("--no-weak", action="store_true",
                   help="pipeline without the weak tier: low-score detections left as they are (for comparison)")
    d.add_argument("--no-small-frames", action="store_true",
                   help="search small frames at the normal pyramid, not one level finer (for comparison)")
    d.add_argument("--obscure-occluded", action="store_true",
                   help="pipeline with the opt-in occlusion check (anonymize --obscure-occluded)")
    d.add_argument("--no-flip", action="store_true",
                   help="the union detector without its mirrored RetinaFace pass (for comparison)")
    d.add_argument("--quick", action="store_true", help="tiny configuration (smoke test, blur method)")
    d.add_argument("--donor-bank", type=Path, default=None, help="donor bank file for donor (default: bundled)")
    add_common(d, threads=1)
    d.set_defaults(func=_cmd)


def _cmd(args) -> int:
    from ...core.errors import InputError
    from ...core.options import Summary
    from ...core.paths import default_data_root
    from .detection import DetectionConfig, evaluate_detection
    from .detection_report import summary_rows

    data = args.data or default_data_root()
    if data is None:
        raise InputError("datakit not found: pass --data")
    kw: dict = {"identities": args.identities, "detectors": tuple(args.detectors),
                "pipeline": tuple(args.pipeline_detectors), "far": args.far, "seed": args.seed,
                "threads": args.threads or 1, "floors": tuple(args.floors or ()), "safety": not args.no_safety,
                "weak": not args.no_weak, "small_frames": not args.no_small_frames,
                "flip": not args.no_flip, "obscure_occluded": args.obscure_occluded}
    if args.faces is not None:
        kw["n_celeba"] = kw["n_utk"] = args.faces
    for flag, key in (("empty", "n_empty"), ("cnn_max_mp", "cnn_max_mp"), ("occluded", "occluded")):
        if getattr(args, flag) is not None:
            kw[key] = getattr(args, flag)
    if args.face_px is not None:
        kw["face_px"] = tuple(args.face_px)
    if args.quick:
        if args.method != "donor":
            kw["method"] = args.method
        cfg = DetectionConfig.quick(**kw)
    else:
        cfg = DetectionConfig(method=args.method, **kw)

    def factory(name: str):
        if name == "donor":
            from ..donor import DonorMorph
            from ..donor_bank import DonorBank

            return DonorMorph(DonorBank.load(args.donor_bank) if args.donor_bank else None)
        if name == "riddle":
            from ..riddle.loader import load_riddle

            return load_riddle("lite", None, None)
        from ..methods import make_method

        return make_method(name)

    res = evaluate_detection(Path(data), args.out, cfg, method_factory=factory)
    out = Summary(f"missed-face benchmark: {res['scenes']['faces']} faces, {len(cfg.detectors)} detector(s)")
    out.facts({r["detector"]: f"recall {r['recall']}, {r['s / MP']} s/MP, FP/MP {r['FP / MP (all scenes)']}"
               for r in summary_rows(res)})
    for name, r in res.get("pipeline", {}).get("detectors", {}).items():
        m = r["miss_rate_from_24px"]
        out.notes.append(f"after anonymize ({cfg.method}, {name}): {m['value']:.3f} of faces >= 24 px still "
                         f"verifiable (n={m['n']}; goal <= 0.01: {'met' if r['goal_met'] else 'NOT met'})")
    out.wrote(args.out / "eval_detection.json", args.out / "eval_detection.html")
    out.then(f"open {args.out / 'eval_detection.html'}")
    out.print()
    return 0
