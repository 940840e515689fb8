"""Write docs/NUMBERS.md: every headline number quoted in README.md and docs/*.md, read from the committed result
JSONs in docs/, with its 95 % interval, n and the repo command that produced it.

    python -m tools.headline_numbers            # regenerate docs/NUMBERS.md
    python -m tools.headline_numbers --check    # exit 1 if docs/NUMBERS.md differs from what the JSONs give

The table below (SOURCES) is the whole definition: which JSON, which key path, which headline, which command.
A path is a tuple of dict keys, list indices, or dicts that select the one list element whose fields match
(``{"K": 5, "method": "metaunlearn"}``). A node ``{"value", "ci95", "n"}`` gives all three; otherwise the interval
is the sibling key ``<last key>_ci95`` (or ``ci=`` names it) and n comes from ``n=``. A JSON that is not in the
repo yet is listed as "not yet measured"; ``pending=True`` marks a source another branch is adding, whose keys
are not checked until it lands. Standard library only (no faceprivacy import), so the test is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = "docs/NUMBERS.md"


@dataclass(frozen=True)
class Row:
    headline: str
    path: tuple
    ci: tuple | None | str = "auto"  # "auto": node's ci95 or sibling <key>_ci95; None: no interval; tuple: path
    n: tuple | str | int | None = "auto"  # "auto": node's n (+ n_ids); tuple: path; str/int: literal
    n_label: str = ""
    fmt: str = "{:.3f}"
    sd: tuple | None = None  # path of a standard deviation, shown where there is no interval


@dataclass(frozen=True)
class Source:
    system: str
    file: str  # relative to the repo root
    command: str | None  # used when the JSON records no "command" of its own (a recorded one wins)
    doc: str  # where the numbers are quoted
    rows: tuple = field(default_factory=tuple)
    pending: bool = False  # added by a branch not merged yet: keys not enforced
    note: str = ""


class _LenPath(tuple):
    """A path whose n is the length of the list it names."""


def len_path(*keys) -> _LenPath:
    return _LenPath(keys)


def _core(emb: str, label: str) -> tuple:
    e = ("embedders", emb)
    n_ids = (*e, "n_identities")
    return (
        Row(f"{label} TAR@FAR=1e-2", (*e, "tar@far=0.01"), n=n_ids, n_label="ids"),
        Row(f"{label} TAR@FAR=1e-3", (*e, "tar@far=0.001"), n=n_ids, n_label="ids"),
        Row(f"{label} TAR@FAR=1e-4", (*e, "tar@far=0.0001"), n=n_ids, n_label="ids"),
        Row(f"{label} EER", (*e, "eer"), ci=None, n=n_ids, n_label="ids", fmt="{:.4f}"),
        Row(f"{label} AUC", (*e, "auc"), n=n_ids, n_label="ids", fmt="{:.4f}"),
        Row(f"{label} pair accuracy, pairs_10fold.csv (always-same 0.877)", (*e, "pairs10fold"), n_label="pairs"),
        Row(f"{label} pair accuracy, balanced protocol (baseline 0.5)", (*e, "balanced10fold"), n_label="pairs"),
    )


def _probe(key: str, attr: str, label: str) -> Row:
    pre = tuple(key.split("/"))
    return Row(label, (*pre, {"attribute": attr}, "lift"), n=(*pre, {"attribute": attr}, "n_test_ids"),
               n_label="test ids")


def _deid(proto: str, method: str) -> tuple:
    p = ("protocols", proto, method)
    rows = []
    for rec, lab in (("mobilefacenet-onnx", "ONNX judge"), ("dlib", "dlib"), ("mobilefacenet", "CASIA MFN")):
        rows.append(Row(f"{proto}/{method}: verified vs other photos ({lab})", (*p, "identity", rec,
                                                                                 "verif_vs_other_photos")))
        rows.append(Row(f"{proto}/{method}: rank-1 ({lab})", (*p, "identity", rec, "rank1")))
        if method == "donor":
            rows.append(Row(f"{proto}/{method}: two keys verified as one person ({lab})",
                            (*p, "identity", rec, "two_keys_verified_same")))
            rows.append(Row(f"{proto}/{method}: wrong key verified as the original ({lab})",
                            (*p, "identity", rec, "wrong_key_verif_vs_source")))
    rows += [
        Row(f"{proto}/{method}: gender agreement", (*p, "attributes", "gender_agreement")),
        Row(f"{proto}/{method}: age MAE (years)", (*p, "attributes", "age_abs_err_years"), fmt="{:.1f}"),
        Row(f"{proto}/{method}: yaw error (deg)", (*p, "attributes", "yaw_abs_err_deg"), fmt="{:.1f}"),
        Row(f"{proto}/{method}: mouth-open agreement", (*p, "attributes", "mouth_open_agreement")),
        Row(f"{proto}/{method}: HOG detected", (*p, "detection", "hog")),
        Row(f"{proto}/{method}: two-sample classifier accuracy", (*p, "two_sample_accuracy")),
        Row(f"{proto}/{method}: KID x1000", (*p, "kid", "kid_x1000"), ci=None, n=(*p, "kid", "n_anonymized"),
            n_label="faces", fmt="{:.2f}"),
        Row(f"{proto}/{method}: recovery bit-exact", (*p, "recovered_bit_exact")),
    ]
    if proto == "frames":
        rows.insert(0, Row(f"{proto}/{method}: faces replaced", (*p, "faces_anonymized")))
    return tuple(rows)


def _unlearn(k: int, method: str, with_mia: bool = True, with_drop: bool = True) -> tuple:
    s = ("summary", {"K": k, "method": method})
    n = (*s, "n_seeds")
    rows = [Row(f"K={k} {method}: ToW", (*s, "ToW"), n=n, n_label="requests"),
            Row(f"K={k} {method}: ToW worst request", (*s, "ToW_worst"), ci=None, n=n, n_label="requests"),
            Row(f"K={k} {method}: ToW 10th percentile", (*s, "ToW_p10"), ci=None, n=n, n_label="requests")]
    if with_mia:
        rows.append(Row(f"K={k} {method}: forget-set MIA AUC", (*s, "MIA_AUC"), n=n, n_label="requests"))
    if with_drop:
        rows.append(Row(f"K={k} {method}: test accuracy drop (fraction; x100 = points)", (*s, "test_drop"), n=n,
                        n_label="requests"))
    return tuple(rows)


def _loho(mode: str) -> tuple:
    rows = []
    for defacer in ("mask", "shear"):
        s = ("summary", "individuals", defacer)
        rows.append(Row(f"individuals, {defacer}: attacked MSD (mm), U-Net {mode}", (*s, "attacked", "mean"),
                        ci=None, sd=(*s, "attacked", "sd"), n=(*s, "attacked", "n"), n_label="people", fmt="{:.2f}"))
        rows.append(Row(f"individuals, {defacer}: average-face baseline MSD (mm)",
                        (*s, "baseline_avgface", "mean"), ci=None, sd=(*s, "baseline_avgface", "sd"),
                        n=(*s, "baseline_avgface", "n"), n_label="people", fmt="{:.2f}"))
        rows.append(Row(f"individuals, {defacer}: defaced MSD (mm)", (*s, "defaced", "mean"), ci=None,
                        sd=(*s, "defaced", "sd"), n=(*s, "defaced", "n"), n_label="people", fmt="{:.2f}"))
    return tuple(rows)


_LOHO_CMD = "python -m faceprivacy.mri.loho --data DATAKIT --out out/loho --steps {steps} --slices 48 --threads 2{p}"
_UNL_CMD = ("faceprivacy eval-unlearning --task identity --model faceprivacy/models/weights/unlearn_idhead.pt "
            "--metaloss faceprivacy/models/weights/unlearn_idhead_metaloss.pt --k 5 10 --seeds {seeds} "
            "--methods {methods} --no-tune --reference-cache out/refcache --threads 1 --out out/unl_fresh{out}")
#: the previous (third) identity MetaLoss, replaced in stop 13: ``git show 09e80a3:<the MetaLoss path>``
_UNL_THIRD = "git show 09e80a3:faceprivacy/models/weights/unlearn_idhead_metaloss.pt > third.pt"
#: the fourth identity MetaLoss (lambda 0.1), replaced by the fifth (lambda 0.2) in stop 14
_UNL_FOURTH = "git show 3a19281:faceprivacy/models/weights/unlearn_idhead_metaloss.pt > fourth.pt"
_UNL_SEEDS70 = " ".join(str(s) for s in range(70, 90))
_UNL_SEEDS90 = " ".join(str(s) for s in range(90, 110))
_UNL_SEEDS110 = " ".join(str(s) for s in range(110, 130))
_UNL_SEEDS130 = " ".join(str(s) for s in range(130, 160))
_UNL_SEEDS160 = " ".join(str(s) for s in range(160, 190))
_UNL_POOLED = ("faceprivacy eval-unlearning --from-json " + " ".join(
    f"docs/unlearn_identity_results_seeds{a}-{b}.json" for a, b in ((70, 89), (90, 109), (110, 129), (130, 159)))
    + " --out out/unl_pooled70-159")
_UNL_POOLED189 = ("faceprivacy eval-unlearning --from-json " + " ".join(
    f"docs/unlearn_identity_results_seeds{a}-{b}.json"
    for a, b in ((70, 89), (90, 109), (110, 129), (130, 159), (160, 189))) + " --out out/unl_pooled70-189")


def _fed_claim(prefix: str, share: str, every_round: str) -> tuple:
    """The rows of one three-seed ``fed-simulate`` claim (``fed_seeds.json`` layout), labels after ``prefix``."""
    seeds = {"ci": None, "n": len_path("seeds"), "n_label": "seeds"}
    return (tuple(Row(f"{prefix}{m}: TAR@1e-3 gain over the start (points), mean over seeds", ("gain_points", m, "mean"),
                      sd=("gain_points", m, "sd"), fmt="{:+.2f}", **seeds) for m in ("fedface", "fedavg", "central"))
            + (Row(prefix + share, ("share_of_central_gain",), fmt="{:.2f}", **seeds),
               Row(prefix + every_round, ("fedface_above_fedavg_every_round",), fmt="{:d}", **seeds)))


def _unl_original_test() -> tuple:
    return (Row("original model test accuracy", ("original", "acc", "test"), ci=None, n=("data", "n_test"),
                n_label="test images"),)


def _unl_retrained_mia() -> tuple:
    return tuple(Row(f"K={k} retrained: forget-set MIA AUC", ("summary", {"K": k, "method": "retrained"}, "MIA_AUC"),
                     n=("summary", {"K": k, "method": "retrained"}, "n_seeds"), n_label="requests") for k in (5, 10))


SOURCES: tuple[Source, ...] = (
    # ---- face core
    Source("Face core (verification)", "docs/core_verification_results.json",
           "faceprivacy eval-verification --out out/verif   # defaults: --dataset celeba --split test "
           "--embedder dlib mobilefacenet --impostors all", "docs/core.md",
           _core("dlib", "dlib") + _core("mobilefacenet", "MobileFaceNet (CASIA)"),
           note="48 test identities, 968 images, all 11,164 genuine / 456,864 impostor pairs."),
    # ---- detection (issue 16, branch i16d)
    Source("Face detection", "docs/detection_test.json",
           "faceprivacy eval-detection --identities test --faces 120 --pipeline-detectors retinaface+rfb320",
           "docs/detection.md",
           tuple(Row(f"{d}: recall", ("detectors", d, "recall"))
                 for d in ("hog", "retinaface", "rfb320", "retinaface+rfb320"))
           + (Row("retinaface+rfb320: recall, faces >= 24 px", ("detectors", "retinaface+rfb320", "recall_from_24px")),
              Row("retinaface+rfb320: false positives per MP", ("detectors", "retinaface+rfb320", "fp_per_mp"),
                  n_label="scenes"),
              Row("pipeline (donor, ONNX judge): face still verifiable as the original",
                  ("pipeline", "detectors", "retinaface+rfb320", "miss_rate")),
              Row("pipeline: face still verifiable, faces >= 24 px (goal <= 0.01)",
                  ("pipeline", "detectors", "retinaface+rfb320", "miss_rate_from_24px"))),
           pending=True),
    Source("Face detection", "docs/detection_test_v2.json",
           "faceprivacy eval-detection --identities test --faces 120 --detectors retinaface+rfb320 "
           "--pipeline-detectors retinaface+rfb320", "docs/detection.md (donor v2, the shipped default)",
           (Row("pipeline (donor v2, ONNX judge): face still verifiable as the original",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate")),
            Row("pipeline (donor v2): face still verifiable, faces >= 24 px (goal <= 0.01)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate_from_24px")))),
    Source("Face detection", "docs/detection_test_v4.json",
           "faceprivacy eval-detection --identities test --faces 120 --detectors retinaface+rfb320 "
           "--pipeline-detectors retinaface+rfb320",
           "docs/detection.md (issue 16 second pass, re-run on main with the donor v3 default: safety net, weak tier, small frames one level finer)",
           (Row("retinaface+rfb320 (small frames finer): recall, faces >= 24 px",
                ("detectors", "retinaface+rfb320", "recall_from_24px")),
            Row("+ weak tier (obscured): recall, faces >= 24 px",
                ("detectors", "retinaface+rfb320", "weak_tier", {"floor": 0.3}, "recall_from_24px")),
            Row("+ weak tier: false positives per MP (obscured)",
                ("detectors", "retinaface+rfb320", "weak_tier", {"floor": 0.3}, "fp_per_mp"), n_label="scenes"),
            Row("pipeline with the safety net (donor, ONNX judge): face still verifiable as the original",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate")),
            Row("pipeline with the safety net: face still verifiable, faces >= 24 px (goal <= 0.01)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate_from_24px")))),
    Source("Face detection", "docs/detection_test_v5.json",
           "faceprivacy eval-detection --identities test --faces 120 --detectors retinaface+rfb320 "
           "--pipeline-detectors retinaface+rfb320",
           "docs/detection.md (run v5: main with the same-head rule for weak boxes)",
           (Row("pipeline with the safety net (donor, ONNX judge): face still verifiable as the original",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate")),
            Row("pipeline with the safety net: face still verifiable, faces >= 24 px (goal <= 0.01)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate_from_24px")))),
    Source("Face detection", "docs/detection_test_v6.json",
           "faceprivacy eval-detection --identities test --faces 120 --detectors retinaface+rfb320 "
           "--pipeline-detectors retinaface+rfb320",
           "docs/detection.md (issue 16 third pass: mirrored RetinaFace pass, occlusion check, with the net, weak "
           "tier and small frames)",
           (Row("retinaface+rfb320 (mirrored pass, small frames finer): recall, faces >= 24 px",
                ("detectors", "retinaface+rfb320", "recall_from_24px")),
            Row("+ weak tier (obscured): recall, faces >= 24 px",
                ("detectors", "retinaface+rfb320", "weak_tier", {"floor": 0.3}, "recall_from_24px")),
            Row("+ weak tier: false positives per MP (obscured)",
                ("detectors", "retinaface+rfb320", "weak_tier", {"floor": 0.3}, "fp_per_mp"), n_label="scenes"),
            Row("pipeline with the occlusion check and safety net (donor, ONNX judge): face still verifiable",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate")),
            Row("pipeline with the occlusion check and safety net: face still verifiable, faces >= 24 px (goal <= 0.01)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate_from_24px")))),
    Source("Face detection", "docs/detection_test_v7.json",
           "faceprivacy eval-detection --identities test --faces 120 --detectors retinaface+rfb320 "
           "--pipeline-detectors retinaface+rfb320 -o out/evaldet_v7",
           "docs/detection.md (run v7: the opt-in occlusion check at 3 %, occluded faces replaced then obscured; "
           "now anonymize --obscure-occluded)",
           (Row("pipeline with the occlusion check: face still verifiable as the original (ONNX judge)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate")),
            Row("pipeline with the occlusion check: face still verifiable, faces >= 24 px (goal <= 0.01)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate_from_24px")))),
    Source("Face detection", "docs/detection_test_v9.json",
           "faceprivacy eval-detection --identities test --faces 120 --detectors retinaface+rfb320 "
           "--pipeline-detectors retinaface+rfb320 -o out/evaldet_v9",
           "docs/detection.md (run v9, the default until run v10: mirrored pass, weak tier, safety net with escalated "
           "faces obscured over their stranger; no occlusion check)",
           (Row("pipeline (default): face still verifiable as the original (ONNX judge)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate")),
            Row("pipeline (default): face still verifiable, faces >= 24 px (goal <= 0.01)",
                ("pipeline", "detectors", "retinaface+rfb320", "miss_rate_from_24px")))),
    Source("Face detection", "docs/detection_test_v10.json",
           "faceprivacy eval-detection --identities test --faces 120 --detectors retinaface+rfb320 "
           "retinaface+rfb320+centerface --pipeline-detectors retinaface+rfb320 retinaface+rfb320+centerface "
           "--threads 1 -o out/evaldet_v10",
           "docs/detection.md (run v10: the CenterFace union, the default since this run, against the old default)",
           tuple(Row(f"pipeline ({name}): face still verifiable, faces >= 24 px (goal <= 0.01)",
                     ("pipeline", "detectors", name, "miss_rate_from_24px"))
                 for name in ("retinaface+rfb320+centerface", "retinaface+rfb320"))
           + tuple(Row(f"pipeline ({name}): face still verifiable as the original (ONNX judge), all sizes",
                       ("pipeline", "detectors", name, "miss_rate"))
                   for name in ("retinaface+rfb320+centerface", "retinaface+rfb320"))),
    # ---- de-identification
    Source("De-identification (`anonymize`, eval-deid)", "docs/deid_eval_test_v10.json",
           "git checkout 4c81182 && OMP_NUM_THREADS=1 faceprivacy eval-deid --identities test --per-id 2 --cnn-max 12 "
           "--methods donor blur --threads 1 -o out/eval_deid_v10",
           "docs/deid.md (run 12: the morph-fault fixes on, now opt-in as MORPH_FAULT_FIXES; not the default)",
           tuple(Row(f"frames/donor, fixes on: {lab}", ("protocols", "frames", "donor", *path))
                 for lab, path in (("two keys verified as one person (ONNX judge)",
                                    ("identity", "mobilefacenet-onnx", "two_keys_verified_same")),
                                   ("verified as any bank donor (ONNX judge)",
                                    ("identity", "mobilefacenet-onnx", "verified_as_any_donor")),
                                   ("gender agreement", ("attributes", "gender_agreement")),
                                   ("two-sample classifier accuracy", ("two_sample_accuracy",))))
           + (Row("frames/donor, fixes on: age MAE (years)", ("protocols", "frames", "donor", "attributes",
                                                          "age_abs_err_years"), fmt="{:.1f}"),),
           note="Run with the fixes as the default of commit 4c81182; the default now has them off (runs 10-11)."),
    Source("De-identification (`anonymize`, eval-deid)", "docs/deid_eval_test_v12.json",
           "OMP_NUM_THREADS=1 faceprivacy eval-deid --identities test --per-id 2 --cnn-max 12 --methods donor stranger "
           "blur --threads 1 -o out/eval_deid_v12",
           "docs/deid.md (run 14: the shipped default a third time, new salts, with the real-stranger swap as the "
           "floor of any inner-face replacement)",
           tuple(Row(f"{proto}/{method}: {lab}", ("protocols", proto, method, "identity", "mobilefacenet-onnx", key))
                 for proto in ("frames", "aligned") for method in ("donor", "stranger")
                 for lab, key in (("two keys verified as one person (ONNX judge)", "two_keys_verified_same"),
                                  ("verified vs other photos (ONNX judge)", "verif_vs_other_photos"),
                                  ("rank-1 (ONNX judge)", "rank1"),
                                  ("wrong key verified as the original (ONNX judge)", "wrong_key_verif_vs_source")))
           + tuple(Row(f"frames/{method}: {lab}", ("protocols", "frames", method, "attributes", key), fmt=fmt)
                   for method in ("donor", "stranger")
                   for lab, key, fmt in (("gender agreement", "gender_agreement", "{:.3f}"),
                                         ("age MAE (years)", "age_abs_err_years", "{:.1f}"),
                                         ("yaw error (deg)", "yaw_abs_err_deg", "{:.1f}"))),
           note="The same 95 faces of 48 test people as runs 10-13. 'stranger' swaps in one real training person's "
                "whole inner face (keyed): two keys then share only what lies outside the face."),
    Source("De-identification (`anonymize`, eval-deid)", "docs/deid_eval_test_v8.json",
           "OMP_NUM_THREADS=1 faceprivacy eval-deid --identities test --per-id 2 --cnn-max 12 --methods donor blur "
           "-o out/eval_deid_v8 --threads 1",
           "docs/deid.md (run 10: the shipped default: v4 morph, safety net with escalated faces obscured over "
           "their stranger, mirrored detector pass; occlusion check off)",
           _deid("aligned", "donor") + _deid("frames", "donor")
           + tuple(Row(f"{proto}: reference, the person's other real photo: {lab}",
                       ("protocols", proto, "originals", "attributes_other_photo", key), fmt=fmt)
                   for proto in ("aligned", "frames")
                   for lab, key, fmt in (("gender agreement", "gender_agreement", "{:.3f}"),
                                         ("age MAE (years)", "age_abs_err_years", "{:.1f}")))
           + (Row("aligned/blur: verified vs other photos (ONNX judge)",
                  ("protocols", "aligned", "blur", "identity", "mobilefacenet-onnx", "verif_vs_other_photos")),
              Row("aligned/blur: gender agreement", ("protocols", "aligned", "blur", "attributes", "gender_agreement")),
              Row("aligned/blur: HOG detected", ("protocols", "aligned", "blur", "detection", "hog")),
              Row("frames/blur: verified vs other photos (ONNX judge)",
                  ("protocols", "frames", "blur", "identity", "mobilefacenet-onnx", "verif_vs_other_photos"))),
           note="95 faces of 48 test people (two photos each where the person has three), gallery 239 people "
                "(chance rank-1 0.0042); n = faces, intervals by identity bootstrap."),
    # ---- audit
    Source("Embedding audit (`audit-embeddings`)", "docs/audit_probes_results.json",
           "faceprivacy audit-embeddings --embedder dlib --no-inversion --attr-cache out/attr_cache.npz "
           "--out out/audit_probes", "docs/audit.md (probe and template run)",
           (_probe("probes", "gender", "gender lift, raw embedding"),
            _probe("probes", "age", "age lift, raw embedding"),
            _probe("probes", "mouth_open", "mouth-open lift, raw embedding"),
            _probe("probes", "smile", "smile lift, raw embedding"),
            _probe("probes", "landmarks", "landmarks lift, raw embedding"),
            _probe("probes", "colour_hist", "colour histogram lift, raw embedding"),
            _probe("probes", "background", "background colour lift, raw embedding"),
            Row("gender probe error rate, raw embedding", ("probes", {"attribute": "gender"}, "probe"),
                n=("probes", {"attribute": "gender"}, "n_test"), n_label="test images"),
            _probe("templates/probes_per_user_keys", "gender", "gender lift, protected templates, per-user keys"),
            _probe("templates/probes_system_key", "gender", "gender lift, protected templates, one system key"),
            _probe("templates/probes_system_key", "mouth_open", "mouth-open lift, protected templates, one system key"),
            Row("raw dlib TAR@FAR=1e-3", ("verification_raw", "tar"), n=("verification_raw", "n_identities"),
                n_label="ids"),
            Row("protected (per-user keys) TAR@FAR=1e-3", ("templates", "verification_per_user_keys", "tar"),
                n=("templates", "verification_per_user_keys", "n_identities"), n_label="ids"),
            Row("protected (stolen key) TAR@FAR=1e-3", ("templates", "verification_stolen_key", "tar"),
                n=("templates", "verification_stolen_key", "n_identities"), n_label="ids"),
            Row("protected (per-user keys) EER", ("templates", "verification_per_user_keys", "eer"), ci=None,
                n=("templates", "verification_per_user_keys", "n_identities"), n_label="ids"),
            Row("linkage AUC (0.5 = unlinkable)", ("templates", "unlinkability", "linkage_auc"),
                n=("templates", "unlinkability", "n_identities"), n_label="ids")),
           note="dlib embeddings; test 968 images / 48 identities; interval = identity bootstrap."),
    Source("Embedding audit (`audit-embeddings`)", "docs/audit_inversion_results.json",
           "faceprivacy audit-embeddings --embedder dlib --no-probes --no-templates --cache-dir out/audit_cache "
           "--threads 1 --out out/audit60c",
           "docs/audit.md (inversion, 60 held-out targets)",
           tuple(Row(f"{label} type {t} ({judge})", ("inversion", "attacks", key, f"type{t.count('I')}"),
                     n_label="targets")
                 for key, label in (("blackbox", "black-box NES"), ("whitebox", "white-box, 100 steps"),
                                    ("whitebox_manifold", "on-manifold white-box, 100 steps"),
                                    ("encoder_reconstruction_ceiling", "generator ceiling"),
                                    ("mapper", "mapper only"))
                 for t, judge in (("I", "dlib"), ("II", "ONNX MobileFaceNet judge")))
           + tuple(Row(f"{label} type II (ONNX judge) after {k} steps",
                       ("inversion", "attacks", key, "success_vs_steps", {"steps": k}, "type2"), n_label="targets")
                   for key, label in (("whitebox", "white-box"), ("whitebox_manifold", "on-manifold white-box"))
                   for k in (20, 50))
           + tuple(Row(f"{label}, seconds per target", ("inversion", "attacks", key, "seconds_per_inversion"),
                       ci=None, n=("inversion", "n_targets"), n_label="targets", fmt="{:.1f}")
                   for key, label in (("whitebox", "white-box (100 steps)"),
                                      ("whitebox_manifold", "on-manifold white-box (100 steps)"),
                                      ("blackbox", "black-box (early stop)")))
           + (Row("a real other photo, type I (dlib)", ("inversion", "type1_reference_real_photo"), n_label="targets"),
              Row("a real other photo, type II (ONNX judge)", ("inversion", "type2_reference_real_photo"),
                  n_label="targets"),
              Row("black-box queries per target, mean", ("inversion", "attacks", "blackbox", "queries_per_inversion"),
                  ci=None, n=("inversion", "n_targets"), n_label="targets", fmt="{:.0f}")),
           note="60 targets, one photo each of 60 held-out people (test + val identities of the training root, never "
                "seen by the mapper); thresholds at FAR 1e-3 from all impostor pairs of the training identities."),
    Source("Embedding audit (`audit-embeddings`)", "docs/audit_inversion_ensemble_results.json",
           "faceprivacy audit-embeddings --embedder dlib --no-probes --no-templates --wb-ensemble mobilefacenet "
           "--wb-steps 50 --cache-dir out/audit_cache --threads 1 --out out/audit60e",
           "docs/audit.md (ensemble white-box on the same 60 targets)",
           tuple(Row(f"{label}, 50 steps, type II (ONNX judge)", ("inversion", "attacks", key, "type2"),
                     n_label="targets")
                 for key, label in (("whitebox_ensemble", "ensemble white-box (dlib + CASIA MFN)"),
                                    ("whitebox", "white-box"), ("whitebox_manifold", "on-manifold white-box"))),
           note="Same 60 targets and thresholds as above; the ensemble's CASIA target is predicted from the dlib "
                "template (ridge on training identities)."),
    # ---- unlearning
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_pooled70-189.json",
           _UNL_POOLED189, "docs/unlearn.md (headline: all 120 fresh requests per K of the fifth MetaLoss, pooled)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn"),
           note="One summary over the five fresh seed sets 70-89, 90-109, 110-129, 130-159 and 160-189 (the interval "
                "is over all 120 requests per K); nothing was chosen on any of them. Seeds 160-189 were run after "
                "declaring that this pool would be the claim whatever it showed."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds160-189.json",
           _UNL_CMD.format(seeds=_UNL_SEEDS160, methods="none metaunlearn", out="160-189"),
           "docs/unlearn.md (fifth fresh set, seeds 160-189)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn")),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_pooled70-159.json",
           _UNL_POOLED, "docs/unlearn.md (the previous headline: 90 fresh requests per K, pooled)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn"),
           note="One summary over the four fresh seed sets 70-89, 90-109, 110-129 and 130-159 (the interval is over "
                "all 90 requests per K); nothing was chosen on any of them."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds130-159.json",
           _UNL_CMD.format(seeds=_UNL_SEEDS130, methods="none metaunlearn retrain_other_seed", out="130-159"),
           "docs/unlearn.md (fourth fresh set, seeds 130-159, with the second-retraining ceiling)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn")
           + _unlearn(5, "retrain_other_seed", with_mia=False) + _unlearn(10, "retrain_other_seed", with_mia=False),
           note="retrain_other_seed: a second retraining with another seed, scored against the reference: the ToW "
                "ceiling. MetaUnlearn rows first ran without it (out/unl_fresh130-159), with identical numbers."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds110-129.json",
           _UNL_CMD.format(seeds=_UNL_SEEDS110, methods="none metaunlearn", out="110-129").replace(
               "--threads 1", "--threads 2"),
           "docs/unlearn.md (third set of twenty fresh seeds, 110-129, fifth MetaLoss, nothing chosen)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn") + _unl_retrained_mia(),
           note="References retrained in the same invocation (reference cache); the default unchanged since seeds "
                "70-89. Pooled with 70-89 and 90-109: 60 fresh requests per K."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds90-109.json",
           _UNL_CMD.format(seeds=_UNL_SEEDS90, methods="none metaunlearn", out="90-109"),
           "docs/unlearn.md (headline, seeds 90-109, fifth MetaLoss)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn") + _unl_retrained_mia()
           + _unl_original_test(),
           note="References retrained first with --methods none (same command); the default (fifth MetaLoss, fixed "
                "step) was kept on tuning requests only (seeds 0-4, 10-19, 1000-1005, 2000-2009)."),
    Source("Unlearning (`eval-unlearning --task identity`)",
           "docs/unlearn_identity_results_seeds90-109_support_ce.json",
           _UNL_CMD.format(seeds=_UNL_SEEDS90, methods="none metaunlearn --support-ce 1.65 0.25",
                           out="90-109_rule"),
           "docs/unlearn.md (headline, paired: the request-time step rule, not the default)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn"),
           note="The --support-ce option on the same twenty fresh requests, run after the headline; not adopted."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds70-89.json",
           _UNL_CMD.format(seeds=_UNL_SEEDS70, methods="none metaunlearn", out="70-89"),
           "docs/unlearn.md (previous headline, seeds 70-89, fifth MetaLoss)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn") + _unl_retrained_mia()
           + _unl_original_test(),
           note="Run after the two sets below had filled the reference cache (retrained models); the fifth MetaLoss "
                "was chosen on tuning requests only (seeds 0-4, 10-19, 1000-1005)."),
    Source("Unlearning (`eval-unlearning --task identity`)",
           "docs/unlearn_identity_results_seeds70-89_fourth_metaloss.json",
           _UNL_FOURTH + "; " + _UNL_CMD.format(seeds=_UNL_SEEDS70, methods="none metaunlearn",
                                               out="70-89_fourth").replace(
               "faceprivacy/models/weights/unlearn_idhead_metaloss.pt", "fourth.pt"),
           "docs/unlearn.md (previous headline, paired comparison with the fourth MetaLoss)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn"),
           note="The previous (fourth) MetaLoss on the same twenty fresh requests, run after the headline."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds70-79.json",
           _UNL_CMD.format(seeds="70 71 72 73 74 75 76 77 78 79", methods="none metaunlearn", out="70"),
           "docs/unlearn.md (previous headline, seeds 70-79)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn") + _unl_retrained_mia(),
           note="References retrained in the same run (they do not depend on the MetaLoss)."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds80-89.json",
           _UNL_CMD.format(seeds="80 81 82 83 84 85 86 87 88 89", methods="none metaunlearn", out="80"),
           "docs/unlearn.md (previous headline, seeds 80-89)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn") + _unl_retrained_mia(),
           note="References retrained in the same run (they do not depend on the MetaLoss)."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds50-59.json",
           _UNL_FOURTH + "; " + _UNL_CMD.format(seeds="50 51 52 53 54 55 56 57 58 59", methods="none metaunlearn",
                                               out="50").replace(
               "faceprivacy/models/weights/unlearn_idhead_metaloss.pt", "fourth.pt"),
           "docs/unlearn.md (previous run, seeds 50-59, fourth MetaLoss)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn") + _unlearn(5, "none", with_drop=False)
           + _unlearn(10, "none", with_drop=False)
           + (Row("K=5 retrained: forget-set MIA AUC", ("summary", {"K": 5, "method": "retrained"}, "MIA_AUC"),
                  n=("summary", {"K": 5, "method": "retrained"}, "n_seeds"), n_label="requests"),
              Row("K=10 retrained: forget-set MIA AUC", ("summary", {"K": 10, "method": "retrained"}, "MIA_AUC"),
                  n=("summary", {"K": 10, "method": "retrained"}, "n_seeds"), n_label="requests"),
              Row("original model test accuracy", ("original", "acc", "test"), ci=None, n=("data", "n_test"),
                  n_label="test images")),
           note="The first invocation ran `--methods none` to fill the reference cache (retrained models), before "
                "the fourth MetaLoss existed; the MetaLoss was chosen on tuning requests only (seeds 0-4, 10-19, "
                "1000-1005)."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds60-69.json",
           _UNL_FOURTH + "; " + _UNL_CMD.format(seeds="60 61 62 63 64 65 66 67 68 69", methods="none metaunlearn",
                                               out="60").replace("out/refcache", "out/refcache60").replace(
               "faceprivacy/models/weights/unlearn_idhead_metaloss.pt", "fourth.pt"),
           "docs/unlearn.md (confirmation, seeds 60-69, fourth MetaLoss)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn")
           + (Row("K=5 retrained: forget-set MIA AUC", ("summary", {"K": 5, "method": "retrained"}, "MIA_AUC"),
                  n=("summary", {"K": 5, "method": "retrained"}, "n_seeds"), n_label="requests"),),
           note="Ten more fresh requests per K, nothing chosen on them."),
    Source("Unlearning (`eval-unlearning --task identity`)",
           "docs/unlearn_identity_results_seeds50-59_third_metaloss.json",
           _UNL_THIRD + "; " + _UNL_CMD.format(seeds="50 51 52 53 54 55 56 57 58 59", methods="none metaunlearn",
                                              out="50_third").replace(
               "faceprivacy/models/weights/unlearn_idhead_metaloss.pt", "third.pt"),
           "docs/unlearn.md (previous run, paired comparison with the third MetaLoss)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn"),
           note="The previous (third) MetaLoss on the same ten fresh requests, run after the choice."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds40-49.json",
           _UNL_THIRD + "; " + _UNL_CMD.format(seeds="40 41 42 43 44 45 46 47 48 49", methods="none metaunlearn",
                                              out="").replace(
               "faceprivacy/models/weights/unlearn_idhead_metaloss.pt", "third.pt"),
           "docs/unlearn.md (previous run, seeds 40-49, third MetaLoss)",
           _unlearn(5, "metaunlearn") + _unlearn(10, "metaunlearn") + _unlearn(5, "none", with_drop=False)
           + _unlearn(10, "none", with_drop=False)
           + (Row("K=5 retrained: forget-set MIA AUC", ("summary", {"K": 5, "method": "retrained"}, "MIA_AUC"),
                  n=("summary", {"K": 5, "method": "retrained"}, "n_seeds"), n_label="requests"),),
           note="Run in the previous stop with the then-bundled (third) MetaLoss; the first invocation ran "
                "`--methods none` to fill the reference cache (retrained models)."),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results_seeds10-19.json",
           "see docs/unlearn.md, 'Previous run: seeds 10-19' (same recipe, seeds 10-19)",
           "docs/unlearn.md (previous run)",
           (Row("K=5 metaunlearn: ToW", ("summary", {"K": 5, "method": "metaunlearn"}, "ToW"),
                n=("summary", {"K": 5, "method": "metaunlearn"}, "n_seeds"), n_label="requests"),
            Row("K=10 metaunlearn: ToW", ("summary", {"K": 10, "method": "metaunlearn"}, "ToW"),
                n=("summary", {"K": 10, "method": "metaunlearn"}, "n_seeds"), n_label="requests"))),
    Source("Unlearning (`eval-unlearning --task identity`)", "docs/unlearn_identity_results.json",
           "faceprivacy eval-unlearning --from-json docs/unlearn_identity_results.json --out out/unl_prev   "
           "# intervals of the seeds 0-4 run", "docs/unlearn.md (previous run, seeds 0-4)",
           (Row("K=5 metaunlearn: ToW (seeds 0-4)", ("summary", {"K": 5, "method": "metaunlearn"}, "ToW"),
                n=("summary", {"K": 5, "method": "metaunlearn"}, "n_seeds"), n_label="requests"),
            Row("K=10 metaunlearn: ToW (seeds 0-4)", ("summary", {"K": 10, "method": "metaunlearn"}, "ToW"),
                n=("summary", {"K": 10, "method": "metaunlearn"}, "n_seeds"), n_label="requests"))),
    # ---- federated
    Source("Federated (`fed-simulate`)", "docs/fed_seeds.json",
           "faceprivacy fed-simulate --data ../shared/datakit --backbone dlib-level0 --rounds 60 --clients-per-round "
           "50 --eval-every 10 --methods fedface,fedavg,central --seeds 0,1,2 --feature-cache runs/featcache "
           "--geometry cosine --margin 0.972 --spread-margin 0.9 --spread-lr 30 --server-opt adam --server-lr 1e-5 "
           "--embedding-lr 0 --lr 0.001 --out runs/fed_seeds_cos",
           "docs/federated.md (three seeds: the cosine setting chosen on the folds this stop; flags, not the default)",
           _fed_claim("", "FedFace share of the centralised gain (goal >= 0.70)",
                      "seeds with FedFace above FedAvg at every evaluation round (goal: all)"),
           note="Seeds share the 48 test identities; a single TAR@1e-3 has an identity-bootstrap interval of about "
                "+-5 points (docs/federated.md), wider than every gain here."),
    Source("Federated (`fed-simulate`)", "docs/fed_seeds_euclid.json",
           "faceprivacy fed-simulate --data ../shared/datakit --backbone dlib-level0 --rounds 60 --clients-per-round "
           "50 --eval-every 10 --methods fedface,fedavg,central --seeds 0,1,2 "
           "--feature-cache runs/featcache --out runs/fed_seeds_final", "docs/federated.md (three seeds: the euclidean preset = the fed-simulate / fed-server default, previous stop's claim)",
           _fed_claim("euclidean preset: ", "FedFace share of the centralised gain",
                      "seeds with FedFace above FedAvg at every round"),
           note="Seeds share the 48 test identities; a single TAR@1e-3 has an identity-bootstrap interval of about "
                "+-5 points (docs/federated.md), wider than every gain here."),
    Source("Federated (`fed-simulate`)", "docs/fed_val_cos.json",
           "faceprivacy fed-simulate --data ../shared/datakit --eval-split val --feature-cache runs/featcache "
           "--rounds 60 --eval-every 10 --seeds 0,1,2 --methods fedface,fedavg --geometry cosine --margin 0.972 "
           "--spread-margin 0.9 --spread-lr 30 --server-opt adam --server-lr 1e-5 --embedding-lr 0 --lr 0.001 "
           "--out runs/val_cos_m90s30_ffa",
           "docs/federated.md (three seeds: validation folds)",
           tuple(Row(f"validation, 3 folds, cosine setting: {m} TAR@1e-3 gain (points), mean over folds",
                     ("gain_points", m, "mean"), ci=None, sd=("gain_points", m, "sd"), n=len_path("seeds"),
                     n_label="folds", fmt="{:+.2f}") for m in ("fedface", "fedavg")),
           note="The setting chosen on the folds for the claim (docs/fed_seeds.json); choices only."),
    Source("Federated (`fed-simulate`)", "docs/fed_val_preset.json",
           "faceprivacy fed-simulate --data ../shared/datakit --eval-split val --feature-cache runs/featcache "
           "--rounds 60 --eval-every 10 --seeds 0,1,2 --methods fedface --out runs/val_lr1e5",
           "docs/federated.md (three seeds: validation folds)",
           (Row("validation, 3 folds: FedFace (preset) TAR@1e-3 gain (points), mean over folds",
                ("gain_points", "fedface", "mean"), ci=None, sd=("gain_points", "fedface", "sd"),
                n=len_path("seeds"), n_label="folds", fmt="{:+.2f}"),),
           note="Choices only (validation identities); fold k = the 24 validation identities + 40 training "
                "identities held out with seed 123 + k."),
    Source("Federated (`fed-simulate`)", "docs/fed_val_s2e5.json",
           "faceprivacy fed-simulate --data ../shared/datakit --eval-split val --feature-cache runs/featcache "
           "--rounds 60 --eval-every 10 --methods fedface,fedavg,central --seeds 0,1,2 --server-lr 2e-5 "
           "--out runs/val_base",
           "docs/federated.md (three seeds: validation folds)",
           tuple(Row(f"validation, 3 folds, server lr 2e-5: {m} TAR@1e-3 gain (points), mean over folds",
                     ("gain_points", m, "mean"), ci=None, sd=("gain_points", m, "sd"), n=len_path("seeds"),
                     n_label="folds", fmt="{:+.2f}") for m in ("fedface", "fedavg", "central"))),
    Source("Federated (`fed-simulate`)", "docs/fed_privacy.json",
           "PYTHONPATH=. python -m benchmarks.fed_privacy --data ../shared/datakit --out runs/fed_privacy "
           "--noise 0,0.5,2 --clip 0.05 --rounds 30 --clients-per-round 50 --feature-cache runs/featcache",
           "docs/federated.md (uploads and DP)",
           tuple(r for noise in (0.0, 0.5, 2.0) for r in (
               Row(f"noise {noise:g}: epsilon (delta 1e-5)", ("rows", {"noise": noise}, "epsilon"), ci=None, n=None,
                   fmt="{:.1f}"),
               Row(f"noise {noise:g}: upload linkage rank-1 (chance 0.006)", ("rows", {"noise": noise},
                                                                                "linkage_rank1"), n_label="clients"),
               Row(f"noise {noise:g}: gender probe on uploads (majority 0.611)",
                   ("rows", {"noise": noise}, "gender_probe_accuracy"), n_label="clients"),
               Row(f"noise {noise:g}: inversion of uploads nearest to own template (rank-1, chance 0.006)",
                   ("rows", {"noise": noise}, "inversion", "rank1"), n_label="clients"),
               Row(f"noise {noise:g}: TAR@1e-3 after 30 rounds", ("rows", {"noise": noise}, "tar@far=1e-3"),
                   ci=None, n=("test_identities",), n_label="test ids", fmt="{:.4f}")))),
    # ---- generator
    Source("Generator (`eval-generator`)", "docs/generator_eval.json",
           "faceprivacy eval-generator --data ../shared/datakit --out out/eval_generator", "docs/generator.md",
           (Row("reconstruction verified by MobileFaceNet at FAR 1e-3 (goal >= 0.70)",
                ("recon_mobilefacenet_pass@far1e-3",), ci=("intervals", "recon_mobilefacenet_pass@far1e-3", "ci95"), n=("n_test_images",), n_label="images"),
            Row("two real photos of a test person pass the same threshold", ("mobilefacenet_real_pair_tar@far1e-3",),
                ci=None, n=("n_test_identities",), n_label="ids"),
            Row("reconstruction verified by the ONNX MobileFaceNet judge at FAR 1e-3", ("recon_onnx_judge_pass@far1e-3",),
                ci=("intervals", "recon_onnx_judge_pass@far1e-3", "ci95"), n=("n_test_images",), n_label="images"),
            Row("two real photos of a test person pass the judge's threshold", ("onnx_judge_real_pair_tar@far1e-3",),
                ci=("intervals", "onnx_judge_real_pair_tar@far1e-3", "ci95"), n=("n_test_identities",), n_label="ids"),
            Row("reconstruction verified by dlib (< 0.6) (goal >= 0.80)", ("recon_dlib_pass@0.6",), ci=("intervals", "recon_dlib_pass@0.6", "ci95"),
                n=("n_test_images",), n_label="images"),
            Row("mean SSIM of reconstructions", ("ssim_mean",), ci=("intervals", "ssim_mean", "ci95"), n=("n_test_images",), n_label="images"),
            Row("mean PSNR of reconstructions (dB)", ("psnr_mean",), ci=("intervals", "psnr_mean", "ci95"), n=("n_test_images",),
                n_label="images", fmt="{:.1f}"),
            Row("prior samples with a HOG detection (goal >= 0.90)", ("samples_hog_detect_rate",), ci=None,
                n=("n_samples",), n_label="samples"),
            Row("HOG detection on real test crops", ("real_hog_detect_rate",), ci=None, n=("n_samples",),
                n_label="crops"),
            Row("KID samples vs real test faces (MFN features)", ("kid_samples_vs_real_mfn",), ci=None,
                sd=("kid_samples_vs_real_mfn_std",), n=("n_samples",), n_label="samples", fmt="{:.4f}")),
           note="Intervals: 95 % bootstrap over the 48 test identities (rates and means of reconstructions); the MobileFaceNet without ONNX is the CASIA checkpoint; thresholds from all impostor pairs of the validation identities."),
    Source("Generator (`eval-generator`)", "docs/generator_eval_supp.json",
           "faceprivacy eval-generator --data ../shared/datakit --out out/eval_generator   (supplementary functions; "
           "the committed values were run separately, docs/generator.md)", "docs/generator.md (supplementary)",
           (Row("prior samples with a HOG detection, 16-px border", ("samples_hog_detect_rate_pad16",), ci=None,
                n=500, n_label="samples"),
            Row("KID real train-identity faces vs real test faces (floor)", ("kid_real_train_ids_vs_real_test_mfn",),
                ci=None, n=None, fmt="{:.4f}"))),
    # ---- MRI
    Source("MRI defacing (`deface`, `eval-deface`)", "docs/mri_eval_deface.json",
           "faceprivacy eval-deface --data ../shared/datakit --out out/eval_deface", "docs/mri.md",
           (Row("mask: scans defaced", ("summary", "mask", "rows"), ci=None, n=None, fmt="{}"),
            Row("mask: scans with brain voxels removed (independent mask)",
                ("summary", "mask", "rows_with_brain_removed_independent"), ci=None, n=("summary", "mask", "rows"),
                n_label="scans", fmt="{}"),
            Row("shear: scans with brain voxels removed", ("summary", "shear", "rows_with_brain_removed_independent"),
                ci=None, n=("summary", "shear", "rows"), n_label="scans", fmt="{}"),
            Row("shear: face coverage, min", ("summary", "shear", "face_coverage_min"), ci=None,
                n=("summary", "shear", "rows"), n_label="scans", fmt="{:.5f}"),
            Row("header-rotated copies: registration error, max (mm)", ("summary", "rotated_registration_error_mm_max"),
                ci=None, n=None, fmt="{:.2f}"),
            Row("mask run per scan, median wall s (loaded machine)", ("summary", "mask_run_wall_s_median"), ci=None,
                n=("summary", "mask", "rows"), n_label="scans", fmt="{:.1f}"),
            Row("mask run per scan, median CPU s", ("summary", "mask_run_cpu_s_median"), ci=None,
                n=("summary", "mask", "rows"), n_label="scans", fmt="{:.1f}"),
            Row("chris_t1 mask: wall-time ratio to quickshear",
                ("speed_vs_quickshear", "chris_t1", "mask", "ratio_wall_vs_quickshear"), ci=None, n=1,
                n_label="run", fmt="{:.1f}"),
            Row("colin27_ch2 mask: wall-time ratio to quickshear",
                ("speed_vs_quickshear", "colin27_ch2", "mask", "ratio_wall_vs_quickshear"), ci=None, n=1,
                n_label="run", fmt="{:.1f}"))),
    Source("MRI defacing (`deface`, `eval-deface`)", "docs/mri_loho_noprior.json", _LOHO_CMD.format(steps=80, p=""),
           "docs/mri.md (leave-one-head-out)", _loho("no prior")[0::3] + _loho("no prior")[1::3]),
    Source("MRI defacing (`deface`, `eval-deface`)", "docs/mri_loho_prior.json",
           _LOHO_CMD.format(steps=80, p=" --prior"), "docs/mri.md (leave-one-head-out)", _loho("template prior")),
    Source("MRI defacing (`deface`, `eval-deface`)", "docs/mri_loho_prior300.json",
           _LOHO_CMD.format(steps=300, p=" --prior"), "docs/mri.md (leave-one-head-out)",
           _loho("template prior, 300 steps")[0::3]),
    # ---- video (issue 16, branch i16v)
    Source("Video (`anonymize clip.mp4`, `eval-video`)", "docs/video_eval_v6.json",
           "OMP_NUM_THREADS=1 faceprivacy eval-video --threads 1 -o out/video_v6", "docs/video.md (sixth run: the "
           "shipped default, with the CenterFace union detector)", (
               Row("donor frames/s relative to blur, CPU time (10 s 720p, 3 faces)",
                   ("cpu_fps_ratio_to_blur", "donor"), ci=None, n=1, n_label="run", fmt="{:.2f}"),
               Row("donor frames/s relative to blur, wall time (loaded machine)",
                   ("fps_ratio_to_blur", "donor"), ci=None, n=1, n_label="run", fmt="{:.2f}"),
               Row("donor identity switches", ("methods", {"method": "donor"}, "id_switches"), ci=None,
                   n=("config", "faces"), n_label="people", fmt="{}"),
               Row("donor face-frames missed", ("methods", {"method": "donor"}, "missed_face_frames"), ci=None,
                   n=("methods", {"method": "donor"}, "face_frames_gt"), n_label="face-frames", fmt="{}"),
               Row("donor .mkv recovery: bit-identical frames", ("methods", {"method": "donor"},
                                                                 "recovery_identical_frames"), ci=None,
                   n=("methods", {"method": "donor"}, "frames"), n_label="frames", fmt="{}"),
               Row("donor .mp4 (H.264) recovery PSNR, worst frame (dB)",
                   ("lossy_mp4", "anonymize_time_check", "psnr_min"), ci=None,
                   n=("lossy_mp4", "frames"), n_label="frames", fmt="{:.1f}"),
               Row("donor people obscured by the safety net", ("methods", {"method": "donor"},
                                                               "safety_obscured_people"), ci=None,
                   n=("config", "faces"), n_label="people", fmt="{}"),
               Row("donor views verified as the original (dlib distance < 0.6)",
                   ("methods", {"method": "donor"}, "stranger", "verified_as_original_rate"), ci=None,
                   n=("methods", {"method": "donor"}, "stranger", "views"), n_label="views", fmt="{:.3f}"))),
)


class MissingKey(LookupError):
    pass


def resolve(data, path):
    node = data
    for key in path:
        if isinstance(key, dict):
            if not isinstance(node, list):
                raise MissingKey(f"expected a list at {key}")
            hits = [x for x in node if isinstance(x, dict) and all(x.get(k) == v for k, v in key.items())]
            if len(hits) != 1:
                raise MissingKey(f"{len(hits)} list elements match {key}")
            node = hits[0]
        elif isinstance(key, int):
            if not isinstance(node, list) or not -len(node) <= key < len(node):
                raise MissingKey(f"no index {key}")
            node = node[key]
        else:
            if not isinstance(node, dict) or key not in node:
                raise MissingKey(f"no key {key!r}")
            node = node[key]
    return node


def _fmt_path(path) -> str:
    parts = []
    for k in path:
        if isinstance(k, dict):
            parts.append("[" + ",".join(f"{a}={b}" for a, b in k.items()) + "]")
        else:
            parts.append(str(k))
    return ".".join(parts)


def _num(fmt: str, x) -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | float):
        return fmt.format(x)
    return str(x)


def measure(data, row: Row) -> dict:
    """value, ci, n strings of one row (raises MissingKey)."""
    node = resolve(data, row.path)
    ci = None
    n = None
    if isinstance(node, dict) and "value" in node:
        value = node["value"]
        ci = node.get("ci95") if row.ci == "auto" else None
        if row.n == "auto" and "n" in node:
            n = str(node["n"])
            if "n_ids" in node and node["n_ids"] != node["n"]:
                n += f" ({node['n_ids']} ids)"
    else:
        value = node
        if row.ci == "auto" and row.path:
            parent = resolve(data, row.path[:-1])
            sib = f"{row.path[-1]}_ci95"
            ci = parent.get(sib) if isinstance(parent, dict) else None
    if isinstance(row.ci, tuple):
        ci = resolve(data, row.ci)
    if isinstance(row.n, _LenPath):
        n = str(len(resolve(data, tuple(row.n))))
    elif isinstance(row.n, tuple):
        n = _num("{}", resolve(data, row.n))
    elif isinstance(row.n, int | str) and row.n != "auto":
        n = str(row.n)
    if n is not None and row.n_label and not n.endswith("ids)"):
        n = f"{n} {row.n_label}"
    if ci is not None:
        ci_s = f"[{_num(row.fmt, ci[0])}, {_num(row.fmt, ci[1])}]"
    elif row.sd is not None:
        ci_s = f"no interval; sd {_num(row.fmt.replace('+', ''), resolve(data, row.sd))}"
    else:
        ci_s = "—"
    return {"value": _num(row.fmt, value), "ci": ci_s, "n": n or "—"}


def load(source: Source, root: Path = ROOT):
    """Parsed JSON of a source, or None when the file is not in the repo."""
    p = root / source.file
    if not p.exists():
        return None
    return json.loads(p.read_text())


def problems(root: Path = ROOT) -> list[str]:
    """Rows whose key path does not resolve in a present, non-pending JSON."""
    out = []
    for s in SOURCES:
        data = load(s, root)
        if data is None:
            if not s.pending:
                out.append(f"{s.file}: missing")
            continue
        if s.command is None and "command" not in data:
            out.append(f"{s.file}: no command given and none recorded in the JSON")
        for r in s.rows:
            try:
                measure(data, r)
            except MissingKey as e:
                if not s.pending:
                    out.append(f"{s.file}: {r.headline}: {_fmt_path(r.path)}: {e}")
    return out


def render(root: Path = ROOT) -> str:
    lines = [
        "# Headline numbers: value, 95 % interval, n, command",
        "",
        "Generated by `python -m tools.headline_numbers` from the result JSONs committed in `docs/`; do not edit by",
        "hand (`tests/test_headline_numbers.py` fails when this file and the JSONs disagree). Each JSON lists the",
        "command that produced it; each row names the key it was read from. Intervals are the 95 % bootstrap",
        "intervals stored in the JSON (resampling identities, or requests for unlearning); \"—\" means the JSON",
        "has none. Where a number in the prose of a doc differs from this table, this table is what the committed",
        "JSON says.",
        "",
    ]
    systems: list[str] = []
    for s in SOURCES:
        if s.system not in systems:
            systems.append(s.system)
    lines.append("Systems: " + ", ".join(systems) + ".")
    lines.append("")
    not_measured = []
    for system in systems:
        lines += [f"## {system}", ""]
        for s in (x for x in SOURCES if x.system == system):
            data = load(s, root)
            if data is None:
                lines += [f"### `{s.file}` — not yet measured", "",
                          f"No such file in the repo; quoted in {s.doc}." + (f" {s.note}" if s.note else ""), ""]
                lines += [f"- {r.headline}" for r in s.rows] + [""]
                not_measured.append(s.file)
                continue
            command = data.get("command") if isinstance(data.get("command"), str) else s.command
            command = command or "(no command recorded)"
            lines += [f"### `{s.file}` ({s.doc})", "", "```", command, "```", ""]
            if s.note:
                lines += [s.note, ""]
            lines += ["| headline | value | 95 % interval | n | JSON key |", "|---|---|---|---|---|"]
            for r in s.rows:
                try:
                    m = measure(data, r)
                except MissingKey as e:
                    m = {"value": f"KEY MISSING ({e})", "ci": "—", "n": "—"}
                lines.append(f"| {r.headline} | {m['value']} | {m['ci']} | {m['n']} | `{_fmt_path(r.path)}` |")
            lines.append("")
    lines += ["## Not yet measured", ""]
    lines += [f"- `{f}`" for f in not_measured] or ["(none)"]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.headline_numbers", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/NUMBERS.md is out of date")
    ap.add_argument("--out", default=OUT, help=f"output file, relative to the repo root (default {OUT})")
    args = ap.parse_args(argv)
    try:
        text = render()
    except json.JSONDecodeError as e:
        print(f"error: a result JSON does not parse: {e}", file=sys.stderr)
        return 2
    out = ROOT / args.out
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"error: {args.out} is out of date; run python -m tools.headline_numbers", file=sys.stderr)
            return 1
        return 0
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    for p in problems():
        print(f"warning: {p}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
