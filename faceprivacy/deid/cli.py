"""CLI: ``faceprivacy anonymize``, ``faceprivacy recover``, ``faceprivacy serve``, ``faceprivacy eval-deid``,
``faceprivacy train-deid``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .base import DEFAULT_METHOD, KEYED_METHODS, METHODS
from .riddle.loader import default_encryptor_path, load_riddle  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the de-identification sub-commands."""
    from ..core.options import (
        RUN_DIR_SHOWN,
        add_common,
        add_deprecated,
        add_out,
        command,
        default_run_dir,
        derived_path,
    )

    p = command(sub, "anonymize", "anonymize every face of an image or a folder (keyed, reversible)",
                examples=["faceprivacy anonymize photos/ --passphrase-file key.txt   # -> photos_anonymized/",
                          "faceprivacy anonymize group.jpg --passphrase-file key.txt --consistent -o out.png",
                          "faceprivacy anonymize group.jpg --passphrase-file key.txt --method blur",
                          "faceprivacy anonymize clip.mp4 clip_anon.mkv --passphrase-file key.txt   # video, "
                          "exact recovery"])
    _shared_args(p, "anonymized", "image file, folder or video clip (.mp4 .mkv .mov .m4v .avi .webm)",
                 "INPUT_anonymized.EXT, or the folder INPUT_anonymized/",
                 "file holding the passphrase, or - for standard input; with a passphrase the output is "
                 "recoverable (donor and riddle are keyed: they always need one)")
    p.add_argument("--recoverable", action="store_true",
                   help="seal the original faces into the output (asks for a passphrase without echo if no "
                        "--passphrase-file); blur/pixelate/mask write plain images otherwise")
    p.add_argument("--format", choices=("png", "jpg", "webp", "tif"), default=None,
                   help="output format of a folder run (default: keep each input's format; JPEG at quality 95)")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                   help="donor: keyed morph of real training donors (default); riddle: keyed latent encryptor "
                        "(needs a generator); blur / pixelate / mask: classical baselines")
    p.add_argument("--consistent", action="store_true",
                   help="one pseudonym per person across the batch (faces grouped by dlib descriptor)")
    p.add_argument("--sidecar", action="store_true", help="write the recovery record to OUT.fpx even for PNG")
    p.add_argument("--no-pixels", action="store_true",
                   help="do not seal the original pixels (smaller record; recovery decodes the latent)")
    _morph_fixes_flag(p)
    p.add_argument("--obscure-occluded", action="store_true",
                   help="also obscure faces the occlusion check calls covered (mask, eye band, hand); off by "
                        "default: it flags some unoccluded faces too (docs/detection.md)")
    _detector_choice(p)
    p.add_argument("--upsample", type=int, default=1,
                   help="detector upsampling (finds smaller faces; retinaface/rfb320: the finest tile level is "
                        "2^(N-1) x the frame)")
    p.add_argument("--min-face", type=float, default=0.0, help="ignore faces narrower than this (px)")
    _detector_filters(p)
    _video_args(p)
    add_common(p)
    p.set_defaults(func=_cmd_anonymize)

    r = command(sub, "recover", "restore the original faces of an anonymized image from its record",
                examples=["faceprivacy recover photos_anonymized/ --passphrase-file key.txt   # -> photos_anonymized_recovered/",
                          "faceprivacy recover out.png -o original.png          # asks for the passphrase",
                          "faceprivacy recover clip_anon.mkv --passphrase-file key.txt   # -> clip_anon_recovered.mkv"])
    _shared_args(r, "recovered", "anonymized image file, folder or video clip",
                 "INPUT_recovered.EXT (a video: INPUT_recovered.mkv), or the folder INPUT_recovered/",
                 "file holding the passphrase, or - for standard input (default: ask without echo)")
    r.add_argument("--plausible", action="store_true",
                   help="with a wrong passphrase, output other strangers (the faces anonymized again under it)")
    r.add_argument("--from-latent", action="store_true",
                   help="decode the exactly decrypted latent instead of pasting the sealed original pixels")
    r.add_argument("--allow-modified", action="store_true",
                   help="restore even if the anonymized pixels were changed after anonymization")
    add_common(r)
    r.set_defaults(func=_cmd_recover)

    e = command(sub, "eval-deid", "end-to-end evaluation of de-identification on held-out people "
                                  "(full frames + aligned crops, every method side by side)",
                examples=["faceprivacy eval-deid --quick",
                          "faceprivacy eval-deid --identities val --embedders dlib mobilefacenet",
                          "faceprivacy eval-deid --per-id 2 --methods donor blur stranger -o eval_mine/"])
    e.add_argument("--data", default=None,
                   help="training datakit (thresholds, stranger bank; default ../shared/datakit)")
    e.add_argument("--test-data", type=Path, default=None,
                   help="evaluate the people of this root instead (thresholds still from --data)")
    e.add_argument("--identities", choices=("test", "val", "all"), default="test",
                   help="which people of the evaluation root: the test split, the validation split (for "
                        "choosing a method), or all of them")
    add_out(e, default_run_dir("eval-deid"), RUN_DIR_SHOWN.format(cmd="deid"), type=Path,
            help="report folder (eval_deid.json, eval_deid.html)")
    e.add_argument("--methods", nargs="+", default=None,
                   help="methods to compare (default: the default method, riddle, blur, pixelate, mask and "
                        "the real-stranger swap 'stranger')")
    e.add_argument("--embedders", dest="recognizers", nargs="+", default=None,
                   choices=("mobilefacenet-onnx", "dlib", "mobilefacenet"),
                   help="default all three; to select a method use only dlib and mobilefacenet (CASIA): the "
                        "ONNX MobileFaceNet is the independent judge")
    e.add_argument("--protocols", nargs="+", default=None, choices=("frames", "aligned"),
                   help="full frames through the anonymize pipeline, aligned crops, or both (default both)")
    e.add_argument("--max-ids", type=int, default=None, help="at most this many people (0 = all; default all)")
    e.add_argument("--per-id", type=int, default=None, help="probe photos per person (default 4)")
    e.add_argument("--max-distractors", type=int, default=None, help="distractor people in the gallery")
    e.add_argument("--faces-per-frame", type=int, default=None,
                   help="faces pasted into each full frame (default: the evaluation's preset)")
    e.add_argument("--face-px", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="face widths in the full frames (default 80 300)")
    e.add_argument("--detectors", nargs="*", default=None, choices=("hog", "cnn"),
                   help="detectors for the detection-rate measure (default hog cnn; none to skip)")
    e.add_argument("--cnn-max", type=int, default=None,
                   help="MMOD detection runs on a seeded subset of this many probes (default 48; ~1-5 s a crop)")
    e.add_argument("--no-attributes", action="store_true", help="skip the age/gender model")
    e.add_argument("--no-two-sample", action="store_true", help="skip the real-vs-anonymized classifier")
    e.add_argument("--seed", type=int, default=None, help="seed of the frame layout and sampling (not of keys)")
    e.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    e.add_argument("--quick", action="store_true", help="tiny configuration (smoke test, minutes on a CPU)")
    e.add_argument("--donor-bank", type=Path, default=None, help="donor bank file for donor (default: bundled)")
    _morph_fixes_flag(e)
    add_deprecated(e, "--recognizers", "recognizers", nargs="+", choices=("mobilefacenet-onnx", "dlib", "mobilefacenet"))
    _model_args(e)
    add_common(e)
    e.set_defaults(func=_cmd_eval)

    from ..core.detect import ANONYMIZE_DETECTOR, DETECTORS

    v = command(sub, "eval-video", "video de-identification on a clip of held-out people: frames/s against "
                                   "blur, missed faces, identity switches, exact recovery",
                examples=["faceprivacy eval-video                      # 10 s of 720p, 3 people, donor and blur",
                          "faceprivacy eval-video --seconds 2 --width 640 --height 360 --faces 2 -o eval_small/"])
    add_out(v, default_run_dir("eval-video"), RUN_DIR_SHOWN.format(cmd="video"), type=Path,
            help="report folder (eval_video.json, eval_video.html, eval_video_frames.png, the clips)")
    v.add_argument("--seconds", type=float, default=10.0, help="clip length")
    v.add_argument("--fps", type=int, default=25, help="frame rate")
    v.add_argument("--width", type=int, default=1280, help="frame width (even)")
    v.add_argument("--height", type=int, default=720, help="frame height (even)")
    v.add_argument("--faces", type=int, default=3, help="CelebA test identities in the clip")
    v.add_argument("--face-side", type=float, default=220.0, help="side of each pasted aligned photo (px)")
    v.add_argument("--methods", nargs="+", default=["donor", "blur"], choices=("donor", "blur", "pixelate", "mask"),
                   help="methods, each run on the same clip (blur is the speed reference)")
    v.add_argument("--detector", default=ANONYMIZE_DETECTOR, choices=DETECTORS,
                   help="face detector (default: anonymize's)")
    v.add_argument("--detect-every", type=int, default=1,
                   help="detector every N frames, tracking in between (N > 1 misses face-frames; docs/video.md)")
    v.add_argument("--lossy-seconds", type=float, default=2.0,
                   help="seconds of the clip also written as H.264 .mp4 to state the loss (0 = skip)")
    v.add_argument("--seed", type=int, default=0, help="seed of the identities and the motion")
    add_common(v)
    v.set_defaults(func=_cmd_eval_video)

    t = command(sub, "train-deid", "fit/train the latent encryptor on CelebA training identities",
                examples=["faceprivacy train-deid -o encryptor.pt", "faceprivacy train-deid --steps 50 --max-train 500 -o /tmp/enc.pt",
                          "faceprivacy train-deid --init encryptor.pt --val-every 50 -o encryptor2.pt"])
    add_out(t, lambda a: derived_path(f"encryptor_{a.generator}.pt", "trained"), "encryptor_GENERATOR_trained.pt",
            type=Path, help="encryptor weights to write (.pt)")
    t.add_argument("--generator", default="lite", help="generator backend")
    t.add_argument("--generator-weights", type=Path, default=None, help="generator checkpoint (default: bundled lite)")
    t.add_argument("--steps", type=int, default=300, help="training steps")
    t.add_argument("--true-every", type=int, default=0, help="every N steps a decoder+dlib step (0 = never)")
    t.add_argument("--pca-dim", type=int, default=256, help="latent PCA dimensions kept")
    t.add_argument("--id-dim", type=int, default=96, help="identity subspace dimensions (swept over --id-candidates)")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--device", default="cpu", help="cpu | cuda")
    t.add_argument("--max-train", type=int, default=None, help="random subset of training images (CPU budget)")
    t.add_argument("--max-val", type=int, default=240, help="validation images for the id-dim sweep")
    t.add_argument("--id-candidates", type=int, nargs="+", default=[64, 128, 192, 256],
                   help="identity dimensions tried on the validation identities")
    t.add_argument("--proxy-aug", type=int, default=1500, help="analytic encryptions used to fit the proxy")
    t.add_argument("--proxy-targets-original", action="store_true",
                   help="proxy targets = dlib of the original photos (skips decoding every training latent)")
    t.add_argument("--init", type=Path, default=None,
                   help="start from this encryptor file: keep its whitening/basis, train only its couplings")
    t.add_argument("--val-every", type=int, default=0,
                   help="measure the validation identities every N steps and keep the best state (0 = off)")
    t.add_argument("--batch", type=int, default=64, help="latents per step")
    t.add_argument("--true-batch", type=int, default=8, help="latents per step decoded on true steps")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the couplings")
    t.add_argument("--w-div", type=float, default=1.0, help="weight of the two-keys diversity hinge")
    t.add_argument("--w-wrong", type=float, default=1.0, help="weight of the wrong-key hinges")
    t.add_argument("--w-img", type=float, default=1.0, help="weight of the low-frequency image term (true steps)")
    t.add_argument("--save-analytic", type=Path, default=None,
                   help="also write the analytic (untrained couplings) encryptor here")
    add_common(t)
    t.set_defaults(func=_cmd_train)

    s = command(sub, "train-deid-surrogate", "CPU training of the encryptor's keyed couplings through a dlib surrogate",
                examples=["faceprivacy train-deid-surrogate --cache cache.npz -o encryptor.pt",
                          "faceprivacy train-deid-surrogate --cache cache.npz --rounds 1 --steps 50 -o /tmp/enc.pt"])
    s.add_argument("--cache", type=Path, required=True,
                   help="training cache (latents and dlib descriptors of training/validation faces; built if "
                        "missing; holds face embeddings, keep it private)")
    add_out(s, lambda a: Path("encryptor_lite_surrogate.pt"), "encryptor_lite_surrogate.pt", type=Path,
            help="encryptor weights to write (.pt)")
    s.add_argument("--id-dim", type=int, default=192, help="identity subspace dimensions")
    s.add_argument("--pca-dim", type=int, default=256, help="latent PCA dimensions kept")
    s.add_argument("--rounds", type=int, default=3, help="surrogate refit / coupling training rounds")
    s.add_argument("--steps", type=int, default=400, help="coupling steps per round")
    s.add_argument("--hidden", type=int, default=256, help="hidden units of the couplings")
    s.add_argument("--w-attr", type=float, default=1.0, help="weight of the attribute-keeping term")
    s.add_argument("--w-prior", type=float, default=0.5, help="weight of the latent-prior term")
    s.add_argument("--w-div", type=float, default=1.0, help="weight of the two-keys diversity hinge")
    s.add_argument("--margin", type=float, default=None,
                   help="identity hinge (cosine); default: mean dlib cosine between two training people")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    add_common(s, threads=1)
    s.set_defaults(func=_cmd_train_surrogate)

    from .web import add_serve_args

    w = command(sub, "serve", "a local web page: drop photos, anonymize, download, recover (127.0.0.1 only)",
                examples=["faceprivacy serve                    # prints http://127.0.0.1:8765/?token=...",
                          "faceprivacy serve --port 0 --method blur   # any free port; blur preselected"])
    add_serve_args(w, METHODS, DEFAULT_METHOD)
    w.add_argument("--donor-bank", type=Path, default=None, help="donor bank file (default: bundled)")
    _model_args(w)
    add_common(w)
    # the page runs the anonymize / recover commands' own parsers and pipelines (same defaults, same code)
    w.set_defaults(func=_cmd_serve, _anonymize_parser=p, _recover_parser=r)

    from .evaluation.detection_cli import register as register_eval_detection

    register_eval_detection(sub)


