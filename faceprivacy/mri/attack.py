"""Refacing attack: a small 3-D U-Net that restores the removed face of a defaced head.

Everything happens in a face box in *template* space (2 mm voxels): the attacker registers the template
to the defaced scan, pulls the lower-front head into the box, predicts the face there and pastes it
back into the voxels that were zeroed. Training data are random realistic deformations of the
training heads (``augment``), defaced in the box by the mask and shear defacers' regions with
registration jitter. The baseline pastes the (intensity-matched) average template face instead."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .augment import DeformParams, random_affine
from .deface import bbox, crop_volume, head_threshold, shear_plane, template_shear_plane
from .io import Volume
from .register import Registration, register_affine, resample_to, robust_max
from .template import Template

#: face box in template world mm (RAS): x, y, z ranges; 2 mm voxels
BOX_MIN = np.array([-72.0, 26.0, -110.0])
BOX_VOX = 2.0
BOX_SHAPE = (72, 52, 56)
WEIGHTS_FILE = "mri_reface_unet.pt"
ZERO_FRAC = 0.05  # "removed" = inside the candidate region and below 5 % of the head's robust max


def box_affine() -> np.ndarray:
    """Index -> template world affine of the face box."""
    a = np.diag([BOX_VOX, BOX_VOX, BOX_VOX, 1.0])
    a[:3, 3] = BOX_MIN
    return a


def candidate_region(tpl: Template, jitter: np.ndarray | None = None) -> np.ndarray:
    """Box voxels any supported defacer may remove: the template face mask united with the removed side
    of the quickshear-style hull plane (what the U-Net was trained on) and of the fitted plane that
    ``shear`` now uses (``jitter`` = small world affine mimicking registration error)."""
    ba = box_affine()
    t = np.eye(4) if jitter is None else jitter
    face = resample_to(tpl.keep, tpl.head.affine, BOX_SHAPE, ba, t, order=1, default=1.0) < 0.5
    ny, nz, c = _template_plane(tpl)
    ijk = np.indices(BOX_SHAPE).reshape(3, -1).T.astype(float)
    w = (np.c_[ijk, np.ones(len(ijk))] @ (t @ ba).T)[:, :3]
    shear = (ny * w[:, 1] + nz * w[:, 2] + c > 0).reshape(BOX_SHAPE)
    n, c2, _ = template_shear_plane(tpl)  # the plane ``deface --method shear`` cuts along
    fitted = (w @ n + c2 > 0).reshape(BOX_SHAPE)
    return face | shear | fitted


_PLANE: dict[int, tuple[float, float, float]] = {}


def _template_plane(tpl: Template) -> tuple[float, float, float]:
    key = id(tpl)
    if key not in _PLANE:
        _PLANE[key] = shear_plane(tpl.head, tpl.brain)
    return _PLANE[key]


def to_box(vol: Volume, reg: Registration, data: np.ndarray | None = None) -> np.ndarray:
    """Pull a subject (or its ``data``) into the template face box, scaled by the head's robust max."""
    src = vol.data if data is None else data
    scale = robust_max(vol.data)
    arr = resample_to(src, vol.affine, BOX_SHAPE, box_affine(), np.linalg.inv(reg.matrix), order=1)
    return (arr / max(scale, 1e-6)).astype(np.float32)


def fov_box(vol: Volume, reg: Registration) -> np.ndarray:
    """Box voxels that fall inside the subject's field of view (outside it there is no ground truth)."""
    ones = np.ones(vol.shape, np.float32)
    return resample_to(ones, vol.affine, BOX_SHAPE, box_affine(), np.linalg.inv(reg.matrix), order=1) > 0.5


