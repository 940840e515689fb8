"""De-identification speed on the CPU (2 threads): faces/s for full-frame anonymize and recover with the
default keyed donor morph (``donor``) and the keyed encryptor (``riddle``, the shipped ``lite`` generator)
vs the blur baseline measured in the same run.

``full_frames``: the eval-deid full-frame protocol's frames (three test-identity faces per frame, face widths
80-300 px on textured backgrounds, ``deid.evaluation.frames.make_frames``) through ``batch.anonymize_paths``
(what ``faceprivacy anonymize DIR OUT`` runs: load, detection + landmarks, fresh salt + scrypt per file, the
method, paste-back, record, atomic PNG writing); faces/s of each method and the ratio to blur, same run.

A 2x3 canvas of six CelebA test-identity faces is processed. ``anonymize_faces_per_s`` reuses one detection
and one key derivation, so it measures the de-identification itself; ``user_faces_per_s`` is what a user
pays per photo: detection + landmarks, scrypt with a fresh salt, the method, paste-back and the record.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _canvas(data_root: Path) -> np.ndarray:
    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.core.imageio import load_image

    ds = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))["test"]
    img = np.full((300, 420, 3), 200, np.uint8)
    for i, p in enumerate(ds.paths[:6]):
        y, x = (i // 3) * 150 + 20, (i % 3) * 140 + 14
        img[y:y + 112, x:x + 112] = load_image(p)
    return img


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def run(data_root: Path, out_dir: Path, repeats: int = 3) -> dict:
    """Faces/s anonymize + recover for riddle (exact and latent recovery) and blur; ratios vs blur."""
    import torch

    from faceprivacy.core.detect import FaceDetector
    from faceprivacy.core.keys import derive_master_key
    from faceprivacy.deid.methods import make_method
    from faceprivacy.deid.pipeline import Deidentifier, DetectedFace
    from faceprivacy.deid.riddle.loader import load_riddle

    torch.set_num_threads(2)
    img = _canvas(Path(data_root))
    det = FaceDetector()
    t0 = time.perf_counter()
    faces = [DetectedFace(f.box, f.arcface5) for f in det.detect(img)]
    t_det = time.perf_counter() - t0
    n = len(faces)
    salt = b"bench-deid-salt!"
    master = derive_master_key(b"bench passphrase", salt)
    res: dict = {"faces_per_frame": n, "detect_s_per_frame": round(t_det, 3), "threads": 2}
    for name, method in (("blur", make_method("blur")), ("donor", make_method("donor")), ("riddle", load_riddle())):
        d = Deidentifier(method, detector=False)
        out = d.anonymize(img, b"bench passphrase", salt=salt, master=master, faces=faces)
        t_a = _time(lambda d=d: d.anonymize(img, b"bench passphrase", salt=salt, master=master, faces=faces), repeats)
        # recover includes one scrypt per file (the passphrase -> key step), as a user would pay it
        t_r = _time(lambda d=d, out=out: d.recover(out.image, out.record, b"bench passphrase"), repeats)
        du = Deidentifier(method, detector=det)
        t_u = _time(lambda du=du: du.anonymize(img, b"bench passphrase"), repeats)
        res[name] = {"anonymize_faces_per_s": n / t_a, "user_faces_per_s": n / t_u,
                     "recover_exact_faces_per_s": n / t_r, "record_bytes": len(out.record)}
        if name == "riddle":
            t_l = _time(lambda d=d, out=out: d.recover(out.image, out.record, b"bench passphrase", from_latent=True),
                        repeats)
            res[name]["recover_latent_faces_per_s"] = n / t_l
    res["full_frames"] = full_frames(Path(data_root), repeats=max(1, repeats - 1))
    res["blas_threads"] = blas_threads(Path(data_root), repeats=max(1, repeats - 1))
    res["riddle_vs_blur_anonymize_speed_ratio"] = (res["riddle"]["anonymize_faces_per_s"]
                                                   / res["blur"]["anonymize_faces_per_s"])
    res["donor_vs_blur_anonymize_speed_ratio"] = (res["donor"]["anonymize_faces_per_s"]
                                                  / res["blur"]["anonymize_faces_per_s"])
    res["donor_vs_blur_user_speed_ratio"] = res["donor"]["user_faces_per_s"] / res["blur"]["user_faces_per_s"]
    print(f"   anonymize faces/s: donor {res['donor']['anonymize_faces_per_s']:.2f} (ratio to blur "
          f"{res['donor_vs_blur_anonymize_speed_ratio']:.3f}); as a user runs it (detection + scrypt): donor "
          f"{res['donor']['user_faces_per_s']:.2f}, blur {res['blur']['user_faces_per_s']:.2f} (ratio "
          f"{res['donor_vs_blur_user_speed_ratio']:.3f})")
    print(f"   anonymize faces/s: riddle {res['riddle']['anonymize_faces_per_s']:.2f}, blur "
          f"{res['blur']['anonymize_faces_per_s']:.2f} (ratio {res['riddle_vs_blur_anonymize_speed_ratio']:.3f}); "
          f"recover (exact) riddle {res['riddle']['recover_exact_faces_per_s']:.2f}, latent "
          f"{res['riddle']['recover_latent_faces_per_s']:.2f} faces/s")
    return res


def _frames_folder(data_root: Path, folder: Path, n_faces: int) -> int:
    """Write the full frames of ``full_frames`` (``n_faces`` test faces, three per frame, 80-300 px) as PNGs into
    ``folder`` (created) -> the number of frames."""
    from PIL import Image

    from faceprivacy.core.data import celeba_subset, identity_split
    from faceprivacy.deid.crops import load_crops
    from faceprivacy.deid.evaluation.frames import make_frames

    ds = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))["test"]
    frames = make_frames(load_crops(ds.paths[:n_faces]), faces_per_frame=3, face_px=(80, 300), seed=0)
    folder.mkdir()
    for k, fr in enumerate(frames):
        Image.fromarray(fr.image).save(folder / f"f{k}.png")
    return len(frames)


def full_frames(data_root: Path, repeats: int = 2, n_faces: int = 12, methods=("blur", "donor", "donor+push")) -> dict:
    """Faces/s of ``anonymize_paths`` on a folder of full frames (see module doc), per method, ratio to blur.
    ``donor+push`` is the default method with the optional 3-step identity push (``DonorMorph(push_steps=3)``)."""
    import tempfile

    from faceprivacy.deid.batch import anonymize_paths
    from faceprivacy.deid.methods import make_method

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        out: dict = {"frames": _frames_folder(data_root, src, n_faces), "faces": n_faces, "face_px": [80, 300]}
        for name in methods:
            if name == "donor+push":
                from faceprivacy.deid.donor import DonorMorph

                m = DonorMorph(push_steps=3)
            else:
                m = make_method(name)
            runs = []
            for r in range(repeats + 1):  # the first run warms the models up
                t0 = time.perf_counter()
                summary = anonymize_paths(src, Path(tmp) / f"out_{name}_{r}", b"bench passphrase", m)
                runs.append(time.perf_counter() - t0)
            out[name] = {"faces_per_s": summary["faces"] / float(np.mean(runs[1:])), "faces_found": summary["faces"]}
    for name in methods:
        if name != "blur":
            out[f"{name}_vs_blur_ratio"] = out[name]["faces_per_s"] / out["blur"]["faces_per_s"]
            print(f"   full frames (80-300 px faces, anonymize DIR): {name} {out[name]['faces_per_s']:.2f} faces/s, "
                  f"blur {out['blur']['faces_per_s']:.2f} (ratio {out[f'{name}_vs_blur_ratio']:.3f})")
    return out


def blas_threads(data_root: Path, repeats: int = 2, n_faces: int = 12, threads: int = 2) -> dict:
    """Photo ``anonymize_paths`` (donor) as shipped, BLAS limited to one thread (``core.threads.one_blas_thread``),
    against the same call without the limit, at ``threads`` torch / BLAS threads, alternating on the same
    full frames: wall seconds of each and the ratio (unlimited / limited; > 1: the limit is faster)."""
    import tempfile

    import torch

    from faceprivacy.deid.batch import anonymize_paths
    from faceprivacy.deid.methods import make_method

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return {"skipped": "threadpoolctl not installed"}
    torch.set_num_threads(threads)
    m = make_method("donor")
    runs: dict[str, list[float]] = {"limited": [], "unlimited": []}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        _frames_folder(data_root, src, n_faces)
        anonymize_paths(src, Path(tmp) / "warm", b"bench passphrase", m)
        for r in range(repeats):
            for mode in ("limited", "unlimited"):
                t0 = time.perf_counter()
                if mode == "limited":
                    anonymize_paths(src, Path(tmp) / f"{mode}{r}", b"bench passphrase", m)
                else:
                    with threadpool_limits(threads, user_api="blas"):
                        anonymize_paths.__wrapped__(src, Path(tmp) / f"{mode}{r}", b"bench passphrase", m)
                runs[mode].append(time.perf_counter() - t0)
    out = {"threads": threads, "faces": n_faces, "repeats": repeats, "wall_s": runs,
           "unlimited_over_limited": float(np.mean(runs["unlimited"]) / np.mean(runs["limited"]))}
    print(f"   photos at {threads} threads: BLAS 1 thread {np.mean(runs['limited']):.1f} s, BLAS {threads} threads "
          f"{np.mean(runs['unlimited']):.1f} s (ratio {out['unlimited_over_limited']:.2f})")
    return out
