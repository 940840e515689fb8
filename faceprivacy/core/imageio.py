"""Safe image loading: any file PIL can read -> RGB uint8 (H, W, 3), with EXIF orientation applied.

Refuses what would crash or exhaust memory later: zero-byte, truncated or non-image files, images
whose header claims more than ``max_pixels``, and tiny images. Grayscale, palette, RGBA/LA (composited
on white), CMYK, 16-bit and float modes are all converted.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError
from .fileio import atomic_path

#: default cap on width*height read from the header before decoding (~ 100 MP)
MAX_PIXELS = 100_000_000
MIN_SIDE = 8


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB uint8, scaling high bit depths instead of clipping."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if mode == "F":
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        else:
            a = a / 257.0 if a.max(initial=0) > 255 else a
        a = np.clip(np.nan_to_num(a), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def load_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); raises InputError with a clear reason on bad input."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise InputError(f"{path}: image header claims {w}x{h} pixels, over the limit of "
                                     f"{max_pixels} (use a smaller image)")
                if min(w, h) < MIN_SIDE:
                    raise InputError(f"{path}: image is too small ({w}x{h})")
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return _to_rgb_array(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (or a format PIL cannot read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{path}: image too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: corrupt or truncated image ({e})") from None


def save_image(path: str | os.PathLike, img: np.ndarray, **pil_kwargs) -> Path:
    """Write an RGB/grey uint8 array atomically; the format follows the file extension."""
    path = Path(path)
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"save_image expects uint8, got {arr.dtype}")
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown image extension {path.suffix!r}")
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format=fmt, **pil_kwargs)
    return path
