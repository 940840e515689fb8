"""Video donor: the per-person template (the donors' composite rendered once per person and key, warped per
frame; ``DonorMorph.stranger_template`` / ``morph_template``) against the whole morph per frame, same clip,
same salt and passphrase (so the same keys, donors and safety-net draws).

``python -m benchmarks.video_template [--seconds 2] [--out DIR] [--data D]``: builds ``eval-video``'s clip
(``deid.video.evaluate.build_clip``, 720p, 3 people), runs ``anonymize_video`` with the template and with the
template turned off (after a warm-up of both, so no model loading is timed), and prints JSON: process CPU
seconds of each run and of its render pass, the mean absolute difference of the two outputs inside each
face box (per face-frame: mean and max), and the frame-to-frame change inside the face boxes minus the
input's own change (flicker; lower is steadier). Writes ``video_template.json`` and ``video_template.png``
(rows: input, whole morph per frame, template; each face at the first, middle and last frame) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

PASSPHRASE = b"benchmarks.video_template: not a secret"


def _flicker(frames: list[np.ndarray], src: list[np.ndarray], tracks) -> float:
    v = []
    for t in tracks:
        fs = sorted(t.box)
        for a, b in zip(fs, fs[1:], strict=False):
            x0, y0, x1, y1 = (int(q) for q in t.box[b])
            v.append(np.abs(frames[b][y0:y1, x0:x1].astype(int) - frames[a][y0:y1, x0:x1]).mean()
                     - np.abs(src[b][y0:y1, x0:x1].astype(int) - src[a][y0:y1, x0:x1]).mean())
    return float(np.mean(v))


def main() -> int:
    from PIL import Image

    import faceprivacy.deid.video.anonymize as va
    from faceprivacy.core.detect import ANONYMIZE_DETECTOR, FaceDetector
    from faceprivacy.core.paths import default_data_root
    from faceprivacy.deid.donor import DonorMorph
    from faceprivacy.deid.video.evaluate import VideoEvalConfig, build_clip
    from faceprivacy.deid.video.io import iter_frames

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=Path("video_template"))
    ap.add_argument("--data", default=None)
    a = ap.parse_args()
    data = Path(a.data or default_data_root())
    a.out.mkdir(parents=True, exist_ok=True)
    clip, _, _ = build_clip(data, a.out, VideoEvalConfig(seconds=a.seconds))
    va.new_salt = lambda: b"\x05" * 16  # one salt: both runs draw the same keys
    det = FaceDetector(ANONYMIZE_DETECTOR, data_root=data)
    m = DonorMorph()
    template = va._Renderer._template
    runs: dict[str, dict] = {}
    for warm in (True, False):
        for name in ("per_frame", "template"):
            va._Renderer._template = template if name == "template" else (lambda self, p: None)
            dest = a.out / (f"warm_{name}.mkv" if warm else f"{name}.mkv")
            c0 = time.process_time()
            res = va.anonymize_video(clip, dest, PASSPHRASE, m, detector=det)
            if not warm:
                runs[name] = {"cpu_seconds": round(time.process_time() - c0, 2), "timings_wall":
                              {k: round(v, 2) for k, v in res.timings.items()}, "redrawn": res.redrawn,
                              "obscured": res.obscured, "recovery_exact": res.recovery["exact"]}
                tracks = res.track_list
    va._Renderer._template = template
    src = list(iter_frames(clip))
    out = {k: list(iter_frames(a.out / f"{k}.mkv")) for k in ("per_frame", "template")}
    diffs = []
    for t in tracks:
        for i in sorted(t.box):
            x0, y0, x1, y1 = (int(v) for v in t.box[i])
            diffs.append(np.abs(out["template"][i][y0:y1, x0:x1].astype(int) - out["per_frame"][i][y0:y1, x0:x1])
                         .mean())
    result = {"clip_seconds": a.seconds, "runs": runs,
              "face_box_mean_abs_diff": {"face_frames": len(diffs), "mean": round(float(np.mean(diffs)), 3),
                                         "max": round(float(np.max(diffs)), 3)},
              "flicker": {k: round(_flicker(v, src, tracks), 3) for k, v in out.items()}}
    rows = []
    for fr in (src, out["per_frame"], out["template"]):
        row = []
        for i in (0, len(src) // 2, len(src) - 1):
            for t in tracks:
                x0, y0, x1, y1 = (int(v) for v in t.box[i])
                s = (x1 - x0) // 3
                row.append(np.asarray(Image.fromarray(fr[i][max(0, y0 - s):y1 + s, max(0, x0 - s):x1 + s])
                                      .resize((160, 160))))
        rows.append(np.concatenate(row, 1))
    Image.fromarray(np.concatenate(rows, 0)).save(a.out / "video_template.png")
    (a.out / "video_template.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
