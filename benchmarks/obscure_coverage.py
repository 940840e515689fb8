"""How much of a face the obscuring fallback covers when the box is not trusted (weak or occluded faces).

``python -m benchmarks.obscure_coverage [--data D]``: on two *validation* scene sets of ``faceprivacy
eval-detection`` (``--identities val --faces 100``, and the same identities with every face occluded:
``--occluded 1 --seed 1 --empty 4``), ``anonymize``'s detector (union, weak tier, small frames, mirrored pass)
finds the faces; for every weak detection and every face the occlusion check flags, the share of the true
face box covered by the detected box grown by each margin tried. Prints JSON (the choice of
``deid.safety.UNTRUSTED_GROW``: docs/detection.md, "Third pass"). No recognizer judges anything here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

GROWS = (0.2, 0.35, 0.5, 0.75)


def main() -> int:
    from faceprivacy.core.detect import (
        ANONYMIZE_DETECTOR,
        SMALL_FRAME_MP,
        UNION_FLIP,
        WEAK_SCORES,
        FaceDetector,
    )
    from faceprivacy.core.paths import default_data_root
    from faceprivacy.deid.evaluation.scenes import build_scenes, load_sources
    from faceprivacy.deid.safety import SafetyNet, face_crops, grown_box

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    data = Path(a.data or default_data_root())
    det = FaceDetector(ANONYMIZE_DETECTOR, data_root=data, floor=WEAK_SCORES[ANONYMIZE_DETECTOR],
                       small_frame_mp=SMALL_FRAME_MP, flip=UNION_FLIP)
    net = SafetyNet(data_root=data)
    cov: dict[str, list[dict]] = {"weak": [], "occluded": []}
    for occluded, seed, empty in ((0.3, 0, 8), (1.0, 1, 4)):
        scenes = build_scenes(load_sources(data, "val", 100, 100, seed), occluded=occluded, n_empty=empty, seed=seed)
        for sc in scenes:
            for f in det.detect(sc.image):
                c = (f.box[:2] + f.box[2:]) / 2
                gt = [g.box for g in sc.faces if g.box[0] <= c[0] <= g.box[2] and g.box[1] <= c[1] <= g.box[3]]
                if not gt:
                    continue
                kind = "weak" if f.weak else None
                if kind is None and f.alignable and net.occluded(net.embed(face_crops(sc.image, [f.arcface5])))[0]:
                    kind = "occluded"
                if kind is None:
                    continue
                g = gt[0]
                row = {}
                for gr in GROWS:
                    r = grown_box(f.box, sc.image.shape, gr)
                    ix = max(0.0, min(r[2], g[2]) - max(r[0], g[0])) * max(0.0, min(r[3], g[3]) - max(r[1], g[1]))
                    row[gr] = ix / float((g[2] - g[0]) * (g[3] - g[1]))
                cov[kind].append(row)
    out = {}
    for kind, rows in cov.items():
        out[kind] = {"n": len(rows)}
        for gr in GROWS:
            v = np.array([r[gr] for r in rows]) if rows else np.zeros(0)
            out[kind][str(gr)] = {"median": float(np.median(v)) if len(v) else None,
                                  "share_covered_95": float(np.mean(v >= 0.95)) if len(v) else None,
                                  "min": float(v.min()) if len(v) else None}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
