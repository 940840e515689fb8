"""Fit and train the latent encryptor on the CelebA *training* identities only.

1. Encode the training faces with the generator; fit whitening + identity subspace (``fit_linear``).
   With ``id_dim=0`` the subspace size is chosen on the *validation* identities (smallest size whose
   analytic encryption brings dlib verification against the original below 1 %).
2. Identity proxy: an MLP from whitened latents to dlib descriptors of the decoded faces (fitted on training
   latents and their analytic encryptions), cheap enough for thousands of CPU steps.
3. Train the keyed couplings with RiDDLE-style losses through the proxy, plus (``true_every``) periodic
   steps through the real decoder + differentiable dlib ResNet:
   identity of the encryption away from the original; wrong-key decryptions away from the original and
   from the encryption; diversity between two keys; attribute preservation (the within-identity part of
   the code unchanged, low-frequency image similarity on true steps); staying on the N(0, I) prior.
   Recovery needs no loss: the inverse is exact by construction.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.progress import progress
from ..crops import far_threshold, load_crops
from .common import (
    DlibArc,
    decode_all,
    encode_all,
    keyed_losses,
    load_generator,
    to_tensor,
    val_score,
    weights_id,
)
from .common import val_measure as _val_measure
from .encryptor import EncryptorConfig, LatentEncryptor, random_keys

log = logging.getLogger(__name__)


class IdentityProxy(nn.Module):
    """MLP: whitened latent (p) -> unit dlib descriptor (128) of the decoded face."""

    def __init__(self, p: int, hidden: int = 512):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(p, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 128))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(w), dim=1)


def fit_proxy(w: torch.Tensor, e: torch.Tensor, steps: int = 1500, seed: int = 0) -> tuple[IdentityProxy, dict]:
    """Fit the proxy by cosine regression (10 % held out to report the fit)."""
    g = torch.Generator().manual_seed(seed)
    n = len(w)
    perm = torch.randperm(n, generator=g)
    n_te = max(1, n // 10)
    te, tr = perm[:n_te], perm[n_te:]
    proxy = IdentityProxy(w.shape[1])
    opt = torch.optim.Adam(proxy.parameters(), lr=1e-3, weight_decay=1e-5)
    for _ in range(steps):
        idx = tr[torch.randint(len(tr), (256,), generator=g)]
        loss = 1 - (proxy(w[idx]) * e[idx]).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        cos_te = float((proxy(w[te]) * e[te]).sum(1).mean())
        cos_tr = float((proxy(w[tr[:1000]]) * e[tr[:1000]]).sum(1).mean())
    return proxy.eval(), {"proxy_cos_train": cos_tr, "proxy_cos_heldout": cos_te, "n": n}


def train_encryptor(data_root: Path, out: Path | None, generator="lite", generator_weights: Path | None = None,
                    steps: int = 300, true_every: int = 0, pca_dim: int = 256, id_dim: int = 96,
                    seed: int = 0, device: str = "cpu", max_train: int | None = None,
                    max_val: int = 240, id_candidates=(64, 128, 192, 256), key_dim: int = 64,
                    n_coupling: int = 4, hidden: int = 128, dlib: nn.Module | None = None,
                    batch: int = 64, true_batch: int = 8, lr: float = 1e-3,
                    save_analytic: Path | None = None, n_proxy_aug: int = 1500,
                    proxy_recon: bool = True, init: Path | None = None, val_every: int = 0,
                    w_div: float = 1.0, w_wrong: float = 1.0, w_img: float = 1.0) -> tuple[LatentEncryptor, dict]:
    """Fit + train the encryptor on training identities; returns (encryptor, training report).

    With ``init`` the linear part and couplings of an existing encryptor file are kept and only its couplings
    are trained further (``true_every=1``: every step through the real decoder + dlib, no proxy). With
    ``val_every`` the validation identities are measured every that many steps (real decoder + dlib, blended,
    ``common.val_measure``) and the best state by the sum of the five rates is kept, the starting state
    included."""
    from ...core.data import celeba_subset, identity_split

    t0 = time.time()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = load_generator(generator, generator_weights, device)
    for p in gen.parameters():
        p.requires_grad_(False)
    res = int(gen.resolution)
    root = Path(data_root) / "celeba_subset_aligned112" if (Path(data_root) / "celeba_subset_aligned112").is_dir() \
        else Path(data_root)
    split = identity_split(celeba_subset(root))
    tr, va = split["train"], split["val"]
    tr_idx = np.arange(len(tr)) if max_train is None else np.sort(rng.permutation(len(tr))[:max_train])
    va_idx = np.sort(rng.permutation(len(va))[:max_val])
    tr, va = tr.subset(tr_idx), va.subset(va_idx)
    x_tr, x_va = load_crops(tr.paths, res), load_crops(va.paths, res)
    z_tr, z_va = encode_all(gen, x_tr, device=device), encode_all(gen, x_va, device=device)
    d = z_tr.shape[1]
    pca_dim = min(pca_dim, d, len(z_tr) - 1)
    report: dict = {"seed": seed, "n_train_images": len(tr), "n_train_ids": len(tr.identities),
                    "n_val_images": len(va), "latent_dim": d}
    dlib = dlib or DlibArc(device)
    e_tr = torch.as_tensor(dlib.embed_uint8(x_tr, device=device))
    sims = (e_tr[:500] @ e_tr[:500].T).numpy()
    lab5 = tr.labels[:500]
    report["dlib_train_mean_impostor_cos"] = float(sims[lab5[:, None] != lab5[None, :]].mean())
    e_va = torch.as_tensor(dlib.embed_uint8(x_va, device=device))
    y_va = torch.as_tensor(va.labels)
    thr = far_threshold(e_va.numpy(), va.labels, 1e-3)
    report["dlib_val_threshold_far1e-3"] = thr

    def val_measure(enc: LatentEncryptor) -> dict:
        """Real decoder + dlib on the validation identities, outputs blended (the documented protocol)."""
        return _val_measure(enc.to(device), gen, dlib, z_va, e_va, y_va, x_va, thr, device=device)

    # 1) linear fit; pick the identity-subspace size on validation identities (or start from ``init``)
    def build(m: int) -> LatentEncryptor:
        cfg = EncryptorConfig(latent_dim=d, pca_dim=pca_dim, id_dim=m, key_dim=key_dim,
                              n_coupling=n_coupling, hidden=hidden)
        enc = LatentEncryptor(cfg)
        report["fit"] = enc.fit_linear(z_tr.numpy(), tr.labels)
        return enc.to(device)

    init_meta: dict = {}
    if init is not None:
        enc = LatentEncryptor.load(init).float()
        init_meta = dict(enc.meta)
        if enc.cfg.latent_dim != d:
            from ...core.errors import InputError

            raise InputError(f"--init encryptor has latent dim {enc.cfg.latent_dim}, the generator {d}")
        report["init"] = {"path": str(init), "id": enc.meta.get("id"), "variant": enc.meta.get("variant")}
        report["id_dim"] = enc.cfg.id_dim
        report["val_init"] = val_measure(enc)
        log.info("init %s: %s", init, report["val_init"])
    else:
        recon = dlib.embed_uint8(decode_all(gen, z_va, device=device), device=device)
        report["val_reconstruction_verif_vs_source"] = float(((recon * e_va.numpy()).sum(1) >= thr).mean())
        if id_dim <= 0:
            sweep = {}
            for m in [c for c in id_candidates if c <= pca_dim] or [pca_dim]:
                sweep[m] = val_measure(build(m))
                log.info("id_dim %d: %s", m, sweep[m])
            report["id_dim_sweep_val"] = sweep
            ok = [m for m, v in sweep.items() if v["verif_vs_source"] <= 0.01
                  and v["verif_vs_other_photos"] <= 0.01 and v["wrong_key_verif_vs_source"] <= 0.01]
            id_dim = min(ok) if ok else max(sweep)
        enc = build(id_dim)
        report["id_dim"] = id_dim
        report["val_analytic"] = val_measure(enc)
    if save_analytic is not None and init is None:
        enc.cpu().meta = {"generator": getattr(gen, "name", "generator"), "training": dict(report),
                          "variant": "analytic (couplings = identity)"}
        enc.meta["id"] = weights_id(enc)
        enc.save(save_analytic)
        enc.to(device)

    def finish(enc: LatentEncryptor, variant: str) -> tuple[LatentEncryptor, dict]:
        enc = enc.cpu()
        report["wall_s"] = round(time.time() - t0, 1)
        enc.meta = {"generator": getattr(gen, "name", "generator"), "training": report, "variant": variant}
        if init is not None:
            enc.meta["init_id"] = init_meta.get("id")
            enc.meta |= {k: init_meta[k] for k in ("generator_weights_sha256", "generator_commit") if k in init_meta}
        if out is not None:
            enc.meta["id"] = weights_id(enc)
            enc.save(out)
        return enc, report

    if steps <= 0:  # no coupling training: the analytic (or the ``init``) encryptor as it is
        return finish(enc, "analytic (couplings = identity)" if init is None else "copy of --init")
    with torch.no_grad():
        enc = enc.cpu()
        w_tr, r_tr = enc.whiten(z_tr)
    # 2) identity proxy on training latents + their analytic encryptions (not needed if every step is true)
    proxy = None
    if true_every != 1:
        with torch.no_grad():
            n_aug = min(len(z_tr), n_proxy_aug)
            sel = torch.as_tensor(rng.permutation(len(z_tr))[:n_aug])
            rot, _ = random_keys(n_aug, enc.cfg, torch.Generator().manual_seed(seed + 1))
            w_aug = enc.rotate(w_tr[sel], rot)
            z_aug = enc.unwhiten(w_aug, r_tr[sel])
        e_aug = torch.as_tensor(dlib.embed_uint8(decode_all(gen, z_aug, device=device), device=device))
        # proxy targets for the training latents: dlib of their decodings, or (cheaper) of the original photos
        e_rec = torch.as_tensor(dlib.embed_uint8(decode_all(gen, z_tr, device=device), device=device)) \
            if proxy_recon else e_tr
        proxy, pstats = fit_proxy(torch.cat([w_tr, w_aug]), torch.cat([e_rec, e_aug]), seed=seed)
        report["proxy"] = pstats
        report["proxy_targets"] = "decoded" if proxy_recon else "original photos"
        for p in proxy.parameters():
            p.requires_grad_(False)
        proxy = proxy.to(device)

    # 3) train the keyed couplings (optionally selecting the best validation checkpoint)
    margin = report["dlib_train_mean_impostor_cos"]
    start = report.get("val_init") or report.get("val_analytic")
    report["train"] = _train_couplings(enc.to(device), proxy, w_tr.to(device), e_tr.to(device), steps,
                                       true_every, gen, dlib, r_tr.to(device), x_tr, batch, seed, device,
                                       margin=margin, true_batch=true_batch, lr=lr, w_div=w_div, w_wrong=w_wrong,
                                       w_img=w_img,
                                       val_every=val_every, val_fn=val_measure if val_every > 0 else None,
                                       val_start=start)
    report["val_trained"] = report["train"]["chosen_val"] if val_every > 0 else val_measure(enc)
    report["val_score"] = {"start": val_score(start), "trained": val_score(report["val_trained"])}
    variant = "decoder+dlib fine-tuned couplings" if init is not None else "trained couplings"
    return finish(enc, variant)


def _train_couplings(enc, proxy, w_tr, e_tr, steps, true_every, gen, dlib, r_tr, x_tr, batch, seed, device,
                     margin: float = 0.8, true_batch: int = 8, lr: float = 1e-3, w_div: float = 1.0,
                     w_wrong: float = 1.0, w_prior: float = 0.5, w_attr: float = 1.0, w_img: float = 1.0,
                     val_every: int = 0, val_fn=None, val_start: dict | None = None) -> dict:
    """RiDDLE-style losses on the keyed couplings (proxy steps + optional true decoder/dlib steps).

    Identity terms are hinges at ``margin`` = the mean dlib cosine between two *different* training people:
    "as far as a random stranger", not an adversarial push beyond what real faces do. True steps decode,
    blend the decodings into their source photos ``x_tr`` through the paste-back mask (what a full frame
    shows) and embed them with the differentiable dlib net; their image term keeps the blend's low
    frequencies close to the photo's. With ``val_fn`` the state with the lowest ``val_score`` (measured every
    ``val_every`` steps; ``val_start`` = the starting state's measurement) is restored at the end."""
    from ...core.align import soft_face_mask

    g = torch.Generator().manual_seed(seed + 7)
    opt = torch.optim.Adam(enc.couplings.parameters(), lr=lr)
    v = enc.id_basis
    p_dim = w_tr.shape[1]
    mask = torch.as_tensor(soft_face_mask(int(gen.resolution)), dtype=torch.float32, device=device)[None, None]
    hist, vals = [], []
    best = (val_score(val_start), 0, {k: t.clone() for k, t in enc.state_dict().items()}) \
        if val_fn is not None and val_start is not None else None
    t0 = time.time()
    enc.train()

    for step in progress(range(steps), desc="train encryptor"):
        idx = torch.randint(len(w_tr), (batch,), generator=g)
        w, e0 = w_tr[idx.to(w_tr.device)], e_tr[idx.to(e_tr.device)]
        r1, c1 = random_keys(batch, enc.cfg, g, device=device)
        r2, c2 = random_keys(batch, enc.cfg, g, device=device)
        y1 = enc.encrypt_white(w, r1, c1)
        y2 = enc.encrypt_white(w, r2, c2)
        yw = enc.decrypt_white(y1, r2, c2)
        true_step = true_every > 0 and (step + 1) % true_every == 0
        if true_step:
            n = min(batch, true_batch)
            resid = r_tr[idx.to(r_tr.device)][:n].repeat(3, 1)
            zs = enc.unwhiten(torch.cat([y1[:n], y2[:n], yw[:n]]), resid)
            src = to_tensor(x_tr[idx[:n].numpy()], device)
            imgs = src.repeat(3, 1, 1, 1) * (1 - mask) + gen.decode(zs.reshape(-1, *gen.latent_shape)) * mask
            f = dlib(imgs)
            f1, f2, fw, e0 = f[:n], f[n:2 * n], f[2 * n:], e0[:n]
            low = F.avg_pool2d(imgs[:2 * n], 8) - F.avg_pool2d(src, 8).repeat(2, 1, 1, 1)
            l_img = low.abs().mean()
        else:
            f1, f2, fw = proxy(y1), proxy(y2), proxy(yw)
            l_img = torch.zeros((), device=w.device)
        t = keyed_losses(e0, f1, f2, fw, w, y1, y2, yw, v, margin, p_dim)
        l_id, l_wrong, l_div, l_attr, l_prior = t["id"], t["wrong"], t["div"], t["attr"], t["prior"]
        loss = l_id + w_wrong * l_wrong + w_div * l_div + w_attr * l_attr + w_prior * l_prior + w_img * l_img
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.couplings.parameters(), 1.0)
        opt.step()
        if step % 10 == 0 or step == steps - 1:
            rec = {k: round(float(t.detach()), 5) for k, t in (("loss", loss), ("id", l_id), ("wrong", l_wrong),
                                                                ("div", l_div), ("attr", l_attr),
                                                                ("prior", l_prior), ("img", l_img))}
            rec.update(step=step, true=bool(true_step), t=round(time.time() - t0, 1))
            log.info("coupling step %s", rec)
            hist.append(rec)
        if val_fn is not None and val_every > 0 and ((step + 1) % val_every == 0 or step == steps - 1):
            m = val_fn(enc)
            enc.train()
            vals.append({"step": step + 1, "score": val_score(m), "t": round(time.time() - t0, 1), **m})
            log.info("validation after step %d: %s", step + 1, vals[-1])
            if best is None or val_score(m) < best[0] - 1e-9:  # ties (1 photo = 1/n) keep the earlier state
                best = (val_score(m), step + 1, {k: t.clone() for k, t in enc.state_dict().items()})
    enc.eval()
    out = {"steps": steps, "true_every": true_every, "true_batch": true_batch, "batch": batch, "margin": margin,
           "lr": lr, "w_div": w_div, "w_wrong": w_wrong, "w_prior": w_prior, "w_attr": w_attr, "w_img": w_img,
           "history": hist, "val": vals}
    if best is not None:
        enc.load_state_dict(best[2])
        out["chosen_step"] = best[1]
        out["chosen_val"] = val_start if best[1] == 0 else next(r for r in vals if r["step"] == best[1])
    return out
