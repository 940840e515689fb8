"""The HTML page of ``eval-deid``: image grids, the headline table, attribute / detection / realism tables and
rank-1 and verification figures with their 95 % intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _fmt(d) -> str:
    if not isinstance(d, dict) or "value" not in d:
        return ""
    v, (lo, hi) = d["value"], d["ci95"]
    if not np.isfinite(v):
        return "n/a"
    return f"{100 * v:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo) else f"{100 * v:.1f} %"


def _fmt_mean(d) -> str:
    if not isinstance(d, dict) or "value" not in d:
        return ""
    v, (lo, hi) = d["value"], d["ci95"]
    return f"{v:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else f"{v:.2f}"


def key_grid(runs: dict, original: np.ndarray, method: str, rows: int, blur: str = "blur") -> tuple[np.ndarray, str]:
    """Rows of original | key A | key B | key C | wrong key | blur for ``method``."""
    from ...core.report import image_grid

    sc = runs[method]
    cols = [("original", original), (f"{method} key A", sc.key_a)]
    cols += [(f"{method} {k}", v) for k, v in sc.others.items()]
    if sc.wrong is not None:
        cols.append((f"{method} wrong key", sc.wrong))
    if blur in runs:
        cols.append((blur, runs[blur].key_a))
    idx = np.linspace(0, len(original) - 1, min(rows, len(original))).astype(int)
    return image_grid([[c[i] for _, c in cols] for i in idx]), " | ".join(n for n, _ in cols)


def _rank_figure(res: dict, proto: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pres = res["protocols"][proto]
    names = list(pres)
    recs = list(next(iter(pres.values()))["identity"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, key, title in ((axes[0], "rank1", "rank-1 (gallery with distractors)"),
                           (axes[1], "verif_vs_other_photos", "verified vs other photos (FAR 1e-3)")):
        w = 0.8 / len(recs)
        for j, rn in enumerate(recs):
            vals = [pres[nm]["identity"][rn][key] for nm in names]
            v = np.array([d["value"] for d in vals])
            lo = np.array([d["ci95"][0] for d in vals])
            hi = np.array([d["ci95"][1] for d in vals])
            err = np.nan_to_num(np.stack([v - lo, hi - v]), nan=0.0).clip(0)
            ax.bar(np.arange(len(names)) + j * w, 100 * v, w, yerr=100 * err, label=rn, capsize=2)
        if key == "rank1":
            ax.axhline(100 * res["chance_rank1"], color="k", ls="--", lw=1, label="chance")
        ax.set_xticks(np.arange(len(names)) + 0.4 - w / 2, names, rotation=30, ha="right")
        ax.set_ylabel("%")
        ax.set_title(f"{proto}: {title}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_report(res: dict, runs: dict, originals: dict, frames: list, objs: dict, path: Path, cfg) -> Path:
    """Write the page (see module doc)."""
    from ...core.report import HtmlReport, image_grid

    rep = HtmlReport("faceprivacy de-identification evaluation (end to end)")
    rep.paragraph(f"{res['n_probes']} probe photos of {res['n_identities']} people ({cfg.identities} identities "
                  f"of {res['eval_root']}); gallery of {res['n_gallery']} people ({res['n_distractors']} "
                  f"distractors), chance rank-1 {100 * res['chance_rank1']:.2f} %. Thresholds at FAR {cfg.far} "
                  f"on {res['n_threshold_photos']} photos of training people of {res['data_root']}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in res["thresholds"].items())
                  + ". Every rate: value [95 % interval, bootstrap over identities]. The ONNX MobileFaceNet "
                    "(mobilefacenet-onnx) is the independent judge; select methods with dlib and mobilefacenet "
                    f"(CASIA) only. Wall time {res['wall_s']} s.")
    keyed = [m for m in cfg.methods if getattr(objs[m], "keyed", False) and m != "stranger"] or list(cfg.methods)
    first = keyed[0]
    items = []
    for proto in cfg.protocols:
        r = res["protocols"][proto][first]
        items.append(f"{proto}: {first} rank-1 " + ", ".join(f"{rn} {_fmt(v['rank1'])}" for rn, v in r["identity"].items())
                     + f" (chance {100 * res['chance_rank1']:.2f} %); faces replaced {_fmt(r['faces_anonymized'])}")
    worst = max(v["rank1"]["value"] for p in cfg.protocols for v in res["protocols"][p][first]["identity"].values())
    if hasattr(rep, "findings"):
        rep.findings(items + [f"n = {res['n_identities']} people, {res['n_probes']} faces"],
                     verdict=f"{first}: anonymized faces re-identified at rank 1 at most {100 * worst:.1f} % "
                             f"(chance {100 * res['chance_rank1']:.2f} %)",
                     level="good" if worst <= 2 * res["chance_rank1"] else "bad")
        rep.small_n(res["n_identities"], "people")
    for proto in cfg.protocols:
        rep.heading(f"Protocol: {'full frames (file pipeline)' if proto == 'frames' else 'aligned crops'}")
        for j, m in enumerate(keyed[:2]):
            grid, cap = key_grid(runs[proto], originals[proto], m, cfg.grid_rows)
            rep.image(grid, caption=f"{proto}, columns: {cap}")
            if j == 0:  # also as a file, for docs
                from PIL import Image

                Image.fromarray(grid).save(Path(path).parent / f"eval_deid_grid_{proto}_{m}.png")
        cols = [("original", originals[proto])] + [(m, runs[proto][m].key_a) for m in cfg.methods]
        idx = np.linspace(0, len(originals[proto]) - 1, min(cfg.grid_rows, len(originals[proto]))).astype(int)
        rep.image(image_grid([[c[i] for _, c in cols] for i in idx]),
                  caption=f"{proto}, every method (key A): " + " | ".join(n for n, _ in cols))
        rep.figure(_rank_figure(res, proto), caption=f"{proto}: bars = rate, whiskers = 95 % interval")
        pres = res["protocols"][proto]
        rows = []
        for name, r in pres.items():
            for rn, idm in r["identity"].items():
                rows.append({"method": name, "recognizer": rn, "verif vs other photos": _fmt(idm["verif_vs_other_photos"]),
                             "verif vs source": _fmt(idm["verif_vs_source"]), "rank-1": _fmt(idm["rank1"]),
                             "two keys = one person": _fmt(idm.get("two_keys_verified_same")),
                             "wrong key = original": _fmt(idm.get("wrong_key_verif_vs_source")),
                             "as any donor": _fmt(idm.get("verified_as_any_donor")),
                             "originals as any donor (control)": _fmt(idm.get("originals_verified_as_any_donor")),
                             "n": idm["rank1"]["n"], "people": idm["rank1"]["n_ids"]})
        rep.heading("Identity", level=3)
        rep.table(rows)
        rep.heading("Pipeline, attributes, detection, realism", level=3)
        rows = []
        for name, r in pres.items():
            if name == "originals":
                rows.append({"method": name, **{f"{d} detected": _fmt(v) for d, v in r.get("detection", {}).items()}})
                if "attributes_other_photo" in r:  # the attribute model's ceiling: another real photo of the person
                    a = r["attributes_other_photo"]
                    rows.append({"method": "reference: the person's other photo",
                                 "gender agreement": _fmt(a.get("gender_agreement")),
                                 "age MAE (y)": _fmt_mean(a.get("age_abs_err_years")),
                                 "yaw err (deg)": _fmt_mean(a["yaw_abs_err_deg"])})
                continue
            a = r["attributes"]
            rows.append({"method": name, "faces replaced": _fmt(r["faces_anonymized"]),
                         "recovery bit-exact": _fmt(r["recovered_bit_exact"]),
                         "gender agreement": _fmt(a.get("gender_agreement")),
                         "age MAE (y)": _fmt_mean(a.get("age_abs_err_years")),
                         "yaw err (deg)": _fmt_mean(a["yaw_abs_err_deg"]),
                         "pitch err (deg)": _fmt_mean(a["pitch_abs_err_deg"]),
                         "mouth-open agreement": _fmt(a["mouth_open_agreement"]),
                         **{f"{d} detected": _fmt(v) + f" ({v['relative_to_originals']:.2f}x orig.)"
                            for d, v in r["detection"].items()},
                         "KID x1000": f"{r['kid']['kid_x1000']:.2f}" if "kid" in r else "",
                         "two-sample acc.": _fmt(r.get("two_sample_accuracy")),
                         "notes": "; ".join(r.get("notes", []))})
        rep.table(rows)
    if frames:
        rep.heading("A full frame (input)")
        rep.image(frames[0].image, caption="synthetic frame: probe crops pasted on a textured background")
    rep.paragraph("KID uses the features of " + res["kid_recognizer"] + " (originals vs key-A outputs). "
                  "The two-sample test trains a logistic regression on thumbnails, high-pass energy and Lab "
                  "statistics of real vs anonymized crops of half of the people and tests on the other half.")
    return rep.write(path)
