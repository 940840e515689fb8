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
from ..core.options import stage
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
    n_invert: int = 60                      # targets, one per held-out identity (val + test, or --test-data)
    mapper_epochs: int = 20                 # 20 x 512 beat 60 x 1024 on validation identities (docs/audit.md)
    mapper_hidden: int = 512
    mapper_train_max: int | None = None
    wb_steps: int = 100                     # 0 = no white-box attack
    wb_lr: float = 0.05
    bb_iters: int = 100                     # NES iterations at most; a target stops once accepted
    bb_pop: int = 16
    bb_dims: int = 64
    bb_sigma: float = 0.5
    bb_lr: float = 0.3
    bb_patience: int = 8                    # iterations without gain before a restart with a wider radius
    wb_ensemble: str | None = None          # a second recognizer the attacker holds (white-box ensemble), or None
    wb_ensemble_weight: float = 1.0
    wb_budgets: tuple[int, ...] = (10, 20, 50)  # also report type I / II after these many white-box steps
    wb_manifold: bool = True                # also run the on-manifold white-box attack (PCA-subspace latent)
    wb_manifold_dims: int = 512             # chosen on validation identities (dlib + CASIA scoring, docs/audit.md)
    wb_manifold_reg: float = 1e-3
    wb_manifold_augment: float = 0.05       # random shift (fraction of the width) + mirror per step (EOT)
    n_grid: int = 8
    seed: int = 0
    other_embedder: str | None = "auto"     # type-II judge; "auto": the independent ONNX MobileFaceNet (dlib for it)


@dataclass
class AuditData:
    """Crops, labels and identity names of the train/val/test splits (``test_root``: the test split is
    every identity of that separate folder)."""

    crops: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    ids: dict[str, np.ndarray]
    paths: dict[str, list[str]] = field(default_factory=dict)
    test_root: str | None = None


def _load_crops(ds: FaceDataset) -> np.ndarray:
    from ..core.imageio import load_image

    crops = []
    for p in ds.paths:
        img = load_image(p)
        if img.shape != (112, 112, 3):
            raise InputError(f"{p}: expected a 112x112 ArcFace-aligned crop, got {img.shape}")
        crops.append(img)
    return np.stack(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)


def _cap(ds: FaceDataset, max_per_split: int | None) -> FaceDataset:
    """Keep whole identities (deterministic order) until ``max_per_split`` images are reached."""
    if max_per_split is None or len(ds) <= max_per_split:
        return ds
    keep, n = [], 0
    for ident in ds.identities:
        cnt = sum(1 for lab in ds.labels if ds.names[lab] == ident)
        if n + cnt > max_per_split and keep:
            break
        keep.append(ident)
        n += cnt
    return ds.select_identities(keep)


def load_celeba_splits(root: str | os.PathLike, max_per_split: int | None = None, seed: int = 0,
                       test_root: str | os.PathLike | None = None) -> AuditData:
    """Load the CelebA subset's identity-disjoint train/val/test splits (optionally capped, whole identities).

    With ``test_root`` the test split is every identity of that folder (``core.testset``), which must share
    no person with the training or validation identities."""
    splits = identity_split(celeba_subset(root))
    if test_root is not None:
        from ..core.testset import load_test_root, require_disjoint

        tds = load_test_root(test_root)
        require_disjoint(splits["train"].identities + splits["val"].identities, tds, "training and validation")
        splits["test"] = tds
    data = AuditData({}, {}, {}, {}, str(test_root) if test_root is not None else None)
    for name, ds in splits.items():
        ds = _cap(ds, max_per_split)
        data.crops[name] = _load_crops(ds)
        data.labels[name] = ds.labels.copy() + (100_000 if name == "test" and test_root is not None else 0)
        data.ids[name] = np.array([ds.names[i] for i in ds.labels])
        if name == "test" and test_root is not None:  # cache keys must not collide with the training root's
            data.paths[name] = [str(Path(p).resolve()) for p in ds.paths]
        else:
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
                        far: float, ids: np.ndarray | None = None) -> dict[str, Any]:
    """TAR and threshold at ``far`` over all genuine/impostor pairs; ``sim(i_idx, j_idx)`` scores pairs.
    With ``ids`` (identity per row) also 95 % identity-bootstrap intervals of TAR and AUC."""
    from ..core.metrics import auc, eer, threshold_at_far, verification_ci

    gen, imp = pair_sets(labels)
    gs, is_ = sim(gen[:, 0], gen[:, 1]), sim(imp[:, 0], imp[:, 1])
    thr = threshold_at_far(is_, far)
    same = np.r_[np.ones(len(gs), bool), np.zeros(len(is_), bool)]
    e, _ = eer(np.r_[gs, is_], same)
    out: dict[str, Any] = {"tar": float(np.mean(gs > thr)), "threshold": float(thr), "eer": float(e),
                           "n_genuine": int(len(gs)), "n_impostor": int(len(is_)), "impostor_pairs": "all"}
    if ids is not None:
        pairs = np.vstack([gen, imp])
        lab = np.asarray(labels)
        ci = verification_ci(np.r_[gs, is_], same, lab[pairs[:, 0]], lab[pairs[:, 1]], fars=(far,), n_boot=300)
        out.update({"tar_ci95": ci[f"tar@far={far:g}"], "auc": auc(np.r_[gs, is_], same), "auc_ci95": ci["auc"],
                    "n_identities": int(len(np.unique(lab)))})
    return out


