"""Core commands: ``embed``, ``verify``, ``detect``, ``eval-verification``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import InputError


def _data_root(args: argparse.Namespace) -> Path | None:
    from .paths import default_data_root

    return Path(args.data) if getattr(args, "data", None) else default_data_root()


def _add_common(p: argparse.ArgumentParser) -> None:
    from .detect import DETECTORS, MIN_SCORES, MIN_SIZES
    from .options import add_common

    add_common(p)
    p.add_argument("--detector", choices=DETECTORS, default="hog",
                   help="face detector (cnn: dlib MMOD, slower, more poses; retinaface / rfb320 / centerface: ONNX "
                        "CNNs; a+b: unions, see docs/detection.md)")
    p.add_argument("--upsample", type=int, default=1, help="detector upsampling steps (finds smaller faces)")
    per = ", ".join(f"{k} {v}" for k, v in MIN_SCORES.items())
    p.add_argument("--min-score", type=float, default=None,
                   help=f"lowest detector score kept (default per detector: {per}; lower finds more, and more "
                        "false faces)")
    sizes = ", ".join(f"{k} {v:g}" for k, v in MIN_SIZES.items())
    p.add_argument("--min-size", type=float, default=None,
                   help=f"smallest face side kept, in pixels (default per detector: {sizes})")


def _detector(args: argparse.Namespace):
    from .detect import FaceDetector

    return FaceDetector(args.detector, args.upsample, min_size=args.min_size, min_score=args.min_score,
                        data_root=_data_root(args))


def cmd_detect(args: argparse.Namespace) -> int:
    import numpy as np

    from .fileio import atomic_write_json, check_output
    from .imageio import load_image, save_image

    if args.out:
        check_output(args.out, args.images)
    draws = []
    if args.draw:
        check_output(args.draw, folder=True)
        draws = [Path(args.draw) / (Path(p).stem + "_faces.png") for p in args.images]
        for d in draws:
            check_output(d, args.images)
        if len(set(draws)) != len(draws):
            raise InputError("two inputs share a file name: their --draw outputs would overwrite each other")
    det = _detector(args)
    imgs = [load_image(p) for p in args.images]  # every input checked before anything is written
    results = []
    for i, (path, img) in enumerate(zip(args.images, imgs, strict=True)):
        faces = det.detect(img)
        results.append({"image": str(path), "faces": [
            {"box": f.box.round(1).tolist(), "score": round(f.score, 4),
             "landmarks5": f.arcface5.round(1).tolist()} for f in faces]})
        if args.draw:
            from PIL import Image, ImageDraw

            im = Image.fromarray(img)
            dr = ImageDraw.Draw(im)
            for f in faces:
                dr.rectangle(f.box.tolist(), outline=(0, 255, 0), width=2)
                for x, y in f.arcface5:
                    dr.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(255, 0, 0))
            save_image(draws[i], np.asarray(im))
    if args.out:
        atomic_write_json(args.out, results)
    print(json.dumps(results, indent=1))
    return 0 if all(r["faces"] for r in results) else 1


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from .detect import NO_FACE_HINT
    from .embedders import get_embedder
    from .errors import NoFaceError
    from .fileio import atomic_path, check_output
    from .imageio import load_image
    from .pipeline import embed_largest_face

    if Path(args.out).suffix.lower() != ".npy":
        raise InputError(f"--out {args.out}: embeddings are written as a .npy file (name it *.npy)")
    check_output(args.out, args.images)
    imgs = [load_image(p) for p in args.images]
    emb = get_embedder(args.embedder, _data_root(args))
    det = _detector(args)
    feats = []
    for p, img in zip(args.images, imgs, strict=True):
        try:
            feats.append(embed_largest_face(img, emb, det))
        except NoFaceError:
            raise NoFaceError(f"{p}: no face found ({NO_FACE_HINT})") from None
    feats = np.stack(feats)
    # writing raw embeddings is what this command was explicitly asked to do (--out is required)
    with atomic_path(args.out, suffix=".npy") as tmp:
        np.save(tmp, feats)
    from .options import Summary

    return (Summary(f"embedded {feats.shape[0]} face(s) with {emb.name} ({feats.shape[1]} dimensions)")
            .wrote(args.out).then(f"faceprivacy audit-embeddings --embedder {args.embedder}  # what they leak")
            .print())


def cmd_verify(args: argparse.Namespace) -> int:
    from .embedders import get_embedder
    from .imageio import load_image
    from .pipeline import embed_largest_face
    from .verification import decide

    det = _detector(args)
    ia, ib = load_image(args.a), load_image(args.b)
    out = {}
    for name in args.embedders:
        emb = get_embedder(name, _data_root(args))
        fa, fb = embed_largest_face(ia, emb, det), embed_largest_face(ib, emb, det)
        out[name] = decide(emb, fa, fb, args.threshold)
    print(json.dumps(out, indent=1))
    return 0 if all(v["same"] for v in out.values()) else 1


def cmd_eval_verification(args: argparse.Namespace) -> int:
    from .verification import evaluate_verification

    root = _data_root(args)
    if root is None and not args.dataset.startswith(("folder:", "lfw:")):
        raise InputError("no datakit found: pass --data")
    res = evaluate_verification(args.dataset, root, args.embedders, Path(args.out), split=args.split,
                                n_impostor=args.impostors, seed=args.seed,
                                test_root=Path(args.test_data) if args.test_data else None)
    from .metrics import format_ci
    from .options import Summary

    s = Summary(f"evaluated {len(res['embedders'])} recognizer(s) on {args.dataset} ({res['split']})")
    s.wrote(Path(args.out) / "verification.json", Path(args.out) / "report.html")
    for name, r in res["embedders"].items():
        s.number(f"{name} TAR at FAR=1e-3 (higher is better; 95 % CI over {r.get('n_identities', '?')} ids, "
                 f"{r['n_impostor']} impostor pairs)", format_ci(r["tar@far=0.001"], r.get("tar@far=0.001_ci95")))
        s.number(f"{name} EER (lower is better)", r["eer"])
        for proto in ("pairs10fold", "balanced10fold"):
            if proto in r:
                s.number(f"{name} {proto} accuracy (always-same baseline {r[proto]['always_same_baseline']:.3f})",
                         format_ci(r[proto]))
        c = r.get("calibrated@far=0.001")
        if c:
            s.number(f"{name} at the training root's FAR=1e-3 threshold {c['threshold']:.4f}: TAR / FAR",
                     f"{format_ci(c['tar'], c['tar_ci95'])} / {format_ci(c['far'], c['far_ci95'], digits=5)}")
    s.then(f"open {Path(args.out) / 'report.html'}")
    return s.print()


def _impostors(v: str) -> int | None:
    if v == "all":
        return None
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError("expected 'all' or a number of pairs") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    """Add the core commands."""
    from .options import RUN_DIR_SHOWN, add_out, command, default_run_dir, derived_path

    p = command(sub, "detect", "detect faces and 5 landmarks; print JSON",
                examples=["faceprivacy detect group.jpg", "faceprivacy detect photos/*.jpg --draw faces/ -o faces.json",
                          "faceprivacy detect small_faces.png --upsample 2 --detector cnn"])
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("-o", "--out", help="also write the JSON to this file (default: print only)")
    p.add_argument("--draw", metavar="DIR", help="folder for annotated PNGs (default: none)")
    _add_common(p)
    p.set_defaults(func=cmd_detect)

    p = command(sub, "embed", "embed the largest face of each image (writes raw embeddings: explicit)",
                examples=["faceprivacy embed a.jpg b.jpg            # -> a_embeddings.npy",
                          "faceprivacy embed crops/*.png --embedder mobilefacenet -o crops.npy"])
    p.add_argument("images", nargs="+", help="image files (one embedding each, largest face)")
    p.add_argument("--embedder", default="dlib", help="dlib | mobilefacenet | mobilefacenet-onnx")
    add_out(p, lambda a: derived_path(a.images[0], "embeddings", ".npy"), "FIRST-IMAGE_embeddings.npy",
            help=".npy file for the (N, D) embeddings; they identify people, keep it private")
    _add_common(p)
    p.set_defaults(func=cmd_embed)

    p = command(sub, "verify", "are the largest faces in A and B the same person?",
                examples=["faceprivacy verify a.jpg b.jpg", "faceprivacy verify a.jpg b.jpg --embedders dlib mobilefacenet"])
    p.add_argument("a", help="first image")
    p.add_argument("b", help="second image")
    p.add_argument("--embedders", nargs="+", default=["dlib"], metavar="NAME",
                   help="recognizers to ask: dlib | mobilefacenet | mobilefacenet-onnx")
    _deprecated(p, "--embedder", "embedders", nargs="+")
    p.add_argument("--threshold", type=float, help="cosine threshold (default: calibrated FAR=1e-3)")
    _add_common(p)
    p.set_defaults(func=cmd_verify)

    p = command(sub, "eval-verification", "TAR@FAR / EER of the recognizers on a dataset (JSON + HTML)",
                examples=["faceprivacy eval-verification", "faceprivacy eval-verification --dataset orl --embedders dlib",
                          "faceprivacy eval-verification --dataset lfw:pairs.txt:lfw/ -o lfw_eval/"])
    p.add_argument("--dataset", default="celeba",
                   help="celeba | orl | yale | folder:PATH (identity folders) | lfw:PAIRS.txt:IMAGE_ROOT")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                   help="identity-disjoint split for celeba")
    p.add_argument("--embedders", nargs="+", default=["dlib", "mobilefacenet"], metavar="NAME",
                   help="recognizers to evaluate")
    _deprecated(p, "--embedder", "embedders", nargs="+")
    p.add_argument("--impostors", type=_impostors, default=None,
                   help="impostor pairs: all (default: every impostor pair) or a random sample of N (>= 10/FAR)")
    p.add_argument("--test-data", default=None, metavar="ROOT",
                   help="evaluate on every identity of this separate folder (datakit, images/<id>/ or <id>/ "
                        "folders of aligned crops); thresholds are calibrated on the training root's identities")
    p.add_argument("--seed", type=int, default=0, help="seed of the impostor-pair sampling")
    add_out(p, default_run_dir("eval-verification"), RUN_DIR_SHOWN.format(cmd="verification"),
            help="report folder (verification.json, report.html)")
    _add_common(p)
    p.set_defaults(func=cmd_eval_verification)


def _deprecated(p: argparse.ArgumentParser, old: str, dest: str, **kw) -> None:
    from .options import add_deprecated

    add_deprecated(p, old, dest, **kw)
