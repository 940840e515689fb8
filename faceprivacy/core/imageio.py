"""The one image boundary: every image file is read, checked and written here.

Reading (``load_image`` / ``open_image``) refuses what would crash or exhaust memory later: zero-byte,
truncated or non-image files, images whose header claims more than ``MAX_PIXELS`` (checked before any
pixel is decoded, and Pillow's ``DecompressionBombError`` becomes an ``InputError``), and tiny images.
Grayscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and float modes are all converted to RGB
uint8 with EXIF orientation applied. ``check_rgb`` is the array-side check every entry point uses: an RGB
uint8 (H, W, 3) array or an ``InputError`` (no silent cast: a float image in [0, 1] would turn black).

Writing (``encode_image`` / ``save_image``) picks the format from the extension and uses one JPEG/WebP
quality (``JPEG_QUALITY``), so a file's pixels can be predicted (``roundtrip``) by whoever hashes them.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .fileio import atomic_path

#: cap on width*height read from the header before decoding (50 MP: a 61 MP photo or a 9400x9400 PNG
#: bomb is refused; detection at upsample 1 costs ~4 bytes/pixel x 4 and minutes per 50 MP on a CPU)
MAX_PIXELS = 50_000_000
MIN_SIDE = 8
#: the one quality of every JPEG/WebP file the toolkit writes
JPEG_QUALITY = 95
#: formats whose decoded pixels differ from the array that was encoded
LOSSY_FORMATS = frozenset({"JPEG", "WEBP"})
#: formats a de-identified image may be written in (all can carry a text marker)
WRITABLE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
#: EXIF ImageDescription: where non-PNG outputs carry the toolkit's marker
_EXIF_DESCRIPTION = 0x010E


@dataclass
class ImageInfo:
    """What a file says about itself besides its pixels."""

    format: str | None
    icc_profile: bytes | None
    had_alpha: bool
    text: dict[str, str]


def image_format(path_or_ext: str | os.PathLike) -> str:
    """Pillow format name for a file name or extension (``"a.jpg"``, ``".jpg"``, ``"jpg"`` -> ``"JPEG"``)."""
    s = str(path_or_ext)
    ext = Path(s).suffix.lower() if Path(s).suffix else "." + s.lower().lstrip(".")
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise InputError(f"unknown image extension {ext!r}")
    return fmt


def check_rgb(img: np.ndarray, what: str = "image") -> np.ndarray:
    """An RGB uint8 (H, W, 3) C-contiguous array, or InputError. Never casts: convert explicitly first."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected an RGB uint8 {what} (H, W, 3), got {img.dtype} {img.shape}")
    if min(img.shape[:2]) < 1:
        raise InputError(f"the {what} is empty ({img.shape})")
    return np.ascontiguousarray(img)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB uint8, scaling high bit depths instead of clipping."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
            lo, hi = float(np.min(a)), float(np.max(a))
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        else:
            a = a / 257.0 if a.max(initial=0) > 255 else a
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")


@contextlib.contextmanager
def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """Open an image file lazily (header only) with every refusal of this module as ``InputError``:
    missing/empty/non-image/truncated files and headers over ``max_pixels`` (before any decoding)."""
    path = Path(path)
    _check_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise InputError(f"{path}: image header claims {w}x{h} pixels, over the limit of "
                                     f"{max_pixels // 1_000_000} MP (downscale the image first)")
                yield im
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (or a format PIL cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: image too large (decompression bomb; over the {max_pixels // 1_000_000} "
                         "MP limit)") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise InputError(f"{path}: corrupt or truncated image ({e})") from None


def load_image_info(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as RGB uint8 (H, W, 3) plus what else it carries (format, ICC, alpha, text)."""
    path = Path(path)
    with open_image(path, max_pixels) as im:
        w, h = im.size
        if min(w, h) < MIN_SIDE:
            raise InputError(f"{path}: image is too small ({w}x{h})")
        try:
            im.load()
        except MemoryError:
            raise InputError(f"{path}: image too large to decode in memory") from None
        fmt = im.format
        icc = im.info.get("icc_profile") or None
        alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
        text = _text_of(im)
        im = ImageOps.exif_transpose(im) or im
        arr = _to_rgb_array(im)
    return arr, ImageInfo(fmt, icc if isinstance(icc, bytes) else None, alpha, text)


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); raises InputError with a clear reason on bad input."""
    return load_image_info(path, max_pixels)[0]


def _text_of(im: Image.Image) -> dict[str, str]:
    """PNG text chunks, the JPEG comment and the EXIF ImageDescription of an open image."""
    out: dict[str, str] = {}
    with contextlib.suppress(Exception):
        out.update({str(k): str(v) for k, v in (getattr(im, "text", None) or {}).items()})
    com = im.info.get("comment")
    if isinstance(com, bytes):
        out["comment"] = com.decode("utf-8", "replace")
    with contextlib.suppress(Exception):
        desc = im.getexif().get(_EXIF_DESCRIPTION)
        if desc:
            out["description"] = desc.decode("utf-8", "replace") if isinstance(desc, bytes) else str(desc)
    return out


def read_image_text(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> dict[str, str]:
    """Text metadata of an image file (PNG chunks, JPEG comment, EXIF description) without decoding pixels."""
    with open_image(path, max_pixels) as im:
        return _text_of(im)


def encode_image(img: np.ndarray, fmt: str, *, quality: int = JPEG_QUALITY, icc_profile: bytes | None = None,
                 png_text: dict[str, str] | None = None, description: str | None = None) -> bytes:
    """Encode an RGB/grey uint8 array as ``fmt`` (a Pillow format or an extension) at the toolkit's one
    quality. ``png_text``: PNG iTXt chunks; ``description``: EXIF ImageDescription (any format here)."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise InputError(f"images are written from uint8 arrays, got {arr.dtype}")
    fmt = fmt.upper() if fmt.upper() in Image.SAVE else image_format(fmt)
    kw: dict = {}
    if fmt in LOSSY_FORMATS:
        kw["quality"] = quality
    if icc_profile:
        kw["icc_profile"] = icc_profile
    if png_text and fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        for k, v in png_text.items():
            info.add_itxt(k, v, zip=False)
        kw["pnginfo"] = info
    if description is not None:
        if fmt == "TIFF":
            kw["tiffinfo"] = {_EXIF_DESCRIPTION: description}
        else:
            exif = Image.Exif()
            exif[_EXIF_DESCRIPTION] = description
            kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt, **kw)
    return buf.getvalue()


def decode_image_bytes(data: bytes) -> np.ndarray:
    """RGB uint8 pixels of encoded image bytes (no orientation applied: the bytes are our own)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def roundtrip(img: np.ndarray, fmt: str, quality: int = JPEG_QUALITY) -> np.ndarray:
    """The pixels a file of format ``fmt`` written by ``encode_image`` decodes to (``img`` if lossless)."""
    fmt = fmt.upper() if fmt.upper() in Image.SAVE else image_format(fmt)
    if fmt not in LOSSY_FORMATS:
        return np.asarray(img)
    return decode_image_bytes(encode_image(img, fmt, quality=quality))


def save_image(path: str | os.PathLike, img: np.ndarray, **pil_kwargs) -> Path:
    """Write an RGB/grey uint8 array atomically; the format follows the file extension."""
    path = Path(path)
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise InputError(f"save_image expects uint8, got {arr.dtype}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown image extension {path.suffix!r}")
    if fmt in LOSSY_FORMATS:
        pil_kwargs.setdefault("quality", JPEG_QUALITY)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format=fmt, **pil_kwargs)
    return path
