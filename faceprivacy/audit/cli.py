"""``faceprivacy audit-embeddings``: what a face recognizer's embeddings leak, and a protected-template fix."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit-embeddings`` sub-command."""
    from ..core.options import add_common, add_deprecated, add_out, command, run_dir

    p = command(sub, "audit-embeddings",
                "attribute probes, inversion attacks and protected templates for an embedder",
                examples=["faceprivacy audit-embeddings --quick              # a few minutes on 2 cores",
                          "faceprivacy audit-embeddings --embedder mobilefacenet --no-inversion",
                          "faceprivacy audit-embeddings --embedder mypkg.models:load_embedder -o audit_mine/"],
                description="Audit what face embeddings leak (attribute probes, embedding->image "
                                   "inversion) and how a keyed protected template reduces it. Trains on the "
                                   "CelebA subset's training identities and reports on held-out identities. "
                                   "Writes audit.json and audit.html; never writes raw embeddings unless "
                                   "--save-embeddings is given.")
    p.add_argument("--embedder", default="dlib",
                   help="dlib | mobilefacenet | mobilefacenet-onnx | module:function returning an Embedder")
    p.add_argument("--data", default=None, help="datakit folder (default: $FACEPRIVACY_DATA or ../shared/datakit)")
    p.add_argument("--test-data", default=None, metavar="ROOT",
                   help="test people = every identity of this separate folder (datakit, images/<id>/ or <id>/ "
                        "folders of aligned 112x112 crops); probes, mappers and thresholds stay on --data")
    add_out(p, lambda a: run_dir("audit-embeddings"), "eval_audit_embeddings_DATE_TIME/ in the current folder",
            help="report folder (audit.json, audit.html)")
    p.add_argument("--generator", default="lite", help="generator backend for inversion ('none' to skip)")
    p.add_argument("--generator-weights", dest="generator_path", default=None,
                   help="checkpoint for the generator backend (default: bundled lite)")
    add_deprecated(p, "--generator-path", "generator_path")
    p.add_argument("--quick", action="store_true", help="small CI-sized run (capped splits, few steps)")
    p.add_argument("--max-per-split", type=int, default=None, help="cap images per split (default: the recipe's)")
    p.add_argument("--n-invert", type=int, default=None, help="number of inversion targets (default: the recipe's)")
    p.add_argument("--wb-steps", type=int, default=None,
                   help="white-box Adam steps, 0 = no white-box attack (default: the recipe's)")
    p.add_argument("--bb-iters", type=int, default=None, help="black-box NES iterations (default: the recipe's)")
    p.add_argument("--bb-pop", type=int, default=None,
                   help="black-box queries per NES iteration (default: the recipe's)")
    p.add_argument("--bb-patience", type=int, default=None,
                   help="black-box iterations without gain before a restart, 0 = never (default: the recipe's)")
    p.add_argument("--wb-ensemble", default=None, metavar="EMBEDDER",
                   help="also run a white-box attack through this second recognizer as well (e.g. mobilefacenet "
                        "when dlib is audited; its target is predicted from the template by a regression fitted "
                        "on training identities); never the type-II judge (default: none)")
    p.add_argument("--mapper-epochs", type=int, default=None,
                   help="epochs of the embedding->latent mapper (default: the recipe's)")
    p.add_argument("--mapper-hidden", type=int, default=None,
                   help="hidden units of the embedding->latent mapper (default: the recipe's)")
    p.add_argument("--n-bits", type=int, default=None, help="protected-template length in bits (default: the recipe's)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="keep the encoded training latents and the trained mapper here and reuse them in later "
                        "runs with the same generator, embedder, data and mapper options (holds generator "
                        "latents of training faces; default: no cache)")
    p.add_argument("--no-probes", action="store_true", help="skip the attribute probes")
    p.add_argument("--no-inversion", action="store_true", help="skip the inversion attacks")
    p.add_argument("--no-templates", action="store_true", help="skip the protected templates")
    p.add_argument("--attr-cache", default=None,
                   help="npz cache of ground-truth attribute labels (not embeddings) to reuse between runs")
    p.add_argument("--passphrase-file", default=None,
                   help="derive the template master key from this passphrase (default: a fresh random key)")
    p.add_argument("--save-embeddings", action="store_true",
                   help="ALSO write the raw embeddings to OUT/embeddings.npz (they leak: see the report)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_common(p)
    p.set_defaults(func=_audit_embeddings)


def _resolve_embedder(spec: str, data_root: Path | None):
    from ..core.embedder import Embedder
    from ..core.errors import InputError

    if ":" in spec:
        import importlib

        mod, fn = spec.split(":", 1)
        try:
            obj = getattr(importlib.import_module(mod), fn)()
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot load embedder {spec!r}: {e}") from None
        if not isinstance(obj, Embedder):
            raise InputError(f"{spec!r} did not return a faceprivacy Embedder")
        return obj
    from ..core.embedders import get_embedder

    return get_embedder(spec, data_root)


def _audit_embeddings(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..core.errors import InputError
    from ..core.fileio import atomic_path
    from ..core.keys import derive_master_key, read_passphrase_file
    from ..core.paths import default_data_root
    from .evaluate import (
        AuditConfig,
        attributes_for,
        differentiable_embed,
        load_celeba_splits,
        other_name,
        run_audit,
        write_report,
    )

    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.cache_dir and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        raise InputError(f"--cache-dir {args.cache_dir}: exists and is not a folder")
    data_root = Path(args.data) if args.data else default_data_root()
    if data_root is None or not data_root.is_dir():
        raise InputError("datakit folder not found: pass --data PATH")
    celeba = data_root / "celeba_subset_aligned112"
    if not celeba.is_dir():
        raise InputError(f"CelebA subset not found under {data_root}")
    cfg = AuditConfig(seed=args.seed)
    if args.quick:
        cfg.max_per_split, cfg.n_invert, cfg.mlp_epochs, cfg.mapper_epochs = 150, 8, 20, 30
        cfg.wb_steps, cfg.bb_iters, cfg.bb_pop, cfg.wb_manifold = 20, 5, 8, False
    for name in ("max_per_split", "n_invert", "wb_steps", "bb_iters", "bb_pop", "bb_patience", "mapper_epochs",
                 "mapper_hidden", "n_bits"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.probes, cfg.inversion, cfg.templates = not args.no_probes, not args.no_inversion, not args.no_templates

    embedder = _resolve_embedder(args.embedder, data_root)
    other = None
    if cfg.inversion:
        oname = other_name(embedder, cfg)
        try:
            other = _resolve_embedder(oname, data_root)
        except Exception as e:  # the type-II check is optional; say so in the report
            print(f"warning: second recognizer {oname} unavailable ({e}); type-II checks skipped")
    ensemble = None
    if cfg.inversion and args.wb_ensemble:
        if other is not None and args.wb_ensemble == other.name or args.wb_ensemble == embedder.name:
            raise InputError(f"--wb-ensemble {args.wb_ensemble}: must differ from the attacked recognizer and the "
                             "independent type-II judge")
        ensemble = _resolve_embedder(args.wb_ensemble, data_root)
        if differentiable_embed(ensemble) is None:
            raise InputError(f"--wb-ensemble {args.wb_ensemble}: no differentiable copy of this recognizer")
        cfg.wb_ensemble = ensemble.name
    generator = None
    if cfg.inversion and args.generator != "none":
        from ..models.generator_loader import load_generator

        generator = load_generator(args.generator, args.generator_path) if args.generator_path \
            else load_generator(args.generator)
        generator.eval()
        for prm in generator.parameters():
            prm.requires_grad_(False)
    data = load_celeba_splits(celeba, cfg.max_per_split, cfg.seed, test_root=args.test_data)
    attrs = attributes_for(data, args.attr_cache) if cfg.probes else None
    master = None
    if args.passphrase_file:
        master = derive_master_key(read_passphrase_file(args.passphrase_file), b"faceprivacy-audit-v1")
    res = run_audit(embedder, data, attrs, cfg, generator=generator, other=other, master_key=master,
                    diff_embed=differentiable_embed(embedder) if generator is not None else None,
                    keep_embeddings=args.save_embeddings, cache_dir=args.cache_dir, ensemble=ensemble)
    import shlex
    import sys

    if "audit-embeddings" in sys.argv[1:]:  # run from a shell: record what produced this JSON (docs/NUMBERS.md)
        res["command"] = shlex.join(["faceprivacy", *sys.argv[1:]])
    out = Path(args.out)
    if args.save_embeddings:
        emb = res.pop("_embeddings")
        with atomic_path(out / "embeddings.npz", suffix=".npz") as tmp:
            np.savez(tmp, **{f"{k}_embeddings": v for k, v in emb.items()},
                     **{f"{k}_identities": data.ids[k] for k in emb})
    paths = write_report(res, out, cfg.n_grid)
    from ..core.options import Summary

    s = Summary(f"audited {res['embedder']} embeddings on held-out identities", details=_summary(res).splitlines()[1:])
    s.wrote(paths["json"], paths["html"])
    s.number(f"verification TAR at FAR={res['config']['far']:g} (higher is better)", res["verification_raw"]["tar"])
    return s.then(f"open {paths['html']}").print()


def _summary(res: dict) -> str:
    """A few lines for the terminal (each number with its 95 % interval and n)."""
    from ..core.metrics import format_ci

    v = res["verification_raw"]
    lines = [f"embedder {res['embedder']}: TAR@FAR={res['config']['far']:g} {format_ci(v['tar'], v.get('tar_ci95'))}"
             f" ({v.get('n_identities', '?')} ids, all {v['n_impostor']} impostor pairs)"]
    for r in res.get("probes", []):
        if "lift" in r:
            lines.append(f"  probe {r['attribute']:<13} probe {r['probe']:.3f} trivial {r['trivial']:.3f} "
                         f"lift {format_ci(r['lift'], r.get('lift_ci95'))} (n={r['n_test']})")
    t = res.get("templates")
    if t:
        un = t["unlinkability"]
        lines.append(f"  protected {t['n_bits']} bits: TAR {t['verification_per_user_keys']['tar']:.3f} "
                     f"(stolen key {t['verification_stolen_key']['tar']:.3f}), "
                     f"linkage AUC {format_ci(un['linkage_auc'], un.get('linkage_auc_ci95'))}")
    for k, r in res.get("inversion", {}).get("attacks", {}).items():
        if "type1" in r:
            lines.append(f"  inversion {k:<32} type I {format_ci(r['type1'])}"
                         + (f"  type II {format_ci(r['type2'])}" if "type2" in r else ""))
    return "\n".join(lines)
