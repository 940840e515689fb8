"""HOG detector score distribution: real faces vs the false-positive class ``core.detect.MIN_SCORE`` rejects.

``python -m benchmarks.detect_scores --data ../shared/datakit [--n 300]``: for n random CelebA and UTKFace
crops (each padded with a grey border so HOG sees a whole face), the best detection score per image; and
every detection on scikit-image's sample photos (the astronaut holds one real face and one 0.12 hit on her
suit). Prints JSON: per set, faces found at score >= 0 and how many of those fall below each threshold.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datakit")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import dlib
    from skimage import data as skdata

    from faceprivacy.core.imageio import load_image

    det = dlib.get_frontal_face_detector()

    def scores(img: np.ndarray) -> list[float]:
        _, s, _ = det.run(np.ascontiguousarray(img), 1, 0.0)
        return [float(x) for x in s]

    rng = random.Random(args.seed)
    root = Path(args.data)
    out: dict = {"thresholds": [0.1, 0.2, 0.3, 0.4, 0.5]}
    for name, pattern in (("celeba", "celeba_subset_aligned112/images/*/*.jpg"),
                          ("utkface", "utkface_crop_part1/**/*.jpg")):
        files = sorted(root.glob(pattern))
        rng.shuffle(files)
        best = []
        for f in files[:args.n]:
            im = load_image(f)
            c = np.full((im.shape[0] + 120, im.shape[1] + 120, 3), 128, np.uint8)
            c[60:60 + im.shape[0], 60:60 + im.shape[1]] = im
            best.append(max(scores(c), default=-1.0))
        b = np.array(best)
        found = b[b >= 0]
        out[name] = {"n": len(b), "found": int(len(found)),
                     "below": {str(t): int((found < t).sum()) for t in out["thresholds"]}}
    fp = {}
    for n in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
              "colorwheel", "logo", "camera", "text", "moon", "brick", "grass", "gravel", "horse", "clock", "coins"):
        im = np.asarray(getattr(skdata, n)())
        if im.dtype != np.uint8:
            im = (im * 255).astype(np.uint8) if im.max() <= 1 else im.astype(np.uint8)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, 2)
        fp[n] = [round(s, 3) for s in scores(im[..., :3])]
    out["skimage_detections"] = fp
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
