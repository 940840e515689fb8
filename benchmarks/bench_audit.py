"""Time per inversion on 2 CPU threads: white-box (dlib port gradients) and black-box (NES queries) against
the mapper-only inversion measured in the same run (ratios printed)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def run(data_root: Path, out_dir: Path, n_targets: int = 2, wb_steps: int = 30, bb_iters: int = 12,
        bb_pop: int = 8, n_train: int = 200) -> dict:
    """Per-target inversion times (same settings as the reported audit run, fewer targets)."""
    import torch

    from faceprivacy.audit.evaluate import differentiable_embed, embed_crops, load_celeba_splits
    from faceprivacy.audit.inversion import (
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
    from faceprivacy.core.embedders import get_embedder

    torch.set_num_threads(2)
    celeba = Path(data_root) / "celeba_subset_aligned112"
    if not celeba.is_dir():
        return {"skipped": f"no CelebA subset under {data_root}"}
    try:
        from faceprivacy.models.generator_loader import load_generator

        gen = load_generator()
    except Exception as e:  # generator weights not bundled yet
        return {"skipped": f"generator unavailable: {type(e).__name__}: {e}"}
    gen.eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    emb = get_embedder("dlib")
    f = differentiable_embed(emb)
    data = load_celeba_splits(celeba, max_per_split=n_train)
    rng = np.random.default_rng(0)
    tr = data.crops["train"]
    e_tr = embed_crops(emb, tr)
    z_tr = encode_latents(gen, tr)
    mapper = train_mapper(e_tr, z_tr, epochs=30, hidden=512)
    tgt = data.crops["test"][rng.choice(len(data.crops["test"]), n_targets, replace=False)]
    e_t = embed_crops(emb, tgt)

    t0 = time.perf_counter()
    z0 = map_templates(mapper, e_t)
    rec_map = to_crops112(decode_latents(gen, z0))
    t_map = (time.perf_counter() - t0) / n_targets

    t0 = time.perf_counter()
    z_wb = whitebox_refine(gen, f, torch.as_tensor(e_t), z0, steps=wb_steps, z_std=mapper.z_std)
    rec_wb = to_crops112(decode_latents(gen, z_wb))
    t_wb = (time.perf_counter() - t0) / n_targets + t_map

    basis, bstd = pca_basis(z_tr, 64)
    t0 = time.perf_counter()
    bb = blackbox_refine(gen, lambda c: embed_crops(emb, c), e_t, z0, basis, bstd, iters=bb_iters, pop=bb_pop)
    rec_bb = to_crops112(decode_latents(gen, bb.z))
    t_bb = (time.perf_counter() - t0) / n_targets + t_map

    res = {"threads": 2, "n_targets": n_targets, "wb_steps": wb_steps, "bb_queries": bb.queries,
           "mapper_s_per_inversion": t_map, "whitebox_s_per_inversion": t_wb,
           "blackbox_s_per_inversion": t_bb, "whitebox_vs_mapper": t_wb / t_map,
           "blackbox_vs_mapper": t_bb / t_map,
           "cos_mapper": float(cosine_rows(embed_crops(emb, rec_map), e_t).mean()),
           "cos_whitebox": float(cosine_rows(embed_crops(emb, rec_wb), e_t).mean()),
           "cos_blackbox": float(cosine_rows(embed_crops(emb, rec_bb), e_t).mean())}
    print(f"   inversion s/target: mapper {t_map:.3f}, white-box {t_wb:.2f} ({t_wb / t_map:.0f}x mapper, "
          f"{wb_steps} steps), black-box {t_bb:.2f} ({t_bb / t_map:.0f}x mapper, {bb.queries} queries)")
    return res
