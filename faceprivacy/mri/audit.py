"""``mri-audit``: deface every T1w of a BIDS folder with each method, attack the result with the
refacing U-Net (and the average-face baseline), and score privacy and utility:

* checks per defacer (brain voxels removed, face coverage, runtime);
* face-region mean surface distance (MSD, mm) to the original face for defaced / attacked / baseline;
* rank-1 re-identification of +-30 degree renders against a gallery of frontal undefaced renders
  (the subjects plus synthetic identities made by deforming each subject), per recognizer;
* utility deltas (geometry, face soft tissue, registration, GMM brain segmentation).

Writes ``mri_audit.json`` and ``mri_audit.html`` (renders before / after / attacked inline)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.embedders import get_embedder
from ..core.fileio import atomic_write_json
from ..core.progress import progress
from ..core.report import HtmlReport, image_grid
from .attack import attack, baseline_average_face, load_reface_model
from .augment import DeformParams, deform_array
from .bids import find_t1w
from .deface import bbox, crop_volume, deface
from .io import Volume, load_volume
from .register import register_affine
from .reid import detect_rate, embed_faces, rank1
from .render import face_views
from .surface import face_msd, face_region_for_msd, head_mask, head_surface
from .template import load_template
from .utility import utility_deltas


def _surface_in_box(vol: Volume, mask: np.ndarray, sl):
    """Marching-cubes surface of ``mask`` restricted to the box ``sl`` (world coordinates)."""
    sub = crop_volume(vol, sl)
    return head_surface(sub, mask[sl])


def msd_against(orig: Volume, orig_mask: np.ndarray, others: dict[str, np.ndarray], region: np.ndarray) -> dict:
    """Face-region MSD of several volumes (same grid) against the original."""
    sl = bbox(region, margin=8)
    ref = _surface_in_box(orig, orig_mask, sl)
    sub = crop_volume(orig, sl)
    out = {}
    for name, data in others.items():
        m = head_mask(data)
        s = _surface_in_box(orig.with_data(data), m, sl)
        out[name] = face_msd(ref, s, sub, region[sl])
    return out


def synthetic_identity(vol: Volume, seed: int) -> tuple[Volume, np.ndarray]:
    """A new "identity" for the re-ID gallery: a strong random affine + elastic deformation of a head.
    Returns the volume and the world transform new -> original (affine part; the elastic part is small)."""
    rng = np.random.default_rng(seed)
    p = DeformParams(rot_deg=3.0, scale=0.08, shift_mm=2.0, elastic_mm=4.0, elastic_grid=6, bias=0.0,
                     gamma=0.0, noise=0.0)
    info: dict = {}
    arr, _ = deform_array(vol.data, vol.zooms, rng, p, info=info)
    c = vol.affine @ np.r_[(np.array(vol.shape) - 1) / 2, 1.0]
    cm = np.eye(4)
    cm[:3, 3] = c[:3]
    return vol.with_data(arr), cm @ info["affine"] @ np.linalg.inv(cm)


def run_audit(bids_dir: str | Path, out_dir: str | Path, methods: list[str] | None = None,
              data_root: str | Path | None = None, recognizers: list[str] | None = None,
              weights: str | Path | None = None, n_synthetic: int = 4, seed: int = 0,
              yaws: tuple[float, ...] = (0.0, -30.0, 30.0), probe_subjects: list[str] | None = None,
              participant_labels: list[str] | None = None) -> dict:
    """Run the whole audit; returns the result dict (also written as JSON + HTML under ``out_dir``,
    every render row also as a full-size PNG under ``out_dir/renders``).
    ``probe_subjects`` (scan stems) or ``participant_labels`` (BIDS labels, ``01`` or ``sub-01``) limit
    defacing/attacks to those scans; the others only add gallery identities (default: every scan is
    defaced and probed)."""
    from ..core.errors import InputError
    from ..core.imageio import save_image
    from ..core.options import stage
    from .bids import select_participants

    methods = methods or ["mask", "shear", "reface"]
    recognizers = recognizers or ["dlib", "mobilefacenet"]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    scans = find_t1w(bids_dir)
    if participant_labels:
        chosen = {s.stem for s in select_participants(scans, participant_labels)}
        probe_subjects = [s for s in (probe_subjects or chosen) if s in chosen]
    stage(1, 4, f"loading {len(scans)} scan(s), the template and the refacing model")
    vols = [load_volume(s.path) for s in scans]  # validate all inputs before any work
    tpl = load_template(data_root)
    model = load_reface_model(weights)
    res: dict = {"bids_dir": str(bids_dir), "methods": methods, "subjects": {}, "reid": {}}
    faces_all = []
    gallery = []
    renders_html: dict[str, list] = {}
    for scan, vol in progress(list(zip(scans, vols, strict=True)), desc="subjects"):
        key = scan.stem
        t0 = time.perf_counter()
        stage(2, 4, f"{key}: registration to the template")
        reg = register_affine(vol, tpl.head, "fast", seed=seed)
        omask = head_mask(vol.data)
        sub: dict = {"registration_s": reg.seconds, "defacers": {}}
        views = face_views(vol, reg.matrix, key, "original", yaws, mask=omask)
        gallery += [f for f in views if f.yaw == 0.0]
        faces_all += [f for f in views if f.yaw != 0.0]
        rows = {"original": [f.image for f in views]}
        region = None
        probe = probe_subjects is None or key in probe_subjects
        for m in methods if probe else []:
            stage(2, 4, f"{key}: deface with {m}, refacing attack, utility")
            r = deface(vol, tpl, method=m, registration=reg, check_brain=False)  # measured, not refused
            if region is None:
                region = face_region_for_msd(r.face_region, vol) & (vol.data >= 0)
            dv = vol.with_data(r.data)
            entry: dict = {"checks": r.checks, "timings": {**r.timings, "total_s": reg.seconds + r.timings["total_s"]}}
            states = {"defaced": r.data}
            if m != "reface":
                att, filled, reg_d = attack(dv, tpl, model)
                base, _ = baseline_average_face(dv, tpl, reg_d)
                states["attacked"] = att
                states["baseline_avgface"] = base
                entry["attack_filled_voxels"] = int(filled.sum())
            else:
                reg_d = register_affine(dv, tpl.head, "fast", seed=seed)
                states["attacked"] = r.data  # a replaced face has no zeroed voxels for the attack to fill
            entry["msd"] = msd_against(vol, omask, states, region)
            entry["utility"] = utility_deltas(vol, dv, tpl, reg, reg_d, r.face_region, seed=seed, orig_mask=omask)
            for st, data in states.items():
                if m == "reface" and st == "attacked":
                    continue  # identical to reface:defaced
                fv = face_views(vol.with_data(data), reg.matrix, key, f"{m}:{st}", yaws)
                faces_all += [f for f in fv if f.yaw != 0.0]
                rows[f"{m}:{st}"] = [f.image for f in fv]
            sub["defacers"][m] = entry
        for k in range(n_synthetic):
            sv, to_parent = synthetic_identity(vol, seed * 1000 + k + 1)
            gallery += face_views(sv, reg.matrix @ to_parent, f"{key}~syn{k}", "original", (0.0,))
        sub["seconds"] = time.perf_counter() - t0
        if probe:
            res["subjects"][key] = sub
            renders_html[key] = rows
        else:
            res.setdefault("gallery_only", []).append(key)
    # re-identification
    stage(3, 4, f"re-identification: {len(faces_all)} rendered faces against a gallery of {len(gallery)}")
    states = sorted({f.state for f in faces_all})
    glabels = [f.label for f in gallery]
    res["reid"]["gallery_size"] = len(gallery)
    res["reid"]["detect_rate"] = {st: detect_rate([f for f in faces_all if f.state == st]) for st in states}
    for rec in recognizers:
        try:
            emb = get_embedder(rec, data_root if data_root else _default_root())
        except Exception as e:  # a missing recognizer must not sink the whole audit
            res["reid"][rec] = {"error": f"{type(e).__name__}: {e}"}
            continue
        g = embed_faces(emb, gallery)
        per = {}
        for st in states:
            pf = [f for f in faces_all if f.state == st]
            per[st] = rank1(embed_faces(emb, pf), [f.label for f in pf], g, glabels)
        res["reid"][rec] = per
    stage(4, 4, f"writing the report to {out}")
    res["renders"] = {}
    for key, rows in renders_html.items():
        for state, imgs in rows.items():
            png = out / "renders" / f"{key}_{state.replace(':', '-')}.png"
            save_image(png, image_grid([imgs]))
            res["renders"][f"{key}:{state}"] = str(png)
    jp = atomic_write_json(out / "mri_audit.json", res)
    hp = _write_html(res, renders_html, out / "mri_audit.html")
    res["json"], res["html"] = str(jp), str(hp)
    return res


def _default_root():
    from ..core.paths import default_data_root

    return default_data_root()


def _write_html(res: dict, renders: dict[str, dict], path: Path) -> Path:
    rep = HtmlReport("faceprivacy MRI audit")
    _findings(rep, res)
    rep.paragraph(f"BIDS folder: {res['bids_dir']}; defacers: {', '.join(res['methods'])}. MSD = face-region "
                  "mean surface distance to the original face (mm; higher = less of the face left).")
    rep.heading("Re-identification (rank-1, +-30 degree renders vs frontal undefaced gallery)")
    recs = [k for k in res["reid"] if isinstance(res["reid"][k], dict) and k != "detect_rate"]
    rows = []
    for st in sorted(res["reid"].get("detect_rate", {})):
        row = {"state": st, "dlib HOG detects": res["reid"]["detect_rate"][st]}
        for r in recs:
            row[r] = res["reid"][r].get(st, "") if "error" not in res["reid"][r] else res["reid"][r]["error"]
        rows.append(row)
    rep.table(rows)
    rep.paragraph(f"gallery: {res['reid'].get('gallery_size', 0)} frontal renders (subjects + synthetic identities)")
    for key, sub in res["subjects"].items():
        rep.heading(f"{key}", 2)
        trows = []
        for m, e in sub["defacers"].items():
            for st, d in e["msd"].items():
                trows.append({"method": m, "state": st, "MSD mm": d["msd"], "test->ref": d["test_to_ref"],
                              "ref->test": d["ref_to_test"]})
        rep.table(trows)
        crow = [{"method": m, **{k: v for k, v in e["checks"].items() if not isinstance(v, str)},
                 "total_s": e["timings"]["total_s"]} for m, e in sub["defacers"].items()]
        rep.table(crow)
        urow = []
        for m, e in sub["defacers"].items():
            u = e["utility"]
            urow.append({"method": m, "head volume delta ml": u["geometry"]["head_volume_ml"]["delta"],
                         "face soft tissue delta ml": u["face_soft_tissue_ml"]["delta"],
                         "registration change mm (mean)": u["registration_change_in_brain_mm"]["mean_mm"],
                         "brain mask dice": u["brain_mask_dice"],
                         "GM dice": u["gmm_segmentation"]["gm"]["dice"],
                         "WM dice": u["gmm_segmentation"]["wm"]["dice"]})
        rep.table(urow)
        grid = [imgs for imgs in renders[key].values()]
        rep.image(image_grid(grid), "rows: " + " | ".join(renders[key].keys()) + "; columns: yaw 0, -30, +30")
    return rep.write(path)


def _findings(rep: HtmlReport, res: dict) -> None:
    """The verdict box: how often each defaced state is still re-identified, against chance and n."""
    n_sub, g = len(res.get("subjects", {})), int(res["reid"].get("gallery_size", 0) or 0)
    recs = {k: v for k, v in res["reid"].items()
            if isinstance(v, dict) and k != "detect_rate" and "error" not in v}
    chance = 1 / g if g else float("nan")
    items, best = [], None
    for st in sorted(res["reid"].get("detect_rate", {})):
        rates = [v[st] for v in recs.values() if isinstance(v.get(st), float) and v[st] == v[st]]
        if not rates:
            continue
        r = max(rates)
        items.append(f"{st}: rank-1 re-identification {r:.2f} (worst case over {', '.join(recs)}; "
                      f"chance {chance:.2f} with a gallery of {g})")
        if st != "original" and (best is None or r < best[1]):
            best = (st, r)
    verdict = (f"re-identification after defacing: lowest {best[1]:.2f} ({best[0]}), chance {chance:.2f}"
               if best else "no re-identification result")
    level = "good" if best and best[1] <= 2 * chance else "bad" if best else "warn"
    rep.findings(items, verdict=verdict, level=level)
    rep.small_n(n_sub, "subjects")