def _detector_choice(p: argparse.ArgumentParser) -> None:
    from ..core.detect import ANONYMIZE_DETECTOR, DETECTORS

    p.add_argument("--detector", choices=DETECTORS, default=ANONYMIZE_DETECTOR,
                   help="face detector: retinaface+rfb320+centerface (RetinaFace, plus the faces RFB-320 and then "
                        "CenterFace find that it does not; tiled on large frames), retinaface+rfb320 (about a third "
                        "of the detection time, misses more occluded faces), retinaface, rfb320, centerface (CNNs, "
                        "ONNX), retinaface+centerface, hog (dlib, frontal faces >= ~40 px only), cnn (dlib MMOD, "
                        "~100x slower); see docs/detection.md")


def _shared_args(p: argparse.ArgumentParser, tag: str, input_help: str, out_shown: str, pw_help: str) -> None:
    """The options ``anonymize`` and ``recover`` share: INPUT [OUTPUT] / -o (derived from the input), the
    passphrase file, and the models a record may name (donor bank, generator, encryptor)."""
    from ..core.options import add_out, derived_path

    def default_out(a: argparse.Namespace) -> Path:
        from .video import is_video_path

        video_recovered = tag == "recovered" and is_video_path(a.input)
        return derived_path(a.input, tag, ".mkv" if video_recovered else None)

    p.add_argument("input", type=Path, help=input_help)
    p.add_argument("output", nargs="?", default=argparse.SUPPRESS,
                   help="output file or folder, same as -o (never the input)")
    add_out(p, default_out, out_shown, type=Path, dest="output", help="output file or folder (never the input)")
    p.add_argument("--passphrase-file", type=Path, default=None, help=pw_help)
    p.add_argument("--donor-bank", type=Path, default=None, help="donor bank file (default: bundled)")
    _model_args(p)


