"""``make demo``: run every system once on the bundled defaults and write a landing page.

Each step is a real ``faceprivacy`` command on small inputs (a few minutes in all on 2 cores). Results:
``out/demo/index.html`` (one card per system: headline number, before/after thumbnails, link to its report),
``out/demo/summary.json`` (valid JSON) and one report per system under ``out/demo/<system>/``.
``--index-only`` rebuilds the landing page from an earlier run's ``summary.json``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import traceback
from pathlib import Path

import numpy as np

THUMB = 200  #: thumbnail height in pixels


def _thumb(path_or_img, out: Path, height: int = THUMB) -> str:
    """Save a small PNG thumbnail of an image file or array; return its path (relative names in the summary)."""
    from PIL import Image

    im = Image.open(path_or_img).convert("RGB") if isinstance(path_or_img, str | Path) else \
        Image.fromarray(np.asarray(path_or_img, np.uint8))
    w = max(1, round(im.width * height / im.height))
    im = im.resize((w, height), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, optimize=True)
    return str(out)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _cli(argv: list[str]) -> int:
    """Run one ``faceprivacy`` command in-process; a non-zero exit fails that demo step."""
    from .cli import main as cli_main

    rc = cli_main(["-q", *argv])
    if rc != 0:
        raise RuntimeError(f"faceprivacy {' '.join(argv)} exited {rc}")
    return rc


def core_demo(data_root: Path | None, out: Path) -> dict:
    """Detect + align the astronaut; verify CelebA photo pairs with both recognizers."""
    import skimage.data

    from .core.align import arcface_crop
    from .core.data import celeba_subset, identity_split, load_images
    from .core.detect import FaceDetector
    from .core.embedders import embed_arcface_crops, get_embedder
    from .core.imageio import save_image
    from .core.report import HtmlReport

    img = skimage.data.astronaut()
    face = FaceDetector(upsample=0).detect_one(img)
    crop, _ = arcface_crop(img, face.arcface5)
    save_image(out / "astronaut_crop112.png", crop)
    res: dict = {"astronaut_box": face.box.tolist(),
                 "thumbs": [["photo", _thumb(img, out / "thumb_before.png")],
                            ["aligned crop", _thumb(crop, out / "thumb_after.png")]]}
    rep = HtmlReport("Face detection, alignment and recognition")
    rep.image(np.asarray(crop), "ArcFace-aligned 112x112 crop of the detected face")
    if data_root is not None:
        ds = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))["test"]
        ids = ds.identities[:2]
        a = ds.select_identities([ids[0]]).paths[:2]
        b = ds.select_identities([ids[1]]).paths[:1]
        x = load_images(list(a) + list(b))
        from .core.verification import decide

        rows = []
        for name in ("dlib", "mobilefacenet"):
            emb = get_embedder(name, data_root)
            f = embed_arcface_crops(emb, x)
            same, diff = decide(emb, f[0], f[1]), decide(emb, f[0], f[2])
            res[name] = {"same_person_cosine": float(f[0] @ f[1]), "different_person_cosine": float(f[0] @ f[2]),
                         "threshold": same["threshold"], "correct": bool(same["same"] and not diff["same"])}
            rows.append({"recognizer": name, **res[name]})
            print(f"  {name:14s} same-person cos {res[name]['same_person_cosine']:.3f}   "
                  f"different-person cos {res[name]['different_person_cosine']:.3f}")
        ok = [r["recognizer"] for r in rows if r["correct"]]
        d = res["mobilefacenet"]
        res["headline"] = (f"{len(ok)} of {len(rows)} recognizers right on a same/different pair; MobileFaceNet "
                           f"cosine {d['same_person_cosine']:.2f} vs {d['different_person_cosine']:.2f}")
        rep.findings([f"{r['recognizer']}: same-person cosine {r['same_person_cosine']:.2f}, different-person "
                      f"{r['different_person_cosine']:.2f}, threshold {r['threshold']:.2f} (FAR 1e-3): "
                      f"{'both decisions right' if r['correct'] else 'a decision is wrong'}" for r in rows],
                     verdict=f"{len(ok)} of {len(rows)} recognizers decide both pairs right",
                     level="good" if len(ok) == len(rows) else "warn")
        rep.small_n(2, "people")
        rep.table(rows, labels={"same_person_cosine": "same person (cosine; higher is better)",
                                "different_person_cosine": "different people (cosine; lower is better)",
                                "threshold": "threshold at FAR 1e-3 (cosine)", "correct": "both decisions right"})
    else:
        res["headline"] = "face found and aligned"
    res["report"] = str(rep.write(out / "report.html"))
    return res


def generator_demo(data_root: Path | None, out: Path) -> dict:
    """Encode/decode held-out faces and sample the bundled lite generator (small evaluation)."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    import json

    _cli(["eval-generator", "--data", str(data_root), "--out", str(out), "--max-test", "48", "--n-samples", "48"])
    m = json.loads((out / "generator_eval.json").read_text())
    from PIL import Image

    sheet = np.asarray(Image.open(out / "contact_sheet.png").convert("RGB"))
    h = (sheet.shape[0] - 2) // 5  # 5 rows: real, reconstruction, 2 x samples, interpolation
    w = h * 3
    return {"report": str(out / "generator_eval.html"),
            "headline": f"{m['recon_mobilefacenet_pass@far1e-3']:.0%} of reconstructions still match their person "
                        f"(MobileFaceNet, n={m['n_test_images']})",
            "thumbs": [["real", _thumb(sheet[:h, :w], out / "thumb_before.png")],
                       ["reconstructed", _thumb(sheet[h:2 * h, :w], out / "thumb_after.png")]]}