def impostor_threshold(feats: np.ndarray, labels: np.ndarray, far: float) -> tuple[float, int]:
    """Threshold at ``far`` from *all* impostor pairs of ``feats`` (cosine of unit rows), and their number."""
    from ..core.metrics import threshold_at_far

    f = np.asarray(feats, np.float32)
    lab = np.asarray(labels)
    sims = f @ f.T
    iu = np.triu_indices(len(f), 1)
    imp = sims[iu][lab[iu[0]] != lab[iu[1]]]
    return threshold_at_far(imp, far), int(len(imp))


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

def other_name(embedder: Embedder, cfg: AuditConfig) -> str | None:
    """The type-II judge: the project's independent recognizer (the ONNX MobileFaceNet, which no attack or
    model here is trained or tuned against), or dlib when the ONNX MobileFaceNet is the one audited."""
    if cfg.other_embedder != "auto":
        return cfg.other_embedder
    return "dlib" if embedder.name == "mobilefacenet-onnx" else "mobilefacenet-onnx"


def _targets(labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One target image and one *different* photo per identity (identities with >= 2 images), n at most."""
    rng = np.random.default_rng(seed)
    tgt, other = [], []
    for lab in np.unique(labels):
        idx = np.where(labels == lab)[0]
        if len(idx) >= 2:
            a, b = rng.choice(idx, 2, replace=False)
            tgt.append(a)
            other.append(b)
    order = rng.permutation(len(tgt))[:n]
    return np.array(tgt, int)[order], np.array(other, int)[order]


def target_pool(data: AuditData) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(crops, labels, identity names, description) of the people inversions may target: every identity of
    ``--test-data``, else the training root's held-out val + test identities (the mapper never saw them;
    val only picks probe settings), so that 60 or more people can be targets."""
    if data.test_root:
        return data.crops["test"], data.labels["test"], data.ids["test"], f"all identities of {data.test_root}"
    parts = [k for k in ("test", "val") if k in data.crops]
    return (np.concatenate([data.crops[k] for k in parts]), np.concatenate([data.labels[k] for k in parts]),
            np.concatenate([data.ids[k] for k in parts]), "held-out identities of the training root (test + val)")


def run_audit(embedder: Embedder, data: AuditData, attrs: dict[str, Attributes] | None, cfg: AuditConfig,
              generator: Any = None, other: Embedder | None = None, master_key: bytes | None = None,
              diff_embed: Callable | None = None, keep_embeddings: bool = False,
              cache_dir: str | os.PathLike | None = None, ensemble: Embedder | None = None) -> dict:
    """Run the enabled parts of the audit and return the JSON-able results (and images under ``_images``).

    ``keep_embeddings`` also returns the raw embeddings under ``_embeddings`` (only for an explicit user request
    to save them; :func:`write_report` never writes them).
    ``cache_dir`` keeps the encoded training latents and the trained mapper between runs (see :class:`_MapperCache`).
    ``ensemble`` (a second, differentiable recognizer the attacker holds; never the type-II judge) adds the
    ``whitebox_ensemble`` attack (see :func:`_ensemble_targets`).
    """
    import torch

    t_start = time.perf_counter()
    res: dict[str, Any] = {"embedder": embedder.name, "config": asdict(cfg),
                           "splits": {k: {"images": int(len(v)), "identities": int(len(np.unique(data.ids[k])))}
                                      for k, v in data.crops.items()}}
    emb = {k: embed_crops(embedder, v) for k, v in data.crops.items()}
    te_lab = data.labels["test"]
    raw_ver = verification_at_far(lambda i, j: np.sum(emb["test"][i] * emb["test"][j], 1), te_lab, cfg.far,
                                  ids=data.ids["test"])
    if data.test_root:
        res["test_root"] = data.test_root
    res["verification_raw"] = raw_ver
    master_key = master_key or os.urandom(32)

    # ---------------------------------------------------------------- probes
    if cfg.probes and attrs is not None:
        stage(1, 3, "attribute probes (what the embedding leaks)")
        t0 = time.perf_counter()
        res["probes"] = run_probes(emb["train"], attrs["train"], emb["val"], attrs["val"], emb["test"],
                                   attrs["test"], cfg.attributes, mlp_epochs=cfg.mlp_epochs, seed=cfg.seed,
                                   test_groups=data.ids["test"])
        res["probes_seconds"] = time.perf_counter() - t0

    # ---------------------------------------------------------------- protected templates
    prot = None
    if cfg.templates:
        stage(2, 3, "protected templates (per-user keys, one system key, linkage)")
        center = emb["train"].mean(0)
        prot = {k: protect_per_identity(master_key, emb[k], data.ids[k], cfg.n_bits, center) for k in emb}
        te_ids = data.ids["test"]
        ver_user = verification_at_far(lambda i, j: template_similarity(prot["test"][i], prot["test"][j]),
                                       te_lab, cfg.far, ids=te_ids)
        sys_h = BioHasher.from_master(master_key, "system", emb["test"].shape[1], cfg.n_bits, center)
        sys_t = {k: sys_h.protect(emb[k]) for k in emb}
        ver_sys = verification_at_far(lambda i, j: template_similarity(sys_t["test"][i], sys_t["test"][j]),
                                      te_lab, cfg.far, ids=te_ids)
        # unlinkability: the same faces re-enrolled under fresh keys vs the first enrolment
        re_t = protect_per_identity(master_key + b"/reissue", emb["test"], te_ids, cfg.n_bits, center)
        gen, imp = pair_sets(te_lab)
        cross_gen = template_similarity(prot["test"][gen[:, 0]], re_t[gen[:, 1]])
        cross_imp = template_similarity(prot["test"][imp[:, 0]], re_t[imp[:, 1]])
        from ..core.metrics import auc, verification_ci

        link_same = np.r_[np.ones(len(cross_gen), bool), np.zeros(len(cross_imp), bool)]
        link_auc = auc(np.r_[cross_gen, cross_imp], link_same)
        lp = np.vstack([gen, imp])
        link_ci = verification_ci(np.r_[cross_gen, cross_imp], link_same, te_lab[lp[:, 0]], te_lab[lp[:, 1]],
                                  fars=(cfg.far,), n_boot=300)["auc"]
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
                "linkage_auc_ci95": link_ci,
                "n_identities": int(len(np.unique(te_lab))),
                "n_pairs_genuine_impostor": [int(len(cross_gen)), int(len(cross_imp))],
                "mean_similarity_cross_key_genuine": float(cross_gen.mean()),
                "mean_similarity_cross_key_impostor": float(cross_imp.mean())},
        }
        if cfg.probes and attrs is not None:
            pt = {k: v.astype(np.float32) * 2 - 1 for k, v in prot.items()}
            st = {k: v.astype(np.float32) * 2 - 1 for k, v in sys_t.items()}
            res["templates"]["probes_per_user_keys"] = run_probes(
                pt["train"], attrs["train"], pt["val"], attrs["val"], pt["test"], attrs["test"], cfg.attributes,
                mlp_epochs=cfg.mlp_epochs, seed=cfg.seed, test_groups=te_ids)
            res["templates"]["probes_system_key"] = run_probes(
                st["train"], attrs["train"], st["val"], attrs["val"], st["test"], attrs["test"], cfg.attributes,
                mlp_epochs=cfg.mlp_epochs, seed=cfg.seed, test_groups=te_ids)

    # ---------------------------------------------------------------- inversion
    if cfg.inversion and generator is not None:
        stage(3, 3, "inversion attacks (white-box, black-box) on the held-out targets")
        res["inversion"], images = _run_inversion(embedder, other, data, emb, prot, cfg, generator,
                                                  diff_embed, torch, cache_dir, ensemble)
        res["_images"] = images
    elif cfg.inversion:
        res["inversion"] = {"skipped": "no generator available"}
    if keep_embeddings:
        res["_embeddings"] = emb
    res["wall_seconds"] = time.perf_counter() - t_start
    return res


