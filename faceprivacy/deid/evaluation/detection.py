"""``faceprivacy eval-detection``: the missed-face benchmark.

On the labelled scene set of ``scenes`` (real CelebA/UTKFace faces at 16-400 px, rotated, mirrored, partly
occluded, on textured backgrounds; plus face-free scenes), every detector runs in the same process on the same
scenes, as ``anonymize`` runs it (its default upsampling, ``--min-score`` and ``--min-size``):

* recall by face size, by roll (the rotation applied), by yaw index (of the source face), by occlusion and by
  source set; a face is found when a detection's centre lies inside its ground-truth box and the detection's
  side (sqrt of its area) is 0.4-2.5 x the box side (one detection per face, highest score first);
* false positives per megapixel: unmatched detections, over all scenes and over the face-free ones;
* time per megapixel (wall clock, this process, 1 thread by default) and its ratio to HOG's on the same scenes.
  dlib's MMOD (``cnn``, ~1-2 min a megapixel on a loaded CPU) runs on a seeded subset of at most
  ``cnn_max_mp`` megapixels (the smallest scenes first); its n is reported.

Then the whole ``anonymize`` pipeline (``batch.anonymize_paths``: detection, landmarks, alignment, the method,
the blur fallback, paste-back, record, PNG) runs on the scene files with each ``pipeline`` detector. A face
is **missed** when the ONNX MobileFaceNet (the independent judge) still verifies its anonymized crop as the
original: cosine between the ArcFace crops at its true five points, before and after, above the threshold at
FAR ``far`` on impostor pairs of the *training* identities. Intervals: 95 % bootstrap over people (CelebA
identity; one UTKFace crop = one person) or, for per-megapixel rates, over scenes.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import InputError
from ...core.progress import progress

#: face-size bins (px, ground-truth side) and pose bins of the tables
SIZE_BINS = (16, 24, 32, 48, 64, 128, 256, 401)
ROLL_BINS = (0, 10, 20, 30.01)
YAW_BINS = (0.0, 0.15, 0.35, 1.01)
YAW_NAMES = ("frontal (<0.15)", "turned (0.15-0.35)", "strongly turned (>=0.35)")
#: match rule: detection side / ground-truth side within this range, and its centre inside the box
SIZE_RATIO = (0.4, 2.5)
#: score thresholds swept per detector (recall and false positives at each, from the same detections); the
#: headline uses the detector's default (``core.detect.MIN_SCORES``)
SWEEP = {"hog": (0.0, 0.2, 0.5), "cnn": (0.0, 0.2, 0.5), "retinaface": (0.2, 0.35, 0.5, 0.7, 0.9),
         "rfb320": (0.5, 0.6, 0.7, 0.8, 0.9), "retinaface+rfb320": (), "centerface": (0.2, 0.3, 0.4, 0.5, 0.6),
         "retinaface+centerface": (), "retinaface+rfb320+centerface": ()}
#: the size from which the full-pipeline goal applies, and the goal (miss rate)
GOAL_FROM_PX, GOAL_MISS = 24, 0.01
PASS = b"eval-detection benchmark passphrase (not a secret)"


@dataclass
class DetectionConfig:
    """What ``eval-detection`` measures (``quick``: a smoke-test configuration, seconds to a few minutes)."""

    identities: str = "test"
    n_celeba: int = 150
    n_utk: int = 150
    n_empty: int = 8
    face_px: tuple[float, float] = (16.0, 400.0)
    max_roll: float = 30.0
    occluded: float = 0.3
    detectors: tuple[str, ...] = ("hog", "cnn", "retinaface", "rfb320", "retinaface+rfb320")
    pipeline: tuple[str, ...] = ("retinaface",)
    method: str = "donor"
    cnn_max_mp: float = 2.0
    far: float = 1e-3
    n_thr: int = 400
    seed: int = 0
    threads: int = 1
    #: weak-tier floors swept per detector that has one (``core.detect.WEAK_SCORES``; its default is always run)
    floors: tuple[float, ...] = ()
    #: the pipeline as ``anonymize`` runs it: weak tier obscured, safety net on, small frames searched one level
    #: finer (``core.detect.SMALL_FRAME_MP``; also for the detector table); False: the earlier behaviour
    weak: bool = True
    safety: bool = True
    small_frames: bool = True
    #: the union detector also searches the mirrored frame (``core.detect.UNION_FLIP``), as ``anonymize`` does
    flip: bool = True
    #: the opt-in occlusion check of the safety net (``anonymize --obscure-occluded``)
    obscure_occluded: bool = False
    scene_sizes: tuple = ((640, 480), (1280, 720), (1920, 1080), (3840, 2160))
    scene_weights: tuple = (0.3, 0.35, 0.25, 0.1)

    @classmethod
    def quick(cls, **kw) -> DetectionConfig:
        base = dict(n_celeba=6, n_utk=6, n_empty=1, face_px=(24.0, 120.0), cnn_max_mp=0.31, method="blur",
                    n_thr=60, scene_sizes=((640, 480),), scene_weights=(1.0,))
        base.update(kw)
        return cls(**base)

    def check(self) -> None:
        from ...core.detect import DETECTORS

        if self.n_celeba < 0 or self.n_utk < 0 or self.n_celeba + self.n_utk < 1:
            raise InputError("--faces must be >= 1")
        if self.n_empty < 0:
            raise InputError("--empty must be >= 0")
        if not 0 < self.far < 1:
            raise InputError(f"--far must be in (0, 1), got {self.far}")
        if not 4 <= float(self.face_px[0]) <= float(self.face_px[1]):
            raise InputError(f"--face-px must satisfy 4 <= MIN <= MAX, got {self.face_px[0]:g} {self.face_px[1]:g}")
        if self.cnn_max_mp < 0:
            raise InputError("--cnn-max-mp must be >= 0")
        if not 0 <= self.occluded <= 1:
            raise InputError(f"--occluded must be in [0, 1], got {self.occluded:g}")
        for d in (*self.detectors, *self.pipeline):
            if d not in DETECTORS:
                raise InputError(f"unknown detector {d!r} (use {', '.join(DETECTORS)})")
        for f in self.floors:
            if not 0 <= f < 1:
                raise InputError(f"--floors must be in [0, 1), got {f:g}")


# ----- matching and rates ----------------------------------------------------------------------------------
def match(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, int]:
    """(found flag per ground-truth box, number of false positives); see the module docstring's rule."""
    from ...core.detect_onnx import box_iou

    det = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    found = np.zeros(len(gt), bool)
    if not len(det):
        return found, 0
    fp = 0
    iou = box_iou(det, gt) if len(gt) else np.zeros((len(det), 0))
    side_gt = gt[:, 2] - gt[:, 0]
    for i in np.argsort(-np.asarray(det_scores, np.float64), kind="stable"):
        cx, cy = (det[i, 0] + det[i, 2]) / 2, (det[i, 1] + det[i, 3]) / 2
        side = np.sqrt(max(det[i, 2] - det[i, 0], 0) * max(det[i, 3] - det[i, 1], 0))
        ok = ((gt[:, 0] <= cx) & (cx <= gt[:, 2]) & (gt[:, 1] <= cy) & (cy <= gt[:, 3])
              & (side >= SIZE_RATIO[0] * side_gt) & (side <= SIZE_RATIO[1] * side_gt) & ~found)
        if ok.any():
            j = int(np.argmax(np.where(ok, iou[i], -1)))
            found[j] = True
        else:
            fp += 1
    return found, fp


def ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """sum(num) / sum(den) with a 95 % bootstrap interval over the rows (scenes)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    v = float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")
    if len(num) < 2:
        return {"value": v, "ci95": [float("nan"), float("nan")], "n": int(len(num))}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), (n_boot, len(num)))
    boots = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-12)
    return {"value": v, "ci95": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "n": int(len(num))}


def _bin_label(lo: float, hi: float, unit: str = "") -> str:
    return f"{lo:g}-{hi - 0.01 if hi != int(hi) else hi:g}{unit}" if hi < 400 else f">={lo:g}{unit}"


def binned(hits: np.ndarray, groups: np.ndarray, values: np.ndarray, edges, names=None, unit="") -> list[dict]:
    """A rate per bin of ``values`` (with its interval and n)."""
    from ...core.metrics import rate_with_ci

    out = []
    for k in range(len(edges) - 1):
        sel = (values >= edges[k]) & (values < edges[k + 1])
        name = names[k] if names else _bin_label(edges[k], edges[k + 1], unit)
        if sel.sum():
            out.append({"bin": name, **rate_with_ci(hits[sel], groups[sel])})
        else:
            out.append({"bin": name, "value": None, "ci95": [None, None], "n": 0, "n_ids": 0})
    return out


# ----- the run ---------------------------------------------------------------------------------------------
@dataclass
class FaceTable:
    """One row per placed face (ground truth and how it was altered)."""

    scene: list[int] = field(default_factory=list)
    group: list[str] = field(default_factory=list)
    dataset: list[str] = field(default_factory=list)
    size: list[float] = field(default_factory=list)
    roll: list[float] = field(default_factory=list)
    yaw: list[float] = field(default_factory=list)
    occlusion: list[str] = field(default_factory=list)
    flipped: list[bool] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in asdict(self).items()}


def _faces_table(scenes, sources, yaw) -> FaceTable:
    t = FaceTable()
    for si, sc in enumerate(scenes):
        for f in sc.faces:
            t.scene.append(si)
            t.group.append(sources[f.source].group)
            t.dataset.append(sources[f.source].dataset)
            t.size.append(float(f.size))
            t.roll.append(abs(float(f.roll)))
            t.yaw.append(float(yaw[f.source]))
            t.occlusion.append(f.occlusion or "none")
            t.flipped.append(bool(f.flipped))
    return t


def _cnn_subset(scenes, budget_mp: float, seed: int) -> list[int]:
    """Scenes MMOD runs on: seeded order, smallest scenes first, until ``budget_mp`` megapixels."""
    rng = np.random.default_rng(seed + 17)
    order = sorted(range(len(scenes)), key=lambda i: (scenes[i].megapixels, rng.random()))
    keep, total = [], 0.0
    for i in order:
        if total + scenes[i].megapixels > budget_mp + 1e-9:
            continue
        keep.append(i)
        total += scenes[i].megapixels
    return sorted(keep)


def _timed_runs(det, scenes, run: list[int], desc: str):
    """``det`` on each scene of ``run``, the model loaded outside the timing -> per scene: (index, boxes (n, 4),
    scores (n,), ground-truth boxes (m, 4), seconds). One loop for the strong and the weak-tier sweeps."""
    det.boxes(scenes[0].image[:64, :64])
    for si in progress(run, desc=desc, unit="scene"):
        sc = scenes[si]
        t0 = time.perf_counter()
        res = det.boxes(sc.image)
        dt = time.perf_counter() - t0
        yield (si, np.array([r[0] for r in res]).reshape(-1, 4), np.array([r[1] for r in res]),
               np.array([f.box for f in sc.faces]).reshape(-1, 4), dt)


def run_detectors(scenes, cfg: DetectionConfig, data: Path) -> dict[str, dict]:
    """Per detector: found flag per face (NaN where not run), FP and seconds per scene, scenes run, at the
    default score threshold and (``sweep``) at each threshold of ``SWEEP``."""
    from ...core.detect import MIN_SCORES, SMALL_FRAME_MP, UNION_FLIP, FaceDetector

    n_faces = sum(len(s.faces) for s in scenes)
    out = {}
    for name in cfg.detectors:
        default = MIN_SCORES[name]
        thresholds = sorted(set(SWEEP.get(name, ())) | {default})
        det = FaceDetector(name, data_root=data, with_68=False, threads=cfg.threads, min_score=thresholds[0],
                           small_frame_mp=SMALL_FRAME_MP if cfg.small_frames else None,
                           flip=UNION_FLIP and cfg.flip)
        run = _cnn_subset(scenes, cfg.cnn_max_mp, cfg.seed) if name == "cnn" else list(range(len(scenes)))
        found = {t: np.full(n_faces, np.nan) for t in thresholds}
        fps = {t: np.zeros(len(scenes)) for t in thresholds}
        secs = np.zeros(len(scenes))
        boxes: dict[int, list] = {}
        starts = np.cumsum([0] + [len(s.faces) for s in scenes])
        for si, b, s, gt, secs[si] in _timed_runs(det, scenes, run, f"detect {name}"):  # (secs[si]: seconds)
            for t in thresholds:
                keep = s >= t if len(s) else np.zeros(0, bool)
                hit, fps[t][si] = match(b[keep], s[keep], gt)
                found[t][starts[si]:starts[si] + len(gt)] = hit
            boxes[si] = b[s >= default].tolist() if len(s) else []
        sweep = {t: {"found": found[t], "fp": fps[t]} for t in thresholds}
        out[name] = {"found": found[default], "fp": fps[default], "secs": secs, "scenes": run, "boxes": boxes,
                     "sweep": sweep, "default_score": default, "weak": _weak_sweep(name, scenes, run, cfg, data)}
    return out


def _weak_sweep(name: str, scenes, run: list[int], cfg: DetectionConfig, data: Path) -> dict:
    """Per weak-tier floor (``cfg.floors`` plus the detector's default ``WEAK_SCORES``): found flag per face and
    false positives per scene counting strong *and* weak detections (what ``anonymize`` replaces or obscures),
    the weak detections per scene, and seconds per scene; one detector run per floor."""
    from ...core.detect import SMALL_FRAME_MP, UNION_FLIP, WEAK_SCORES, FaceDetector

    if WEAK_SCORES.get(name) is None:
        return {}
    n_faces = sum(len(s.faces) for s in scenes)
    starts = np.cumsum([0] + [len(s.faces) for s in scenes])
    out = {}
    for fl in sorted(set(cfg.floors) | {WEAK_SCORES[name]}):
        det = FaceDetector(name, data_root=data, with_68=False, threads=cfg.threads, floor=fl,
                           small_frame_mp=SMALL_FRAME_MP if cfg.small_frames else None,
                           flip=UNION_FLIP and cfg.flip)
        found, fps, weak, secs = np.full(n_faces, np.nan), np.zeros(len(scenes)), np.zeros(len(scenes)), \
            np.zeros(len(scenes))
        for si, b, sc_, gt, secs[si] in _timed_runs(det, scenes, run, f"detect {name} floor {fl:g}"):  # (seconds)
            hit, fps[si] = match(b, sc_, gt)
            found[starts[si]:starts[si] + len(gt)] = hit
            weak[si] = float(np.sum(sc_ < det.min_score)) if len(sc_) else 0.0
        out[fl] = {"found": found, "fp": fps, "weak": weak, "secs": secs}
    return out


def _judge(data: Path):
    from ...core.embedders import get_embedder

    return get_embedder("mobilefacenet-onnx", str(data))


def judge_threshold(data: Path, far: float, n_thr: int, seed: int) -> tuple[float, int]:
    """Cosine threshold of the judge at ``far`` on impostor pairs of training-identity crops (all pairs)."""
    from ...core.data import celeba_subset, identity_split
    from ...core.metrics import all_pairs, threshold_at_far
    from ..crops import load_crops

    tr = identity_split(celeba_subset(Path(data) / "celeba_subset_aligned112"))["train"]
    rng = np.random.default_rng(seed + 5)
    rows = np.sort(rng.permutation(len(tr.paths))[:n_thr])
    x = load_crops([tr.paths[i] for i in rows])
    f = _judge(data).embed(x)
    pairs, same = all_pairs(np.asarray(tr.labels)[rows])
    sims = np.sum(f[pairs[:, 0]] * f[pairs[:, 1]], 1)
    return threshold_at_far(sims[~same], far), int((~same).sum())


def run_pipeline(scenes, cfg: DetectionConfig, data: Path, method, thr: float, work: Path) -> dict[str, dict]:
    """Per pipeline detector: for every face, the judge's cosine (original vs anonymized crop), missed flag,
    blurred-fallback count, seconds per scene, files skipped (no face found: published as they were)."""
    from ...core.align import arcface_crop
    from ...core.detect import FaceDetector
    from ...core.imageio import load_image, save_image
    from ..batch import anonymize_paths

    judge = _judge(data)
    src = work / "scenes"
    src.mkdir(parents=True, exist_ok=True)
    for sc in scenes:
        save_image(src / f"{sc.name}.png", sc.image)
    orig_crops = [arcface_crop(sc.image, f.five, 112)[0] for sc in scenes for f in sc.faces]
    f_orig = judge.embed(np.stack(orig_crops)) if orig_crops else np.zeros((0, 128))
    from ...core.detect import SMALL_FRAME_MP, UNION_FLIP, WEAK_SCORES

    out = {}
    for name in cfg.pipeline:
        dst = work / f"anon_{name}"
        det = FaceDetector(name, data_root=data, threads=cfg.threads,
                           floor=WEAK_SCORES.get(name) if cfg.weak else None,
                           small_frame_mp=SMALL_FRAME_MP if cfg.small_frames else None,
                           flip=UNION_FLIP and cfg.flip)
        t0 = time.perf_counter()
        from ..safety import pipeline_net

        safety = pipeline_net(cfg.obscure_occluded) if cfg.safety else cfg.safety
        summ = anonymize_paths(src, dst, PASS, method, detector=det, safety=safety)
        wall = time.perf_counter() - t0
        crops, skipped = [], []
        for sc in scenes:
            p = dst / f"{sc.name}.png"
            img = load_image(p) if p.is_file() else sc.image  # skipped (no face found): published unchanged
            if not p.is_file() and sc.faces:
                skipped.append(sc.name)
            crops += [arcface_crop(img, f.five, 112)[0] for f in sc.faces]
        f_anon = judge.embed(np.stack(crops)) if crops else np.zeros((0, 128))
        cos = np.sum(f_orig * f_anon, 1)
        out[name] = {"cos": cos, "missed": cos > thr, "blurred": int(summ.get("blurred", 0)), "wall_s": wall,
                     "skipped": skipped, "faces_anonymized": int(summ["faces"]), "dir": dst,
                     "weak_floor": det.floor, "safety": bool(cfg.safety),
                     "obscure_occluded": bool(cfg.safety and cfg.obscure_occluded),
                     **{k: summ.get(k, 0) for k in ("weak", "unalignable", "escalated", "occluded", "redrawn",
                                                           "safety_s")}}
    return out


def evaluate_detection(data: Path, out_dir: Path, cfg: DetectionConfig,
                       method_factory: Callable[[str], object] | None = None) -> dict:
    """Run the benchmark (module docstring); writes eval_detection.json and eval_detection.html."""
    from ...core.fileio import atomic_write_json, check_output
    from ...core.metrics import rate_with_ci
    from ...core.options import stage
    from .scenes import build_scenes, load_sources, yaw_index

    cfg.check()
    data, out_dir = Path(data), Path(out_dir)
    check_output(out_dir, folder=True)
    if not data.is_dir():
        raise InputError(f"data root not found: {data}")
    n_st = 3 + bool(cfg.pipeline)
    t_all = time.perf_counter()
    stage(1, n_st, "scene set")
    sources = load_sources(data, cfg.identities, cfg.n_celeba, cfg.n_utk, cfg.seed)
    yaw = yaw_index(sources)
    scenes = build_scenes(sources, cfg.face_px, cfg.max_roll, cfg.occluded, cfg.n_empty, cfg.seed,
                          sizes=cfg.scene_sizes, weights=cfg.scene_weights)
    table = _faces_table(scenes, sources, yaw).arrays()
    mp = np.array([s.megapixels for s in scenes])
    empty = np.array([not s.faces for s in scenes])
    stage(2, n_st, f"{len(cfg.detectors)} detector(s) on {len(scenes)} scenes ({mp.sum():.1f} MP, "
                   f"{len(table['size'])} faces)")
    raw = run_detectors(scenes, cfg, data)
    res: dict = {"config": {k: v for k, v in asdict(cfg).items()}, "data": str(data),
                 "scenes": {"n": len(scenes), "n_empty": int(empty.sum()), "megapixels": float(mp.sum()),
                            "faces": int(len(table["size"])), "people": int(len(set(table["group"]))),
                            "by_dataset": {d: int((table["dataset"] == d).sum()) for d in sorted(set(table["dataset"]))}},
                 "match_rule": {"centre_inside_gt": True, "size_ratio": list(SIZE_RATIO)}, "detectors": {}}
    hog_rate = None
    if "hog" in raw:
        r = raw["hog"]
        hog_rate = {"secs": r["secs"], "mp": mp}
    stage(3, n_st, "rates")
    for name, r in raw.items():
        ran = np.zeros(len(scenes), bool)
        ran[r["scenes"]] = True
        sel = ~np.isnan(r["found"])
        hits, groups = r["found"][sel], table["group"][sel]
        row: dict = {"scenes_run": int(ran.sum()), "megapixels_run": float(mp[ran].sum()),
                     "recall": rate_with_ci(hits, groups) if sel.any() else None,
                     "recall_by_size": binned(hits, groups, table["size"][sel], SIZE_BINS, unit=" px"),
                     "recall_by_roll": binned(hits, groups, table["roll"][sel], ROLL_BINS, unit=" deg"),
                     "recall_by_yaw": binned(hits, groups, np.nan_to_num(table["yaw"][sel], nan=-1), YAW_BINS,
                                             YAW_NAMES),
                     "recall_by_occlusion": [{"bin": o, **rate_with_ci(hits[table["occlusion"][sel] == o],
                                                                       groups[table["occlusion"][sel] == o])}
                                             for o in ("none", "mask", "eyes", "side")
                                             if (table["occlusion"][sel] == o).any()],
                     "recall_by_dataset": [{"bin": d, **rate_with_ci(hits[table["dataset"][sel] == d],
                                                                     groups[table["dataset"][sel] == d])}
                                           for d in sorted(set(table["dataset"][sel]))],
                     "fp_per_mp": ratio_ci(r["fp"][ran], mp[ran]),
                     "fp_per_mp_face_free": ratio_ci(r["fp"][ran & empty], mp[ran & empty]) if (ran & empty).any()
                     else None,
                     "s_per_mp": float(r["secs"][ran].sum() / mp[ran].sum()),
                     }
        row["default_min_score"] = r["default_score"]
        row["score_sweep"] = []
        for t, sw in r["sweep"].items():
            h = sw["found"][sel]
            b24 = table["size"][sel] >= GOAL_FROM_PX
            row["score_sweep"].append({"min_score": t, "recall": rate_with_ci(h, groups),
                                       "recall_from_24px": rate_with_ci(h[b24], groups[b24]) if b24.any() else None,
                                       "fp_per_mp": ratio_ci(sw["fp"][ran], mp[ran]),
                                       "fp_per_mp_face_free": ratio_ci(sw["fp"][ran & empty], mp[ran & empty])
                                       if (ran & empty).any() else None})
        big = sel & (table["size"] >= GOAL_FROM_PX)
        row["recall_from_24px"] = rate_with_ci(r["found"][big], table["group"][big]) if big.any() else None
        row["weak_tier"] = []
        for fl, w in r["weak"].items():  # strong + weak detections: what anonymize replaces or obscures
            h = w["found"][sel]
            b24 = table["size"][sel] >= GOAL_FROM_PX
            row["weak_tier"].append({"floor": fl, "recall": rate_with_ci(h, groups),
                                     "recall_from_24px": rate_with_ci(h[b24], groups[b24]) if b24.any() else None,
                                     "fp_per_mp": ratio_ci(w["fp"][ran], mp[ran]),
                                     "fp_per_mp_face_free": ratio_ci(w["fp"][ran & empty], mp[ran & empty])
                                     if (ran & empty).any() else None,
                                     "weak_per_mp": ratio_ci(w["weak"][ran], mp[ran]),
                                     "s_per_mp": float(w["secs"][ran].sum() / mp[ran].sum())})
        if hog_rate is not None:
            hog_s = hog_rate["secs"][ran].sum() / mp[ran].sum()
            row["time_vs_hog"] = float(row["s_per_mp"] / hog_s) if hog_s > 0 else None
        res["detectors"][name] = row
    if cfg.pipeline:  # the detector part on disk already: a long pipeline run that is stopped keeps it
        atomic_write_json(out_dir / "eval_detection.json", {**res, "pipeline": "not finished"})
    pipe = {}
    if cfg.pipeline:
        stage(4, n_st, f"anonymize pipeline ({cfg.method}) with {', '.join(cfg.pipeline)}; judge: ONNX MobileFaceNet")
        method = (method_factory or _default_factory)(cfg.method)
        thr, n_imp = judge_threshold(data, cfg.far, cfg.n_thr, cfg.seed)
        with tempfile.TemporaryDirectory(prefix="eval_detection_") as tmp:
            pipe = run_pipeline(scenes, cfg, data, method, thr, Path(tmp))
            grid = _grid(scenes, raw, pipe)
        res["pipeline"] = {"method": cfg.method, "judge": "mobilefacenet-onnx", "far": cfg.far, "threshold": thr,
                           "n_impostor_pairs": n_imp, "goal": {"from_px": GOAL_FROM_PX, "miss_rate_max": GOAL_MISS},
                           "detectors": {}}
        for name, p in pipe.items():
            missed, groups = p["missed"].astype(float), table["group"]
            big = table["size"] >= GOAL_FROM_PX
            row = {"miss_rate": rate_with_ci(missed, groups),
                   "miss_rate_from_24px": rate_with_ci(missed[big], groups[big]) if big.any() else None,
                   "miss_rate_by_size": binned(missed, groups, table["size"], SIZE_BINS, unit=" px"),
                   "miss_rate_by_occlusion": [{"bin": o, **rate_with_ci(missed[table["occlusion"] == o],
                                                                       groups[table["occlusion"] == o])}
                                              for o in ("none", "mask", "eyes", "side")
                                              if (table["occlusion"] == o).any()],
                   "blurred_fallback": p["blurred"], "faces_anonymized": p["faces_anonymized"],
                   "weak_floor": p["weak_floor"], "safety_net": p["safety"],
                   "obscured": {"weak": p["weak"], "unalignable": p["unalignable"], "escalated": p["escalated"],
                                "occluded": p["occluded"]},
                   "redrawn": p["redrawn"], "safety_s": float(p["safety_s"]),
                   "safety_s_per_face": float(p["safety_s"]) / max(1, p["faces_anonymized"]),
                   "scenes_without_output": p["skipped"], "s_per_mp": float(p["wall_s"] / mp.sum()),
                   "median_cos": float(np.median(p["cos"])) if len(p["cos"]) else None}
            m24 = row["miss_rate_from_24px"]
            row["goal_met"] = bool(m24 is not None and m24["value"] <= GOAL_MISS)
            res["pipeline"]["detectors"][name] = row
    else:
        grid = _grid(scenes, raw, {})
    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    res["faces"] = {k: (v.tolist() if k != "yaw" else [None if np.isnan(x) else float(x) for x in v])
                    for k, v in table.items()}
    for name, r in raw.items():
        res["faces"][f"found_{name}"] = [None if np.isnan(x) else bool(x) for x in r["found"]]
        from ...core.detect import WEAK_SCORES

        w = r["weak"].get(WEAK_SCORES.get(name))
        if w is not None:
            res["faces"][f"found_weak_{name}"] = [None if np.isnan(x) else bool(x) for x in w["found"]]
    for name, p in pipe.items():
        res["faces"][f"cos_after_{name}"] = [float(x) for x in p["cos"]]
    from .detection_report import write_report

    atomic_write_json(out_dir / "eval_detection.json", res)
    write_report(res, out_dir / "eval_detection.html", grid)
    return res


def _default_factory(name: str):
    from ..methods import make_method

    if name == "donor":
        from ..donor import DonorMorph

        return DonorMorph()
    return make_method(name)


def _grid(scenes, raw: dict, pipe: dict) -> np.ndarray | None:
    """A look at the data: up to 2 scenes with ground truth (green) and each detector's boxes, and the same
    scene after the pipeline's first detector."""
    from PIL import Image, ImageDraw

    from ...core.imageio import load_image

    colours = {"hog": (40, 90, 255), "cnn": (255, 160, 0), "retinaface": (255, 40, 40), "rfb320": (200, 0, 200),
               "retinaface+rfb320": (255, 255, 255), "centerface": (0, 200, 200), "retinaface+centerface": (255, 255, 0),
               "retinaface+rfb320+centerface": (160, 255, 160)}
    picks = [i for i, s in enumerate(scenes) if s.faces and s.image.shape[1] <= 1920][:2]
    tiles = []
    for si in picks:
        sc = scenes[si]
        im = Image.fromarray(sc.image)
        dr = ImageDraw.Draw(im)
        width = max(2, sc.image.shape[1] // 400)
        for f in sc.faces:
            dr.rectangle([float(v) for v in f.box], outline=(0, 220, 0), width=width)
        for name, r in raw.items():
            for b in r["boxes"].get(si, []):
                dr.rectangle([float(v) for v in b], outline=colours.get(name, (255, 255, 255)), width=max(1, width - 1))
        row = [np.asarray(im)]
        for p in list(pipe.values())[:1]:
            f = Path(p["dir"]) / f"{sc.name}.png"
            if f.is_file():
                row.append(load_image(f))
        scale = 900 / row[0].shape[1]
        tiles.append(np.concatenate([np.asarray(Image.fromarray(x).resize(
            (int(x.shape[1] * scale), int(x.shape[0] * scale)))) for x in row], 1))
    if not tiles:
        return None
    w = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 6), (0, w - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    return np.concatenate(tiles, 0)
