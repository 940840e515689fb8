"""``faceprivacy eval-video``: anonymize a deterministic clip of held-out people as a user would (the CLI's
library entry point, full frames, H.264 input with audio) and measure, per method in the same run:

* **speed**: frames/s of the whole ``anonymize_video`` (probe, tracking, rendering, encoding, the recovery
  check and the record), after a warm-up clip, so model loading is not counted; in wall time and in process
  CPU time (on a shared machine the ratio of CPU frames/s is the steadier comparison);
* **coverage**: ground-truth face-frames that got anonymized (stranger or blur) vs missed (goal: none missed);
* **identity switches**: per output track, how often the ground-truth person under it changes (goal 0);
* **pseudonym consistency**: per person, the number of distinct pseudonym slots and the share of its frames
  under its main slot (goal: one slot, 100 %);
* **stranger consistency** (keyed methods): dlib distance between the anonymized face of one person at
  frames far apart (< 0.6: dlib calls them one person) and to the original face (>= 0.6: not the original);
* **recovery**: the lossless ``.mkv`` output recovered and compared frame by frame with the decoded input
  (bit-exact or not), and for H.264 ``.mp4`` output the PSNR the codec costs.

The clip: ``faces`` CelebA *test*-identity photos (``core.data.identity_split``, seed ``seed``) pasted with a
soft mask on a textured background, moving and scaling smoothly (``synth``), ``seconds`` x ``fps`` frames of
``width`` x ``height``, H.264 CRF 16 with an AAC tone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError

PASSPHRASE = b"eval-video passphrase: not a secret"


@dataclass
class VideoEvalConfig:
    seconds: float = 10.0
    fps: int = 25
    width: int = 1280
    height: int = 720
    faces: int = 3
    face_px: float = 220.0  # side of the pasted 112-px aligned photo (the face box is about 0.6 of it)
    methods: tuple[str, ...] = ("donor", "blur")
    detector: str = "retinaface"
    detect_every: int = 1
    lossy_seconds: float = 2.0  # the .mp4 (H.264) run for the PSNR statement uses the first seconds only
    seed: int = 0

    def validate(self) -> None:
        if not (0 < self.seconds <= 120 and 1 <= self.fps <= 60 and 1 <= self.faces <= 6):
            raise InputError("--seconds must be in (0, 120], --fps 1..60, --faces 1..6")
        if self.width % 2 or self.height % 2 or not (64 <= self.width <= 3840 and 64 <= self.height <= 2160):
            raise InputError("--width/--height must be even, 64..3840 x 64..2160")
        if self.face_px * self.faces * 1.3 > self.width or self.face_px * 1.5 > self.height:
            raise InputError("--face-side too large for the frame and the number of faces")


@dataclass
class MethodRow:
    method: str
    frames: int
    seconds: float
    fps: float
    cpu_seconds: float
    cpu_fps: float
    tracks: int
    people: int
    face_frames_gt: int
    missed_face_frames: int
    fallback_face_frames: int
    id_switches: int
    slots_per_person: list[int] = field(default_factory=list)
    main_slot_share: list[float] = field(default_factory=list)
    recovery_exact: bool | None = None
    recovery_identical_frames: int | None = None
    timings: dict = field(default_factory=dict)
    stranger: dict = field(default_factory=dict)
    safety_redrawn_people: int = 0  # people whose stranger the safety net redrew
    safety_obscured_people: int = 0  # people obscured in every frame (every redraw still verified)


def build_clip(data: Path, out: Path, cfg: VideoEvalConfig) -> tuple[Path, np.ndarray, list[str]]:
    """Write the evaluation clip -> (path, ground truth (faces, frames, 3), identities used)."""
    from ...core.data import celeba_subset, identity_split
    from ...core.imageio import load_image
    from .synth import make_frames, write_clip

    ds = identity_split(celeba_subset(data / "celeba_subset_aligned112"))["test"]
    rng = np.random.default_rng(cfg.seed)
    ids = [ds.identities[i] for i in rng.choice(len(ds.identities), cfg.faces, replace=False)]
    faces = []
    for name in ids:
        sub = ds.select_identities([name])
        faces.append(load_image(sub.paths[0]))
    n = int(round(cfg.seconds * cfg.fps))
    frames, gt = make_frames(faces, n, cfg.height, cfg.width, cfg.face_px, seed=cfg.seed)
    path = write_clip(out / "clip.mp4", frames, cfg.fps)
    return path, gt, ids


def _gt_of(box: np.ndarray, gt: np.ndarray, i: int) -> int:
    """The ground-truth face whose centre is nearest the box centre (within 0.35 of its side), else -1."""
    c = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    d = np.hypot(gt[:, i, 0] - c[0], gt[:, i, 1] - c[1])
    k = int(np.argmin(d))
    return k if d[k] < 0.35 * gt[k, i, 2] else -1


def track_metrics(tracks, gt: np.ndarray) -> dict:
    """Coverage, identity switches and pseudonym consistency of tracks against the ground truth."""
    n_faces, n_frames = gt.shape[:2]
    covered = np.zeros((n_faces, n_frames), bool)
    slots: dict[int, Counter] = {k: Counter() for k in range(n_faces)}
    switches = 0
    for t in tracks:
        prev = None
        for f in sorted(t.box):
            k = _gt_of(t.box[f], gt, f)
            if k < 0:
                continue
            covered[k, f] = True
            slots[k][t.slot] += 1
            if prev is not None and k != prev:
                switches += 1
            prev = k
    return {"face_frames_gt": int(covered.size), "missed_face_frames": int((~covered).sum()),
            "id_switches": switches,
            "slots_per_person": [len(slots[k]) for k in range(n_faces)],
            "main_slot_share": [max(slots[k].values()) / max(1, sum(slots[k].values())) if slots[k] else 0.0
                                for k in range(n_faces)]}


def stranger_consistency(clip: Path, anon: Path, gt: np.ndarray, n_samples: int = 8) -> dict:
    """dlib distances: one person's anonymized face at ``n_samples`` frames spread over the clip, pairwise
    (same stranger?), and to the original face at the same frame (still the original?)."""
    from ...core.detect import FaceDetector
    from .io import iter_frames
    from .track import Tracker

    n_faces, n_frames = gt.shape[:2]
    picks = set(np.linspace(0, n_frames - 1, n_samples).round().astype(int).tolist())
    tr = Tracker(FaceDetector())
    emb_a: dict[int, list] = {k: [] for k in range(n_faces)}
    emb_o: dict[int, list] = {k: [] for k in range(n_faces)}
    for which, path in (("a", anon), ("o", clip)):
        for i, fr in enumerate(iter_frames(path)):
            if i not in picks:
                continue
            for k in range(n_faces):
                cx, cy, s = gt[k, i]
                box = np.array([cx - 0.3 * s, cy - 0.3 * s, cx + 0.3 * s, cy + 0.35 * s])
                lm = tr.landmarks(fr, box)
                (emb_a if which == "a" else emb_o)[k].append(tr.descriptor(fr, lm))
    same, orig = [], []
    for k in range(n_faces):
        a, o = np.array(emb_a[k]), np.array(emb_o[k])
        for x in range(len(a)):
            orig.append(float(np.linalg.norm(a[x] - o[x])))
            for y in range(x + 1, len(a)):
                same.append(float(np.linalg.norm(a[x] - a[y])))
    return {"pairs_same_person": len(same), "same_stranger_rate": float(np.mean(np.array(same) < 0.6)),
            "same_stranger_median_distance": float(np.median(same)),
            "views": len(orig), "verified_as_original_rate": float(np.mean(np.array(orig) < 0.6)),
            "to_original_median_distance": float(np.median(orig)), "rule": "dlib distance < 0.6"}


def _method(name: str):
    if name == "donor":
        from ..donor import DonorMorph

        return DonorMorph()
    from ..methods import make_method

    return make_method(name)


def evaluate_video(data: Path, out: Path, cfg: VideoEvalConfig, progress_stage=None) -> dict:
    """Run the evaluation -> the result dict (also written as eval_video.json / .html / frames PNG)."""
    from ...core.fileio import atomic_write_bytes, atomic_write_text
    from ...core.jsonio import dumps
    from ...core.report import array_to_png_bytes
    from .anonymize import anonymize_video, compare_videos, recover_video
    from .synth import make_frames, write_clip

    cfg.validate()
    if not (data / "celeba_subset_aligned112").is_dir():
        raise InputError(f"{data}: no celeba_subset_aligned112 (the datakit's CelebA subset) in it")
    out.mkdir(parents=True, exist_ok=True)
    stage = progress_stage or (lambda i, n, text: None)
    n_st = 3 + 2 * len(cfg.methods)
    stage(1, n_st, "building the clip")
    clip, gt, ids = build_clip(data, out, cfg)
    # warm-up: model loading is not what frames/s should measure
    warm = write_clip(out / "warmup.mp4", make_frames([np.asarray(_warm_face(data))], 6, 160, 160, 110)[0],
                      audio=False)
    from ...core.detect import FaceDetector

    det = FaceDetector(cfg.detector, data_root=data)
    rows: list[MethodRow] = []
    outputs: dict[str, Path] = {}
    st = 2
    for name in cfg.methods:
        m = _method(name)
        anonymize_video(warm, out / f"warmup_{name}.mkv", PASSPHRASE, m, detector=det)
        stage(st, n_st, f"anonymizing with {name}")
        st += 1
        dest = out / f"anon_{name}.mkv"
        res = anonymize_video(clip, dest, PASSPHRASE, m, detector=det, detect_every=cfg.detect_every)
        outputs[name] = dest
        tm = track_metrics(res.track_list, gt)
        stage(st, n_st, f"recovering {name} and comparing with the input")
        st += 1
        recover_video(dest, out / f"recovered_{name}.mkv", PASSPHRASE)
        cmp = compare_videos(out / f"recovered_{name}.mkv", clip)
        row = MethodRow(name, res.frames, round(res.seconds, 2), round(res.fps, 3), round(res.cpu_seconds, 2),
                        round(res.frames / max(res.cpu_seconds, 1e-9), 3), res.tracks, res.people,
                        tm["face_frames_gt"], tm["missed_face_frames"], res.fallback, tm["id_switches"],
                        tm["slots_per_person"], tm["main_slot_share"], cmp["identical_frames"] == cmp["frames"],
                        cmp["identical_frames"], {k: round(v, 2) for k, v in res.timings.items()})
        row.safety_redrawn_people, row.safety_obscured_people = res.redrawn, res.obscured
        if m.keyed:
            row.stranger = stranger_consistency(clip, dest, gt)
        rows.append(row)
    lossy = {}
    if cfg.lossy_seconds > 0 and "donor" in cfg.methods:
        stage(st, n_st, "H.264 output (lossy): the loss a recovery carries")
        n = int(round(cfg.lossy_seconds * cfg.fps))
        short = write_clip(out / "clip_short.mp4", list(_first_frames(clip, n)), cfg.fps)
        res = anonymize_video(short, out / "anon_donor_short.mp4", PASSPHRASE, _method("donor"),
                              detector=det, detect_every=cfg.detect_every)
        recover_video(out / "anon_donor_short.mp4", out / "recovered_short.mp4", PASSPHRASE)
        lossy = {"frames": n, "anonymize_time_check": res.recovery,
                 "recovered_mp4_vs_input": compare_videos(out / "recovered_short.mp4", short)}
    st = n_st
    stage(st, n_st, "report")
    ref = next((r for r in rows if r.method == "blur"), None)
    result = {"config": asdict(cfg), "identities": ids, "clip": str(clip),
              "methods": [asdict(r) for r in rows],
              "fps_ratio_to_blur": {r.method: round(r.fps / ref.fps, 3) for r in rows} if ref else {},
              "cpu_fps_ratio_to_blur": {r.method: round(r.cpu_fps / ref.cpu_fps, 3) for r in rows} if ref else {},
              "lossy_mp4": lossy}
    # frames to look at: input / each method, at three times
    n_frames = gt.shape[1]
    at = [0, n_frames // 2, n_frames - 1]
    grab = {"input": _grab(clip, at)} | {k: _grab(v, at) for k, v in outputs.items()}
    grid = _grid(grab, at, gt)
    atomic_write_bytes(out / "eval_video_frames.png", array_to_png_bytes(grid))
    atomic_write_text(out / "eval_video.json", dumps(result))
    _report(result, grid, out)
    for p in (out / "warmup.mp4",) + tuple(out.glob("warmup_*")):
        p.unlink(missing_ok=True)
    return result


def _warm_face(data: Path) -> np.ndarray:
    from ...core.data import celeba_subset, identity_split
    from ...core.imageio import load_image

    ds = identity_split(celeba_subset(data / "celeba_subset_aligned112"))["val"]
    return load_image(ds.paths[0])


def _first_frames(path: Path, n: int):
    from .io import iter_frames

    for i, f in enumerate(iter_frames(path)):
        if i >= n:
            return
        yield f


def _grab(path: Path, at: list[int]) -> dict[int, np.ndarray]:
    from .io import iter_frames

    return {i: f for i, f in enumerate(iter_frames(path)) if i in at}


def _grid(grab: dict[str, dict[int, np.ndarray]], at: list[int], gt: np.ndarray) -> np.ndarray:
    """Rows: input and each method; columns: the faces at three times (crops around the ground truth)."""
    from PIL import Image

    from ...core.report import image_grid

    rows = []
    for _, frames in grab.items():
        row = []
        for i in at:
            for k in range(gt.shape[0]):
                cx, cy, s = gt[k, i]
                r = 0.6 * s
                f = frames[i]
                x0, y0 = int(max(0, cx - r)), int(max(0, cy - r))
                x1, y1 = int(min(f.shape[1], cx + r)), int(min(f.shape[0], cy + r))
                row.append(np.asarray(Image.fromarray(f[y0:y1, x0:x1]).resize((160, 160))))
        rows.append(row)
    return image_grid(rows)


def _report(result: dict, grid: np.ndarray, out: Path) -> None:
    from ...core.report import HtmlReport

    rep = HtmlReport("faceprivacy video de-identification evaluation")
    cfg = result["config"]
    rep.subtitle = (f"{cfg['seconds']} s, {cfg['width']}x{cfg['height']} at {cfg['fps']} fps, {cfg['faces']} "
                    f"CelebA test identities, detector {cfg['detector']} every {cfg['detect_every']} frame(s)")
    items = []
    for r in result["methods"]:
        items.append(f"{r['method']}: {r['fps']:.2f} frames/s, {r['missed_face_frames']} of {r['face_frames_gt']} "
                     f"face-frames missed, {r['id_switches']} identity switches, pseudonym slots per person "
                     f"{r['slots_per_person']}, recovery bit-exact: {r['recovery_exact']}")
    if result["fps_ratio_to_blur"]:
        items.append(f"frames/s relative to blur: {result['fps_ratio_to_blur']}")
    bad = any(r["missed_face_frames"] or r["id_switches"] or not r["recovery_exact"] for r in result["methods"])
    rep.findings(items, verdict="targets missed (see below)" if bad else "every face-frame covered, no identity "
                 "switch, one pseudonym per person, bit-exact recovery", level="bad" if bad else "good")
    rep.small_n(cfg["faces"], "people in the clip")
    rep.table([{k: v for k, v in r.items() if not isinstance(v, dict | list)} for r in result["methods"]],
              caption="one row per method, same clip, same run")
    for r in result["methods"]:
        if r["stranger"]:
            rep.table([r["stranger"]], caption=f"{r['method']}: stranger consistency across the clip (dlib)")
    if result["lossy_mp4"]:
        rep.paragraph(f"H.264 (.mp4) output, first {result['lossy_mp4']['frames']} frames: "
                      f"{result['lossy_mp4']['recovered_mp4_vs_input']}")
    rep.image(grid, "rows: input, then each method; columns: each face at the first, middle and last frame")
    rep.write(out / "eval_video.html")
