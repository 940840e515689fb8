"""The HTML page and the Markdown tables of ``faceprivacy eval-detection`` (numbers from its JSON)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.metrics import format_ci


def _ci(d: dict | None, digits: int = 3) -> str:
    if not d or d.get("value") is None:
        return "-"
    return format_ci(d, digits=digits)


def _short(d: dict | None, digits: int = 2) -> str:
    """``0.93 [0.88, 0.97]`` without n (tables whose caption gives it)."""
    if not d or d.get("value") is None:
        return "-"
    lo, hi = d.get("ci95", [None, None])
    s = f"{d['value']:.{digits}f}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        s += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return s


def summary_rows(res: dict) -> list[dict]:
    rows = []
    for name, r in res["detectors"].items():
        rows.append({"detector": name, "recall": _ci(r["recall"], 2), "recall >= 24 px": _ci(r["recall_from_24px"], 2),
                     "FP / MP (all scenes)": _short(r["fp_per_mp"]),
                     "FP / MP (face-free)": _short(r["fp_per_mp_face_free"]),
                     "s / MP": f"{r['s_per_mp']:.2f}",
                     "time x HOG": "-" if r.get("time_vs_hog") is None else f"{r['time_vs_hog']:.2f}",
                     "scenes (MP)": f"{r['scenes_run']} ({r['megapixels_run']:.1f})"})
    return rows


def bins_rows(res: dict, key: str, section: str = "detectors") -> list[dict]:
    dets = res[section]["detectors"] if section == "pipeline" else res[section]
    names = list(dets)
    if not names:
        return []
    bins = list(dict.fromkeys(b["bin"] for n in names for b in dets[n][key]))  # a subset may lack a bin
    rows = []
    for name in bins:
        row = {"bin": name}
        for n in names:
            cell = next((b for b in dets[n][key] if b["bin"] == name), {})
            row[n] = f"{_short(cell)} (n={cell['n']})" if cell.get("n") else "-"
        rows.append(row)
    return rows


def sweep_rows(res: dict) -> list[dict]:
    rows = []
    for name, r in res["detectors"].items():
        for sw in r.get("score_sweep", []):
            rows.append({"detector": name, "min score": f"{sw['min_score']:g}"
                         + (" (default)" if sw["min_score"] == r.get("default_min_score") else ""),
                         "recall": _short(sw["recall"]), "recall >= 24 px": _short(sw["recall_from_24px"]),
                         "FP / MP": _short(sw["fp_per_mp"]), "FP / MP face-free": _short(sw["fp_per_mp_face_free"])})
    return rows


def weak_rows(res: dict) -> list[dict]:
    """Strong + weak detections (what anonymize replaces or obscures) per weak-tier floor."""
    from ...core.detect import WEAK_SCORES

    rows = []
    for name, r in res["detectors"].items():
        for w in r.get("weak_tier", []):
            rows.append({"detector": name, "floor": f"{w['floor']:g}"
                         + (" (default)" if w["floor"] == WEAK_SCORES.get(name) else ""),
                         "recall": _short(w["recall"]), "recall >= 24 px": _short(w["recall_from_24px"]),
                         "FP / MP": _short(w["fp_per_mp"]), "FP / MP face-free": _short(w["fp_per_mp_face_free"]),
                         "weak / MP": _short(w["weak_per_mp"]), "s / MP": f"{w['s_per_mp']:.2f}"})
    return rows


def pipeline_rows(res: dict, html: bool = False) -> list[dict]:
    p = res["pipeline"]
    rows = []
    for name, r in p["detectors"].items():
        ob = r.get("obscured", {})
        rows.append({"detector": name, "miss rate (all)": _ci(r["miss_rate"]),
                     f"miss rate >= {p['goal']['from_px']} px": _ci(r["miss_rate_from_24px"]),
                     "goal <= 1 %": "met" if r["goal_met"] else "NOT met",
                     "faces (replaced + obscured)": r["faces_anonymized"],
                     "obscured: weak / unalignable / occluded / safety net":
                         f"{ob.get('weak', 0)} / {ob.get('unalignable', 0)} / {ob.get('occluded', 0)}"
                         f" / {ob.get('escalated', 0)}"
                     if ob else r["blurred_fallback"],
                     "redrawn by the safety net": r.get("redrawn", "-"),
                     "safety net s / face": f"{r['safety_s_per_face']:.2f}" if "safety_s_per_face" in r else "-",
                     "scenes with no face found": len(r["scenes_without_output"]),
                     "s / MP": f"{r['s_per_mp']:.2f}"})
    return rows


def markdown(res: dict) -> str:
    """The detection table and the full-pipeline miss rate as Markdown (docs/detection.md copies it)."""
    def table(rows: list[dict]) -> str:
        if not rows:
            return ""
        cols = list(rows[0])
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
        return "\n".join(out)

    sc = res["scenes"]
    parts = [f"Scene set: {sc['faces']} faces of {sc['people']} people ({sc['by_dataset']}), {sc['n']} scenes "
             f"({sc['n_empty']} face-free), {sc['megapixels']:.1f} MP; identities: {res['config']['identities']}.",
             "", table(summary_rows(res)), "", "Recall by face size (ground-truth side):", "",
             table(bins_rows(res, "recall_by_size")), "", "Recall by roll (rotation applied):", "",
             table(bins_rows(res, "recall_by_roll")), "", "Recall by yaw index of the source face:", "",
             table(bins_rows(res, "recall_by_yaw")), "", "Recall by occlusion:", "",
             table(bins_rows(res, "recall_by_occlusion")), "", "Score thresholds (same detections):", "",
             table(sweep_rows(res))]
    if weak_rows(res):
        parts += ["", "Weak tier (strong + weak detections: what anonymize replaces or obscures):", "",
                  table(weak_rows(res))]
    p = res.get("pipeline")
    if p:
        parts += ["", f"Full `anonymize` pipeline ({p['method']}): faces the ONNX MobileFaceNet still verifies as "
                      f"the original (cosine > {p['threshold']:.3f}, FAR {p['far']:g} on {p['n_impostor_pairs']} "
                      f"training impostor pairs):", ""]
        parts += [table(pipeline_rows(res)), "", "Miss rate by face size:", "", table(bins_rows(res, "miss_rate_by_size", "pipeline")),
                  "", "Miss rate by occlusion (all sizes):", "",
                  table(bins_rows(res, "miss_rate_by_occlusion", "pipeline"))]
    return "\n".join(parts) + "\n"


def write_report(res: dict, path: Path, grid: np.ndarray | None = None) -> Path:
    from ...core.report import HtmlReport

    rep = HtmlReport("faceprivacy missed-face benchmark (eval-detection)",
                     subtitle=f"{res['scenes']['faces']} faces, {res['scenes']['n']} scenes, "
                              f"{res['config']['identities']} identities")
    items = []
    dets = res["detectors"]
    for name, r in dets.items():
        items.append(f"{name}: recall {_ci(r['recall'], 2)}, {r['s_per_mp']:.2f} s/MP, "
                     f"{_short(r['fp_per_mp'])} false positives per megapixel")
    verdict, level = "detection measured (no pipeline run)", "info"
    p = res.get("pipeline")
    if p:
        for name, r in p["detectors"].items():
            m = r["miss_rate_from_24px"]
            items.insert(0, f"after anonymize with {name}: {_ci(m)} of faces >= {p['goal']['from_px']} px still "
                            f"verifiable as the original (goal <= {p['goal']['miss_rate_max']:.0%})")
        first = next(iter(p["detectors"].values()))
        verdict = ("goal met: <= 1 % of faces >= 24 px still recognizable after anonymize" if first["goal_met"]
                   else "goal missed: more than 1 % of faces >= 24 px are still recognizable after anonymize")
        level = "good" if first["goal_met"] else "bad"
    rep.findings(items[:5], verdict, level)
    rep.small_n(res["scenes"]["people"], "people")
    rep.heading("Detectors")
    rep.paragraph("A face is found when a detection's centre lies inside its ground-truth box and the detection's "
                  "side is 0.4-2.5 x the box side. Each detector runs as anonymize runs it (default upsampling, "
                  "--min-score and --min-size). Intervals: 95 % bootstrap over people (rates) or scenes (per MP).")
    rep.table(summary_rows(res), caption="recall with 95 % interval and n (people); FP per megapixel")
    for key, title in (("recall_by_size", "Recall by face size (ground-truth side, px)"),
                       ("recall_by_roll", "Recall by roll (rotation applied)"),
                       ("recall_by_yaw", "Recall by yaw index of the source face (0 frontal, 1 profile)"),
                       ("recall_by_occlusion", "Recall by occlusion"),
                       ("recall_by_dataset", "Recall by source set")):
        rep.heading(title, 3)
        rep.table(bins_rows(res, key))
    rep.heading("Score thresholds", 3)
    rep.paragraph("Recall and false positives at other --min-score values, from the same detections (choose on "
                  "--identities val).")
    rep.table(sweep_rows(res))
    if weak_rows(res):
        rep.heading("Weak tier", 3)
        rep.paragraph("Detections below --min-score down to a floor are obscured (pixelated + blurred) by anonymize, "
                      "not replaced: recall and false positives counting them (choose the floor on --identities val).")
        rep.table(weak_rows(res))
    fig = _size_figure(res)
    if fig is not None:
        rep.figure(fig, "recall by face size, per detector (points: bin centres; bars: 95 % intervals)")
    if p:
        rep.heading("After the whole anonymize pipeline")
        rep.paragraph(f"Method {p['method']}; judge: the ONNX MobileFaceNet (never used for any choice), cosine "
                      f"threshold {p['threshold']:.3f} at FAR {p['far']:g} ({p['n_impostor_pairs']} impostor pairs of "
                      "training identities). A face is missed when its anonymized crop still verifies as the original.")
        rep.table(pipeline_rows(res))
        rep.heading("Miss rate by face size", 3)
        rep.table(bins_rows(res, "miss_rate_by_size", "pipeline"))
        rep.heading("Miss rate by occlusion", 3)
        rep.table(bins_rows(res, "miss_rate_by_occlusion", "pipeline"))
    if grid is not None:
        rep.heading("Look at the data")
        rep.image(grid, "ground truth green; hog blue, cnn orange, retinaface red, rfb320 purple, retinaface+rfb320 white, centerface "
                        "cyan, retinaface+centerface yellow, retinaface+rfb320+centerface light green; right: after "
                        "the pipeline's first detector")
    return rep.write(path)


def _size_figure(res: dict):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, r in res["detectors"].items():
        xs, ys, lo, hi = [], [], [], []
        for k, b in enumerate(r["recall_by_size"]):
            if b.get("n"):
                xs.append(k)
                ys.append(b["value"])
                lo.append(b["value"] - (b["ci95"][0] if b["ci95"][0] is not None else b["value"]))
                hi.append((b["ci95"][1] if b["ci95"][1] is not None else b["value"]) - b["value"])
        if xs:
            ax.errorbar(xs, ys, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], marker="o", capsize=3, label=name)
    labels = [b["bin"] for b in next(iter(res["detectors"].values()))["recall_by_size"]] if res["detectors"] else []
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("recall")
    ax.set_xlabel("face size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
