"""Reproduce the numbers in docs/audit.md (not part of ``make bench``; minutes to an hour on 2 CPU cores).

    PYTHONPATH=. python benchmarks/audit_eval.py probes    --data ../shared/datakit --out runs/probes_dlib
    PYTHONPATH=. python benchmarks/audit_eval.py inversion --data ../shared/datakit --out runs/audit_dlib \
        --config '{"max_per_split": 1200, "n_invert": 12, "mapper_epochs": 60, "mapper_hidden": 512,
                   "wb_steps": 30, "bb_iters": 12, "bb_pop": 8}'

The template master key is fixed (``b"k" * 32``) so runs are repeatable; the inversion run merges the probe
results of ``runs/probes_dlib/audit.json`` (if present) into its report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("part", choices=["probes", "inversion"])
    ap.add_argument("--data", default="../shared/datakit")
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="{}", help="JSON overrides of AuditConfig")
    ap.add_argument("--attr-cache", default="runs/attrs_celeba.npz")
    ap.add_argument("--probes-json", default="runs/probes_dlib/audit.json")
    args = ap.parse_args()

    import torch

    from faceprivacy.audit.cli import _summary
    from faceprivacy.audit.evaluate import (
        AuditConfig,
        attributes_for,
        differentiable_embed,
        load_celeba_splits,
        run_audit,
        write_report,
    )
    from faceprivacy.core.embedders import get_embedder

    torch.set_num_threads(2)
    t0 = time.time()
    data_root = Path(args.data)
    celeba = data_root / "celeba_subset_aligned112"
    emb = get_embedder("dlib")
    if args.part == "probes":
        cfg = AuditConfig(inversion=False, **json.loads(args.config))
        data = load_celeba_splits(celeba, cfg.max_per_split)
        res = run_audit(emb, data, attributes_for(data, args.attr_cache), cfg, master_key=b"k" * 32)
    else:
        from faceprivacy.models.generator_loader import load_generator

        cfg = AuditConfig(probes=False, **json.loads(args.config))
        other = get_embedder("mobilefacenet", data_root)
        gen = load_generator("lite").eval()
        for p in gen.parameters():
            p.requires_grad_(False)
        data = load_celeba_splits(celeba, cfg.max_per_split)
        for d in (data.crops, data.labels, data.ids, data.paths):
            d.pop("val", None)  # only probes use the validation identities
        res = run_audit(emb, data, None, cfg, generator=gen, other=other, master_key=b"k" * 32,
                        diff_embed=differentiable_embed(emb))
        pj = Path(args.probes_json)
        if pj.is_file():
            prev = json.loads(pj.read_text())
            res["probes"] = prev["probes"]
            for k in ("probes_per_user_keys", "probes_system_key"):
                res["templates"][k] = prev["templates"][k]
            res["probes_from"] = str(pj)
    write_report(res, args.out, cfg.n_grid)
    print(_summary(res))
    print(f"wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