def deid_demo(data_root: Path | None, out: Path) -> dict:
    """Anonymize the astronaut with a passphrase, recover her from the output file alone, check the result."""
    import skimage.data

    from .core.detect import FaceDetector
    from .core.embedders import get_embedder
    from .core.imageio import load_image, save_image
    from .core.metrics import psnr
    from .core.pipeline import embed_largest_face
    from .core.report import HtmlReport
    from .core.verification import decide

    src = out / "astronaut.png"
    save_image(src, skimage.data.astronaut())
    pw = out / "passphrase.txt"
    pw.write_text("demo passphrase: correct horse battery staple\n")
    _cli(["anonymize", str(src), "-o", str(out / "anonymized.png"), "--passphrase-file", str(pw)])
    _cli(["anonymize", str(src), "-o", str(out / "blurred.png"), "--passphrase-file", str(pw), "--method", "blur"])
    _cli(["recover", str(out / "anonymized.png"), "-o", str(out / "recovered.png"), "--passphrase-file", str(pw)])
    a, r, x, b = (load_image(out / f) for f in ("astronaut.png", "recovered.png", "anonymized.png", "blurred.png"))
    res: dict = {"psnr_recovered_vs_original": psnr(a, r), "psnr_anonymized_vs_original": psnr(a, x)}
    emb, det = get_embedder("dlib", data_root), FaceDetector(upsample=1)
    fa = embed_largest_face(a, emb, det)
    match = {}
    for name, img in (("anonymized", x), ("blurred", b)):
        try:
            match[name] = decide(emb, fa, embed_largest_face(img, emb, det))
        except Exception as e:  # a blurred face may no longer be found: that is a result, not an error
            match[name] = {"same": False, "cosine": None, "note": str(e)}
    res["dlib_match"] = match
    exact = bool(np.array_equal(a, r))
    res["recovered_exactly"] = exact
    print(f"  recovered exactly: {exact}; anonymized vs original PSNR {res['psnr_anonymized_vs_original']:.1f} dB")
    rep = HtmlReport("De-identification: anonymize and recover one photo", subtitle="faceprivacy anonymize / recover")
    rep.findings([
        f"recovery with the right passphrase: {'exact (every pixel equal)' if exact else 'NOT exact'}",
        *(f"dlib finds no face in the {k} image" if v["cosine"] is None else
          f"dlib says the {k} face is {'still' if v['same'] else 'not'} the original person "
          f"(cosine {_num(v['cosine'])}, same-person threshold {_num(v.get('threshold'))} at FAR 1e-3)"
          for k, v in match.items()),
    ], verdict=("the anonymized face no longer matches the original; the original comes back exactly"
                if exact and not match["anonymized"]["same"] else "check: see the findings"),
        level="good" if exact and not match["anonymized"]["same"] else "bad")
    rep.small_n(1, "photos")
    rep.image(np.concatenate([a, x, b, r], axis=1)[::2, ::2], "original | anonymized (riddle) | blurred | recovered")
    rep.table([{"output": k, "matched by dlib": v["same"], "cosine to the original": v["cosine"]}
               for k, v in match.items()], labels={"matched by dlib": "matched by dlib (no is better)"})
    res["report"] = str(rep.write(out / "report.html"))
    res["headline"] = (f"anonymized face matched by dlib: {'yes' if match['anonymized']['same'] else 'no'}; "
                       f"recovered {'exactly' if exact else 'NOT exactly'}")
    res["thumbs"] = [["before", _thumb(a, out / "thumb_before.png")], ["after", _thumb(x, out / "thumb_after.png")]]
    return res


