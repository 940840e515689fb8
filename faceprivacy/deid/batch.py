"""File and folder front-end of the pipeline: one image or a whole folder, progress bar, never overwriting
an input; per-file errors in folder mode are collected instead of aborting the batch.

Folder runs: the output folder (when it lies inside the input folder) and files already anonymized (they
carry faceprivacy's marker or record) are skipped; each file keeps its format (JPEG stays JPEG at
``JPEG_QUALITY``) unless ``fmt`` says otherwise, formats that cannot carry the marker (BMP, GIF, PGM, ...)
become PNG, and two inputs that would land on one output name (``a.jpg`` and ``a.png`` with ``fmt="png"``)
get distinct names instead of one overwriting the other.

Records are opt-in: with a passphrase the output is recoverable (the record seals the original faces);
without one, a keyless method (blur, pixelate, mask) writes a plain image and keeps nothing of the original.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..core.data import IMAGE_EXTS
from ..core.errors import FacePrivacyError, InputError, NoFaceError
from ..core.fileio import check_output, same_file
from ..core.imageio import LOSSY_FORMATS, WRITABLE_FORMATS, image_format, load_image_info
from ..core.keys import check_passphrase_strength, derive_master_key, new_salt
from ..core.progress import progress
from ..core.threads import one_blas_thread
from .methods import Method
from .pipeline import Deidentifier, is_anonymized, output_format, read_anonymized, write_anonymized

log = logging.getLogger(__name__)

#: ``--format`` choices -> extension
FORMAT_EXTS = {"png": ".png", "jpg": ".jpg", "webp": ".webp", "tif": ".tif"}


def _keep_ext(f: Path, fmt: str | None) -> str:
    """Output extension for input ``f``: ``fmt`` if given, else the input's own when writable, else .png."""
    if fmt:
        return FORMAT_EXTS[fmt]
    try:
        return f.suffix if image_format(f) in WRITABLE_FORMATS else ".png"
    except InputError:
        return ".png"