def _video_args(p: argparse.ArgumentParser) -> None:
    from .video.io import MAX_SECONDS

    p.add_argument("--detect-every", type=int, default=1,
                   help="video: run the detector every N frames and follow faces in between (faster, but NOT "
                        "safe: with N = 3, 56 of 750 face-frames of the test clip were left untouched; docs/video.md)")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS,
                   help="video: refuse clips longer than this (seconds)")


def _detector_filters(p: argparse.ArgumentParser) -> None:
    from ..core.detect import MIN_SCORES, MIN_SIZES

    per = ", ".join(f"{k} {v}" for k, v in MIN_SCORES.items())
    p.add_argument("--min-score", type=float, default=None,
                   help=f"lowest detector score kept (default per detector: {per}; lower finds more, and more "
                        "false faces)")
    sizes = ", ".join(f"{k} {v:g}" for k, v in MIN_SIZES.items())
    p.add_argument("--min-size", type=float, default=None,
                   help=f"smallest face side kept, in pixels (default per detector: {sizes})")


def _passphrase(args, new: bool) -> bytes | None:
    """The passphrase from --passphrase-file (a file, or - for stdin), else a no-echo prompt when one is
    needed (``new``: confirm it), else None (a plain, non-recoverable output)."""
    from ..core.keys import prompt_passphrase, read_passphrase_file

    if args.passphrase_file is not None:
        return read_passphrase_file(args.passphrase_file)
    if not new or getattr(args, "recoverable", False) or getattr(args, "method", "") in KEYED_METHODS:
        return prompt_passphrase(confirm=new)
    return None


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generator", default="lite", help="generator backend (default: bundled lite)")
    p.add_argument("--generator-weights", type=Path, default=None, help="generator checkpoint (non-lite)")
    from ..core.options import add_deprecated

    add_deprecated(p, "--generator-path", "generator_weights", type=Path)
    p.add_argument("--encryptor", type=Path, default=None, help="encryptor weights (default: bundled)")