def _ensemble_targets(train_a: np.ndarray, train_b: np.ndarray, targets_a: np.ndarray,
                      ridge: float = 1e-2) -> tuple[np.ndarray, dict]:
    """Predict the second recognizer's embedding of each target from the attacked recognizer's template.

    The attacker holds only the target's template of the attacked recognizer, so the ensemble's second term
    needs a target in the other recognizer's space: a ridge regression fitted on the *training* identities'
    images embedded by both (unit-normalised output). Returns the predictions and, as a fit check, the mean
    cosine of prediction vs truth on a held-out fifth of the training images."""
    a, b = np.asarray(train_a, np.float64), np.asarray(train_b, np.float64)

    def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = x.mean(0)
        xc = x - mu
        return mu, np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ y)

    def predict(mu: np.ndarray, w: np.ndarray, x: np.ndarray) -> np.ndarray:
        p = (np.asarray(x, np.float64) - mu) @ w
        return p / (np.linalg.norm(p, axis=1, keepdims=True) + 1e-12)

    n_fit = len(a) - len(a) // 5
    mu, w = fit(a[:n_fit], b[:n_fit])
    check = float(np.mean(np.sum(predict(mu, w, a[n_fit:]) * b[n_fit:], 1) / np.linalg.norm(b[n_fit:], axis=1)))
    mu, w = fit(a, b)
    return predict(mu, w, targets_a).astype(np.float32), {"regressor": "ridge, training identities",
                                                          "holdout_cos": check}


