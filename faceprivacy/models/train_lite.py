"""Training loop of the ``lite`` generator (CPU or CUDA): adversarial Wasserstein autoencoder.

Losses on the encoder/decoder: L1 on a 3-level image pyramid, discriminator feature matching, dlib
identity distance (pluggable: ``id_embed`` maps [-1, 1] ArcFace-112 images to descriptors), a
non-saturating GAN loss on reconstructions and on decodings of N(0, I) samples, and a sliced-Wasserstein
penalty pulling the batch of latents towards N(0, I). The discriminator uses lazy R1. An EMA copy of the
generator is what gets saved.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .lite import LiteConfig, LiteDiscriminator, LiteGenerator

log = logging.getLogger(__name__)

IdEmbed = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Optimisation hyper-parameters (recorded next to the weights)."""

    steps: int = 20000
    batch: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    w_l1: float = 1.0
    w_fm: float = 1.0
    w_id: float = 3.0
    w_adv_rec: float = 0.05
    w_adv_prior: float = 0.1
    w_swd: float = 2.0
    latent_noise: float = 0.05
    r1_gamma: float = 1.0
    r1_every: int = 8
    ema: float = 0.999
    celeba_frac: float = 0.5
    seed: int = 0
    time_budget_s: float = 0.0  # stop early (and save) after this many seconds; 0 = no limit
    save_every_s: float = 90.0
    amp: bool = True
    d_ch: tuple[int, ...] = (32, 64, 128, 256, 256)


def sliced_wasserstein(z: torch.Tensor, n_proj: int = 128, gen: torch.Generator | None = None) -> torch.Tensor:
    """Squared sliced-W2 distance between the batch ``z`` (N, D) and as many N(0, I) draws."""
    n, d = z.shape
    proj = torch.randn(d, n_proj, device=z.device)
    proj = proj / proj.norm(dim=0, keepdim=True)
    a = torch.sort(z.float() @ proj, dim=0).values
    b = torch.sort(torch.randn(n, d, device=z.device) @ proj, dim=0).values
    return ((a - b) ** 2).mean()


def pyramid_l1(a: torch.Tensor, b: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """Mean L1 over an average-pooling image pyramid (coarse levels weigh global colour/shape)."""
    loss = (a - b).abs().mean()
    for _ in range(levels - 1):
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        loss = loss + (a - b).abs().mean()
    return loss / levels


class ImageBank:
    """All training images as one uint8 tensor on the device; yields flipped float batches in [-1, 1]."""

    def __init__(self, images: np.ndarray, source: np.ndarray, device: torch.device, celeba_frac: float,
                 seed: int):
        self.x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).contiguous()
        src = torch.from_numpy(np.asarray(source)).to(device)
        w = torch.where(src == 0, celeba_frac / max(int((src == 0).sum()), 1),
                        (1 - celeba_frac) / max(int((src != 0).sum()), 1))
        if int((src == 0).sum()) == 0 or int((src != 0).sum()) == 0:
            w = torch.ones_like(w, dtype=torch.float32)
        self.w = w.float()
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.device = device

    def batch(self, n: int) -> torch.Tensor:
        idx = torch.multinomial(self.w, n, replacement=True, generator=self.gen)
        x = self.x[idx].float() / 127.5 - 1
        flip = torch.rand(n, device=self.device, generator=self.gen) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)


