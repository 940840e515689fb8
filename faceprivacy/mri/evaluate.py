"""``faceprivacy eval-deface``: the defacers on every real datakit head and on re-stored copies of each
(header rotations about each axis, a 1x1x1.5 mm grid, LPS voxel order, scaled uint8), as a data steward
would run them: file in, file out. JSON + HTML.

Per head and copy: wall and CPU time of the whole ``mask`` run (load, register, cut, check, write);
then per method (the same registration): brain voxels removed by the independent mask (no
registration, :mod:`.brain`) and its core (a refusal), face coverage, and whether every voxel outside the
removed region is byte-identical to the input file (header bytes included). Rotated copies also give
the registration's distance (mm, brain points) from the unrotated head's registration; rotations about
y and z run ``mask`` only (the registration sweep). Outputs are written uncompressed. quickshear 1.2.0
(PyPI) runs in the same process on the original heads as the speed anchor (it is given a brain mask:
ch2bet for Colin27, the independent mask otherwise; making that mask is not in its time)."""

from __future__ import annotations

import gzip
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.fileio import atomic_write_json
from .deface import METHODS, BrainInRemovalError, deface
from .io import Volume, load_volume, save_like, to_source_orientation
from .register import point_error_mm, register_affine, resample_to
from .template import load_template

#: the datakit's real heads (the SPM file is Colin27 again, stored as scaled uint8 at 2 mm)
HEADS = {
    "chris_t1": "chris_t1_mricron/chris_t1.nii.gz",
    "colin27_ch2": "colin27_ch2_mricron/ch2.nii.gz",
    "colin27_spm_2mm": "colin27_spm12_2mm/single_subj_T1.nii",
    "pydeface_mean": "pydeface_template_pypi/mean_reg2mean.nii.gz",
}
TRUTH = {"colin27_ch2": "colin27_ch2_mricron/ch2bet.nii.gz"}
#: brain points (template world mm) at which registrations are compared
BRAIN_POINTS = np.array([[0, 0, 20], [-50, 0, 20], [50, 0, 20], [0, -60, 40], [0, 60, 0.0], [0, 50, -30]])


@dataclass(frozen=True)
class EvalConfig:
    """What ``eval-deface`` runs."""

    heads: tuple[str, ...] = tuple(HEADS)
    rotations: tuple[float, ...] = (10.0, 20.0, 25.0)
    axes: tuple[str, ...] = ("x", "y", "z")
    copies: tuple[str, ...] = ("1x1x1.5mm", "LPS", "uint8_scaled")
    methods: tuple[str, ...] = METHODS
    #: rotations about these axes run ``mask`` only (the registration sweep); the others every method
    sweep_only_axes: tuple[str, ...] = ("y", "z")
    threads: int = 2
    quickshear: bool = True

    def __post_init__(self) -> None:
        bad = [h for h in self.heads if h not in HEADS]
        if bad:
            raise InputError(f"unknown head(s) {bad}; choose from {', '.join(HEADS)}")
        if any(a not in ("x", "y", "z") for a in self.axes):
            raise InputError("axes must be x, y or z")
        if any(not 0 <= r <= 25 for r in self.rotations):
            raise InputError("header rotations must be within 0-25 degrees (steeper headers are refused)")


