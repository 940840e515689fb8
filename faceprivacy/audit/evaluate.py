"""The embedding-leakage audit: probes, inversion attacks and the protected-template mitigation on the
project's CelebA protocol (train on training identities, report on held-out test identities).

Raw embeddings live in memory only; they are written to disk only with ``save_embeddings=True``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.data import FaceDataset, celeba_subset, identity_split
from ..core.embedder import Embedder
from ..core.errors import InputError
from ..core.fileio import atomic_path, atomic_write_json
from .attributes import Attributes, compute_attributes
from .probes import run_probes
from .templates import BioHasher, protect_per_identity, template_similarity

log = logging.getLogger(__name__)


@dataclass
class AuditConfig:
    """Sizes and hyper-parameters of one audit run (defaults = the reported configuration)."""

    far: float = 1e-3
    max_per_split: int | None = None        # cap images per split (quick runs); None = all
    probes: bool = True
    attributes: list[str] | None = None     # None = all of probes.ATTRIBUTES
    mlp_epochs: int = 60
    templates: bool = True
    n_bits: int = 64
    inversion: bool = True
    n_invert: int = 50                      # test targets (one per held-out identity)
    mapper_epochs: int = 150
    mapper_hidden: int = 1024
    mapper_train_max: int | None = None
    wb_steps: int = 100
    wb_lr: float = 0.05
    bb_iters: int = 40
    bb_pop: int = 16
    bb_dims: int = 64
    bb_sigma: float = 0.5
    bb_lr: float = 0.3
    n_grid: int = 8
    seed: int = 0
    other_embedder: str | None = "auto"     # recognizer for type-II checks; "auto": the other of dlib/mobilefacenet


@dataclass
class AuditData:
    """Crops, labels and identity names of the train/val/test splits."""

    crops: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]
    paths: dict[str, list[str]] = field(default_factory=dict)


def _load_crops(ds: FaceDataset) -> np.ndarray:
    from ..core.imageio import load_image

    crops = []
    for p in ds.paths:
        img = load_image(p)
        if img.shape != (112, 112, 3):
            raise InputError(f"{p}: expected a 112x112 ArcFace-aligned crop, got {img.shape}")
        crops.append(img)
    return np.stack(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)


def load_celeba_splits(root: str | os.PathLike, max_per_split: int | None = None, seed: int = 0) -> AuditData:
    """Load the CelebA subset's identity-disjoint train/val/test splits (optionally capped, whole identities)."""
    splits = identity_split(celeba_subset(root))
    data = AuditData({}, {}, {}, {})
    for name, ds in splits.items():
        if max_per_split is not None and len(ds) > max_per_split:
            # keep whole identities (deterministic order) until the cap is reached
            keep, n = [], 0
            for ident in ds.identities:
                cnt = sum(1 for lab in ds.labels if ds.names[lab] == ident)
                if n + cnt > max_per_split and keep:
                    break
                keep.append(ident)
                n += cnt
            ds = ds.select_identities(keep)
        data.crops[name] = _load_crops(ds)
        data.labels[name] = ds.labels.copy()
        data.ids[name] = np.array([ds.names[i] for i in ds.labels])
        data.paths[name] = [str(p.relative_to(ds.root)) if ds.root else str(p) for p in ds.paths]
    return data


def attributes_for(data: AuditData, cache: str | os.PathLike | None = None) -> dict[str, Attributes]:
    """Ground-truth attributes per split; with ``cache`` an .npz keyed by relative path is reused/extended."""
    table: dict[str, dict[str, np.ndarray]] = {}
    if cache and Path(cache).is_file():
        z = np.load(cache, allow_pickle=False)
        paths = [str(p) for p in z["paths"]]
        fields = [f for f in Attributes.__dataclass_fields__]
        for i, p in enumerate(paths):
            table[p] = {f: z[f][i] for f in fields}
    out = {}
    for split, crops in data.crops.items():
        paths = data.paths[split]
        missing = [i for i, p in enumerate(paths) if p not in table]
        if missing:
            a = compute_attributes(crops[missing], desc=f"attributes {split}")
            for j, i in enumerate(missing):
                table[paths[i]] = {f: getattr(a, f)[j] for f in Attributes.__dataclass_fields__}
        out[split] = Attributes(*(np.stack([table[p][f] for p in paths])
                                  for f in Attributes.__dataclass_fields__))
    if cache:
        keys = sorted(table)
        with atomic_path(cache, suffix=".npz") as tmp:
            np.savez(tmp, paths=np.array(keys),
                     **{f: np.stack([table[k][f] for k in keys]) for f in Attributes.__dataclass_fields__})
    return out


