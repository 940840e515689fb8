"""Validation tuning of the white-box inversion attacks (how docs/audit.md chose the on-manifold settings).

    PYTHONPATH=. python benchmarks/audit_tune.py mapper:60:1024,plain,manifold:512:0.001,eot:0.05,meot:512:0.001:0.05

Validation identities: 30 of the 167 *training* identities (seed 123), held out from a tuning mapper trained on
the other 137; thresholds at FAR 1e-3 from all impostor pairs of those 137. One target photo and one different
photo per validation person. Scored with dlib (type I, vs the target template) and the CASIA MobileFaceNet
(type II, vs the different photo) only: the ONNX MobileFaceNet judge is never used here. Prints one JSON line per
variant and budget (``SNAPS=20,50,100`` steps by default). Caches encoded training latents and embeddings under
``--cache`` (default out/tune). Variants (comma-separated): ``mapper:EPOCHS:HIDDEN`` (the tuning mapper, first),
``plain[:REG]``, ``manifold:K:REG``, ``eot:FRAC``, ``meot:K:REG:FRAC`` (manifold + EOT), ``ens:WEIGHT`` (dlib +
CASIA MobileFaceNet, its target predicted from the dlib template by ridge regression on the 137 identities).
Not part of ``make bench``; about 3-10 minutes per variant on one loaded core.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants")
    ap.add_argument("--n-val", type=int, default=30, help="validation identities (default: 30)")
    ap.add_argument("--data", default="../shared/datakit")
    ap.add_argument("--cache", default="out/tune")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from faceprivacy.audit.evaluate import (
        _ensemble_targets,
        _targets,
        differentiable_embed,
        embed_crops,
        impostor_threshold,
        load_celeba_splits,
    )
    from faceprivacy.audit.inversion import (
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
    from faceprivacy.models.generator_loader import load_generator

    cache, n_val = Path(args.cache), args.n_val
    cache.mkdir(parents=True, exist_ok=True)
    data = load_celeba_splits(Path(args.data) / "celeba_subset_aligned112")
    crops, lab = data.crops["train"], data.labels["train"]
    val_ids = np.random.default_rng(123).choice(np.unique(lab), n_val, replace=False)
    is_val = np.isin(lab, val_ids)
    tr = ~is_val
    gen = load_generator("lite").eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    dl, ca = get_embedder("dlib"), get_embedder("mobilefacenet", args.data)
    fd = differentiable_embed(dl)
    ca.flip = False  # the attacker's CASIA copy runs without the mirror pass (half the cost)
    fc = differentiable_embed(ca)
    ca.flip = True
    cf = cache / "train_cache.npz"
    if cf.exists():
        z = np.load(cf)
        ed, ec, zt = z["ed"], z["ec"], torch.as_tensor(z["zt"])
    else:
        ed, ec, zt = embed_crops(dl, crops), embed_crops(ca, crops), encode_latents(gen, crops)
        np.savez(cf, ed=ed, ec=ec, zt=zt.numpy())
    thr_d, _ = impostor_threshold(ed[tr], lab[tr], 1e-3)
    thr_c, _ = impostor_threshold(ec[tr], lab[tr], 1e-3)
    tgt, oth = _targets(np.where(is_val, lab, -1 - np.arange(len(lab))), n_val, 0)
    t_d, o_d, o_c = ed[tgt], ed[oth], ec[oth]
    pc, fit = _ensemble_targets(ed[tr], ec[tr], t_d)
    print(json.dumps({"thr_dlib": thr_d, "thr_casia": thr_c, "n_val": int(len(tgt)), "ridge": fit,
                      "ridge_vs_true_casia_cos": float(cosine_rows(pc, ec[tgt]).mean()),
                      "real_other_photo_type2_casia": float(np.mean(cosine_rows(ec[tgt], o_c) > thr_c))}),
          flush=True)

    def score(z: torch.Tensor, tag: str) -> None:
        cr = to_crops112(decode_latents(gen, z))
        e1 = embed_crops(dl, cr)
        s1, s2, s3 = cosine_rows(e1, t_d), cosine_rows(embed_crops(ca, cr), o_c), cosine_rows(e1, o_d)
        print(json.dumps({"tag": tag, "type1_dlib": float(np.mean(s1 > thr_d)),
                          "type2_casia": float(np.mean(s2 > thr_c)), "type2_dlib": float(np.mean(s3 > thr_d)),
                          "cos1": float(s1.mean()), "cos2_casia": float(s2.mean()), "cos2_dlib": float(s3.mean()),
                          "n": int(len(s1))}), flush=True)

    snaps = tuple(int(x) for x in os.environ.get("SNAPS", "20,50,100").split(","))

    def run(tag: str, z0: torch.Tensor, aux_t: torch.Tensor | None = None, aux_w: float = 0.0, **kw) -> None:
        keep: dict[int, list] = {s: [] for s in snaps}
        t0 = time.time()
        for i in range(0, len(z0), 16):
            got: dict[int, torch.Tensor] = {}
            aux = [(fc, aux_t[i:i + 16], aux_w)] if aux_t is not None else None
            whitebox_refine(gen, fd, torch.as_tensor(t_d[i:i + 16]), z0[i:i + 16], steps=max(snaps), aux=aux,
                            callback=lambda s, z, g=got: g.update({s: z} if s in snaps else {}), **kw)
            for s in snaps:
                keep[s].append(got[s])
        el = time.time() - t0
        for s in snaps:
            score(torch.cat(keep[s]), f"{tag} steps={s} ({el / len(z0) * s / max(snaps):.2f} s/target)")

    parts = args.variants.split(",")
    epochs, hidden = 60, 1024
    if parts[0].startswith("mapper"):
        epochs, hidden = (int(x) for x in parts.pop(0).split(":")[1:])
    mf = cache / f"mapper_{epochs}_{hidden}.pt"
    if mf.exists():
        mapper = torch.load(mf, weights_only=False)
    else:
        mapper = train_mapper(ed[tr], zt[torch.as_tensor(tr)], epochs=epochs, hidden=hidden, seed=0)
        torch.save(mapper, mf)
    z0 = map_templates(mapper, t_d)
    score(z0, f"mapper {epochs}x{hidden}")
    score(encode_latents(gen, crops[tgt]), "generator ceiling")
    zstd = mapper.z_std.clone()
    for part in parts:
        name, *a = part.split(":")
        if name == "plain":
            reg = float(a[0]) if a else 1e-3
            run(f"plain reg={reg}", z0, z_std=zstd, lr=0.05, reg=reg)
        elif name in ("manifold", "meot"):
            k, reg = int(a[0]), float(a[1])
            aug = float(a[2]) if name == "meot" else 0.0
            mb, ms = pca_basis(zt[torch.as_tensor(tr)], k)
            run(f"manifold k={k} reg={reg} eot={aug}", z0, basis=mb, basis_std=ms, reg=reg, lr=0.05, augment=aug)
        elif name == "eot":
            run(f"plain eot={a[0]}", z0, z_std=zstd, lr=0.05, augment=float(a[0]))
        elif name == "ens":
            run(f"ensemble dlib + CASIA w={a[0]}", z0, aux_t=torch.as_tensor(pc), aux_w=float(a[0]), z_std=zstd,
                lr=0.05)
        else:
            raise SystemExit(f"unknown variant {part!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