def _under(p: Path, folder: Path) -> bool:
    try:
        p.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def plan_folder(inp: Path, out: Path, fmt: str | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(input, output) pairs for every image under ``inp`` and the notes of what was left out: the output
    folder itself, files already anonymized, and nothing ever maps two inputs onto one output."""
    check_output(out, folder=True)
    if same_file(inp, out):
        raise InputError("output folder must differ from the input folder (originals are never overwritten)")
    notes: list[str] = []
    files = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                   and not _under(p, out))
    if not files:
        raise InputError(f"no images under {inp}")
    want: dict[Path, list[Path]] = {}
    for f in files:
        want.setdefault(out / f.relative_to(inp).with_suffix(_keep_ext(f, fmt)), []).append(f)
    pairs = []
    for o, srcs in want.items():
        if len(srcs) == 1:
            pairs.append((srcs[0], o))
            continue
        # a.jpg and a.png -> a_jpg.png and a_png.png: never one output for two inputs
        for f in srcs:
            alt = o.with_name(f"{o.stem}_{f.suffix.lstrip('.').lower()}{o.suffix}")
            if alt in want or any(alt == q for _, q in pairs):
                raise InputError(f"{f}: cannot find a distinct output name (tried {alt.name})")
            pairs.append((f, alt))
            notes.append(f"{f.relative_to(inp)} -> {alt.relative_to(out)} (name shared with another input)")
    keep = []
    for i, o in sorted(pairs):
        if same_file(i, o):
            notes.append(f"{i.relative_to(inp)}: output would overwrite it; skipped")
        elif is_anonymized(i):
            notes.append(f"{i.relative_to(inp)}: already anonymized (faceprivacy marker/record); skipped")
        else:
            keep.append((i, o))
    return keep, notes


@one_blas_thread
def anonymize_paths(inp: Path, out: Path, passphrase: bytes | None, method: Method, consistent: bool = False,
                    sidecar: bool = False, keep_pixels: bool = True, detector: str | object | None = None,
                    upsample: int = 1, min_face: float = 0.0, *, fmt: str | None = None,
                    min_score: float | None = None, min_size: float | None = None, safety=True,
                    floor: float | None | str = "default") -> dict:
    """Anonymize a file or every image in a folder.

    ``passphrase`` given: each output carries a sealed recovery record (``recoverable`` in the summary);
    ``None``: plain images (only keyless methods). ``consistent``: one salt + key for the whole batch, so a
    person keeps one anonymous identity. ``fmt``: output format of a folder run (default: each input's).
    ``detector``: a name (default ``core.detect.ANONYMIZE_DETECTOR``) or a detector object; ``floor``: its
    weak tier (``"default"``: ``core.detect.WEAK_SCORES``; None: none). ``safety``: the post-replacement check
    (``deid.safety``; True = default net, False = off). The summary lists outputs, faces, faces obscured by the
    fallback (``blurred``; of them ``weak``, ``unalignable``, ``escalated``, ``occluded``), faces the safety net redrew
    (``redrawn``), its time (``safety_s``), skipped inputs (with the reason) and notes.
    """
    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise InputError(f"{inp}: not found")
    recoverable = passphrase is not None
    if method.keyed and not recoverable:
        raise InputError(f"method {method.name} is keyed: it needs a passphrase (--passphrase-file FILE or -)")
    if recoverable:
        check_passphrase_strength(passphrase)
    notes: list[str] = []
    if inp.is_dir():
        pairs, notes = plan_folder(inp, out, fmt)
    else:
        check_output(out, [inp])
        if fmt and out.suffix.lower() != FORMAT_EXTS[fmt]:
            raise InputError(f"--format {fmt} but the output is named {out.name}")
        output_format(out)
        if is_anonymized(inp):
            raise InputError(f"{inp} is already anonymized by faceprivacy (it carries the marker or a record); "
                             "anonymizing it again would seal the stranger, not the original")
        pairs = [(inp, out)]
    if detector is None or isinstance(detector, str):
        from ..core.detect import ANONYMIZE_DETECTOR, SMALL_FRAME_MP, UNION_FLIP, WEAK_SCORES, FaceDetector

        name = detector or ANONYMIZE_DETECTOR
        detector = FaceDetector(method=name, upsample=upsample, min_size=min_size, min_score=min_score,
                                floor=WEAK_SCORES[name] if floor == "default" else floor,
                                small_frame_mp=SMALL_FRAME_MP, flip=UNION_FLIP)
    deid = Deidentifier(method, detector=detector, min_face=min_face, keep_pixels=keep_pixels and recoverable,
                        safety=safety)
    salt = master = None
    if consistent or not recoverable:
        salt = new_salt()
        # a plain run still builds a record internally (under a random key) and then drops it
        master = derive_master_key(passphrase, salt) if recoverable else os.urandom(32)
    summary: dict = {"written": 0, "faces": 0, "blurred": 0, "weak": 0, "unalignable": 0, "escalated": 0,
                     "occluded": 0, "redrawn": 0, "safety_s": 0.0, "skipped": [], "outputs": [], "notes": notes,
                     "recoverable": recoverable, "lossy": []}
    single = not inp.is_dir()
    for src, dst in progress(pairs, desc="anonymize", unit="img"):
        try:
            img, info = load_image_info(src)
            ofmt = output_format(dst)
            res = deid.anonymize(img, passphrase or b"", salt=salt, master=master, consistent=consistent,
                                 out_ext=dst.suffix.lower())
            write_anonymized(dst, res.image, res.record if recoverable else None, sidecar=sidecar,
                             icc_profile=info.icc_profile)
        except NoFaceError as e:
            from ..core.detect import NO_FACE_HINT

            if single:
                raise NoFaceError(f"{src}: {e}; {NO_FACE_HINT}") from None
            summary["skipped"].append(f"{src.name}: no face found")
            summary["no_face_hint"] = NO_FACE_HINT
            continue
        except FacePrivacyError as e:
            if single:
                raise
            summary["skipped"].append(f"{src.name}: {e}")
            continue
        if info.had_alpha:
            notes.append(f"{src.name}: transparency flattened onto white (the output has no alpha channel)")
        if ofmt in LOSSY_FORMATS:
            summary["lossy"].append(str(dst))
        summary["written"] += 1
        summary["faces"] += res.n_faces
        for k in ("blurred", "weak", "unalignable", "escalated", "occluded", "redrawn", "safety_s"):
            summary[k] += getattr(res, k)
        why = [f"{n} {what}" for n, what in ((res.unalignable, "could not be aligned"),
                                              (res.weak, "weak detection(s)"),
                                              (res.escalated, "still verified as the original after redraws"),
                                              (res.occluded, "occluded"))
               if n]
        if why:
            notes.append(f"{src.name}: {res.blurred} face(s) obscured (pixelated + blurred) instead of replaced: "
                         + ", ".join(why))
        if res.redrawn:
            notes.append(f"{src.name}: {res.redrawn} face(s) redrawn by the safety net (the first stranger still "
                         "verified as the original)")
        summary["outputs"].append(str(dst))
    return summary


@one_blas_thread
def recover_paths(inp: Path, out: Path, passphrase: bytes, method_factory: Callable[[str], Method],
                  plausible: bool = False, from_latent: bool = False, allow_modified: bool = False) -> dict:
    """Recover a file or every anonymized image of a folder (each needs its record).

    Mode ``exact``: the output equals the original input bit for bit. ``faces-exact``: the face regions
    are the original pixels, but the rest of the frame went through a lossy format (a JPEG/WebP
    anonymized file, or a JPEG/WebP output) and is not bit-identical to the input.
    """
    from ..core.fileio import atomic_write_bytes
    from ..core.imageio import encode_image
    from .record import parse_record

    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise InputError(f"{inp}: not found")
    if inp.is_dir():
        check_output(out, folder=True)
        if same_file(inp, out):
            raise InputError("output folder must differ from the input folder (originals are never overwritten)")
        files = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                       and not _under(p, out))
        if not files:
            raise InputError(f"no images under {inp}")
        pairs = [(f, out / f.relative_to(inp)) for f in files]
    else:
        check_output(out, [inp])
        pairs = [(inp, out)]
    methods: dict[str, Method] = {}
    summary: dict = {"written": 0, "skipped": [], "modes": [], "outputs": []}
    single = not inp.is_dir()
    for src, dst in progress(pairs, desc="recover", unit="img"):
        try:
            if same_file(src, dst):
                raise InputError(f"{dst}: would overwrite the input")
            dfmt = image_format(dst)
            img, record = read_anonymized(src)
            header, _, _ = parse_record(record)
            if header.method not in methods:
                methods[header.method] = method_factory(header.method)
            deid = Deidentifier(methods[header.method], detector=False)
            rec, mode = deid.recover(img, record, passphrase, plausible=plausible, from_latent=from_latent,
                                     allow_modified=allow_modified)
            if mode == "exact" and (image_format(src) in LOSSY_FORMATS or dfmt in LOSSY_FORMATS):
                mode = "faces-exact"
            atomic_write_bytes(dst, encode_image(rec, dfmt))
        except FacePrivacyError as e:
            if single:
                raise
            summary["skipped"].append(f"{src.name}: {e}")
            continue
        summary["written"] += 1
        summary["modes"].append(mode)
        summary["outputs"].append(str(dst))
    return summary


def is_image(p: str | os.PathLike) -> bool:
    """True for a file with an image extension."""
    return Path(p).suffix.lower() in IMAGE_EXTS