def _method_by_name(name: str, args):
    from .methods import make_method

    if name == "riddle":
        return load_riddle(args.generator, args.generator_weights, args.encryptor)
    if name == "donor":
        from .donor import DonorMorph
        from .donor_bank import DonorBank

        return DonorMorph(DonorBank.load(args.donor_bank) if args.donor_bank else None, **_donor_options(args))
    return make_method(name)


def _donor_options(args) -> dict:
    """The donor method's opt-in options of the parsed ``args``: ``--morph-fixes`` -> ``MORPH_FAULT_FIXES``."""
    from .donor import MORPH_FAULT_FIXES

    return dict(MORPH_FAULT_FIXES) if getattr(args, "morph_fixes", False) else {}


def _morph_fixes_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--morph-fixes", action="store_true",
                   help="donor: the morph-fault fixes (stricter donor photos, eyes and brows from one donor; "
                        "fewer visible faults, but measured LESS private on test people: two keys linked as "
                        "one person 19-25 %% of faces vs 8-14 %% without; docs/deid.md 'Morph faults')")


def _method(args):
    return _method_by_name(args.method, args)


def _detector(args, weak: bool = False):
    """The face detector of the anonymize options (photos and videos alike); ``weak``: with the detector's weak
    tier (``core.detect.WEAK_SCORES``: low-score faces come back marked weak; photos obscure them) and small
    frames searched one level finer (``core.detect.SMALL_FRAME_MP``), as photos are."""
    from ..core.detect import SMALL_FRAME_MP, UNION_FLIP, WEAK_SCORES, FaceDetector

    return FaceDetector(args.detector, args.upsample, min_size=args.min_size, min_score=args.min_score,
                        data_root=args.data, threads=args.threads or 1,
                        floor=WEAK_SCORES.get(args.detector) if weak else None,
                        small_frame_mp=SMALL_FRAME_MP if weak else None, flip=UNION_FLIP and weak)


