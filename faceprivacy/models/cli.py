"""``faceprivacy train-generator`` / ``faceprivacy eval-generator``: (re)train and evaluate the ``lite`` generator."""

from __future__ import annotations

import argparse
from pathlib import Path


def _data_root(arg: str | None) -> Path:
    from ..core.errors import InputError
    from ..core.paths import default_data_root
    root = Path(arg) if arg else default_data_root()
    if root is None or not root.is_dir():
        raise InputError("datakit folder not found: pass --data DIR (or set FACEPRIVACY_DATA)")
    return root


def _train(args: argparse.Namespace) -> int:
    from .lite_data import pack_dataset
    from .train_lite import run_training
    out = Path(args.out)
    pack = Path(args.pack) if args.pack else out / "lite_pack.npz"
    if not pack.is_file():
        counts = pack_dataset(_data_root(args.data), pack, utk_limit=args.utk_limit)
        print(f"packed training data: {counts} -> {pack}")
    if args.pack_only:
        return 0
    summary = run_training(pack, out, steps=args.steps, time_budget_s=args.time_budget, device=args.device,
                           tiny=args.tiny, batch=args.batch, dlib_weights=args.dlib_weights,
                           use_id=not args.no_id, init=args.init, seed=args.seed, max_images=args.max_images,
                           check_pack=args.check_pack)
    from ..core.options import Summary

    return (Summary(f"trained the lite generator for {summary['steps']} steps on {summary['n_images']} images "
                    f"({summary['device']})")
            .wrote(out / "lite_ema.pt", out / "lite_train.pt").number("wall time", summary["wall_s"], "s")
            .then(f"faceprivacy eval-generator --generator-weights {out / 'lite_ema.pt'}").print())


def _eval(args: argparse.Namespace) -> int:
    from .generator_eval import evaluate_generator
    res = evaluate_generator(_data_root(args.data), Path(args.out), weights=args.weights, backend=args.backend,
                             n_samples=args.n_samples, max_test=args.max_test, device=args.device,
                             seed=args.seed, test_root=Path(args.test_data) if args.test_data else None)
    from ..core.metrics import format_ci
    from ..core.options import Summary

    m, out = res["summary"], Path(args.out)
    ci = m.get("intervals", {})
    return (Summary(f"evaluated the {args.backend} generator on {m['n_test_images']} held-out test faces "
                    f"of {m['n_test_identities']} people")
            .wrote(out / "generator_eval.json", out / "generator_eval.html", out / "contact_sheet.png")
            .number("reconstructions matched by MobileFaceNet at FAR 1e-3 (higher is better; target 0.70)",
                    format_ci(ci["recon_mobilefacenet_pass@far1e-3"]) if ci else m["recon_mobilefacenet_pass@far1e-3"])
            .number("reconstructions matched by the independent ONNX MobileFaceNet judge at FAR 1e-3 (higher is "
                    "better)", format_ci(ci["recon_onnx_judge_pass@far1e-3"]) if "recon_onnx_judge_pass@far1e-3" in ci
                    else m.get("recon_onnx_judge_pass@far1e-3", "n/a"))
            .number("reconstructions within dlib distance 0.6 (higher is better; target 0.80)",
                    format_ci(ci["recon_dlib_pass@0.6"]) if ci else m["recon_dlib_pass@0.6"])
            .number("samples with a detected face (higher is better; target 0.90)", m["samples_hog_detect_rate"])
            .then(f"open {out / 'generator_eval.html'}").print())


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-generator`` and ``eval-generator``."""
    from ..core.options import RUN_DIR_SHOWN, add_common, add_deprecated, add_out, command, default_run_dir

    p = command(sub, "train-generator", "(re)train the bundled lite face generator + encoder",
                examples=["faceprivacy train-generator --time-budget 3600     # one hour on the CPU",
                          "faceprivacy train-generator --tiny --steps 20 -o /tmp/lite   # smoke test",
                          "faceprivacy train-generator --init out/lite/lite_train.pt --steps 5000"])
    p.add_argument("--pack", help="training pack .npz (default: built from --data into OUT/lite_pack.npz)")
    add_out(p, lambda a: Path("out/lite"), "out/lite", help="output folder (lite_ema.pt, lite_train.pt, logs)")
    p.add_argument("--steps", type=int, default=20000, help="training steps")
    p.add_argument("--time-budget", type=float, default=0.0, help="stop after this many seconds (0: none)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--tiny", action="store_true", help="tiny model/batch (for tests)")
    p.add_argument("--batch", type=int, default=None, help="images per step (default: 16, tiny 4)")
    p.add_argument("--dlib-weights", help="dlib ResNet .dat or DlibResNet state-dict .pt (default: dlib's)")
    p.add_argument("--no-id", action="store_true", help="train without the dlib identity loss")
    p.add_argument("--init", help="continue from a lite_train.pt (default: from scratch)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N packed images (default: all)")
    p.add_argument("--check-pack", help="pack of held-out faces for a quick dlib/PSNR check at each save")
    p.add_argument("--pack-only", action="store_true", help="only build the training pack, do not train")
    p.add_argument("--utk-limit", type=int, default=None, help="pack only the first N UTKFace crops (default: all)")
    add_common(p)
    p.set_defaults(func=_train)

    e = command(sub, "eval-generator", "evaluate a generator on held-out CelebA test identities "
                                       "(JSON + HTML + contact-sheet PNG)",
                examples=["faceprivacy eval-generator", "faceprivacy eval-generator --max-test 48 --n-samples 48",
                          "faceprivacy eval-generator --generator-weights out/lite/lite_ema.pt"])
    e.add_argument("--generator-weights", dest="weights", help="generator weights (default: the shipped lite weights)")
    add_deprecated(e, "--weights", "weights")
    e.add_argument("--generator", dest="backend", default="lite", choices=["lite", "stylegan2"],
                   help="generator backend")
    add_deprecated(e, "--backend", "backend", choices=["lite", "stylegan2"])
    add_out(e, default_run_dir("eval-generator"), RUN_DIR_SHOWN.format(cmd="generator"), help="report folder")
    e.add_argument("--n-samples", type=int, default=500, help="random samples for the sample statistics")
    e.add_argument("--max-test", type=int, default=None, help="evaluate on at most N test images (default: all)")
    e.add_argument("--device", default="cpu", help="cpu | cuda")
    e.add_argument("--seed", type=int, default=0, help="random seed")
    e.add_argument("--test-data", default=None, metavar="ROOT",
                   help="evaluate on every identity of this separate folder (datakit, images/<id>/ or <id>/ "
                        "folders of aligned 112x112 crops); thresholds stay on --data's validation identities")
    add_common(e)
    e.set_defaults(func=_eval)
