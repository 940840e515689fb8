"""MRI defacing benchmark.

speed: our whole file-to-file deface (load, multi-start registration, cut, independent brain check,
write) on chris_t1 and Colin27 ch2, against quickshear 1.2.0 (PyPI) timed in the same run on the same
files (given a brain mask: ch2bet, or our independent mask for chris; making it is not in its time):
the reported number is the ratio ours / quickshear. Also the template moved by a known affine (1 mm):
Dice of the removed region against the truth, brain voxels removed, registration point error.
privacy: ``mri-audit`` on a BIDS folder of the three real heads (chris_t1 is held out from the
refacing U-Net's training; ch2 and the template were training heads).

Wall times on a shared machine are inflated by other jobs; the process CPU time (all threads) is
reported beside them. Set MRI_BENCH_PARTS=speed or =privacy to run one part."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np


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


def speed(data_root: Path) -> dict:
    """Ours vs quickshear (same run), and the known-affine head."""
    from faceprivacy.mri.deface import deface, dice, warp_template_masks
    from faceprivacy.mri.evaluate import speed_vs_quickshear
    from faceprivacy.mri.register import Registration, point_error_mm
    from faceprivacy.mri.template import load_template

    t0 = time.perf_counter()
    tpl = load_template(data_root)
    out: dict = {"template_load_s": time.perf_counter() - t0, "load_average": list(os.getloadavg())}
    out["vs_quickshear"] = speed_vs_quickshear(Path(data_root), tpl, threads=2)
    for h, e in out["vs_quickshear"].items():
        for m in ("mask", "shear"):
            print(f"   {h} {m}: ours wall {e[m]['wall_s']:.1f}s cpu {e[m]['cpu_s']:.1f}s, quickshear wall "
                  f"{e['quickshear'].get('wall_s', float('nan')):.2f}s -> ratio "
                  f"{e[m].get('ratio_wall_vs_quickshear', float('nan')):.1f}x", flush=True)
    subj, truth = _known_subject(tpl, 1.0)
    true_face, true_brain = warp_template_masks(subj, tpl, Registration(truth, 0, 0, "truth"))
    pts = np.array([[0, 0, 20], [-50, 0, 20], [50, 0, 20], [0, -60, 40], [0, 60, 0.0]])
    c0, w0 = time.process_time(), time.perf_counter()
    r = deface(subj, tpl, method="mask", threads=2, brain_truth=true_brain)
    out["known_fast"] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0,
                         "dice_removed_vs_truth": dice(r.removed, true_face),
                         "brain_voxels_removed_truth": r.checks["brain_voxels_removed_truth"],
                         "max_point_error_mm": point_error_mm(r.registration.matrix, truth, pts)}
    print(f"   known 1 mm head: {out['known_fast']}", flush=True)
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