def anonymize_parsed(args, passphrase: bytes | None, method=None) -> dict:
    """The anonymize command's pipeline for its parsed ``args`` (``serve`` calls this too, with a cached
    ``method``) -> the summary of ``batch.anonymize_paths``."""
    from .batch import anonymize_paths
    from .safety import pipeline_net

    detector = _detector(args, weak=True)
    safety = pipeline_net(getattr(args, "obscure_occluded", False))
    return anonymize_paths(args.input, args.output, passphrase, method or _method(args), consistent=args.consistent,
                           sidecar=args.sidecar, keep_pixels=not args.no_pixels, detector=detector,
                           min_face=args.min_face, fmt=args.format, safety=safety)


def _cmd_anonymize(args) -> int:
    from .video import is_video_path

    if is_video_path(args.input):
        return _cmd_anonymize_video(args)
    passphrase = _passphrase(args, new=True)
    summary = anonymize_parsed(args, passphrase)
    from ..core.options import Summary

    out = Summary(f"anonymized {summary['faces']} face(s) in {summary['written']} file(s) with {args.method}",
                  written=summary.get("outputs") or [str(args.output)], skipped=summary["skipped"])
    out.notes += list(summary.get("notes", []))
    if summary["skipped"] and "no_face_hint" in summary:
        out.notes.append(f"no face found: {summary['no_face_hint']}")
    if summary.get("lossy") and summary.get("recoverable"):
        out.notes.append("JPEG/WebP output: pixels outside the faces are re-encoded (quality 95); recovery restores "
                         "the faces exactly but not the frame bit for bit (use .png / --format png for that)")
    if summary["written"]:
        if summary.get("recoverable"):
            pw = str(args.passphrase_file) if args.passphrase_file is not None else "FILE"
            out.notes.append("contains a sealed copy of the original faces; keep the passphrase to recover them")
            out.then(f"faceprivacy recover {args.output} --passphrase-file {pw}   # the original faces")
        else:
            out.notes.append("plain output: no copy of the original faces is kept (use --recoverable to keep one)")
            if Path(args.input).is_file():
                out.then(f"faceprivacy verify {args.input} {args.output}   # still the same person?")
    rc = out.print()
    return rc if summary["written"] else 2


