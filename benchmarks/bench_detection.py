"""Face detectors side by side on the eval-detection scene set (a small slice of it): time per megapixel as a
ratio to dlib HOG measured in the same run on the same scenes, with each detector's recall and false
positives per megapixel next to it. The full benchmark (and the anonymize pipeline's miss rate) is
``faceprivacy eval-detection``; this is its detector part at a size ``make bench`` can afford.
"""

from __future__ import annotations

from pathlib import Path


def run(data_root: Path, out_dir: Path, faces: int = 30) -> dict:
    """Measure and print; the eval-detection report goes to ``out_dir/detection/``."""
    from faceprivacy.deid.evaluation.detection import DetectionConfig, evaluate_detection

    cfg = DetectionConfig(n_celeba=faces, n_utk=faces, n_empty=3, detectors=("hog", "cnn", "retinaface", "rfb320", "retinaface+rfb320"),
                          pipeline=(), cnn_max_mp=0.35, scene_sizes=((640, 480), (1280, 720), (1920, 1080)),
                          scene_weights=(0.4, 0.4, 0.2), identities="val")
    res = evaluate_detection(Path(data_root), Path(out_dir) / "detection", cfg)
    out = {"faces": res["scenes"]["faces"], "megapixels": res["scenes"]["megapixels"], "reference": "hog"}
    for name, r in res["detectors"].items():
        rec = r["recall"] or {"value": float("nan"), "n": 0}  # MMOD's subset may hold no face
        out[name] = {"s_per_mp": r["s_per_mp"], "time_vs_hog": r.get("time_vs_hog"),
                     "recall": rec["value"], "recall_n": rec["n"], "fp_per_mp": r["fp_per_mp"]["value"]}
        print(f"   {name:<17} {r['s_per_mp']:.2f} s/MP  x{r.get('time_vs_hog') or float('nan'):.2f} of hog  "
              f"recall {rec['value']:.2f} (n={rec['n']})  FP/MP {r['fp_per_mp']['value']:.2f}")
        for w in r.get("weak_tier", []):  # with the weak tier anonymize obscures (core.detect.WEAK_SCORES)
            out[name].setdefault("weak_tier", []).append(
                {"floor": w["floor"], "recall": w["recall"]["value"], "fp_per_mp": w["fp_per_mp"]["value"],
                 "s_per_mp": w["s_per_mp"]})
            print(f"   {'':<17} + weak tier from {w['floor']:g}: recall {w['recall']['value']:.2f}  "
                  f"FP/MP {w['fp_per_mp']['value']:.2f}  {w['s_per_mp']:.2f} s/MP")
    return out
