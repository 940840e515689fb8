"""MRI defacing benchmark.

speed: deface a 1 mm head (the template moved by a known affine, and the real heads ch2 / chris) with
the fast registration; reference = the careful full-resolution registration measured in the same run
(pydeface + FSL's ~167 s per head is quoted from REFERENCES.md, not measured here). Dice of the removed
region against the template face mask moved by the known transform; brain voxels removed.
privacy: ``mri-audit`` on a BIDS folder of the three real heads (chris_t1 is held out from the
refacing U-Net's training; ch2 and the template were training heads).

Wall times on a shared machine are inflated by other jobs; the process CPU time (all threads) is
reported beside them: on 2 dedicated cores the wall time is at most about the CPU time.
Set MRI_BENCH_PARTS=speed or =privacy to run one part."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

PYDEFACE_FSL_REFERENCE_S = 167.0  # stated in REFERENCES.md (pydeface 2.1.0 + FSL, ~2 min 47 s), not measured


def _known_subject(tpl, vox: float = 1.0):
    from scipy.spatial.transform import Rotation

    from faceprivacy.mri.io import Volume
    from faceprivacy.mri.register import resample_to

    rot = Rotation.from_euler("xyz", [10, 5, -7], degrees=True).as_matrix()
    a = np.eye(4)
    a[:3, :3] = rot * 1.05
    a[:3, 3] = [6, -4, 3]
    c = tpl.head.affine @ np.r_[np.array(tpl.head.shape) / 2, 1]
    cm = np.eye(4)
    cm[:3, 3] = c[:3]
    truth = cm @ a @ np.linalg.inv(cm)
    shape = tuple(int(round(n / vox)) for n in (180, 230, 230))
    aff = np.diag([vox, vox, vox, 1.0])
    aff[:3, 3] = c[:3] - np.array(shape) * vox / 2
    return Volume(resample_to(tpl.head.data, tpl.head.affine, shape, aff, truth), aff), truth


def _timed_deface(vol, tpl, settings, brain_truth=None, method="mask"):
    from faceprivacy.mri.deface import deface

    c0, t0 = time.process_time(), time.perf_counter()
    r = deface(vol, tpl, method, settings, brain_truth=brain_truth, threads=2)
    return r, time.perf_counter() - t0, time.process_time() - c0


def speed(data_root: Path) -> dict:
    """Deface timings, Dice vs the known transform, brain checks."""
    from faceprivacy.mri.deface import dice, warp_template_masks
    from faceprivacy.mri.io import load_volume
    from faceprivacy.mri.register import Registration, point_error_mm
    from faceprivacy.mri.template import load_template

    tpl = load_template(data_root)
    subj, truth = _known_subject(tpl, 1.0)
    true_face, true_brain = warp_template_masks(subj, tpl, Registration(truth, 0, 0, "truth"))
    pts = np.array([[0, 0, 20], [-50, 0, 20], [50, 0, 20], [0, -60, 40], [0, 60, 0.0]])
    out: dict = {"subject_shape": list(subj.shape), "pydeface_fsl_reference_s_stated": PYDEFACE_FSL_REFERENCE_S}
    for settings in ("fast", "careful"):
        r, wall, cpu = _timed_deface(subj, tpl, settings, true_brain)
        out[f"known_{settings}"] = {
            "wall_s": wall, "cpu_s": cpu, "register_wall_s": r.timings["register_s"],
            "dice_removed_vs_truth": dice(r.removed, true_face),
            "brain_voxels_removed": r.checks["brain_voxels_removed"],
            "max_point_error_mm": point_error_mm(r.registration.matrix, truth, pts)}
        print(f"   known 1 mm head, {settings}: wall {wall:.1f}s cpu {cpu:.1f}s dice "
              f"{out[f'known_{settings}']['dice_removed_vs_truth']:.4f}", flush=True)
    f, c = out["known_fast"], out["known_careful"]
    out["speedup_wall_vs_careful"] = c["wall_s"] / f["wall_s"]
    out["speedup_cpu_vs_careful"] = c["cpu_s"] / f["cpu_s"]
    out["fast_vs_pydeface_fsl_stated"] = PYDEFACE_FSL_REFERENCE_S / f["wall_s"]
    root = Path(data_root) / "mri_heads"
    heads = {"ch2": (root / "colin27_ch2_mricron/ch2.nii.gz", root / "colin27_ch2_mricron/ch2bet.nii.gz"),
             "chris_t1": (root / "chris_t1_mricron/chris_t1.nii.gz", None)}
    for name, (p, bet) in heads.items():
        v = load_volume(p)
        bt = load_volume(bet).data > 0 if bet else None
        for m in ("mask", "shear", "reface"):
            r, wall, cpu = _timed_deface(v, tpl, "fast", bt, m)
            out[f"{name}_{m}"] = {"wall_s": wall, "cpu_s": cpu, **r.checks}
            print(f"   {name} {m}: wall {wall:.1f}s cpu {cpu:.1f}s brain removed "
                  f"{r.checks['brain_voxels_removed']} ({r.checks['brain_reference']}) face coverage "
                  f"{r.checks['face_coverage']:.3f}", flush=True)
    return out


def privacy(data_root: Path, out_dir: Path, n_synthetic: int = 2) -> dict:
    """mri-audit on the three real heads: the held-out chris is defaced/attacked/probed; all three heads
    and ``n_synthetic`` deformed copies of each form the gallery."""
    from faceprivacy.mri.audit import run_audit

    root = Path(data_root) / "mri_heads"
    files = {"chris": root / "chris_t1_mricron/chris_t1.nii.gz", "colin": root / "colin27_ch2_mricron/ch2.nii.gz",
             "pydefacemean": root / "pydeface_template_pypi/mean_reg2mean.nii.gz"}
    with tempfile.TemporaryDirectory() as td:
        for sub, f in files.items():
            d = Path(td) / f"sub-{sub}" / "anat"
            d.mkdir(parents=True)
            (d / f"sub-{sub}_T1w.nii.gz").symlink_to(f.resolve())  # a relative --data must not break the link
        res = run_audit(td, out_dir / "mri_audit", data_root=data_root, n_synthetic=n_synthetic,
                        probe_subjects=["sub-chris"])
    res["held_out_subject"] = "sub-chris (never seen by the refacing U-Net); sub-colin and sub-pydefacemean were training heads"
    return res


def run(data_root: Path, out_dir: Path) -> dict:
    """Both parts (or the one named in MRI_BENCH_PARTS)."""
    from faceprivacy.core.fileio import atomic_write_json
    from faceprivacy.mri.register import set_threads

    set_threads(2)
    parts = os.environ.get("MRI_BENCH_PARTS", "speed,privacy").split(",")
    res: dict = {}
    if "speed" in parts:
        res["speed"] = speed(Path(data_root))
        atomic_write_json(Path(out_dir) / "bench_mri_speed.json", res["speed"])
    if "privacy" in parts:
        p = privacy(Path(data_root), Path(out_dir))
        res["privacy"] = {"json": p["json"], "html": p["html"], "reid": p["reid"],
                          "msd": {k: {m: {st: d["msd"] for st, d in e["msd"].items()}
                                      for m, e in s["defacers"].items()} for k, s in p["subjects"].items()}}
    return res
