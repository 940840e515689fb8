"""The union detector with and without its mirrored RetinaFace pass, on validation scenes.

``python -m benchmarks.union_flip [--data D]``: on two *validation* scene sets of ``faceprivacy eval-detection``
(``--identities val --faces 100``, and the same identities with every face occluded: ``--occluded 1 --seed 1
--empty 4``), ``anonymize``'s detector (union, weak tier 0.3, small frames one level finer) with ``flip`` off and
on: recall for faces >= 24 px (strong detections, and strong + weak), per occlusion, false positives per
megapixel (all scenes and face-free ones) and seconds. Prints one line per run (the choice of
``core.detect.UNION_FLIP``: docs/detection.md, "Third pass").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> int:
    from faceprivacy.core.detect import ANONYMIZE_DETECTOR, SMALL_FRAME_MP, WEAK_SCORES, FaceDetector
    from faceprivacy.core.paths import default_data_root
    from faceprivacy.deid.evaluation.detection import match
    from faceprivacy.deid.evaluation.scenes import build_scenes, load_sources

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    data = Path(a.data or default_data_root())
    for tag, occluded, seed, empty in (("val", 0.3, 0, 8), ("val, all occluded", 1.0, 1, 4)):
        scenes = build_scenes(load_sources(data, "val", 100, 100, seed), occluded=occluded, n_empty=empty, seed=seed)
        mp = np.array([s.megapixels for s in scenes])
        free = np.array([not s.faces for s in scenes])
        size = np.array([f.size for s in scenes for f in s.faces])
        occ = np.array([f.occlusion or "none" for s in scenes for f in s.faces])
        big = size >= 24
        for flip in (False, True):
            det = FaceDetector(ANONYMIZE_DETECTOR, data_root=data, with_68=False,
                               floor=WEAK_SCORES[ANONYMIZE_DETECTOR], small_frame_mp=SMALL_FRAME_MP, flip=flip)
            found, strong, fps = [], [], []
            t0 = time.perf_counter()
            for sc in scenes:
                r = det.boxes(sc.image)
                b = np.array([x[0] for x in r]).reshape(-1, 4)
                s = np.array([x[1] for x in r])
                gt = np.array([f.box for f in sc.faces]).reshape(-1, 4)
                h, fp = match(b, s, gt)
                found.append(h)
                fps.append(fp)
                k = s >= det.min_score if len(s) else np.zeros(0, bool)
                strong.append(match(b[k], s[k], gt)[0])
            secs = time.perf_counter() - t0
            hit, st, fps = np.concatenate(found).astype(bool), np.concatenate(strong).astype(bool), np.array(fps)
            per = " ".join(f"{o} {hit[big & (occ == o)].mean():.3f}" for o in ("none", "mask", "eyes", "side")
                           if (big & (occ == o)).any())
            print(f"{tag}: flip={flip} faces>=24px n={int(big.sum())} recall strong {st[big].mean():.3f}, "
                  f"strong+weak {hit[big].mean():.3f} ({per}); FP/MP {fps.sum() / mp.sum():.3f}, face-free "
                  f"{fps[free].sum() / max(mp[free].sum(), 1e-9):.3f}; {secs / mp.sum():.2f} s/MP", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