def train_lite(images: np.ndarray, source: np.ndarray, out_dir: str | Path, cfg: LiteConfig | None = None,
               tcfg: TrainConfig | None = None, id_embed: IdEmbed | None = None,
               device: str | torch.device = "cpu", init: dict | None = None,
               check: Callable[[LiteGenerator], dict] | None = None) -> dict:
    """Train on uint8 (N,112,112,3) ArcFace crops; writes ``lite_ema.pt`` (+ ``lite_train.pt``) to out_dir.

    ``init`` (a dict saved by a previous run: ``G``, ``D``, ``ema``) continues training.
    Returns a summary (steps done, wall time, last losses).
    """
    cfg = cfg or LiteConfig()
    tcfg = tcfg or TrainConfig()
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(tcfg.seed)
    G = LiteGenerator(cfg).to(device)
    D = LiteDiscriminator(tuple(tcfg.d_ch)).to(device)
    if init:
        G.load_state_dict({k: v.float() for k, v in init["G"].items()})
        D.load_state_dict({k: v.float() for k, v in init["D"].items()})
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    if init and "ema" in init:
        ema.load_state_dict({k: v.float() for k, v in init["ema"].items()})
    if device.type == "cuda":
        G = G.to(memory_format=torch.channels_last)
        D = D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=tcfg.lr_g, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), lr=tcfg.lr_d, betas=(0.5, 0.99))
    bank = ImageBank(images, source, device, tcfg.celeba_frac, tcfg.seed)
    use_amp = tcfg.amp and device.type == "cuda"
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp)

    def save(step: int, final: bool = False) -> None:
        torch.save(ema.state_for_saving(half=True) | {"step": step}, out_dir / "lite_ema.pt")
        half = {k: v.detach().half().cpu() for k, v in G.state_dict().items()}
        dhalf = {k: v.detach().half().cpu() for k, v in D.state_dict().items()}
        torch.save({"G": half, "config": cfg.to_dict(), "step": step}, out_dir / "lite_train.pt")
        torch.save({"D": dhalf, "step": step}, out_dir / "lite_D.pt")

    t0 = time.time()
    last_save = t0
    hist: list[dict] = []
    step = 0
    B = tcfg.batch
    for step in range(1, tcfg.steps + 1):
        x = bank.batch(B)
        # ---------------- discriminator ----------------
        with torch.no_grad(), amp:
            z = G.encoder(x)
            rec = G.decoder(z)
            samp = G.decoder(torch.randn_like(z))
        r1 = step % tcfg.r1_every == 0 and tcfg.r1_gamma > 0
        xr = x.detach().requires_grad_(r1)
        with amp:
            d_real, _ = D(xr)
            d_fake, _ = D(torch.cat([rec, samp]).float())
            loss_d = F.softplus(-d_real.float()).mean() + F.softplus(d_fake.float()).mean()
        if r1:
            g, = torch.autograd.grad(d_real.float().sum(), xr, create_graph=True)
            loss_d = loss_d + tcfg.r1_gamma * 0.5 * tcfg.r1_every * g.pow(2).flatten(1).sum(1).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        # ---------------- generator (encoder + decoder) ----------------
        with amp:
            z = G.encoder(x)
            zn = z + tcfg.latent_noise * torch.randn_like(z)
            rec = G.decoder(zn)
            zp = torch.randn_like(z)
            samp = G.decoder(zp)
            d_out, f_rec = D(torch.cat([rec, samp]))
            with torch.no_grad():
                _, f_real = D(x)
        d_rec, d_samp = d_out.float().chunk(2)
        l1 = pyramid_l1(rec.float(), x)
        fm = sum((a[:B].float() - b.float()).abs().mean() for a, b in zip(f_rec, f_real, strict=True))
        fm = fm / len(f_real)
        adv_rec = F.softplus(-d_rec).mean()
        adv_prior = F.softplus(-d_samp).mean()
        swd = sliced_wasserstein(z)
        loss = (tcfg.w_l1 * l1 + tcfg.w_fm * fm + tcfg.w_adv_rec * adv_rec + tcfg.w_adv_prior * adv_prior
                + tcfg.w_swd * swd)
        idl = torch.zeros((), device=device)
        if id_embed is not None and tcfg.w_id > 0:
            with amp:
                e_rec = id_embed(rec.float())
                with torch.no_grad():
                    e_real = id_embed(x)
            idl = (e_rec.float() - e_real.float()).norm(dim=1).mean()
            loss = loss + tcfg.w_id * idl
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        _ema_update(ema, G, tcfg.ema if step > 200 else 0.9)
        if step % 50 == 0 or step == 1 or step == tcfg.steps:
            rec_ = {"step": step, "t": round(time.time() - t0, 1), "d": float(loss_d.detach()), "l1": float(l1.detach()),
                    "fm": float(fm.detach()), "id": float(idl.detach()), "adv_rec": float(adv_rec.detach()),
                    "adv_prior": float(adv_prior.detach()),
                    "swd": float(swd.detach()), "z_mean": float(z.detach().float().mean()),
                    "z_std": float(z.detach().float().std())}
            hist.append(rec_)
            log.info(json.dumps(rec_))
            print(json.dumps(rec_), flush=True)
        now = time.time()
        if now - last_save > tcfg.save_every_s:
            save(step)
            last_save = now
            if check is not None:
                print(json.dumps({"step": step, "check": check(ema)}), flush=True)
                ema.train(False)
        if tcfg.time_budget_s and now - t0 > tcfg.time_budget_s:
            break
    save(step, final=True)
    summary = {"check": check(ema) if check is not None else None,"steps": step, "wall_s": round(time.time() - t0, 1), "device": str(device),
               "n_images": int(len(images)), "train_config": asdict(tcfg), "model_config": cfg.to_dict(),
               "last": hist[-1] if hist else {}}
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "train_log.json").write_text(json.dumps(hist))
    return summary



