"""File and folder front-end of the pipeline: one image or a whole folder, progress bar, never overwriting
an input; per-file errors in folder mode are collected instead of aborting the batch."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..core.data import IMAGE_EXTS
from ..core.errors import FacePrivacyError, InputError
from ..core.imageio import load_image
from ..core.keys import derive_master_key, new_salt
from ..core.progress import progress
from .methods import Method
from .pipeline import Deidentifier, read_anonymized, same_file, write_anonymized

log = logging.getLogger(__name__)


def _pairs(inp: Path, out: Path, out_ext: str | None = None) -> list[tuple[Path, Path]]:
    """(input, output) file pairs for a file or a folder; refuses OUT == IN."""
    if not inp.exists():
        raise InputError(f"{inp}: not found")
    if same_file(inp, out):
        raise InputError("output must differ from the input (originals are never overwritten)")
    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise InputError(f"{out} exists and is not a folder")
        files = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise InputError(f"no images under {inp}")
        pairs = []
        for f in files:
            o = out / f.relative_to(inp)
            if out_ext:
                o = o.with_suffix(out_ext)
            pairs.append((f, o))
        return [(i, o) for i, o in pairs if not same_file(i, o)]
    return [(inp, out)]


def anonymize_paths(inp: Path, out: Path, passphrase: bytes, method: Method, consistent: bool = False,
                    sidecar: bool = False, keep_pixels: bool = True, detector: str | object = "hog",
                    upsample: int = 1, min_face: float = 0.0) -> dict:
    """Anonymize a file or every image in a folder. Folder outputs are PNG (record embedded).
    ``consistent``: one salt + key for the whole batch, so a person keeps one anonymous identity."""
    inp, out = Path(inp), Path(out)
    pairs = _pairs(inp, out, ".png" if inp.is_dir() and not sidecar else None)
    if isinstance(detector, str):
        from ..core.detect import FaceDetector

        detector = FaceDetector(method=detector, upsample=upsample)
    deid = Deidentifier(method, detector=detector, min_face=min_face, keep_pixels=keep_pixels)
    salt = master = None
    if consistent:
        salt = new_salt()
        master = derive_master_key(passphrase, salt)
    summary = {"written": 0, "faces": 0, "skipped": [], "outputs": []}
    single = len(pairs) == 1 and not inp.is_dir()
    for src, dst in progress(pairs, desc="anonymize", unit="img"):
        try:
            img = load_image(src)
            res = deid.anonymize(img, passphrase, salt=salt, master=master, consistent=consistent,
                                 out_ext=".png" if (dst.suffix.lower() == ".png" and not sidecar) else
                                 dst.suffix.lower())
            write_anonymized(dst, res.image, res.record, sidecar=sidecar)
        except FacePrivacyError as e:
            if single:
                raise
            summary["skipped"].append(f"{src.name}: {e}")
            continue
        summary["written"] += 1
        summary["faces"] += res.n_faces
        summary["outputs"].append(str(dst))
    return summary


def recover_paths(inp: Path, out: Path, passphrase: bytes, method_factory: Callable[[str], Method],
                  plausible: bool = False, from_latent: bool = False, allow_modified: bool = False) -> dict:
    """Recover a file or every anonymized image of a folder (each needs its record)."""
    inp, out = Path(inp), Path(out)
    pairs = _pairs(inp, out)
    methods: dict[str, Method] = {}
    summary = {"written": 0, "skipped": [], "modes": []}
    single = len(pairs) == 1 and not inp.is_dir()
    from ..core.fileio import atomic_write_bytes

    for src, dst in progress(pairs, desc="recover", unit="img"):
        try:
            img, record = read_anonymized(src)
            from .record import parse_record

            header, _, _ = parse_record(record)
            if header.method not in methods:
                methods[header.method] = method_factory(header.method)
            deid = Deidentifier(methods[header.method], detector=False)
            rec, mode = deid.recover(img, record, passphrase, plausible=plausible, from_latent=from_latent,
                                     allow_modified=allow_modified)
            atomic_write_bytes(dst, _encode(rec, dst))
        except FacePrivacyError as e:
            if single:
                raise
            summary["skipped"].append(f"{src.name}: {e}")
            continue
        summary["written"] += 1
        summary["modes"].append(mode)
    return summary


def _encode(img, dst: Path) -> bytes:
    import io

    from PIL import Image

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF"}.get(dst.suffix.lower(), "PNG")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def is_image(p: str | os.PathLike) -> bool:
    """True for a file with an image extension."""
    return Path(p).suffix.lower() in IMAGE_EXTS
