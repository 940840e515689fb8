"""The FedFace evaluation protocol: clients = CelebA training identities (one each), verification on the
held-out test identities of ``identity_split`` (TAR@FAR=1e-3, EER) for the pretrained start, FedFace,
FedAvg without spreadout and centralised fine-tuning; JSON + an HTML report with TAR@FAR vs round."""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import InputError
from .algorithm import CentralConfig, centralised_finetune
from .backbone import SplitModel, build_split, dataset_features
from .evaluate import head_evaluator
from .simulation import FederatedSimulator, SimConfig

log = logging.getLogger(__name__)

HEADLINE = "tar@far=0.001"


@dataclass
class ClientData:
    """Trunk features per client (training identities) and of the held-out test images."""

    client_feats: list[torch.Tensor]
    client_names: list[str]
    test_feats: torch.Tensor
    test_labels: np.ndarray
    source: str
    #: trunk features of the public negative set (FedFR-style; None unless asked for)
    public_feats: torch.Tensor | None = None


#: the validation protocol (``eval_split="val"``): the 24 validation identities of ``identity_split`` plus this
#: many training identities held out of training (seeded), so that choices are made on 64 people, not 24
VAL_HOLDOUT = 40
VAL_HOLDOUT_SEED = 123


def celeba_client_data(split: SplitModel, root: str | os.PathLike, max_clients: int | None = None,
                       progress_bar: bool = True, test_root: str | os.PathLike | None = None,
                       eval_split: str = "test", cache_dir: str | os.PathLike | None = None,
                       val_fold: int = 0, val_folds: int = 0) -> ClientData:
    """Clients = the training identities of ``identity_split(celeba_subset(root))``; test = its test split, or
    every identity of ``test_root`` (a separate data set: nothing of it is used for training or choices).

    ``eval_split="val"`` is the protocol for choices: evaluation on the validation identities plus
    ``VAL_HOLDOUT`` training identities that are removed from the clients; no test identity is touched.
    ``val_fold`` picks which training identities are held out (seed ``VAL_HOLDOUT_SEED + val_fold``; fold 0 is
    the original protocol), so that a choice can be averaged over several held-out sets (``--seeds`` with
    ``--eval-split val``: seed k uses fold k). Those folds overlap: every one evaluates on the same 24 validation
    people. ``val_folds = F > 0`` makes them **disjoint**: fold k evaluates on the k-th of F interleaved parts of
    the validation people plus the k-th block of ``VAL_HOLDOUT`` training people of one fixed permutation, so no
    person is evaluated in two folds and the folds' results are independent draws of people.
    ``cache_dir`` keeps trunk features on disk (keyed by backbone and image list: all images of the subset once,
    so every split and fold reuses them), so sweeps skip the trunk.
    """
    from ..core.data import celeba_subset, identity_split

    full = celeba_subset(root)
    parts = identity_split(full)
    train, test = parts["train"], parts["test"]
    if eval_split not in ("test", "val"):
        raise InputError(f"unknown evaluation split {eval_split!r}; choose test or val")
    if eval_split == "val":
        if test_root is not None:
            raise InputError("--eval-split val and --test-data exclude each other")
        ids = train.identities
        val_ids = parts["val"].identities
        if val_folds:
            k = int(val_fold)
            if not 0 <= k < val_folds or val_folds * VAL_HOLDOUT >= len(ids):
                raise InputError(f"disjoint validation fold {k} of {val_folds} does not exist here (folds 0.."
                                 f"{val_folds - 1}, each holding out {VAL_HOLDOUT} of {len(ids)} training people)")
            perm = np.random.default_rng(VAL_HOLDOUT_SEED).permutation(len(ids))
            hold = sorted(ids[i] for i in perm[k * VAL_HOLDOUT:(k + 1) * VAL_HOLDOUT])
            val_ids = sorted(val_ids)[k::val_folds]
        else:
            rng = np.random.default_rng(VAL_HOLDOUT_SEED + int(val_fold))
            hold = sorted(rng.choice(ids, size=min(VAL_HOLDOUT, len(ids) - 1), replace=False).tolist())
        train = train.select_identities([n for n in ids if n not in set(hold)])
        test = full.select_identities(val_ids + hold)
    if test_root is not None:
        test = celeba_subset(_celeba_root(test_root))
    names = train.identities
    if max_clients is not None:
        if max_clients > len(names):
            raise InputError(f"only {len(names)} training identities are available, asked for {max_clients}")
        names = names[:max_clients]
        train = train.select_identities(names)
    if test_root is None and cache_dir is not None:  # one cache entry for every split and fold
        fall = _features(split, full.paths, cache_dir, "images" if progress_bar else None)
        pos = {str(q): i for i, q in enumerate(full.paths)}
        ftr = fall[[pos[str(q)] for q in train.paths]]
        fte = fall[[pos[str(q)] for q in test.paths]]
    else:
        ftr = _features(split, train.paths, cache_dir, "client images" if progress_bar else None)
        fte = _features(split, test.paths, cache_dir, "test images" if progress_bar else None)
    labels = np.asarray(train.labels)
    feats = [ftr[labels == lab] for lab in sorted(set(labels.tolist()), key=lambda i: train.names[i])]
    source = f"celeba:{root}" + (f"; test: every identity of {test_root}" if test_root is not None else "")
    if eval_split == "val":
        source += (f"; VALIDATION protocol: {len(val_ids)} validation identities + "
                   f"{len(hold)} training identities held out (fold {int(val_fold)}"
                   + (f" of {val_folds} disjoint folds)" if val_folds else f", seed {VAL_HOLDOUT_SEED + int(val_fold)})"))
    return ClientData(feats, names, fte, np.asarray(test.labels), source)