class _MapperCache:
    """Optional on-disk cache (``cache_dir``) of the encoded training latents and the trained mapper, so that
    repeated audits skip the two slowest fixed steps. Entries are keyed by a SHA-256 of everything they depend
    on (generator weights, embedder, training image paths, mapper options, seed); a stale or unreadable entry
    is ignored and rebuilt. The files hold generator latents of *training* faces (no raw embeddings)."""

    VERSION = 1

    def __init__(self, cache_dir: str | os.PathLike | None, generator: Any, embedder_name: str,
                 train_paths: list[str], cfg: AuditConfig) -> None:
        import hashlib

        self.dir = Path(cache_dir) if cache_dir else None
        if self.dir is None:
            return
        h = hashlib.sha256(f"v{self.VERSION}|{type(generator).__name__}|{embedder_name}".encode())
        for k, t in sorted(generator.state_dict().items()):
            h.update(k.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        h.update("\n".join(train_paths).encode())
        self.latent_key = h.hexdigest()[:24]
        h.update(f"|{cfg.mapper_epochs}|{cfg.mapper_hidden}|{cfg.seed}".encode())
        self.mapper_key = h.hexdigest()[:24]

    def _load(self, name: str) -> Any:
        import torch

        p = self.dir / name if self.dir else None
        if p is None or not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # a damaged cache entry is rebuilt, never trusted
            log.warning("ignoring unreadable cache entry %s (%s)", p, e)
            return None

    def _save(self, name: str, obj: Any) -> None:
        import torch

        if self.dir is None:
            return
        with atomic_path(self.dir / name, suffix=".pt") as tmp:
            torch.save(obj, tmp)

    def load_latents(self) -> Any:
        """The cached training latents, or None."""
        return self._load(f"latents_{self.latent_key}.pt") if self.dir else None

    def save_latents(self, z: Any) -> None:
        """Store the training latents."""
        if self.dir:
            self._save(f"latents_{self.latent_key}.pt", z.detach().cpu())

    def load_mapper(self, in_dim: int, latent_dim: int) -> Any:
        """The cached mapper (eval mode), or None."""
        from .inversion import LatentMapper

        state = self._load(f"mapper_{self.mapper_key}.pt") if self.dir else None
        if state is None:
            return None
        m = LatentMapper(in_dim, latent_dim, int(state.pop("_hidden")), int(state.pop("_depth")))
        try:
            m.load_state_dict(state)
        except RuntimeError as e:
            log.warning("ignoring mismatched cached mapper (%s)", e)
            return None
        return m.eval()

    def save_mapper(self, m: Any) -> None:
        """Store the mapper's weights (with its width and depth)."""
        if self.dir:
            lin = [x for x in m.net if hasattr(x, "out_features")]
            self._save(f"mapper_{self.mapper_key}.pt",
                       {**m.state_dict(), "_hidden": lin[0].out_features, "_depth": len(lin)})


def _run_inversion(embedder: Embedder, other: Embedder | None, data: AuditData, emb: dict[str, np.ndarray],
                   prot: dict[str, np.ndarray] | None, cfg: AuditConfig, generator: Any,
                   diff_embed: Callable | None, torch: Any,
                   cache_dir: str | os.PathLike | None = None,
                   ensemble: Embedder | None = None) -> tuple[dict, dict]:
    """Inversion attacks on held-out targets. Thresholds (type I: attacked recognizer; type II: the other
    one) come from *all* impostor pairs of the training identities, i.e. from the training root, never from
    the targets; rates carry 95 % bootstrap intervals over target identities (one target per person)."""
    from ..core.metrics import rate_with_ci
    from ..core.progress import progress
    from .inversion import (
        blackbox_refine,
        cosine_rows,
        decode_latents,
        encode_latents,
        fast_decoder,
        map_templates,
        native_bf16,
        pca_basis,
        to_crops112,
        train_mapper,
        whitebox_refine,
    )

    out: dict[str, Any] = {}
    pool_crops, pool_lab, pool_ids, pool_what = target_pool(data)
    thr1, n_imp1 = impostor_threshold(emb["train"], data.labels["train"], cfg.far)
    out.update({"threshold_type1": thr1, "threshold_source": f"all {n_imp1} impostor pairs of the training "
                "identities", "targets_from": pool_what,
                "attacker_bf16": native_bf16(next(generator.parameters()).device)})
    tgt, oth = _targets(pool_lab, cfg.n_invert, cfg.seed)
    t_ids = pool_ids[tgt]
    out["n_targets"] = int(len(tgt))
    pool_emb = embed_crops(embedder, pool_crops[np.r_[tgt, oth]])
    target_emb, other_photo_emb = pool_emb[:len(tgt)], pool_emb[len(tgt):]
    thr2 = None
    if other is not None:
        thr2, n_imp2 = impostor_threshold(embed_crops(other, data.crops["train"]), data.labels["train"], cfg.far)
        e2 = embed_crops(other, pool_crops[oth])
        out.update({"other_embedder": other.name, "threshold_type2": thr2})
        # how often a REAL different photo of the person passes the same type-II check
        ref2 = np.sum(embed_crops(other, pool_crops[tgt]) * e2, 1) > thr2
        out["type2_reference_real_photo"] = rate_with_ci(ref2, t_ids)
        ref1 = np.sum(target_emb * other_photo_emb, 1) > thr1
        out["type1_reference_real_photo"] = rate_with_ci(ref1, t_ids)

    tr_idx = np.arange(len(data.crops["train"]))
    if cfg.mapper_train_max and len(tr_idx) > cfg.mapper_train_max:
        tr_idx = np.random.default_rng(cfg.seed).choice(tr_idx, cfg.mapper_train_max, replace=False)
    cache = _MapperCache(cache_dir, generator, embedder.name, [data.paths["train"][i] for i in tr_idx], cfg)
    t0 = time.perf_counter()
    z_train = cache.load_latents()
    if z_train is None:
        z_train = encode_latents(generator, data.crops["train"][tr_idx])
        cache.save_latents(z_train)
    out["encode_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mapper = cache.load_mapper(emb["train"].shape[1], z_train.shape[1])
    out["mapper_cached"] = mapper is not None
    if mapper is None:
        mapper = train_mapper(emb["train"][tr_idx], z_train, epochs=cfg.mapper_epochs, hidden=cfg.mapper_hidden,
                              seed=cfg.seed)
        cache.save_mapper(mapper)
    out["mapper_train_seconds"] = time.perf_counter() - t0
    z_std = mapper.z_std.clone()

    def evaluate(crops: np.ndarray) -> dict:
        s1 = cosine_rows(embed_crops(embedder, crops), target_emb)
        r = {"type1": rate_with_ci(s1 > thr1, t_ids), "type1_mean_cos": float(s1.mean())}
        r["type1_rate"] = r["type1"]["value"]
        if other is not None:
            s2 = cosine_rows(embed_crops(other, crops), e2)
            r.update({"type2": rate_with_ci(s2 > thr2, t_ids), "type2_mean_cos": float(s2.mean())})
            r["type2_rate"] = r["type2"]["value"]
        return r

    results: dict[str, Any] = {}
    images: dict[str, np.ndarray] = {"original": pool_crops[tgt], "other_photo": pool_crops[oth]}
    rec = to_crops112(decode_latents(generator, encode_latents(generator, pool_crops[tgt])))
    results["encoder_reconstruction_ceiling"] = evaluate(rec)
    images["encoder"] = rec

    t0 = time.perf_counter()
    z0 = map_templates(mapper, target_emb)
    rec = to_crops112(decode_latents(generator, z0))
    t_map = (time.perf_counter() - t0) / max(1, len(tgt))
    results["mapper"] = {**evaluate(rec), "seconds_per_inversion": t_map}
    images["mapper"] = rec

    if diff_embed is not None and cfg.wb_steps > 0:
        variants = [("whitebox", {"z_std": z_std, "lr": cfg.wb_lr})]
        if cfg.wb_manifold:
            mb, ms = pca_basis(z_train, cfg.wb_manifold_dims)
            variants.append(("whitebox_manifold", {"basis": mb, "basis_std": ms, "reg": cfg.wb_manifold_reg,
                                                   "lr": cfg.wb_lr, "augment": cfg.wb_manifold_augment}))
        aux_diff = None
        if ensemble is not None:  # the attacker's copy skips a mirror pass (half the cost; as validated)
            flip = getattr(ensemble, "flip", None)
            if flip is not None:
                ensemble.flip = False
            aux_diff = differentiable_embed(ensemble)
            if flip is not None:
                ensemble.flip = flip
        if aux_diff is not None:
            if other is not None and ensemble.name == other.name:
                raise InputError(f"the white-box ensemble may not use the type-II judge {other.name}")
            aux_t, fit = _ensemble_targets(emb["train"][tr_idx], embed_crops(ensemble, data.crops["train"][tr_idx]),
                                           target_emb)
            out["ensemble"] = {"recognizer": ensemble.name, "weight": cfg.wb_ensemble_weight, **fit}
            variants.append(("whitebox_ensemble", {
                **variants[0][1], "aux": None, "_aux_t": torch.as_tensor(aux_t, dtype=torch.float32)}))
        budgets = sorted({int(b) for b in cfg.wb_budgets if 0 < b < cfg.wb_steps} | {cfg.wb_steps})
        for name, kw in variants:
            t0 = time.perf_counter()
            snaps: dict[int, list] = {b: [] for b in budgets}
            for i in progress(range(0, len(z0), 16), desc=f"{name} (16 targets per batch)", unit="batch"):
                kept: dict[int, Any] = {}
                kwb = {k: v for k, v in kw.items() if not k.startswith("_")}
                if "_aux_t" in kw:
                    kwb["aux"] = [(aux_diff, kw["_aux_t"][i:i + 16], cfg.wb_ensemble_weight)]
                whitebox_refine(generator, diff_embed, torch.as_tensor(target_emb[i:i + 16]), z0[i:i + 16],
                                steps=cfg.wb_steps, callback=lambda s, z, k=kept, b=tuple(budgets): k.update(
                                    {s: z} if s in b else {}), **kwb)
                for b in budgets:
                    snaps[b].append(kept[b])
            t_wb = (time.perf_counter() - t0) / max(1, len(tgt))
            curve = []
            for b in budgets:  # type I / II after b steps; time = the run's time per step x b (steps cost alike)
                rec = to_crops112(decode_latents(generator, torch.cat(snaps[b])))
                r = evaluate(rec)
                curve.append({"steps": b, "type1": r["type1"], **({"type2": r["type2"]} if "type2" in r else {}),
                              "seconds_per_inversion": t_wb * b / cfg.wb_steps + t_map})
            results[name] = {**r, "seconds_per_inversion": t_wb + t_map, "steps": cfg.wb_steps,
                             "gradient_steps_per_inversion": cfg.wb_steps, "success_vs_steps": curve}
            images[name] = rec
    elif cfg.wb_steps > 0:
        results["whitebox"] = {"skipped": f"no differentiable copy of {embedder.name}"}

    basis, bstd = pca_basis(z_train, cfg.bb_dims)
    t0 = time.perf_counter()
    bb = blackbox_refine(generator, lambda c: embed_crops(embedder, c), target_emb, z0, basis, bstd,
                         iters=cfg.bb_iters, pop=cfg.bb_pop, sigma=cfg.bb_sigma, lr=cfg.bb_lr, seed=cfg.seed,
                         stop_score=thr1 + 1e-6, patience=cfg.bb_patience, decode=fast_decoder(generator))
    t_bb = (time.perf_counter() - t0) / max(1, len(tgt)) + t_map
    rec = bb.crops  # the queried images themselves (what the recognizer scored)
    results["blackbox"] = {**evaluate(rec), "seconds_per_inversion": t_bb, "queries_per_inversion": bb.queries,
                           "queries_max": int(bb.queries_per_target.max()),
                           "queries_median": float(np.median(bb.queries_per_target)),
                           "budget": f"at most 1 + {cfg.bb_iters} x {cfg.bb_pop} queries per target; a target "
                                     "stops when accepted at the attacker's threshold (training identities)",
                           "success_vs_queries": bb.success_curve()}
    images["blackbox"] = rec

    # mitigation: the attacker holds protected templates (per-user secret keys), trains its mapper on
    # protected templates of training identities, and inverts the victims' protected templates
    if prot is not None:
        centre = emb["train"].mean(0)
        from .templates import protect_per_identity

        # protected templates of the targets under their own (fresh) per-user keys
        pt_t = protect_per_identity(os.urandom(32), target_emb, t_ids, cfg.n_bits, centre)
        pt_train = prot["train"][tr_idx].astype(np.float32) * 2 - 1
        m2 = train_mapper(pt_train, z_train, epochs=cfg.mapper_epochs, hidden=cfg.mapper_hidden, seed=cfg.seed)
        rec = to_crops112(decode_latents(generator, map_templates(m2, pt_t.astype(np.float32) * 2 - 1)))
        results["protected_mapper"] = evaluate(rec)
        images["protected_mapper"] = rec
    out["attacks"] = results
    return out, images


# --------------------------------------------------------------------------------------------- report

def _ci(d: dict | float, ci: list | None = None, n: int | None = None, digits: int = 3) -> str:
    from ..core.metrics import format_ci

    return format_ci(d, ci, n, digits)


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
    rep.paragraph(f"Splits (identity-disjoint): {res['splits']}"
                  + (f"; test = every identity of {res['test_root']}" if res.get("test_root") else "")
                  + ". Probes/mappers train on train identities; all numbers are on held-out identities. "
                  "Brackets: 95 % bootstrap intervals over identities; n = images, pairs or targets as stated.")
    v = res["verification_raw"]
    rep.heading("Verification with raw embeddings")
    rep.table([{"TAR@FAR": _ci(v["tar"], v.get("tar_ci95")), "FAR": res["config"]["far"],
                "threshold": v["threshold"], "EER": v["eer"], "AUC": _ci(v.get("auc", float("nan")), v.get("auc_ci95")),
                "n genuine / impostor pairs (all)": f"{v['n_genuine']} / {v['n_impostor']}",
                "identities": v.get("n_identities", "")}])
    if "probes" in res:
        rep.heading("Attribute leakage (probe lift over trivial predictor)")
        rows = [r for r in res["probes"] if "lift" in r]
        t = res.get("templates", {})
        series = [("raw embedding", {r["attribute"]: r for r in rows})]
        for key, label in (("probes_per_user_keys", "protected template, per-user keys"),
                           ("probes_system_key", "protected template, one system key")):
            if t.get(key):
                series.append((label, {r["attribute"]: r for r in t[key] if "lift" in r}))
        fig, ax = plt.subplots(figsize=(9, 3.4))
        x = np.arange(len(rows))
        w = 0.8 / len(series)
        for k, (label, by) in enumerate(series):
            vals = [by.get(r["attribute"], {}).get("lift", 0.0) for r in rows]
            err = np.array([[max(0.0, vals[i] - by.get(r["attribute"], {}).get("lift_ci95", [vals[i]] * 2)[0]),
                             max(0.0, by.get(r["attribute"], {}).get("lift_ci95", [vals[i]] * 2)[1] - vals[i])]
                            for i, r in enumerate(rows)]).T
            ax.bar(x + (k - (len(series) - 1) / 2) * w, vals, w, yerr=err, capsize=2, label=label)
        ax.set_xticks(x, [r["attribute"] for r in rows], rotation=30)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel("lift = 1 - err/err_trivial")
        ax.legend(fontsize=7)
        rep.figure(fig, "Fraction of the trivial predictor's error removed by a probe (bars: 95 % interval over "
                        "test identities)")
        rep.table([{"attribute": r["attribute"], "unit": r["unit"],
                    "probe": _ci(r["probe"], r.get("probe_ci95")), "trivial": f"{r['trivial']:.3f}",
                    "lift": _ci(r["lift"], r.get("lift_ci95")), "selected": r["selected"],
                    "n train / test images": f"{r['n_train']} / {r['n_test']}",
                    "test ids": r.get("n_test_ids", "")} for r in rows])
    if "templates" in res:
        t = res["templates"]
        rep.heading(f"Protected templates ({t['n_bits']}-bit keyed projection + binarisation)")
        u, sk = t["verification_per_user_keys"], t["verification_stolen_key"]
        rep.table([
            {"setting": "raw embedding", "TAR@FAR": _ci(v["tar"], v.get("tar_ci95")), "EER": v["eer"]},
            {"setting": "per-user keys", "TAR@FAR": _ci(u["tar"], u.get("tar_ci95")), "EER": u["eer"]},
            {"setting": "one system key (stolen key)", "TAR@FAR": _ci(sk["tar"], sk.get("tar_ci95")),
             "EER": sk["eer"]}])
        un = t["unlinkability"]
        rep.table([{"linkage AUC": _ci(un["linkage_auc"], un.get("linkage_auc_ci95")),
                    "identities": un.get("n_identities", ""),
                    "pairs genuine / impostor": str(un.get("n_pairs_genuine_impostor", "")),
                    "cross-key genuine accept": un["cross_key_genuine_accept_rate"],
                    "cross-key impostor accept": un["cross_key_impostor_accept_rate"]}])
        for key, title in (("probes_per_user_keys", "Probes on protected templates (per-user keys)"),
                           ("probes_system_key", "Probes on protected templates (one system key)")):
            if key in t:
                rep.paragraph(title)
                rep.table([{"attribute": r["attribute"], "probe": r["probe"], "trivial": r["trivial"],
                            "lift": _ci(r["lift"], r.get("lift_ci95"))} for r in t[key] if "lift" in r])
    inv = res.get("inversion")
    if inv and "attacks" in inv:
        rep.heading("Inversion attacks")
        r1, r2 = inv.get("type1_reference_real_photo"), inv.get("type2_reference_real_photo")
        rep.paragraph(f"{inv['n_targets']} targets, one per person ({inv.get('targets_from', '')}). Success at FAR "
                      f"{res['config']['far']}: type I = accepted by the attacked recognizer against the target "
                      f"embedding (threshold {inv['threshold_type1']:.4f}, {inv.get('threshold_source', '')}); "
                      f"type II = accepted by {inv.get('other_embedder')} against a different photo of the person "
                      f"(threshold {inv.get('threshold_type2', float('nan')):.4f}). A real different photo passes "
                      f"type I {_ci(r1) if isinstance(r1, dict) else r1} and type II "
                      f"{_ci(r2) if isinstance(r2, dict) else r2}.")
        rows = []
        for k, r in inv["attacks"].items():
            if "type1" not in r:
                rows.append({"attack": k, "type I": r.get("skipped", "")})
                continue
            rows.append({"attack": k, "type I": _ci(r["type1"]),
                         "type II": _ci(r["type2"]) if "type2" in r else "",
                         "mean cos I / II": f"{r['type1_mean_cos']:.3f} / {r.get('type2_mean_cos', float('nan')):.3f}",
                         "budget": (f"{r['queries_per_inversion']:.0f} queries (mean), {r['queries_max']} max"
                                    if "queries_per_inversion" in r else
                                    f"{r['steps']} gradient steps" if "steps" in r else ""),
                         "s / inversion": r.get("seconds_per_inversion", "")})
        rep.table(rows)
        curves = [(k, r["success_vs_steps"]) for k, r in inv["attacks"].items() if r.get("success_vs_steps")]
        if curves:
            rep.paragraph("White-box attacks: success after a number of gradient steps (the budget); seconds per "
                          "target = the run's time per step times the steps, plus the mapper.")
            rep.table([{"attack": k, "steps": c["steps"], "type I": _ci(c["type1"]),
                        "type II": _ci(c["type2"]) if "type2" in c else "",
                        "s / inversion": f"{c['seconds_per_inversion']:.2f}"} for k, cs in curves for c in cs])
        bb = inv["attacks"].get("blackbox", {})
        if bb.get("success_vs_queries"):
            rep.paragraph("Black-box: share of targets accepted (type I) within a query budget. " + bb["budget"])
            rep.table(bb["success_vs_queries"])
    if images:
        order = [k for k in ("original", "other_photo", "encoder", "mapper", "whitebox", "whitebox_manifold",
                             "blackbox", "protected_mapper") if k in images]
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