def _video_summary(head: str, res, args):
    from ..core.options import Summary

    out = Summary(head, written=res.outputs)
    out.number("frames", res.frames).number("speed", round(res.fps, 2), "frames/s")
    out.notes += list(res.notes)
    return out


def _check_video_flags(args) -> None:
    from ..core.errors import InputError

    for flag in ("consistent", "sidecar", "no_pixels", "format"):
        if getattr(args, flag, None):
            raise InputError(f"--{flag.replace('_', '-')} does not apply to a video (a video always keeps one "
                             "pseudonym per person and writes its record to OUT.fpx)")


def anonymize_video_parsed(args, passphrase: bytes | None, method=None):
    """The anonymize command's video pipeline for its parsed ``args`` (``serve`` calls this too, with a cached
    ``method``) -> ``video.VideoResult``."""
    from .video import anonymize_video

    _check_video_flags(args)
    return anonymize_video(args.input, args.output, passphrase, method or _method(args), detector=_detector(args),
                           detect_every=args.detect_every, max_seconds=args.max_seconds)


def _cmd_anonymize_video(args) -> int:
    _check_video_flags(args)
    passphrase = _passphrase(args, new=True)
    res = anonymize_video_parsed(args, passphrase)
    out = _video_summary(f"anonymized {res.faces} face-frame(s) in {res.frames} frame(s), {res.people} "
                         f"person(s) in {res.tracks} track(s), with {args.method}", res, args)
    if res.fallback:
        out.notes.append(f"{res.fallback} face-frame(s) could not be aligned and were blurred instead")
    if res.redrawn:
        out.notes.append(f"safety net: {res.redrawn} person(s) still verified as the original and got another "
                         "stranger")
    rec = res.recovery
    if rec:
        if rec["exact"]:
            out.notes.append(f"lossless output: recovery is bit-exact (checked on all {rec['frames']} frames)")
        else:
            out.notes.append(f"lossy output: a recovery differs from the input by PSNR {rec['psnr_min']:.1f} dB "
                             f"(worst frame; mean {rec['psnr_mean']:.1f} dB) outside the faces; write .mkv "
                             "for bit-exact recovery")
        pw = str(args.passphrase_file) if args.passphrase_file is not None else "FILE"
        out.notes.append("OUT.fpx holds a sealed copy of the original faces; keep it with the video and keep "
                         "the passphrase")
        out.then(f"faceprivacy recover {args.output} --passphrase-file {pw}")
    else:
        out.notes.append("plain output: no copy of the original faces is kept")
    return out.print()