def _features(split: SplitModel, paths: list, cache_dir: str | os.PathLike | None,
              desc: str | None) -> torch.Tensor:
    """Trunk features of ``paths``, read from / written to ``cache_dir`` when given (atomic, tensors only)."""
    if cache_dir is None:
        return dataset_features(split, paths, progress_desc=desc)
    import hashlib

    from ..core.fileio import atomic_path

    h = hashlib.sha256(split.name.encode())
    for q in paths:
        st = Path(q).stat()
        h.update(f"\n{Path(q).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    f = Path(cache_dir) / f"trunk_{split.name}_{h.hexdigest()[:20]}.pt"
    if f.is_file():
        try:
            t = torch.load(f, map_location="cpu", weights_only=True)
            if isinstance(t, torch.Tensor) and len(t) == len(paths):
                return t
        except Exception as e:  # noqa: BLE001 - a broken cache entry is recomputed
            log.warning("ignoring unreadable feature cache %s: %s", f, e)
    t = dataset_features(split, paths, progress_desc=desc)
    f.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(f) as tmp:
        torch.save(t, tmp)
    return t


def public_negative_features(split: SplitModel, datakit: str | os.PathLike, n: int,
                             cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Trunk features of the first ``n`` UTKFace crops of the datakit (a public face set without identities,
    disjoint from CelebA; aligned to ArcFace 112 by ``models.lite_data.align_utkface_fast``): the public
    negatives every client holds (FedFR's idea)."""
    from ..models.lite_data import align_utkface_fast

    root = Path(datakit)
    utk = root / "utkface_crop_part1" if (root / "utkface_crop_part1").is_dir() else root.parent / "utkface_crop_part1"
    if not (utk / "images").is_dir():
        raise InputError(f"public negatives need the UTKFace crops: {utk / 'images'} not found")
    f = Path(cache_dir) / f"public_utk{n}_{split.name}.pt" if cache_dir is not None else None
    if f is not None and f.is_file():
        t = torch.load(f, map_location="cpu", weights_only=True)
        if isinstance(t, torch.Tensor) and len(t) == n:
            return t
    crops, _ = align_utkface_fast(utk, limit=n)
    from .backbone import trunk_features

    t = trunk_features(split, crops)
    if f is not None:
        from ..core.fileio import atomic_path

        f.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(f) as tmp:
            torch.save(t, tmp)
    return t


def _celeba_root(root: str | os.PathLike) -> Path:
    p = Path(root)
    return p / "celeba_subset_aligned112" if (p / "celeba_subset_aligned112").is_dir() else p


def synthetic_client_data(split: SplitModel, n_clients: int, seed: int = 0) -> ClientData:
    """Synthetic clients (machinery and timing only; never report these as recognition accuracy)."""
    from .synthetic import synthetic_clients

    if split.input_kind != "vector":
        raise InputError("synthetic clients need the 'tiny' backbone")
    dim = int(split.info.get("in_dim", 64))
    feats, _ = synthetic_clients(n_clients, (4, 20), dim=dim, noise=1.0, seed=seed)
    test, _ = synthetic_clients(40, 10, dim=dim, noise=1.0, seed=seed + 7919)
    return ClientData(feats, [f"synthetic{i}" for i in range(n_clients)], torch.cat(test),
                      np.repeat(np.arange(40), 10), "synthetic")


def run_experiment(data: ClientData, split: SplitModel, sim_cfg: SimConfig, algorithms: tuple[str, ...],
                   central_cfg: CentralConfig | None = None, checkpoint_dir: str | os.PathLike | None = None,
                   resume: bool = False, progress_bar: bool = True) -> dict:
    """Run each algorithm from the same pretrained head; returns the results dict (no embeddings)."""
    ev = head_evaluator(data.test_feats, data.test_labels)
    t0 = time.perf_counter()
    start = ev(split.head)
    results: dict = {"source": data.source, "backbone": split.name, "num_clients": len(data.client_feats),
                     "images_per_client_mean": float(np.mean([len(f) for f in data.client_feats])),
                     "num_test_images": int(len(data.test_labels)),
                     "num_test_identities": int(len(set(data.test_labels.tolist()))),
                     "config": sim_cfg.to_dict(), "pretrained": start, "runs": {}}
    log.info("pretrained %s: TAR@FAR=1e-3 %.4f, EER %.4f", split.name, start[HEADLINE], start["eer"])
    for algo in algorithms:
        t = time.perf_counter()
        if algo == "central":
            cc = central_cfg or CentralConfig()
            head = copy.deepcopy(split.head)
            feats = torch.cat(data.client_feats)
            labels = np.concatenate([np.full(len(f), i) for i, f in enumerate(data.client_feats)])
            info = centralised_finetune(head, feats, labels, cc, progress_desc="centralised" if progress_bar else None)
            final = ev(head)
            results["runs"]["central"] = {"final": final, "train": info, "config": vars(cc),
                                          "wall_s": round(time.perf_counter() - t, 1)}
        else:
            cfg = SimConfig(**{**sim_cfg.to_dict(), "algorithm": algo})
            ck = Path(checkpoint_dir) / f"{algo}.pt" if checkpoint_dir else None
            sim = FederatedSimulator(split.head, data.client_feats, cfg, eval_fn=ev, checkpoint_path=ck,
                                     public_feats=data.public_feats)
            if resume and ck is not None and ck.exists():
                sim.load_checkpoint(ck)
                log.info("%s: resumed at round %d", algo, sim.round)
            sim.run(progress_bar=progress_bar)
            curve = [{"round": h["round"], **h["eval"]} for h in sim.history if "eval" in h]
            if not curve or curve[0]["round"] != 0:
                curve.insert(0, {"round": 0, **start})
            rounds = [{k: v for k, v in h.items() if k != "eval"} for h in sim.history if h["round"] > 0]
            results["runs"][algo] = {"final": curve[-1], "curve": curve, "rounds": rounds,
                                     "wall_s": round(time.perf_counter() - t, 1),
                                     "mean_round_s": float(np.mean([r["round_s"] for r in rounds])) if rounds else 0.0}
        f = results["runs"][algo]["final"]
        log.info("%s: TAR@FAR=1e-3 %.4f (start %.4f), EER %.4f", algo, f[HEADLINE], start[HEADLINE], f["eer"])
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    results["summary"] = summary_table(results)
    return results


def summary_table(results: dict) -> list[dict]:
    """One row per method: TAR@FAR=1e-3, TAR@FAR=1e-2, EER and the gain over the pretrained start."""
    start = results["pretrained"]
    def row(method: str, f: dict) -> dict:
        return {"method": method, "tar@far=1e-3": f[HEADLINE], "tar@far=1e-3_ci95": f.get(HEADLINE + "_ci95"),
                "tar@far=1e-2": f["tar@far=0.01"], "eer": f["eer"], "n_identities": f.get("n_identities"),
                "gain_tar@1e-3_points": 100.0 * (f[HEADLINE] - start[HEADLINE])}

    rows = [row("pretrained", start)]
    for name, r in results["runs"].items():
        rows.append(row(name, r["final"]))
    return rows


def seed_summary(per_seed: dict[int, dict]) -> dict:
    """Mean ± sd over seeds of each method's TAR@FAR=1e-3 gain, FedFace's share of the centralised gain (ratio
    of the mean gains) and in how many seeds FedFace is above FedAvg at every evaluation round after round 0."""
    names = sorted({n for r in per_seed.values() for n in r["runs"]})
    gains = {n: [100.0 * (r["runs"][n]["final"][HEADLINE] - r["pretrained"][HEADLINE])
                 for r in per_seed.values() if n in r["runs"]] for n in names}
    out: dict = {"seeds": sorted(per_seed), "gain_points": {
        n: {"mean": float(np.mean(g)), "sd": float(np.std(g, ddof=1)) if len(g) > 1 else 0.0, "per_seed": g}
        for n, g in gains.items()}}
    if "fedface" in gains and "central" in gains and np.mean(gains["central"]) > 0:
        out["share_of_central_gain"] = float(np.mean(gains["fedface"]) / np.mean(gains["central"]))
    # TAR@FAR=1e-3 gain per evaluation round, mean ± sd over seeds (seeds with different start points, e.g.
    # validation folds, are comparable through the gain)
    curves: dict = {}
    for n in names:
        per: dict[int, list[float]] = {}
        for r in per_seed.values():
            for c in r["runs"].get(n, {}).get("curve", []):
                per.setdefault(int(c["round"]), []).append(100.0 * (c[HEADLINE] - r["pretrained"][HEADLINE]))
        if per:
            curves[n] = [{"round": k, "gain_mean": float(np.mean(v)),
                          "gain_sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n_seeds": len(v)}
                         for k, v in sorted(per.items())]
    if curves:
        out["gain_by_round"] = curves
    if "fedface" in names and "fedavg" in names:
        above = 0
        diffs: dict[int, list[float]] = {}
        for r in per_seed.values():
            ff = {c["round"]: c[HEADLINE] for c in r["runs"]["fedface"]["curve"] if c["round"] > 0}
            fa = {c["round"]: c[HEADLINE] for c in r["runs"]["fedavg"]["curve"] if c["round"] > 0}
            above += all(ff[k] > fa[k] for k in ff if k in fa)
            for k in ff:
                if k in fa:
                    diffs.setdefault(int(k), []).append(100.0 * (ff[k] - fa[k]))
        out["fedface_above_fedavg_every_round"] = above
        out["fedface_minus_fedavg_by_round"] = [
            {"round": k, "mean_points": float(np.mean(v)), "min_points": float(np.min(v)),
             "seeds_above": int(sum(x > 0 for x in v)), "n_seeds": len(v)} for k, v in sorted(diffs.items())]
        out["fedface_above_fedavg_rounds"] = int(sum(d["seeds_above"] == d["n_seeds"]
                                                     for d in out["fedface_minus_fedavg_by_round"]))
        out["evaluation_rounds"] = len(out["fedface_minus_fedavg_by_round"])
    out["source"] = sorted({str(r.get("source", "")) for r in per_seed.values()})
    out["pretrained_tar@1e-3"] = [float(r["pretrained"][HEADLINE]) for r in per_seed.values()]
    return out


def write_outputs(results: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``fed_results.json``, ``fed_tar_vs_round.png`` and ``fed_report.html`` in ``out_dir`` (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.fileio import atomic_write_bytes, atomic_write_json
    from ..core.report import HtmlReport, figure_to_png_bytes

    out = Path(out_dir)
    paths = {"json": atomic_write_json(out / "fed_results.json", results)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, r in results["runs"].items():
        if "curve" in r:
            xs = [c["round"] for c in r["curve"]]
            axes[0].plot(xs, [c[HEADLINE] for c in r["curve"]], marker="o", label=name)
            axes[1].plot(xs, [c["mean_impostor"] for c in r["curve"]], marker="o", label=name)
        else:
            axes[0].axhline(r["final"][HEADLINE], ls="--", color="gray", label=f"{name} (final)")
    axes[0].axhline(results["pretrained"][HEADLINE], ls=":", color="k", label="pretrained")
    axes[0].set(xlabel="round", ylabel="TAR @ FAR=1e-3", title="held-out identities")
    axes[1].set(xlabel="round", ylabel="mean impostor cosine", title="collapse indicator")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    png = figure_to_png_bytes(fig)
    paths["png"] = atomic_write_bytes(out / "fed_tar_vs_round.png", png)
    rep = HtmlReport("Federated face recognition (FedFace) — results")
    _findings(rep, results)
    rep.paragraph(f"Data: {results['source']}; backbone {results['backbone']}; {results['num_clients']} clients "
                  f"(one identity each, {results['images_per_client_mean']:.1f} images on average); "
                  f"evaluation on {results['num_test_images']} images of {results['num_test_identities']} "
                  "held-out identities, all pairs.")
    rep.table(results["summary"])
    rep.png(png, "TAR@FAR=1e-3 and mean impostor similarity vs round")
    cfg = results["config"]
    rep.paragraph(f"Rounds {cfg['rounds']}, clients/round {cfg['clients_per_round']}, local steps "
                  f"{cfg['client']['local_steps']}, client lr {cfg['client']['lr']}, spreadout lr "
                  f"{cfg['server']['spread_lr']} x {cfg['server']['spread_steps']} steps, dropout {cfg['dropout']}, "
                  f"DP clip {cfg['client']['dp_clip']} noise {cfg['client']['dp_noise']}.")
    paths["html"] = rep.write(out / "fed_report.html")
    return paths


def prepare(backbone: str, data_root: str | os.PathLike | None, synthetic: bool, clients: int | None,
            seed: int = 0, progress_bar: bool = True, test_root: str | os.PathLike | None = None,
            eval_split: str = "test", cache_dir: str | os.PathLike | None = None,
            val_fold: int = 0, val_folds: int = 0) -> tuple[SplitModel, ClientData]:
    """Build the backbone split and the client data for ``fed-simulate`` (``val_fold``, ``val_folds``: see
    :func:`celeba_client_data`)."""
    split = build_split(backbone, seed=seed)
    if synthetic:
        return split, synthetic_client_data(split, clients or 100, seed)
    if data_root is None:
        raise InputError("no data root: pass --data (the CelebA subset folder or the datakit)")
    if test_root is not None and not Path(test_root).is_dir():
        raise InputError(f"test data folder not found: {test_root}")
    return split, celeba_client_data(split, _celeba_root(data_root), clients, progress_bar, test_root, eval_split,
                                     cache_dir, val_fold, val_folds)


def _findings(rep, results: dict) -> None:
    """The verdict box: TAR at FAR 1e-3 of each method against the pretrained start, on held-out people."""
    rows = results["summary"]
    items = [f"{r['method']}: TAR {r['tar@far=1e-3']:.3f} at FAR 1e-3 ({r['gain_tar@1e-3_points']:+.2f} points vs the "
             "pretrained start)" for r in rows]
    items.append(f"n = {results['num_test_identities']} held-out identities, {results['num_test_images']} images")
    best = max(rows, key=lambda r: r["tar@far=1e-3"])
    rep.findings(items, verdict=f"best: {best['method']} ({best['gain_tar@1e-3_points']:+.2f} points)",
                 level="good" if best["gain_tar@1e-3_points"] >= 1 else "info")
    rep.small_n(int(results["num_test_identities"]), "identities")