def make_dlib_id_embed(weights: str | Path | None = None, device: str | torch.device = "cpu") -> IdEmbed:
    """Identity embedding for the loss: [-1, 1] ArcFace-112 images -> dlib ResNet descriptors (differentiable).

    ``weights``: None = dlib's .dat via ``load_dlib_resnet()``; a ``.pt`` file = a saved DlibResNet state dict
    (used on machines without the dlib model package); anything else = a dlib .dat path.
    """
    from ..core.chip import arcface112_to_dlib150
    from .dlib_resnet import DlibResNet, load_dlib_resnet
    if weights is not None and str(weights).endswith(".pt"):
        net = DlibResNet()
        sd = torch.load(weights, map_location="cpu")
        net.load_state_dict({k: v.float() for k, v in sd.items()})
    else:
        net = load_dlib_resnet(weights)
    net = net.to(device).eval().requires_grad_(False)
    if torch.device(device).type == "cuda":
        net = net.to(memory_format=torch.channels_last)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return net(arcface112_to_dlib150((x + 1) * 127.5))

    return embed


def run_training(pack: str | Path, out: str | Path, steps: int = 20000, time_budget_s: float = 0.0,
                 device: str = "auto", tiny: bool = False, batch: int | None = None,
                 dlib_weights: str | Path | None = None, use_id: bool = True, init: str | Path | None = None,
                 seed: int = 0, max_images: int | None = None, check_pack: str | Path | None = None) -> dict:
    """Train from a pack written by :func:`faceprivacy.models.lite_data.pack_dataset` (CLI entry point)."""
    from .lite_data import load_pack
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    images, source = load_pack(pack)
    if max_images:
        images, source = images[:max_images], source[:max_images]
    cfg = LiteConfig.tiny() if tiny else LiteConfig()
    tcfg = TrainConfig(steps=steps, time_budget_s=time_budget_s, seed=seed)
    if tiny:
        tcfg.d_ch = (8, 8, 16, 16, 16)
        tcfg.batch = 4
    if batch:
        tcfg.batch = batch
    id_embed = make_dlib_id_embed(dlib_weights, device) if use_id else None
    init_blob = None
    if init:
        init_blob = torch.load(init, map_location="cpu")
        init_blob |= torch.load(Path(init).with_name("lite_D.pt"), map_location="cpu")
        init_blob["ema"] = torch.load(Path(init).with_name("lite_ema.pt"), map_location="cpu")["state_dict"]
    if init_blob is not None:
        cfg = LiteConfig.from_dict(init_blob["config"])
    check = None
    if check_pack:
        held, _ = load_pack(check_pack)

        def check(g: LiteGenerator) -> dict:
            return quick_check(g, held, id_embed, device)

    summary = train_lite(images, source, out, cfg, tcfg, id_embed=id_embed, device=device, init=init_blob,
                         check=check)
    if check_pack:
        from PIL import Image
        ema = LiteGenerator.from_saved(torch.load(Path(out) / "lite_ema.pt", map_location="cpu"))
        Image.fromarray(contact_sheet(ema, held, device=device)).save(Path(out) / "sheet.png")
    return summary


@torch.no_grad()
def quick_check(gen: LiteGenerator, images: np.ndarray, id_embed: IdEmbed | None, device: str | torch.device,
                batch: int = 100) -> dict:
    """Fast held-out check used during development: dlib-distance pass rate (< 0.6, fixed warp), PSNR and
    decoded-sample statistics. The reported numbers come from ``eval-generator``, not from this."""
    gen = gen.to(device).eval()
    dists, psnrs = [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i:i + batch]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        rec = gen.decode(gen.encode(x)).clamp(-1, 1)
        rec = torch.round((rec + 1) * 127.5) / 127.5 - 1
        mse = ((rec - x) ** 2).flatten(1).mean(1) / 4
        psnrs += (10 * torch.log10(1 / mse)).tolist()
        if id_embed is not None:
            dists += (id_embed(rec).float() - id_embed(x).float()).norm(dim=1).tolist()
    out = {"n": len(images), "psnr": float(np.mean(psnrs))}
    if dists:
        d = np.asarray(dists)
        out |= {"dlib_dist_mean": float(d.mean()), "dlib_pass_0.6": float((d < 0.6).mean())}
    return out


def contact_sheet(gen: LiteGenerator, images: np.ndarray, n: int = 8, seed: int = 0,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 sheet: row 1 real faces, row 2 their reconstructions, rows 3-4 prior samples."""
    gen = gen.to(device).eval()
    with torch.no_grad():
        x = torch.from_numpy(images[:n]).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        rec = gen.decode(gen.encode(x))
        g = torch.Generator().manual_seed(seed)
        samp = gen.decode(gen.sample_latents(2 * n, generator=g))
    rows = [x, rec, samp[:n], samp[n:]]
    rows = [((r.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy() for r in rows]
    return np.concatenate([np.concatenate(list(r), 1) for r in rows], 0)