def _check_recover_video_flags(args) -> None:
    if args.plausible or args.from_latent:
        from ..core.errors import InputError

        raise InputError("--plausible and --from-latent apply to images only")


def recover_video_parsed(args, passphrase: bytes):
    """The recover command's video pipeline for its parsed ``args`` (``serve`` calls this too) ->
    ``video.VideoResult``."""
    from .video import recover_video

    _check_recover_video_flags(args)
    return recover_video(args.input, args.output, passphrase, allow_modified=args.allow_modified)


def _cmd_recover_video(args) -> int:
    _check_recover_video_flags(args)
    passphrase = _passphrase(args, new=False)
    res = recover_video_parsed(args, passphrase)
    return _video_summary(f"recovered {res.faces} face-frame(s) in {res.frames} frame(s)", res, args).print()


def recover_parsed(args, passphrase: bytes, method_by_name=None) -> dict:
    """The recover command's pipeline for its parsed ``args`` (``serve`` calls this too, with a cache of
    methods) -> the summary of ``batch.recover_paths``."""
    from .batch import recover_paths

    def method_factory(name: str):
        if name not in METHODS:
            from ..core.errors import InputError

            raise InputError(f"the record names an unknown method {name!r}")
        return (method_by_name or _method_by_name)(name, args)

    return recover_paths(args.input, args.output, passphrase, method_factory, plausible=args.plausible,
                         from_latent=args.from_latent, allow_modified=args.allow_modified)


def _cmd_recover(args) -> int:
    from .video import is_video_path

    if is_video_path(args.input):
        return _cmd_recover_video(args)
    passphrase = _passphrase(args, new=False)
    summary = recover_parsed(args, passphrase)
    from ..core.options import Summary

    out = Summary(f"recovered {summary['written']} file(s) ({', '.join(sorted(set(summary['modes']))) or '-'})",
                  written=summary.get("outputs") or [str(args.output)], skipped=summary["skipped"])
    if "faces-exact" in summary["modes"]:
        out.notes.append("faces-exact: the faces are the original pixels, but the rest of the frame went through "
                         "JPEG/WebP and is not bit-identical to the input")
    rc = out.print()
    return rc if summary["written"] else 2


def _cmd_serve(args) -> int:
    from .web import serve

    return serve(args)


def _eval_config(args):
    """The ``EvalConfig`` of the eval-deid flags (``--quick`` as the base, explicit flags on top)."""
    from .evaluate import EvalConfig, default_methods

    kw = {"identities": args.identities, "threads": args.threads}
    for flag, field in (("max_ids", "max_ids"), ("per_id", "per_id"), ("max_distractors", "max_distractors"),
                        ("faces_per_frame", "faces_per_frame"), ("seed", "seed"), ("cnn_max", "cnn_max")):
        if getattr(args, flag) is not None:
            kw[field] = getattr(args, flag)
    if args.face_px is not None:
        kw["face_px"] = tuple(args.face_px)
    for flag in ("methods", "recognizers", "protocols", "detectors"):
        if getattr(args, flag) is not None:
            kw[flag] = tuple(getattr(args, flag))
    kw.setdefault("methods", default_methods())
    kw["attributes"] = not args.no_attributes
    kw["two_sample"] = not args.no_two_sample
    return EvalConfig.quick(**kw) if args.quick else EvalConfig(**kw)


def _cmd_eval(args) -> int:
    from ..core.errors import InputError
    from ..core.paths import default_data_root
    from .evaluate import evaluate_deid

    data = args.data or default_data_root()
    if data is None:
        raise InputError("datakit not found: pass --data")
    for root in (data, args.test_data):
        if root is not None and not Path(root).is_dir():
            raise InputError(f"data root not found: {root}")
    cfg = _eval_config(args)

    def factory(name: str):
        return _method_by_name(name, args)

    evaluate_deid(Path(data), args.out, cfg, test_data=args.test_data, method_factory=factory)
    from ..core.options import Summary

    out = Summary(f"evaluated {', '.join(cfg.methods)} ({cfg.identities} identities)")
    out.wrote(args.out / "eval_deid.json", args.out / "eval_deid.html").then(f"open {args.out / 'eval_deid.html'}")
    out.print()
    return 0