def audit_demo(data_root: Path | None, out: Path) -> dict:
    """Quick embedding-leakage audit of dlib embeddings (probes, inversion, protected templates)."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    import json

    _cli(["audit-embeddings", "--embedder", "dlib", "--data", str(data_root), "--out", str(out), "--quick"])
    res = json.loads((out / "audit.json").read_text())
    lifts = [p for p in res.get("probes", []) if p.get("lift") is not None]
    top = max(lifts, key=lambda p: p["lift"]) if lifts else None
    head = f"verification TAR {res['verification_raw']['tar']:.2f}"
    if top:
        head = (f"{top['attribute']} readable from the embedding: lift {top['lift']:+.2f} over the trivial guess "
                f"(probe {top['probe']:.2f}, trivial {top['trivial']:.2f})")
    return {"report": str(out / "audit.html"), "headline": head}


def _mid_sagittal(path: Path) -> np.ndarray:
    """A mid-sagittal slice of a NIfTI head as an 8-bit image (nose to the right, top up)."""
    from .mri.io import load_volume

    v = load_volume(path).data
    sl = v[v.shape[0] // 2 - 6, :, :]  # a little off the midline: the nose and lips are in it
    hi = np.percentile(sl, 99.5) or 1.0
    return np.clip(np.rot90(sl) / hi * 255, 0, 255).astype(np.uint8)


def mri_demo(data_root: Path | None, out: Path) -> dict:
    """Deface a real whole-head T1 (Chris, MRIcron) with the FSL-free template-mask defacer."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    import json

    from .core.report import HtmlReport

    head = data_root / "mri_heads" / "chris_t1_mricron" / "chris_t1.nii.gz"
    dest = out / "chris_t1_defaced.nii.gz"
    _cli(["deface", str(head), "-o", str(dest), "--method", "mask", "--data", str(data_root),
          "--json", str(out / "deface.json")])
    info = json.loads((out / "deface.json").read_text())
    before, after = _mid_sagittal(head), _mid_sagittal(dest)
    ok = info["brain_voxels_removed"] == 0
    rep = HtmlReport("MRI defacing: one whole-head T1", subtitle="faceprivacy deface --method mask")
    rep.findings([f"brain voxels removed: {info['brain_voxels_removed']} (goal 0)",
                  f"face removed: {info['face_coverage']:.0%} of the face region",
                  f"took {info.get('total_s', float('nan')):.0f} s on this machine"],
                 verdict="face removed, brain untouched" if ok else "brain voxels were removed", level="good" if ok
                 else "bad")
    rep.small_n(1, "scans")
    rep.image(np.concatenate([before, after], axis=1), "mid-sagittal slice before | after defacing")
    rep.table([{k: v for k, v in info.items() if isinstance(v, int | float) and not isinstance(v, bool)}])
    rep.paragraph("Re-identification of defaced heads (renders against a gallery): faceprivacy mri-audit BIDS_DIR.")
    return {"defaced": str(dest), "report": str(rep.write(out / "report.html")),
            "headline": f"brain voxels removed {info['brain_voxels_removed']}; face removed "
                        f"{info['face_coverage']:.0%}",
            "thumbs": [["before", _thumb(before, out / "thumb_before.png")],
                       ["after", _thumb(after, out / "thumb_after.png")]]}