def embed_crops(embedder: Embedder, crops: np.ndarray, batch: int = 256) -> np.ndarray:
    """Embeddings (N, D) of 112x112 ArcFace crops with any embedder (kept in memory)."""
    from ..core.embedders import embed_arcface_crops

    out = [embed_arcface_crops(embedder, crops[i:i + batch]) for i in range(0, len(crops), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, embedder.dim), np.float32)


def pair_sets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All genuine (i<j, same label) and all impostor (i<j, different label) index pairs."""
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    return np.stack([i[same], j[same]], 1), np.stack([i[~same], j[~same]], 1)


def verification_at_far(sim: Callable[[np.ndarray, np.ndarray], np.ndarray], labels: np.ndarray,
                        far: float) -> dict[str, float]:
    """TAR and threshold at ``far`` over all genuine/impostor pairs; ``sim(i_idx, j_idx)`` scores pairs."""
    from ..core.metrics import eer, threshold_at_far

    gen, imp = pair_sets(labels)
    gs, is_ = sim(gen[:, 0], gen[:, 1]), sim(imp[:, 0], imp[:, 1])
    thr = threshold_at_far(is_, far)
    e, _ = eer(np.r_[gs, is_], np.r_[np.ones(len(gs), bool), np.zeros(len(is_), bool)])
    return {"tar": float(np.mean(gs > thr)), "threshold": float(thr), "eer": float(e),
            "n_genuine": int(len(gs)), "n_impostor": int(len(is_))}


# --------------------------------------------------------------------------------------------- white-box

def differentiable_embed(embedder: Embedder) -> Callable | None:
    """A differentiable copy of ``embedder`` on generator images ((N,3,112,112) in [-1,1]), if one exists.

    Supported: the dlib torch port (``alignment == "dlib150"`` with ``.net``) via the differentiable
    ArcFace-112 -> dlib-150 warp, and torch MobileFaceNet (``.net``, columns 8:104, mirror-summed).
    """
    import torch
    from torch.nn import functional as F

    net = getattr(embedder, "net", None)
    if not isinstance(net, torch.nn.Module):
        return None
    for p in net.parameters():
        p.requires_grad_(False)
    if embedder.alignment == "dlib150":
        from ..core.chip import arcface112_to_dlib150

        def f(img: torch.Tensor) -> torch.Tensor:
            x = (img + 1) * 127.5
            if x.shape[-1] != 112:
                x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
            return F.normalize(net(arcface112_to_dlib150(x)), dim=1)
        return f
    if embedder.alignment == "arcface112" and tuple(embedder.input_size) == (112, 112):
        flip = bool(getattr(embedder, "flip", False))

        def g(img: torch.Tensor) -> torch.Tensor:
            x = (img + 1) * 127.5
            if x.shape[-1] != 112:
                x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False)
            x = x[..., 8:104] if embedder.name.startswith("mobilefacenet") else x
            e = net(x)
            if flip:
                e = e + net(torch.flip(x, dims=[3]))
            return F.normalize(e, dim=1)
        return g
    return None


# --------------------------------------------------------------------------------------------- main run

def _other_name(embedder: Embedder, cfg: AuditConfig) -> str | None:
    if cfg.other_embedder != "auto":
        return cfg.other_embedder
    return "mobilefacenet" if embedder.name.startswith("dlib") else "dlib"


def _targets(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One target image and one *different* photo per test identity (identities with >= 2 images)."""
    rng = np.random.default_rng(seed)
    tgt, other = [], []
    for lab in np.unique(labels):
        idx = np.where(labels == lab)[0]
        if len(idx) >= 2:
            a, b = rng.choice(idx, 2, replace=False)
            tgt.append(a)
            other.append(b)
    order = rng.permutation(len(tgt))[:n]
    return np.array(tgt)[order], np.array(other)[order]


