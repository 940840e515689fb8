"""Throughput of the PyTorch port of dlib's face ResNet vs dlib's own ``compute_face_descriptor``.

Same real face chips (UTKFace, dlib 5-point shapes, ``dlib.get_face_chip``), same run, 2 torch threads.
Reports faces/s for dlib (one call per chip, and dlib's batched list call), for the torch port in several
configurations (batch 32; channels_last; TorchScript-frozen; batch 1), the speed-up ratios, forward+backward
cost (what attacks/training pay), chip-extraction speed, and cosine agreement with dlib.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from faceprivacy.core.fileio import atomic_write_json


def _chips(data_root: Path, n: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    import dlib
    from PIL import Image

    from faceprivacy.core.paths import dlib_model_path

    files = sorted((Path(data_root) / "utkface_crop_part1" / "images").glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no UTKFace crops under {data_root}/utkface_crop_part1/images")
    sp5 = dlib.shape_predictor(str(dlib_model_path("shape5")))
    box = dlib.rectangle(30, 40, 170, 180)
    imgs, shapes, chips = [], [], []
    for f in files[:: max(1, len(files) // n)][:n]:
        img = np.asarray(Image.open(f).convert("RGB"))
        s = sp5(img, box)
        imgs.append(img)
        shapes.append(np.array([[p.x, p.y] for p in s.parts()], np.float64))
        chips.append(np.asarray(dlib.get_face_chip(img, s, 150, 0.25)))
    return imgs, shapes, np.stack(chips)


def _cpu_time(fn) -> float:
    """CPU seconds (all threads of this process) of one call: robust to other processes on a shared box."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def _best(fn, reps: int) -> float:
    """Best wall time of ``reps`` calls (the machine is shared: the minimum is the least disturbed)."""
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def run(data_root: Path, out_dir: Path, n: int = 64, reps: int = 3) -> dict:
    """Measure and print; returns the numbers (also written to ``out_dir/bench_dlib.json``)."""
    import dlib
    import torch

    from faceprivacy.core.chip import extract_face_chips
    from faceprivacy.core.paths import dlib_model_path
    from faceprivacy.models.dlib_resnet import load_dlib_resnet

    torch.set_num_threads(2)
    imgs, shapes, chips = _chips(data_root, n)
    n = len(chips)
    fr = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))
    chip_list = list(chips)
    res: dict = {"n_chips": n, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                 "loadavg_start": os.getloadavg()[0]}

    # --- dlib (single-threaded, no BLAS in dlib-bin)
    k = min(n, 16)
    t_single = _best(lambda: [fr.compute_face_descriptor(c) for c in chip_list[:k]], 1) / k
    t_list = _best(lambda: fr.compute_face_descriptor(chip_list), 1) / n
    ref = np.array(fr.compute_face_descriptor(chip_list), dtype=np.float64)
    res["dlib_cpu_ms_per_face"] = 1000 * _cpu_time(lambda: fr.compute_face_descriptor(chip_list)) / n
    res["dlib_faces_per_s_single"] = 1 / t_single
    res["dlib_faces_per_s_list"] = 1 / t_list
    dlib_best = max(res["dlib_faces_per_s_single"], res["dlib_faces_per_s_list"])

    # --- torch port
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float().contiguous()
    variants = {}
    net_cl = load_dlib_resnet(channels_last=True)
    net_plain = load_dlib_resnet(channels_last=False)

    def batched(model, bs: int = 32):
        def f() -> None:
            with torch.inference_mode():
                for i in range(0, n, bs):
                    model(x[i:i + bs])
        return f

    for name, model in (("nchw", net_plain), ("channels_last", net_cl)):
        batched(model)()  # warm-up
        variants[f"batch32_{name}"] = n / _best(batched(model), reps)
    with torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(net_cl, x[:32], check_trace=False))
    batched(traced)()
    variants["batch32_channels_last_jit_frozen"] = n / _best(batched(traced), reps)
    k1 = min(n, 8)
    variants["batch1_channels_last"] = k1 / _best(lambda: _run_single(net_cl, x[:k1]), reps)
    res["torch_faces_per_s"] = variants
    res["torch_cpu_ms_per_face_batch32_channels_last"] = 1000 * _cpu_time(batched(net_cl)) / n
    res["cpu_time_ratio_dlib_over_torch"] = (res["dlib_cpu_ms_per_face"]
                                             / res["torch_cpu_ms_per_face_batch32_channels_last"])
    best_name = max(variants, key=variants.get)
    res["torch_best"] = best_name
    res["speedup_best_vs_dlib"] = variants[best_name] / dlib_best
    res["speedup_batch32_channels_last_vs_dlib_single"] = variants["batch32_channels_last"] / res[
        "dlib_faces_per_s_single"]

    # --- forward + backward w.r.t. the input (what adversarial / training losses pay)
    xb = x[:16].clone().requires_grad_(True)

    def fwd_bwd() -> None:
        xb.grad = None
        net_cl(xb).pow(2).sum().backward()

    fwd_bwd()
    res["torch_fwd_bwd_ms_per_face_batch16"] = 1000 * _best(fwd_bwd, reps) / 16

    # --- chip extraction: dlib.get_face_chip vs differentiable torch version (batch of 16 photos)
    sp5 = dlib.shape_predictor(str(dlib_model_path("shape5")))
    box = dlib.rectangle(30, 40, 170, 180)
    full = [sp5(im, box) for im in imgs[:16]]
    t_dchip = _best(lambda: [dlib.get_face_chip(im, s, 150, 0.25) for im, s in zip(imgs[:16], full,
                                                                                    strict=True)], reps) / 16
    ti = torch.from_numpy(np.stack(imgs[:16])).permute(0, 3, 1, 2).float()
    sh = np.stack(shapes[:16])
    t_tchip = _best(lambda: extract_face_chips(ti, sh, quantize=True), reps) / 16
    res["chip_ms_dlib"] = 1000 * t_dchip
    res["chip_ms_torch_batch16"] = 1000 * t_tchip

    # --- agreement with dlib
    with torch.inference_mode():
        out = net_cl(x).double().numpy()
    cos = (ref * out).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1)
    res["cosine_min"] = float(cos.min())
    res["cosine_mean"] = float(cos.mean())
    res["max_abs_diff"] = float(np.abs(ref - out).max())
    res["loadavg_end"] = os.getloadavg()[0]

    print(f"   dlib compute_face_descriptor: {res['dlib_faces_per_s_single']:.1f} faces/s (one call per chip), "
          f"{res['dlib_faces_per_s_list']:.1f} faces/s (list call)")
    for k_, v in variants.items():
        print(f"   torch port {k_:34s}: {v:7.1f} faces/s  ({v / dlib_best:5.1f}x dlib)")
    print(f"   CPU time per face: dlib {res['dlib_cpu_ms_per_face']:.1f} ms, torch batch32 "
          f"{res['torch_cpu_ms_per_face_batch32_channels_last']:.1f} ms (both threads) -> "
          f"{res['cpu_time_ratio_dlib_over_torch']:.1f}x less CPU; on 2 free cores wall ~ CPU/2")
    print(f"   best: {best_name}, {res['speedup_best_vs_dlib']:.1f}x dlib (goal >= 20x batched, 2 cores); "
          f"load average {res['loadavg_start']:.1f} -> {res['loadavg_end']:.1f}")
    print(f"   forward+backward {res['torch_fwd_bwd_ms_per_face_batch16']:.1f} ms/face; chip extraction dlib "
          f"{res['chip_ms_dlib']:.2f} ms vs torch {res['chip_ms_torch_batch16']:.2f} ms per face")
    print(f"   cosine vs dlib over {n} chips: min {res['cosine_min']:.7f}, mean {res['cosine_mean']:.7f}, "
          f"max |diff| {res['max_abs_diff']:.2e}")
    atomic_write_json(Path(out_dir) / "bench_dlib.json", res)
    return res


def _run_single(model, xs) -> None:
    import torch

    with torch.inference_mode():
        for i in range(len(xs)):
            model(xs[i:i + 1])


if __name__ == "__main__":
    import sys

    from faceprivacy.core.paths import default_data_root

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_root()
    run(root, Path(sys.argv[2]) if len(sys.argv) > 2 else Path("out/bench"))