def federated_demo(data_root: Path | None, out: Path) -> dict:
    """In-process FedFace on the real CelebA clients (167 training identities, one each; dlib head, 40 rounds),
    or on synthetic clients without the datakit."""
    import json

    if data_root is None:
        _cli(["fed-simulate", "--synthetic", "--clients", "40", "--rounds", "3", "--out", str(out)])
    else:
        _cli(["fed-simulate", "--data", str(data_root), "--rounds", "40", "--eval-every", "20",
              "--methods", "fedface", "fedavg", "--out", str(out)])
    rows = {r["method"]: r for r in json.loads((out / "fed_results.json").read_text())["summary"]}
    head = ", ".join(f"{m} {r['tar@far=1e-3']:.3f}" for m, r in rows.items())
    res = {"report": str(out / "fed_report.html"), "headline": f"TAR at FAR 1e-3: {head}"}
    if (out / "fed_tar_vs_round.png").is_file():
        res["thumbs"] = [["TAR vs round", _thumb(out / "fed_tar_vs_round.png", out / "thumb_after.png")]]
    return res


def unlearn_demo(data_root: Path | None, out: Path) -> dict:
    """Forget one held-out CelebA person from the bundled task model with MetaUnlearn, from one photo."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    import torch

    from .core.data import celeba_subset, identity_split, load_images
    from .core.report import HtmlReport
    from .unlearn.cli import WEIGHTS_MODEL, _weights
    from .unlearn.model import load_model, predict, to_float
    from .unlearn.request import load_support

    ds = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))["test"]
    support = ds.select_identities([ds.identities[0]]).paths[0]
    _cli(["unlearn", "--support", str(support), "--out", str(out / "unlearned.pt"), "--method", "metaunlearn",
          "--labels", "model"])
    before, after = load_model(_weights(WEIGHTS_MODEL)), load_model(out / "unlearned.pt")
    size = before.cfg.size
    x, _ = load_support([str(support)], size)
    others = [ds.select_identities([i]).paths[0] for i in ds.identities[1:41]]
    xo, _ = load_support([str(p) for p in others], size)
    with torch.no_grad():
        pb, pa = (torch.softmax(predict(m, to_float(x)), 1)[0] for m in (before, after))
        ob, oa = (predict(m, to_float(xo)).argmax(1) for m in (before, after))
    lab = int(pb.argmax())
    kept = float((ob == oa).float().mean())
    rep = HtmlReport("Unlearning: forget one person from one photo", subtitle="faceprivacy unlearn --method metaunlearn")
    lab_after = int(pa.argmax())
    rep.findings([f"the model's prediction for the person: class {lab} with p {float(pb[lab]):.2f} before; "
                  f"class {lab_after} with p {float(pa[lab_after]):.2f} after (p of class {lab}: {float(pa[lab]):.2f})",
                  f"predictions unchanged for {kept:.0%} of {len(others)} other held-out people",
                  "the goal is a model that behaves as if retrained without the person, not a low confidence: "
                  "faceprivacy eval-unlearning measures that (ToW, MIA) on held-out requests"],
                 verdict=f"updated from one photo; {kept:.0%} of {len(others)} other people's predictions unchanged",
                 level="info")
    rep.small_n(1, "requests", min_n=5)
    rep.image(load_images([support])[0], "the one support photo")
    rep.table([{"model": "before", "p(label)": float(pb[lab])}, {"model": "after", "p(label)": float(pa[lab])}],
              labels={"p(label)": "confidence in the person's label (lower after is the goal)"})
    return {"model": str(out / "unlearned.pt"), "report": str(rep.write(out / "report.html")),
            "p_label_before": float(pb[lab]), "p_label_after": float(pa[lab]), "others_unchanged": kept,
            "headline": f"one photo → updated model; p(class {lab}) for the person {float(pb[lab]):.2f} → "
                        f"{float(pa[lab]):.2f}; {kept:.0%} of {len(others)} other people unchanged",
            "thumbs": [["support photo", _thumb(load_images([support])[0], out / "thumb_before.png")]]}


DEMOS = (("core", core_demo), ("generator", generator_demo), ("deid", deid_demo), ("audit", audit_demo),
         ("mri", mri_demo), ("federated", federated_demo), ("unlearn", unlearn_demo))
TITLES = {"core": "Detect, align, recognize", "generator": "Face generator (lite)",
          "deid": "De-identify photos (RiDDLE)", "audit": "Audit face embeddings (ID2image)",
          "mri": "Deface head MRI", "federated": "Federated face recognition (FedFace)",
          "unlearn": "Forget a person (MetaUnlearn)"}
COMMANDS = {"core": "faceprivacy verify a.jpg b.jpg", "generator": "faceprivacy eval-generator",
            "deid": "faceprivacy anonymize photos/", "audit": "faceprivacy audit-embeddings --quick",
            "mri": "faceprivacy deface head.nii.gz", "federated": "faceprivacy fed-simulate",
            "unlearn": "faceprivacy unlearn --support person.png"}


def build_index(out: Path, summary: dict) -> Path:
    """The landing page: one card per system (headline, thumbnails, link to its report)."""
    import os

    from .core.report import Card, HtmlReport

    cards = []
    for name, _ in DEMOS:
        r = summary.get(name, {})
        status = "error" if "error" in r else "skipped" if "skipped" in r else "ok"
        imgs = []
        for cap, p in r.get("thumbs", []):
            if Path(p).is_file():
                imgs.append((cap, Path(p).read_bytes()))
        href = os.path.relpath(r["report"], out) if r.get("report") else None
        head = r.get("error") or r.get("skipped") or r.get("headline", "done")
        detail = f"{summary.get(name + '_seconds', '?')} s · try: {COMMANDS[name]}"
        cards.append(Card(TITLES[name], head, detail, href, imgs, status))
    rep = HtmlReport("faceprivacy demo", subtitle="every system once, on real faces and a real head")
    n_ok = sum(c.status == "ok" for c in cards)
    rep.findings([f"{c.title}: {c.headline}" for c in cards if c.status != "ok"],
                 verdict=f"{n_ok} of {len(cards)} systems ran", level="good" if n_ok == len(cards) else "warn")
    rep.cards(cards)
    rep.paragraph("Each card links to the system's report; the numbers come from the commands under 'try'. "
                  "Held-out evaluations with n and 95 % intervals: the eval-* commands (faceprivacy --help).")
    return rep.write(out / "index.html")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datakit", help="datakit folder (default: %(default)s)")
    ap.add_argument("--out", default="out/demo", help="output folder (default: %(default)s)")
    ap.add_argument("--only", nargs="+", choices=[n for n, _ in DEMOS], help="run only these systems")
    ap.add_argument("--index-only", action="store_true", help="rebuild index.html from summary.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    from .core.fileio import atomic_write_json

    if args.index_only:
        import json

        print(f"wrote {build_index(out, json.loads((out / 'summary.json').read_text()))}")
        return 0
    data_root = Path(args.data) if Path(args.data).is_dir() else None
    if data_root is None:
        print(f"note: datakit not found at {args.data}; running the parts that need no data")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}
    if args.only and (out / "summary.json").is_file():
        import json

        summary = json.loads((out / "summary.json").read_text())
    failed = []
    todo = [(n, f) for n, f in DEMOS if not args.only or n in args.only]
    for i, (name, fn) in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {name}", flush=True)
        t0 = time.perf_counter()
        try:
            (out / name).mkdir(parents=True, exist_ok=True)
            summary[name] = fn(data_root, out / name)
        except Exception as e:
            traceback.print_exc()
            summary[name] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        summary[name + "_seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(out / "summary.json", summary)
    index = build_index(out, summary)
    buf = io.StringIO()
    print(f"demo finished: {len(todo) - len(failed)} of {len(todo)} systems ran", file=buf)
    print(f"  wrote     {index}\n            {out / 'summary.json'}", file=buf)
    print(f"  next      open {index}", file=buf)
    print(buf.getvalue(), end="")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