def run_audit(embedder: Embedder, data: AuditData, attrs: dict[str, Attributes] | None, cfg: AuditConfig,
              generator: Any = None, other: Embedder | None = None, master_key: bytes | None = None,
              diff_embed: Callable | None = None, keep_embeddings: bool = False) -> dict:
    """Run the enabled parts of the audit and return the JSON-able results (and images under ``_images``).

    ``keep_embeddings`` also returns the raw embeddings under ``_embeddings`` (only for an explicit user request
    to save them; :func:`write_report` never writes them).
    """
    import torch

    t_start = time.perf_counter()
    res: dict[str, Any] = {"embedder": embedder.name, "config": asdict(cfg),
                           "splits": {k: {"images": int(len(v)), "identities": int(len(np.unique(data.ids[k])))}
                                      for k, v in data.crops.items()}}
    emb = {k: embed_crops(embedder, v) for k, v in data.crops.items()}
    te_lab = data.labels["test"]
    raw_ver = verification_at_far(lambda i, j: np.sum(emb["test"][i] * emb["test"][j], 1), te_lab, cfg.far)
    res["verification_raw"] = raw_ver
    master_key = master_key or os.urandom(32)

    # ---------------------------------------------------------------- probes
    if cfg.probes and attrs is not None:
        t0 = time.perf_counter()
        res["probes"] = run_probes(emb["train"], attrs["train"], emb["val"], attrs["val"], emb["test"],
                                   attrs["test"], cfg.attributes, mlp_epochs=cfg.mlp_epochs, seed=cfg.seed)
        res["probes_seconds"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- protected templates
    prot = None
    if cfg.templates:
        center = emb["train"].mean(0)
        prot = {k: protect_per_identity(master_key, emb[k], data.ids[k], cfg.n_bits, center) for k in emb}
        te_ids = data.ids["test"]
        ver_user = verification_at_far(lambda i, j: template_similarity(prot["test"][i], prot["test"][j]),
                                       te_lab, cfg.far)
        sys_h = BioHasher.from_master(master_key, "system", emb["test"].shape[1], cfg.n_bits, center)
        sys_t = {k: sys_h.protect(emb[k]) for k in emb}
        ver_sys = verification_at_far(lambda i, j: template_similarity(sys_t["test"][i], sys_t["test"][j]),
                                      te_lab, cfg.far)
        # unlinkability: the same faces re-enrolled under fresh keys vs the first enrolment
        re_t = protect_per_identity(master_key + b"/reissue", emb["test"], te_ids, cfg.n_bits, center)
        gen, imp = pair_sets(te_lab)
        cross_gen = template_similarity(prot["test"][gen[:, 0]], re_t[gen[:, 1]])
        cross_imp = template_similarity(prot["test"][imp[:, 0]], re_t[imp[:, 1]])
        from ..core.metrics import auc

        link_auc = auc(np.r_[cross_gen, cross_imp], np.r_[np.ones(len(cross_gen), bool),
                                                         np.zeros(len(cross_imp), bool)])
        res["templates"] = {
            "n_bits": cfg.n_bits,
            "verification_per_user_keys": ver_user,
            "verification_stolen_key": ver_sys,
            "tar_cost_per_user_keys": raw_ver["tar"] - ver_user["tar"],
            "tar_cost_stolen_key": raw_ver["tar"] - ver_sys["tar"],
            "unlinkability": {
                "cross_key_genuine_accept_rate": float(np.mean(cross_gen > ver_user["threshold"])),
                "cross_key_impostor_accept_rate": float(np.mean(cross_imp > ver_user["threshold"])),
                "linkage_auc": float(link_auc),
                "mean_similarity_cross_key_genuine": float(cross_gen.mean()),
                "mean_similarity_cross_key_impostor": float(cross_imp.mean())},
        }
        if cfg.probes and attrs is not None:
            pt = {k: v.astype(np.float32) * 2 - 1 for k, v in prot.items()}
            st = {k: v.astype(np.float32) * 2 - 1 for k, v in sys_t.items()}
            res["templates"]["probes_per_user_keys"] = run_probes(
                pt["train"], attrs["train"], pt["val"], attrs["val"], pt["test"], attrs["test"], cfg.attributes,
                mlp_epochs=cfg.mlp_epochs, seed=cfg.seed)
            res["templates"]["probes_system_key"] = run_probes(
                st["train"], attrs["train"], st["val"], attrs["val"], st["test"], attrs["test"], cfg.attributes,
                mlp_epochs=cfg.mlp_epochs, seed=cfg.seed)

    # ---------------------------------------------------------------- inversion
    if cfg.inversion and generator is not None:
        res["inversion"], images = _run_inversion(embedder, other, data, emb, prot, cfg, generator,
                                                  diff_embed, torch)
        res["_images"] = images
    elif cfg.inversion:
        res["inversion"] = {"skipped": "no generator available"}
    if keep_embeddings:
        res["_embeddings"] = emb
    res["wall_seconds"] = time.perf_counter() - t_start
    return res


def _run_inversion(embedder: Embedder, other: Embedder | None, data: AuditData, emb: dict[str, np.ndarray],
                   prot: dict[str, np.ndarray] | None, cfg: AuditConfig, generator: Any,
                   diff_embed: Callable | None, torch: Any) -> tuple[dict, dict]:
    from ..core.metrics import threshold_at_far
    from .inversion import (
        blackbox_refine,
        cosine_rows,
        decode_latents,
        encode_latents,
        map_templates,
        pca_basis,
        to_crops112,
        train_mapper,
        whitebox_refine,
    )

    out: dict[str, Any] = {}
    te_lab = data.labels["test"]
    _, imp = pair_sets(te_lab)
    s_imp = np.sum(emb["test"][imp[:, 0]] * emb["test"][imp[:, 1]], 1)
    thr1 = threshold_at_far(s_imp, cfg.far)
    out["threshold_type1"] = thr1
    other_emb_test = None
    thr2 = None
    if other is not None:
        other_emb_test = embed_crops(other, data.crops["test"])
        s2 = np.sum(other_emb_test[imp[:, 0]] * other_emb_test[imp[:, 1]], 1)
        thr2 = threshold_at_far(s2, cfg.far)
        out["other_embedder"] = other.name
        out["threshold_type2"] = thr2
    tgt, oth = _targets(te_lab, cfg.n_invert, cfg.seed)
    out["n_targets"] = int(len(tgt))
    if other_emb_test is not None:
        # reference: how often a REAL different photo is accepted by the second recognizer (upper bound-ish)
        out["type2_reference_real_photo"] = float(np.mean(
            np.sum(other_emb_test[tgt] * other_emb_test[oth], 1) > thr2))

    # training latents from the generator's encoder (training identities only)
    tr_idx = np.arange(len(data.crops["train"]))
    if cfg.mapper_train_max and len(tr_idx) > cfg.mapper_train_max:
        tr_idx = np.random.default_rng(cfg.seed).choice(tr_idx, cfg.mapper_train_max, replace=False)
    t0 = time.perf_counter()
    z_train = encode_latents(generator, data.crops["train"][tr_idx])
    out["encode_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mapper = train_mapper(emb["train"][tr_idx], z_train, epochs=cfg.mapper_epochs, hidden=cfg.mapper_hidden,
                          seed=cfg.seed)
    out["mapper_train_seconds"] = time.perf_counter() - t0
    z_std = mapper.z_std.clone()

    def evaluate(crops: np.ndarray) -> dict:
        e1 = embed_crops(embedder, crops)
        s1 = cosine_rows(e1, emb["test"][tgt])
        r = {"type1_rate": float(np.mean(s1 > thr1)), "type1_mean_cos": float(s1.mean())}
        if other is not None:
            e2 = embed_crops(other, crops)
            s2 = cosine_rows(e2, other_emb_test[oth])
            r.update({"type2_rate": float(np.mean(s2 > thr2)), "type2_mean_cos": float(s2.mean())})
        return r

    target_emb = emb["test"][tgt]
    results: dict[str, Any] = {}
    images: dict[str, np.ndarray] = {"original": data.crops["test"][tgt], "other_photo": data.crops["test"][oth]}
    # generator ceiling: reconstruct the target image itself with the encoder
    rec = to_crops112(decode_latents(generator, encode_latents(generator, data.crops["test"][tgt])))
    results["encoder_reconstruction_ceiling"] = evaluate(rec)
    images["encoder"] = rec

    t0 = time.perf_counter()
    z0 = map_templates(mapper, target_emb)
    rec = to_crops112(decode_latents(generator, z0))
    t_map = (time.perf_counter() - t0) / max(1, len(tgt))
    results["mapper"] = {**evaluate(rec), "seconds_per_inversion": t_map}
    images["mapper"] = rec

    if diff_embed is not None:
        t0 = time.perf_counter()
        zs = []
        for i in range(0, len(z0), 16):
            zs.append(whitebox_refine(generator, diff_embed, torch.as_tensor(target_emb[i:i + 16]), z0[i:i + 16],
                                      steps=cfg.wb_steps, lr=cfg.wb_lr, z_std=z_std))
        z_wb = torch.cat(zs)
        t_wb = (time.perf_counter() - t0) / max(1, len(tgt)) + t_map
        rec = to_crops112(decode_latents(generator, z_wb))
        results["whitebox"] = {**evaluate(rec), "seconds_per_inversion": t_wb, "steps": cfg.wb_steps}
        images["whitebox"] = rec
    else:
        results["whitebox"] = {"skipped": f"no differentiable copy of {embedder.name}"}

    basis, bstd = pca_basis(z_train, cfg.bb_dims)
    t0 = time.perf_counter()
    bb = blackbox_refine(generator, lambda c: embed_crops(embedder, c), target_emb, z0, basis, bstd,
                         iters=cfg.bb_iters, pop=cfg.bb_pop, sigma=cfg.bb_sigma, lr=cfg.bb_lr, seed=cfg.seed)
    t_bb = (time.perf_counter() - t0) / max(1, len(tgt)) + t_map
    rec = to_crops112(decode_latents(generator, bb.z))
    results["blackbox"] = {**evaluate(rec), "seconds_per_inversion": t_bb, "queries_per_inversion": bb.queries}
    images["blackbox"] = rec

    # mitigation: the attacker holds protected templates (per-user secret keys), trains its mapper on
    # protected templates of training identities, and inverts the victims' protected templates
    if prot is not None:
        pt_train = prot["train"][tr_idx].astype(np.float32) * 2 - 1
        m2 = train_mapper(pt_train, z_train, epochs=cfg.mapper_epochs, hidden=cfg.mapper_hidden, seed=cfg.seed)
        rec = to_crops112(decode_latents(generator, map_templates(m2, prot["test"][tgt].astype(np.float32) * 2 - 1)))
        results["protected_mapper"] = evaluate(rec)
        images["protected_mapper"] = rec
    out["attacks"] = results
    return out, images


# --------------------------------------------------------------------------------------------- report

def write_report(res: dict, out_dir: str | os.PathLike, n_grid: int = 8) -> dict[str, Path]:
    """Write ``audit.json`` and ``audit.html`` (leakage bar chart, original/reconstruction grid)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.report import HtmlReport, image_grid

    out_dir = Path(out_dir)
    images = res.pop("_images", None)
    res.pop("_embeddings", None)
    paths = {"json": atomic_write_json(out_dir / "audit.json", res)}
    rep = HtmlReport(f"Embedding leakage audit — {res['embedder']}")
    _findings(rep, res)
    rep.paragraph(f"Splits (identity-disjoint): {res['splits']}. Probes/mappers train on train identities; "
                  "all numbers are on held-out test identities.")
    v = res["verification_raw"]
    rep.heading("Verification with raw embeddings")
    rep.table([{"TAR@FAR": v["tar"], "FAR": res["config"]["far"], "threshold": v["threshold"], "EER": v["eer"]}])
    if "probes" in res:
        rep.heading("Attribute leakage (probe lift over trivial predictor)")
        rows = [r for r in res["probes"] if "lift" in r]
        fig, ax = plt.subplots(figsize=(8, 3.2))
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["lift"] for r in rows], 0.4, label="raw embedding")
        tp = res.get("templates", {}).get("probes_per_user_keys")
        if tp:
            lk = {r["attribute"]: r.get("lift", 0) for r in tp}
            ax.bar(x + 0.2, [lk.get(r["attribute"], 0) for r in rows], 0.4, label="protected template")
        ax.set_xticks(x, [r["attribute"] for r in rows], rotation=30)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("lift = 1 - err/err_trivial")
        ax.legend()
        rep.figure(fig, "Fraction of the trivial predictor's error removed by a probe on the embedding")
        rep.table(rows, ["attribute", "unit", "probe", "trivial", "lift", "selected", "n_train", "n_test"])
    if "templates" in res:
        t = res["templates"]
        rep.heading(f"Protected templates ({t['n_bits']}-bit keyed projection + binarisation)")
        rep.table([
            {"setting": "raw embedding", "TAR@FAR": v["tar"], "EER": v["eer"]},
            {"setting": "per-user keys", "TAR@FAR": t["verification_per_user_keys"]["tar"],
             "EER": t["verification_per_user_keys"]["eer"]},
            {"setting": "stolen key (one key for all)", "TAR@FAR": t["verification_stolen_key"]["tar"],
             "EER": t["verification_stolen_key"]["eer"]}])
        rep.table([t["unlinkability"]])
        for key, title in (("probes_per_user_keys", "Probes on protected templates (per-user keys)"),
                           ("probes_system_key", "Probes on protected templates (one system key)")):
            if key in t:
                rep.paragraph(title)
                rep.table([r for r in t[key] if "lift" in r], ["attribute", "probe", "trivial", "lift"])
    inv = res.get("inversion")
    if inv and "attacks" in inv:
        rep.heading("Inversion attacks")
        rep.paragraph(f"Success at FAR {res['config']['far']}: type I = accepted by the attacked recognizer "
                      f"against the target embedding (threshold {inv['threshold_type1']:.3f}); type II = accepted "
                      f"by {inv.get('other_embedder')} against a different photo of the person. "
                      f"Real different photo accepted by that recognizer: {inv.get('type2_reference_real_photo')}.")
        rep.table([{"attack": k, **{kk: vv for kk, vv in r.items() if not isinstance(vv, dict)}}
                   for k, r in inv["attacks"].items()])
    if images:
        order = [k for k in ("original", "other_photo", "encoder", "mapper", "whitebox", "blackbox",
                             "protected_mapper") if k in images]
        n = min(n_grid, len(images["original"]))
        grid = image_grid([[images[k][i] for k in order] for i in range(n)])
        rep.image(grid, "columns: " + ", ".join(order))
    paths["html"] = rep.write(out_dir / "audit.html")
    return paths


def _findings(rep, res: dict) -> None:
    """The verdict box: which attributes the embedding gives away, and how well inversion works."""
    items = []
    leaks = sorted((r for r in res.get("probes", []) if r.get("lift") is not None), key=lambda r: -r["lift"])
    for r in leaks[:3]:
        unit = f" {r['unit']}" if r.get("unit") else ""
        items.append(f"{r['attribute']}: probe {r['probe']:.3g} vs trivial {r['trivial']:.3g}{unit} "
                     f"(lift {r['lift']:+.2f}; n = {r.get('n_test', '?')} test images)")
    for k, r in res.get("inversion", {}).get("attacks", {}).items():
        if "type1_rate" in r:
            items.append(f"inversion {k}: accepted as the person (type I) {r['type1_rate']:.2f}")
    t = res.get("templates")
    if t:
        items.append(f"protected template: TAR {t['verification_per_user_keys']['tar']:.3f}, "
                     f"linkage AUC {t['unlinkability']['linkage_auc']:.3f} (0.5 = unlinkable)")
    leaky = [r["attribute"] for r in leaks if r["lift"] > 0.1]
    rep.findings(items, verdict=(f"the embedding leaks {', '.join(leaky)}" if leaky else "no attribute lift above 0.1"),
                 level="bad" if leaky else "good")
    test = res.get("splits", {}).get("test", {})
    if isinstance(test, dict) and "identities" in test:
        rep.small_n(int(test["identities"]), "test identities")