def _cmd_eval_video(args) -> int:
    from ..core.errors import InputError
    from ..core.options import Summary, stage
    from ..core.paths import default_data_root
    from .video.evaluate import VideoEvalConfig, evaluate_video

    data = args.data or default_data_root()
    if data is None or not Path(data).is_dir():
        raise InputError(f"datakit not found: {data or 'pass --data'}")
    cfg = VideoEvalConfig(seconds=args.seconds, fps=args.fps, width=args.width, height=args.height,
                          faces=args.faces, face_px=args.face_side, methods=tuple(args.methods),
                          detector=args.detector, detect_every=args.detect_every, lossy_seconds=args.lossy_seconds,
                          seed=args.seed)
    cfg.validate()
    res = evaluate_video(Path(data), args.out, cfg, progress_stage=stage)
    out = Summary(f"evaluated video de-identification ({', '.join(cfg.methods)}) on a {cfg.seconds:g} s clip")
    for r in res["methods"]:
        out.number(f"{r['method']} frames/s", r["fps"])
        out.number(f"{r['method']} missed face-frames", f"{r['missed_face_frames']} of {r['face_frames_gt']}")
        out.number(f"{r['method']} identity switches", r["id_switches"])
        out.number(f"{r['method']} recovery bit-exact", r["recovery_exact"])
    out.wrote(args.out / "eval_video.json", args.out / "eval_video.html").then(f"open {args.out / 'eval_video.html'}")
    return out.print()


def _cmd_train(args) -> int:

    from ..core.paths import default_data_root
    from .riddle.train import train_encryptor

    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.init is not None and not args.init.is_file():
        from ..core.errors import InputError

        raise InputError(f"--init encryptor not found: {args.init}")
    data = args.data or default_data_root()
    _, rep = train_encryptor(
        Path(data), args.out, generator=args.generator, generator_weights=args.generator_weights,
        steps=args.steps, true_every=args.true_every, pca_dim=args.pca_dim, id_dim=args.id_dim, seed=args.seed,
        device=args.device, max_train=args.max_train, max_val=args.max_val, id_candidates=tuple(args.id_candidates),
        n_proxy_aug=args.proxy_aug, proxy_recon=not args.proxy_targets_original, save_analytic=args.save_analytic,
        init=args.init, val_every=args.val_every, batch=args.batch, true_batch=args.true_batch, lr=args.lr,
        w_div=args.w_div, w_wrong=args.w_wrong, w_img=args.w_img)
    summary = {k: rep[k] for k in ("val_init", "val_analytic", "val_trained", "val_score", "wall_s") if k in rep}
    if "chosen_step" in rep.get("train", {}):
        summary["chosen_step"] = rep["train"]["chosen_step"]
    from ..core.options import Summary

    return (Summary(f"trained the encryptor ({args.generator}, {args.steps} steps)", written=[str(args.out)])
            .facts(summary).then(f"faceprivacy eval-deid --encryptor {args.out}   # on held-out test identities")
            .print())


def _cmd_train_surrogate(args) -> int:

    import torch

    from ..core.paths import default_data_root
    from .riddle.surrogate import build_cache, train_surrogate_encryptor

    torch.set_num_threads(1)
    data = Path(args.data or default_data_root())
    if not args.cache.is_file():
        build_cache(data, args.cache, seed=args.seed)
    _, rep = train_surrogate_encryptor(args.cache, data, args.out, id_dim=args.id_dim, pca_dim=args.pca_dim,
                                       rounds=args.rounds, steps=args.steps, hidden=args.hidden, seed=args.seed,
                                       w_attr=args.w_attr, w_prior=args.w_prior, w_div=args.w_div,
                                       margin=args.margin)
    from ..core.options import Summary

    facts = {"chosen_round": rep["chosen_round"], "val_analytic": rep["val_analytic"],
             "val_chosen": rep["rounds"][rep["chosen_round"]]["val"] if rep["chosen_round"] >= 0
             else rep["val_analytic"], "wall_s": rep["wall_s"]}
    return (Summary(f"trained the encryptor through the dlib surrogate ({args.rounds} round(s))",
                    written=[str(args.out)]).facts(facts)
            .then(f"faceprivacy eval-deid --encryptor {args.out}   # on held-out test identities").print())