# ------------------------------------------------------------------------------------------ the copies
def _rotation(axis: str, deg: float, centre: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    g = np.eye(4)
    g[:3, :3] = Rotation.from_euler(axis, deg, degrees=True).as_matrix()
    g[:3, 3] = centre - g[:3, :3] @ centre
    return g


def make_copy(src: Path, kind: str, dest: Path) -> tuple[Path, np.ndarray | None]:
    """Write a re-stored copy of ``src``; returns its path and, for header rotations, G (world -> world)."""
    import nibabel as nib

    img = nib.load(str(src))
    data = np.asanyarray(img.dataobj)
    dt = img.get_data_dtype()
    if kind.startswith("rot"):
        axis, deg = kind[3], float(kind[4:])
        c = img.affine @ np.r_[(np.array(img.shape[:3]) - 1) / 2, 1]
        g = _rotation(axis, deg, c[:3])
        out = nib.Nifti1Image(data.astype(np.float32), g @ img.affine)
        out.set_data_dtype(np.float32)
        nib.save(out, str(dest))
        return dest, g
    v = load_volume(src)
    if kind == "1x1x1.5mm":
        lo = v.affine[:3, 3]
        ext = (np.array(v.shape) - 1) * v.zooms
        shape = tuple(int(e // z) + 1 for e, z in zip(ext, (1.0, 1.0, 1.5), strict=True))
        aff = np.diag([1.0, 1.0, 1.5, 1.0])
        aff[:3, 3] = lo
        arr = resample_to(v.data, v.affine, shape, aff, order=1)
        nib.save(nib.Nifti1Image(np.rint(arr).astype(np.int16) if dt.kind in "iu" else arr, aff), str(dest))
    elif kind == "LPS":
        arr = v.data[::-1, ::-1, :]
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[0, 3], flip[1, 3] = v.shape[0] - 1, v.shape[1] - 1
        out = nib.Nifti1Image(arr.astype(np.float32), v.affine @ flip)
        out.set_data_dtype(np.int16 if dt.kind in "iu" else np.float32)
        nib.save(out, str(dest))
    elif kind == "uint8_scaled":
        hi = float(v.data.max())
        u8 = np.clip(np.rint(v.data / hi * 255), 0, 255).astype(np.uint8)
        out = nib.Nifti1Image(u8, v.affine)
        out.header.set_slope_inter(hi / 255, 0.0)
        nib.save(out, str(dest))
    else:
        raise InputError(f"unknown copy kind {kind!r}")
    return dest, None


def unchanged_identical(src: Path, out: Path, vol: Volume, removed: np.ndarray) -> bool:
    """True when the header bytes and every stored value outside ``removed`` are the input's."""
    import nibabel as nib

    def raw(p: Path) -> bytes:
        b = p.read_bytes()
        return gzip.decompress(b) if p.name.endswith(".gz") else b

    a, b = nib.load(str(src)), nib.load(str(out))
    off = int(a.dataobj.offset)
    if raw(src)[:off] != raw(out)[:off]:
        return False
    ua, ub = np.asanyarray(a.dataobj.get_unscaled()), np.asanyarray(b.dataobj.get_unscaled())
    ch = to_source_orientation(vol, removed).reshape(ua.shape)
    return bool(ua.dtype == ub.dtype and np.array_equal(ua[~ch], ub[~ch]))


# ------------------------------------------------------------------------------------------ one row
def _row(name: str, kind: str, path: Path, tpl, work: Path, cfg: EvalConfig, truth: np.ndarray | None,
         base_reg=None, g: np.ndarray | None = None, methods: tuple[str, ...] | None = None) -> dict:
    row: dict = {"head": name, "copy": kind}
    methods = methods or cfg.methods
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        v = load_volume(path)
    except InputError as e:  # e.g. a 2-degree oblique head rotated by 25 more: refused on load, by design
        return {**row, "rejected_on_load": str(e).split(": ", 1)[-1], "wall_s": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0, "methods": {}}
    reg = register_affine(v, tpl.head, "fast", threads=cfg.threads)
    results = {}
    for m in methods:
        tm0 = time.perf_counter()
        try:
            r = deface(v, tpl, method=m, registration=reg)
        except BrainInRemovalError as e:
            results[m] = {"refused": str(e)}
            continue
        out = work / f"{name}_{kind}_{m}.nii"  # uncompressed: the gzip time is not the defacer's
        save_like(v, r.data, out)
        if m == methods[0]:
            row["wall_s"] = time.perf_counter() - t0
            row["cpu_s"] = time.process_time() - c0
        results[m] = {
            "cut_check_write_s": time.perf_counter() - tm0,
            "brain_voxels_removed_independent": r.checks["brain_voxels_removed"],
            "brain_core_voxels_removed": r.checks["brain_core_voxels_removed"],
            "face_coverage": r.checks["face_coverage"],
            "unchanged_byte_identical": unchanged_identical(path, out, v, r.removed),
        }
        if truth is not None and truth.shape == v.shape:
            results[m]["brain_voxels_removed_truth"] = int((r.removed & truth).sum())
        out.unlink()
    row.setdefault("wall_s", time.perf_counter() - t0)
    row.setdefault("cpu_s", time.process_time() - c0)
    row["register_s"] = reg.seconds
    row["registration_start"] = reg.info.get("start")
    if base_reg is not None:
        pts = (np.c_[BRAIN_POINTS, np.ones(len(BRAIN_POINTS))] @ np.linalg.inv(base_reg.matrix).T)
        if g is not None:
            pts = pts @ g.T
            truth_m = base_reg.matrix @ np.linalg.inv(g)
        else:
            truth_m = base_reg.matrix
        row["registration_vs_unrotated_mm"] = point_error_mm(reg.matrix, truth_m, pts[:, :3])
    row["methods"] = results
    return row


def quickshear_anchor(head: Path, brain: np.ndarray | Path, vol: Volume) -> dict:
    """Time quickshear 1.2.0 on ``head`` with a brain mask (array on ``vol``'s RAS grid, or a file)."""
    import nibabel as nib

    try:
        from quickshear import quickshear
    except ImportError:
        return {"error": "quickshear not installed (pip install quickshear==1.2.0)"}
    img = nib.load(str(head))
    if isinstance(brain, Path):
        mimg = nib.load(str(brain))
    else:
        arr = to_source_orientation(vol, brain.astype(np.uint8)).reshape(img.shape[:3])
        mimg = nib.Nifti1Image(arr, img.affine)
    t0 = time.perf_counter()
    c0 = time.process_time()
    with tempfile.TemporaryDirectory() as td:
        out = quickshear(img, mimg)
        nib.save(out, str(Path(td) / "qs.nii.gz"))
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}


def ours_timed(head: Path, tpl, method: str, threads: int) -> dict:
    """Our whole file-to-file run (load, register, cut, independent check, write), timed."""
    t0, c0 = time.perf_counter(), time.process_time()
    v = load_volume(head)
    r = deface(v, tpl, method=method, threads=threads)
    with tempfile.TemporaryDirectory() as td:
        save_like(v, r.data, Path(td) / "o.nii.gz")
    return {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, **r.checks}


def speed_vs_quickshear(data_root: Path, tpl, threads: int = 2, heads: tuple[str, ...] = ("chris_t1", "colin27_ch2"),
                        methods: tuple[str, ...] = ("mask", "shear")) -> dict:
    """Ours (each method) and quickshear on the same heads in the same process; ratio = ours / quickshear."""
    from .brain import independent_masks

    root = Path(data_root) / "mri_heads"
    out: dict = {}
    for name in heads:
        p = root / HEADS[name]
        v = load_volume(p)
        brain = root / TRUTH[name] if name in TRUTH else independent_masks(v)[1]
        qs = quickshear_anchor(p, brain, v)
        e: dict = {"quickshear": qs, "quickshear_mask": "ch2bet" if name in TRUTH else "independent brain mask"}
        for m in methods:
            o = ours_timed(p, tpl, m, threads)
            e[m] = {k: o[k] for k in ("wall_s", "cpu_s", "brain_voxels_removed", "face_coverage")}
            if "wall_s" in qs:
                e[m]["ratio_wall_vs_quickshear"] = o["wall_s"] / qs["wall_s"]
                e[m]["ratio_cpu_vs_quickshear"] = o["cpu_s"] / max(qs["cpu_s"], 1e-6)
        out[name] = e
    return out


def run_eval(data_root: str | Path, out_dir: str | Path, config: EvalConfig = EvalConfig(),
             log=print) -> dict:
    """All rows (see the module docstring); writes ``eval_deface.json`` and ``eval_deface.html``."""
    import os

    from .register import set_threads

    root = Path(data_root) / "mri_heads"
    missing = [h for h in config.heads if not (root / HEADS[h]).is_file()]
    if missing:
        raise InputError(f"datakit heads not found under {root}: {', '.join(missing)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    set_threads(config.threads)
    tpl = load_template(data_root)
    res: dict = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()},
                 "load_average": list(os.getloadavg()), "rows": []}
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        for name in config.heads:
            src = root / HEADS[name]
            truth = load_volume(root / TRUTH[name]).data > 0 if name in TRUTH else None
            base = _row(name, "original", src, tpl, work, config, truth)
            base_reg = register_affine(load_volume(src), tpl.head, "fast", threads=config.threads)
            res["rows"].append(base)
            log(_fmt(base))
            kinds = [f"rot{a}{int(d)}" for a in config.axes for d in config.rotations] + list(config.copies)
            for kind in kinds:
                p, g = make_copy(src, kind, work / f"{name}_{kind}.nii.gz")
                sweep = kind.startswith("rot") and kind[3] in config.sweep_only_axes
                row = _row(name, kind, p, tpl, work, config, truth if kind.startswith("rot") else None,
                           base_reg if kind.startswith("rot") else None, g, ("mask",) if sweep else None)
                res["rows"].append(row)
                log(_fmt(row))
                p.unlink()
    if config.quickshear:
        res["speed_vs_quickshear"] = speed_vs_quickshear(Path(data_root), tpl, config.threads)
    res["summary"] = summarise(res["rows"], config.methods)
    atomic_write_json(out / "eval_deface.json", res)
    _html(res, out / "eval_deface.html")
    write_markdown(out / "eval_deface.json")
    res["json"], res["html"] = str(out / "eval_deface.json"), str(out / "eval_deface.html")
    return res


def summarise(rows: list[dict], methods: tuple[str, ...]) -> dict:
    """Per method: rows, refusals, rows with brain removed, min/mean face coverage, all byte-identical."""
    s: dict = {}
    for m in methods:
        ran = [r["methods"][m] for r in rows if m in r["methods"]]
        ok = [e for e in ran if "refused" not in e]
        s[m] = {"rows": len(ran), "refused": len(ran) - len(ok),
                "rows_with_brain_removed_independent": sum(e["brain_voxels_removed_independent"] > 0 for e in ok),
                "face_coverage_min": min((e["face_coverage"] for e in ok), default=None),
                "face_coverage_mean": float(np.mean([e["face_coverage"] for e in ok])) if ok else None,
                "all_unchanged_byte_identical": all(e["unchanged_byte_identical"] for e in ok)}
    walls = [r["wall_s"] for r in rows if r["methods"]]
    cpus = [r["cpu_s"] for r in rows if r["methods"]]
    s["rejected_on_load"] = sum("rejected_on_load" in r for r in rows)
    s["mask_run_wall_s_median"] = float(np.median(walls))
    s["mask_run_cpu_s_median"] = float(np.median(cpus))
    regs = [r["registration_vs_unrotated_mm"] for r in rows if "registration_vs_unrotated_mm" in r]
    if regs:
        s["rotated_registration_error_mm_max"] = float(max(regs))
    return s


def _fmt(row: dict) -> str:
    if "rejected_on_load" in row:
        return f"{row['head']:16s} {row['copy']:13s} rejected on load: {row['rejected_on_load']}"
    ms = " ".join(f"{m}:" + ("REFUSED" if "refused" in e else
                             f"brain {e['brain_voxels_removed_independent']} cov {e['face_coverage']:.2f} "
                             f"{'ident' if e['unchanged_byte_identical'] else 'CHANGED'}")
                  for m, e in row["methods"].items())
    reg = f" reg {row['registration_vs_unrotated_mm']:.2f}mm" if "registration_vs_unrotated_mm" in row else ""
    return f"{row['head']:16s} {row['copy']:13s} {row['wall_s']:5.1f}s cpu {row['cpu_s']:5.1f}s{reg}  {ms}"


def table_rows(res: dict) -> list[dict]:
    """Flat rows for the HTML / markdown table."""
    out = []
    for r in res["rows"]:
        d = {"head": r["head"], "copy": r["copy"], "mask run wall s": round(r["wall_s"], 1),
             "CPU s": round(r["cpu_s"], 1)}
        if "rejected_on_load" in r:
            d["rejected on load"] = r["rejected_on_load"]
        if "registration_vs_unrotated_mm" in r:
            d["reg. vs unrotated mm"] = round(r["registration_vs_unrotated_mm"], 2)
        for m, e in r["methods"].items():
            if "refused" in e:
                d[f"{m}: result"] = "refused"
                continue
            d[f"{m}: brain vox removed (indep.)"] = e["brain_voxels_removed_independent"]
            d[f"{m}: face cov."] = round(e["face_coverage"], 3)
            d[f"{m}: unchanged identical"] = "yes" if e["unchanged_byte_identical"] else "NO"
        out.append(d)
    return out


def write_markdown(json_path: str | Path) -> Path:
    """``eval_deface.md`` beside the JSON: the per-row table and the quickshear ratios (for docs)."""
    import json

    from ..core.fileio import atomic_write_text

    res = json.loads(Path(json_path).read_text())
    lines = ["| head | copy | mask run wall s / CPU s | reg. vs unrotated mm | "
             + " | ".join(f"{m}: brain removed (indep.) / face cov. / unchanged identical" for m in METHODS) + " |",
             "|" + "---|" * (4 + len(METHODS))]
    for r in res["rows"]:
        if "rejected_on_load" in r:
            lines.append(f"| {r['head']} | {r['copy']} | rejected on load: {r['rejected_on_load']} |"
                         + " |" * (1 + len(METHODS)))
            continue
        reg = f"{r['registration_vs_unrotated_mm']:.2f}" if "registration_vs_unrotated_mm" in r else "–"
        cells = []
        for m in METHODS:
            e = r["methods"].get(m)
            if e is None:
                cells.append("–")
            elif "refused" in e:
                cells.append("refused")
            else:
                cells.append(f"{e['brain_voxels_removed_independent']} / {e['face_coverage']:.3f} / "
                             f"{'yes' if e['unchanged_byte_identical'] else 'NO'}")
        lines.append(f"| {r['head']} | {r['copy']} | {r['wall_s']:.1f} / {r['cpu_s']:.1f} | {reg} | "
                     + " | ".join(cells) + " |")
    if "speed_vs_quickshear" in res:
        lines += ["", "| head | method | ours wall s / CPU s | quickshear wall s / CPU s | ratio wall / CPU |",
                  "|---|---|---|---|---|"]
        for h, e in res["speed_vs_quickshear"].items():
            q = e["quickshear"]
            for m in ("mask", "shear"):
                if m in e and "wall_s" in q:
                    lines.append(f"| {h} | {m} | {e[m]['wall_s']:.1f} / {e[m]['cpu_s']:.1f} | {q['wall_s']:.2f} / "
                                 f"{q['cpu_s']:.2f} | {e[m]['ratio_wall_vs_quickshear']:.1f} / "
                                 f"{e[m]['ratio_cpu_vs_quickshear']:.1f} |")
    lines += ["", f"load average at start: {res.get('load_average')}"]
    out = Path(json_path).with_suffix(".md")
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def _html(res: dict, path: Path) -> Path:
    from ..core.report import HtmlReport

    rep = HtmlReport("faceprivacy eval-deface")
    rep.paragraph(__doc__.split("\n\n", 1)[1].replace("\n", " "))
    rep.paragraph(f"load average at start: {res['load_average']} (2 shared cores; wall times include waiting "
                  "for other jobs, CPU times do not)")
    rep.heading("Summary")
    rep.table([{"method": m, **v} for m, v in res["summary"].items() if isinstance(v, dict)])
    rep.paragraph(", ".join(f"{k} = {v:.2f}" for k, v in res["summary"].items() if not isinstance(v, dict)))
    if "speed_vs_quickshear" in res:
        rep.heading("Speed vs quickshear 1.2.0 (same run)")
        rows = []
        for h, e in res["speed_vs_quickshear"].items():
            for m in ("mask", "shear"):
                if m in e:
                    rows.append({"head": h, "method": m, "ours wall s": round(e[m]["wall_s"], 2),
                                 "ours CPU s": round(e[m]["cpu_s"], 2),
                                 "quickshear wall s": round(e["quickshear"].get("wall_s", float("nan")), 2),
                                 "ratio wall": round(e[m].get("ratio_wall_vs_quickshear", float("nan")), 1),
                                 "ratio CPU": round(e[m].get("ratio_cpu_vs_quickshear", float("nan")), 1)})
        rep.table(rows)
    rep.heading("Every head and copy")
    rep.table(table_rows(res))
    return rep.write(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m faceprivacy.mri.evaluate ...`` = ``faceprivacy eval-deface ...``."""
    from ..cli import main as cli_main

    return cli_main(["eval-deface", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":
    raise SystemExit(main())
