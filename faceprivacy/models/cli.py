"""``faceprivacy train-generator`` / ``faceprivacy eval-generator``: (re)train and evaluate the ``lite`` generator."""

from __future__ import annotations

import argparse
import json
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
    print(json.dumps({k: summary[k] for k in ("steps", "wall_s", "device", "n_images")}))
    print(f"weights: {out / 'lite_ema.pt'}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .generator_eval import evaluate_generator
    res = evaluate_generator(_data_root(args.data), Path(args.out), weights=args.weights, backend=args.backend,
                             n_samples=args.n_samples, max_test=args.max_test, device=args.device,
                             seed=args.seed, test_root=Path(args.test_data) if args.test_data else None)
    print(json.dumps(res["summary"], indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train-generator`` and ``eval-generator``."""
    p = sub.add_parser("train-generator", help="(re)train the bundled lite face generator + encoder")
    p.add_argument("--data", help="datakit folder (default ../shared/datakit or $FACEPRIVACY_DATA)")
    p.add_argument("--pack", help="training pack .npz (built from --data into OUT/lite_pack.npz if absent)")
    p.add_argument("--out", default="out/lite", help="output folder (lite_ema.pt, lite_train.pt, logs)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--time-budget", type=float, default=0.0, help="stop after this many seconds (0: none)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--tiny", action="store_true", help="tiny model/batch (for tests)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--dlib-weights", help="dlib ResNet .dat or DlibResNet state-dict .pt (default: dlib's)")
    p.add_argument("--no-id", action="store_true", help="train without the dlib identity loss")
    p.add_argument("--init", help="continue from a lite_train.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, default=None, help="use only the first N packed images")
    p.add_argument("--check-pack", help="pack of held-out faces for a quick dlib/PSNR check at each save")
    p.add_argument("--pack-only", action="store_true", help="only build the training pack, do not train")
    p.add_argument("--utk-limit", type=int, default=None, help="pack only the first N UTKFace crops")
    p.set_defaults(func=_train)

    e = sub.add_parser("eval-generator", help="evaluate a generator on held-out CelebA test identities "
                                              "(JSON + HTML + contact-sheet PNG)")
    e.add_argument("--data", help="datakit folder (default ../shared/datakit or $FACEPRIVACY_DATA)")
    e.add_argument("--weights", help="generator weights (default: the shipped lite weights)")
    e.add_argument("--backend", default="lite", choices=["lite", "stylegan2"])
    e.add_argument("--out", default="out/eval_generator")
    e.add_argument("--n-samples", type=int, default=500)
    e.add_argument("--max-test", type=int, default=None, help="evaluate on at most N test images")
    e.add_argument("--device", default="cpu")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--test-data", default=None, metavar="ROOT",
                   help="evaluate on every identity of this separate folder (datakit, images/<id>/ or <id>/ "
                        "folders of aligned 112x112 crops); thresholds stay on --data's validation identities")
    e.set_defaults(func=_eval)
