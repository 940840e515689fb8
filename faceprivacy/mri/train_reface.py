"""Train the refacing-attack U-Net: ``python -m faceprivacy.mri.train_reface --data DATAKIT``.

Training heads: the pydeface template (population mean) and Colin27 (ch2). chris_t1 is held out
entirely (never registered, deformed or seen in training)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .attack import WEIGHTS_FILE, candidate_bank, fov_box, head_to_box, to_box, train_reface
from .io import load_volume
from .register import Registration
from .template import load_template

TRAIN_HEADS = ("colin27_ch2_mricron/ch2.nii.gz",)
HELD_OUT = ("chris_t1_mricron/chris_t1.nii.gz",)


def prepare(data_root: str | Path, out_npz: str | Path) -> Path:
    """Register the training heads, pull them into the face box and save them with the candidate-region
    bank (this step needs nibabel + SimpleITK; training then needs only torch)."""
    tpl = load_template(data_root)
    root = Path(data_root) / "mri_heads"
    ident = Registration(np.eye(4), 0.0, 0.0, "identity")
    heads, fovs = [to_box(tpl.head, ident)], [fov_box(tpl.head, ident)]
    for rel in TRAIN_HEADS:
        bh = head_to_box(load_volume(root / rel), tpl)
        heads.append(bh.box)
        fovs.append(bh.fov)
    np.savez_compressed(out_npz, heads=np.stack(heads), fovs=np.stack(fovs), cands=candidate_bank(tpl))
    return Path(out_npz)


def main(argv: list[str] | None = None) -> int:
    """Prepare the cohort boxes (unless --boxes is given), train, save weights + a JSON log."""
    import torch

    from ..core.paths import weights_dir

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", help="datakit root (to prepare the boxes)")
    ap.add_argument("--boxes", help="npz from --prepare-only (skips registration)")
    ap.add_argument("--prepare-only", help="write the boxes npz here and stop")
    ap.add_argument("--out", default=str(weights_dir() / WEIGHTS_FILE))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--slices", type=int, default=64, help="sagittal slices per step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-seconds", type=float, default=None)
    ap.add_argument("--prior", action="store_true", help="predict a residual on the template face box")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    if a.prepare_only:
        prepare(a.data, a.prepare_only)
        print(f"wrote {a.prepare_only} in {time.perf_counter() - t0:.1f}s")
        return 0
    if a.boxes:
        z = np.load(a.boxes)
    else:
        tmp = Path(a.out).with_suffix(".boxes.npz")
        z = np.load(prepare(a.data, tmp))
    heads, cands, fovs = z["heads"], z["cands"], z["fovs"]
    prep = time.perf_counter() - t0
    net, log = train_reface(heads, cands, fovs, steps=a.steps, batch=a.batch, seed=a.seed, ch=a.ch, lr=a.lr, slices=a.slices,
                            threads=a.threads, max_seconds=a.max_seconds, device=a.device,
                            prior=heads[0] if a.prior else None)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().clone().half() for k, v in net.state_dict().items()}  # type: ignore[attr-defined]
    extra = {"prior_box": torch.from_numpy(heads[0]).half()} if a.prior else {}
    torch.save({**extra, "state_dict": sd, "ch": a.ch, "steps": log["steps"], "seed": a.seed,
                "train_heads": ["mean_reg2mean", *TRAIN_HEADS], "held_out": list(HELD_OUT)}, out)
    info = {"steps": log["steps"], "train_seconds": round(log["seconds"], 1), "prep_seconds": round(prep, 1),
            "final_loss_mean_last20": float(np.mean(log["loss"][-20:])), "first_loss": log["loss"][0],
            "params": int(sum(p.numel() for p in net.parameters())),  # type: ignore[attr-defined]
            "bytes": out.stat().st_size, "device": a.device, "batch": a.batch, "lr": a.lr,
            "torch": torch.__version__}
    print(json.dumps(info))
    out.with_suffix(".log.json").write_text(json.dumps({**info, "loss": log["loss"]}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