# ----------------------------------------------------------------------------------------------- model
def build_unet(ch: int = 16, prior: bool = False):
    """A tiny 2.5-D U-Net on sagittal slices of the face box: input [defaced slice x-1, x, x+1, removed
    mask of slice x (, template prior slice x)], output the restored slice x (composited into the removed
    voxels only). With ``prior`` the net predicts a residual on top of the template face."""
    import torch
    from torch import nn

    def block(i: int, o: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(4, o), nn.LeakyReLU(0.1),
                             nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(4, o), nn.LeakyReLU(0.1))

    class UNet25D(nn.Module):
        """Encoder-decoder with skip connections (3 levels)."""

        def __init__(self) -> None:
            super().__init__()
            self.e1, self.e2, self.e3 = block(5 if prior else 4, ch), block(ch, 2 * ch), block(2 * ch, 4 * ch)
            self.pool = nn.MaxPool2d(2)
            self.u2 = nn.ConvTranspose2d(4 * ch, 2 * ch, 2, stride=2)
            self.d2 = block(4 * ch, 2 * ch)
            self.u1 = nn.ConvTranspose2d(2 * ch, ch, 2, stride=2)
            self.d1 = block(2 * ch, ch)
            self.out = nn.Conv2d(ch, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e1 = self.e1(x)
            e2 = self.e2(self.pool(e1))
            e3 = self.e3(self.pool(e2))
            d2 = self.d2(torch.cat([self.u2(e3), e2], 1))
            d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
            base = x[:, 4:5] if prior else 0.0
            pred = torch.relu(self.out(d1) + base)
            m = x[:, 3:4]
            return x[:, 1:2] * (1 - m) + pred * m

    return UNet25D()


def to_slices(defaced, mask, prior=None):
    """(B, X, Y, Z) defaced + mask tensors (+ an (X, Y, Z) prior) -> (B*X, 4 or 5, Y, Z) slice inputs."""
    import torch
    import torch.nn.functional as F

    d = F.pad(defaced, (0, 0, 0, 0, 1, 1))
    chans = [d[:, :-2], d[:, 1:-1], d[:, 2:], mask]
    if prior is not None:
        chans.append(prior[None].expand_as(mask))
    x = torch.stack(chans, 2)  # (B, X, C, Y, Z)
    return x.reshape(-1, len(chans), *defaced.shape[2:])


def predict_box(net, defaced: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Run the 2.5-D net over every sagittal slice of one box; returns the restored box."""
    import torch

    pb = getattr(net, "prior_box", None)
    with torch.no_grad():
        x = to_slices(torch.from_numpy(defaced[None]), torch.from_numpy(mask[None]),
                      None if pb is None else torch.from_numpy(pb))
        y = net(x)[:, 0]
    return y.numpy().reshape(defaced.shape)


def load_reface_model(path: str | Path | None = None):
    """Load the committed refacing U-Net (CPU, eval mode)."""
    import torch

    from ..core.errors import ModelLoadError
    from ..core.paths import weights_dir

    p = Path(path) if path else weights_dir() / WEIGHTS_FILE
    if not p.is_file():
        raise ModelLoadError(f"refacing weights not found: {p}")
    ck = torch.load(p, map_location="cpu", weights_only=True)
    net = build_unet(int(ck.get("ch", 16)), prior="prior_box" in ck)
    net.load_state_dict({k: v.float() for k, v in ck["state_dict"].items()})
    if "prior_box" in ck:
        net.prior_box = ck["prior_box"].float().numpy()
    net.eval()
    return net


# ---------------------------------------------------------------------------------------------- cohort
@dataclass
class BoxHead:
    """A training head pulled into the (extended) face box."""

    name: str
    box: np.ndarray  # normalised intensities on the box grid
    fov: np.ndarray  # inside the scan's field of view


def head_to_box(vol: Volume, tpl: Template, settings: str = "fast") -> BoxHead:
    """Register the template to a head and pull the head into the box."""
    reg = register_affine(vol, tpl.head, settings)
    return BoxHead(str(vol.path.stem if vol.path else "head"), to_box(vol, reg), fov_box(vol, reg))


def candidate_bank(tpl: Template, n: int = 8) -> np.ndarray:
    """``n`` candidate regions in the box: index 0 exact, the others with registration-like jitter."""
    out = []
    for k in range(n):
        jit = random_affine(np.random.default_rng(1000 + k),
                            DeformParams(rot_deg=2.0, scale=0.02, shift_mm=2.0)) if k else np.eye(4)
        out.append(candidate_region(tpl, jit))
    return np.stack(out)


def torch_deform_batch(heads, cands, idx_head, idx_cand, gen, p: DeformParams | None = None, fovs=None):
    """Random affine + elastic + bias/gamma/noise deformation of box heads on any torch device;
    returns (input (B, 2, *BOX), target (B, 1, *BOX), valid (B, 1, *BOX) = inside the field of view)."""
    import torch
    import torch.nn.functional as F

    p = p or DeformParams()
    dev = heads.device
    b = len(idx_head)
    x = heads[idx_head][:, None]  # (B, 1, X, Y, Z)
    f = fovs[idx_head][:, None].float() if fovs is not None else torch.ones_like(x)
    shape = x.shape[2:]
    # affine in normalised coordinates (grid_sample uses (z, y, x) order for the last dim)
    ang = (torch.rand(b, 3, generator=gen, device=dev) * 2 - 1) * np.radians(p.rot_deg)
    ca, sa = torch.cos(ang), torch.sin(ang)
    one, zero = torch.ones(b, device=dev), torch.zeros(b, device=dev)
    rx = torch.stack([one, zero, zero, zero, ca[:, 0], -sa[:, 0], zero, sa[:, 0], ca[:, 0]], 1).view(b, 3, 3)
    ry = torch.stack([ca[:, 1], zero, sa[:, 1], zero, one, zero, -sa[:, 1], zero, ca[:, 1]], 1).view(b, 3, 3)
    rz = torch.stack([ca[:, 2], -sa[:, 2], zero, sa[:, 2], ca[:, 2], zero, zero, zero, one], 1).view(b, 3, 3)
    sc = 1 + (torch.rand(b, 3, generator=gen, device=dev) * 2 - 1) * p.scale
    a = rz @ ry @ rx @ torch.diag_embed(sc)
    ext = torch.tensor([n * BOX_VOX / 2 for n in shape], device=dev)  # half extent (mm) per axis
    a = a * ext[None, None, :] / ext[None, :, None]  # mm-space affine -> normalised coordinates
    t = (torch.rand(b, 3, generator=gen, device=dev) * 2 - 1) * p.shift_mm / ext
    theta = torch.cat([a, t[..., None]], 2)
    # our arrays are (X, Y, Z) = torch (D, H, W); grid coords are ordered (W, H, D) = (Z, Y, X)
    perm = torch.tensor([2, 1, 0], device=dev)
    theta = theta[:, perm][:, :, torch.cat([perm, torch.tensor([3], device=dev)])]
    grid = F.affine_grid(theta, [b, 1, *shape], align_corners=False)
    if p.elastic_mm > 0:
        g = p.elastic_grid
        coarse = torch.randn(b, 3, g, g, g, generator=gen, device=dev) * p.elastic_mm
        disp = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)
        disp = disp / ext.flip(0)[None, :, None, None, None]  # mm -> normalised, (Z, Y, X) order
        grid = grid + disp.permute(0, 2, 3, 4, 1)
    yf = F.grid_sample(torch.cat([x, f], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y, valid = yf[:, :1], (yf[:, 1:] > 0.5).float()
    if p.bias > 0:
        bf = torch.randn(b, 1, 4, 4, 4, generator=gen, device=dev) * p.bias
        y = y * torch.exp(F.interpolate(bf, size=tuple(shape), mode="trilinear", align_corners=True))
    if p.gamma > 0:
        gm = torch.exp((torch.rand(b, 1, 1, 1, 1, generator=gen, device=dev) * 2 - 1) * p.gamma)
        hi = y.amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
        y = hi * (y / hi).clamp_min(0) ** gm
    if p.noise > 0:
        y = y + torch.randn(y.shape, generator=gen, device=dev) * p.noise * (y > 0)
    y = y.clamp_min(0)
    cand = cands[idx_cand][:, None].float()
    defaced = y * (1 - cand)
    m = cand * (defaced < ZERO_FRAC).float()
    return torch.cat([defaced, m], 1), y, valid


def train_reface(heads: np.ndarray, cands: np.ndarray, fovs: np.ndarray | None = None, steps: int = 300,
                 batch: int = 2, seed: int = 0, lr: float = 2e-3, ch: int = 16, slices: int = 64, threads: int = 2, log_every: int = 50,
                 max_seconds: float | None = None, device: str = "cpu",
                 prior: np.ndarray | None = None) -> tuple[object, dict]:
    """Train the U-Net on random deformations of box ``heads`` (N, *BOX) with candidate-region bank
    ``cands`` (K, *BOX); returns (CPU model in eval mode, log)."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    h = torch.as_tensor(np.asarray(heads, np.float32), device=dev)
    c = torch.as_tensor(np.asarray(cands, bool), device=dev)
    fv = torch.as_tensor(np.asarray(fovs, bool), device=dev) if fovs is not None else None
    pr = torch.as_tensor(np.asarray(prior, np.float32), device=dev) if prior is not None else None
    net = build_unet(ch, prior=pr is not None).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    log: dict = {"loss": [], "steps": 0}
    t0 = time.perf_counter()
    for step in range(steps):
        # warm-up then cosine decay over whichever budget (steps or seconds) runs out first
        frac = step / steps
        if max_seconds:
            frac = max(frac, (time.perf_counter() - t0) / max_seconds)
        if frac >= 1.0:
            break
        cur = lr * min(1.0, frac / 0.05 + 1e-3) * 0.5 * (1 + np.cos(np.pi * frac))
        for g in opt.param_groups:
            g["lr"] = cur
        ih = torch.randint(0, len(h), (batch,), generator=gen, device=dev)
        ic = torch.randint(0, len(c), (batch,), generator=gen, device=dev)
        with torch.no_grad():
            x3, y3, v3 = torch_deform_batch(h, c, ih, ic, gen, fovs=fv)
            xs = to_slices(x3[:, 0], x3[:, 1], pr)
            ys = y3[:, 0].reshape(-1, 1, *y3.shape[3:])
            vs = v3[:, 0].reshape(-1, 1, *y3.shape[3:])
            keep = xs[:, 3].flatten(1).sum(1) > 0
            idx = torch.nonzero(keep).ravel()
            if len(idx) > slices:
                idx = idx[torch.randperm(len(idx), generator=gen, device=dev)[:slices]]
            xs, ys, vs = xs[idx], ys[idx], vs[idx]
        pred = net(xs)
        m = xs[:, 3:4] * vs
        loss = (torch.abs(pred - ys) * m).sum() / m.sum().clamp_min(1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        log["loss"].append(float(loss.detach()))
        log["steps"] = step + 1
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step:4d} loss {log['loss'][-1]:.4f} {time.perf_counter() - t0:.0f}s", flush=True)
    log["seconds"] = time.perf_counter() - t0
    net = net.cpu().eval()
    if prior is not None:
        net.prior_box = np.asarray(prior, np.float32)
    return net, log


# ---------------------------------------------------------------------------------------------- attack
def removed_estimate(defaced: Volume, tpl: Template, reg: Registration) -> np.ndarray:
    """Subject voxels an attacker treats as removed: inside the (registered) candidate region and ~0."""
    cand_box = candidate_region(tpl).astype(np.float32)
    cand = resample_to(cand_box, box_affine(), defaced.shape, defaced.affine, reg.matrix, order=0) > 0.5
    return cand & (defaced.data < ZERO_FRAC * robust_max(defaced.data))


def attack(defaced: Volume, tpl: Template, model=None, reg: Registration | None = None,
           settings: str = "fast") -> tuple[np.ndarray, np.ndarray, Registration]:
    """Reface a defaced scan with the U-Net. Returns (restored data on the subject grid, the voxels
    filled in, the registration used)."""
    reg = reg or register_affine(defaced, tpl.head, settings)
    net = model if model is not None else load_reface_model()
    x0 = to_box(defaced, reg)
    cand = candidate_region(tpl)
    m = (cand & (x0 < ZERO_FRAC)).astype(np.float32)
    y = predict_box(net, x0, m)
    filled = removed_estimate(defaced, tpl, reg)
    out = defaced.data.copy()
    if filled.any():
        sl = bbox(filled, 1)
        sub = crop_volume(defaced, sl)
        vals = resample_to(y, box_affine(), sub.shape, sub.affine, reg.matrix, order=1)
        scale = robust_max(defaced.data)
        region = filled[sl]
        o = out[sl]
        o[region] = vals[region] * scale
        out[sl] = o
    return out, filled, reg


def baseline_average_face(defaced: Volume, tpl: Template, reg: Registration | None = None,
                          settings: str = "fast") -> tuple[np.ndarray, np.ndarray]:
    """The attack baseline: paste the registered average (template) face into the removed voxels."""
    from .deface import reface_region

    reg = reg or register_affine(defaced, tpl.head, settings)
    filled = removed_estimate(defaced, tpl, reg)
    return reface_region(defaced, tpl, reg, filled, feather_mm=0.0), filled


__all__ = ["attack", "baseline_average_face", "build_unet", "load_reface_model", "train_reface",
           "head_to_box", "head_threshold"]
