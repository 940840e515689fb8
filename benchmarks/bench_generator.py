"""Throughput of the bundled ``lite`` generator on the CPU (2 threads): encode, decode, encode+decode faces/s,
with dlib's ResNet descriptor (port) on the same faces as a reference measured in the same run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _rate(fn, n_items: int, min_s: float = 2.0) -> float:
    fn()  # warm-up
    t0, reps = time.perf_counter(), 0
    while True:
        fn()
        reps += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return n_items * reps / dt


def run(data_root: Path, out_dir: Path) -> dict:
    """faces/s for encode, decode, encode+decode (batch 16 and 1) and the dlib reference (batch 16)."""
    import torch

    from faceprivacy.core.chip import arcface112_to_dlib150
    from faceprivacy.models.dlib_resnet import load_dlib_resnet
    from faceprivacy.models.generator_loader import load_generator

    torch.set_num_threads(2)
    gen = load_generator("lite")
    rng = np.random.default_rng(0)
    imgs = None
    celeba = Path(data_root) / "celeba_subset_aligned112" / "images"
    if celeba.is_dir():
        from faceprivacy.models.generator_eval import load_test_faces, to_tensor
        imgs = to_tensor(load_test_faces(Path(data_root), max_test=16)[0])
    if imgs is None:
        imgs = torch.from_numpy(rng.uniform(-1, 1, (16, 3, 112, 112)).astype(np.float32))
    res: dict = {"threads": 2, "latent_dim": int(gen.latent_shape[0])}
    with torch.inference_mode():
        z = gen.encode(imgs)
        res["encode_faces_per_s_b16"] = _rate(lambda: gen.encode(imgs), 16)
        res["decode_faces_per_s_b16"] = _rate(lambda: gen.decode(z), 16)
        res["encdec_faces_per_s_b16"] = _rate(lambda: gen.decode(gen.encode(imgs)), 16)
        one = imgs[:1]
        res["encdec_faces_per_s_b1"] = _rate(lambda: gen.decode(gen.encode(one)), 1)
        net = load_dlib_resnet()
        chips = arcface112_to_dlib150((imgs + 1) * 127.5)
        res["reference_dlib_descriptor_faces_per_s_b16"] = _rate(lambda: net(chips), 16)
    res["ratio_encdec_vs_dlib_descriptor"] = res["encdec_faces_per_s_b16"] / res[
        "reference_dlib_descriptor_faces_per_s_b16"]
    for k, v in res.items():
        print(f"   {k}: {v:.3g}" if isinstance(v, float) else f"   {k}: {v}")
    return res
