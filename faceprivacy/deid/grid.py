"""The picture in docs/deid.md: test-identity faces anonymized in full frames, as a user runs it.

Rows are people; columns: original, the default method under three passphrases, a wrong passphrase with
``--plausible``, and blur. Each face is pasted into a 2.2x larger frame with a plain blurred surround
(its own photo, scaled), run through ``Deidentifier`` (detection, alignment, method, paste-back, record,
recovery) and cropped back at its place.

``python -m faceprivacy.deid.grid --data ../shared/datakit --out docs/deid_donor_grid.jpg``

``--val-faults`` (issue 19, morph faults): the donor method's outputs on the VALIDATION probes of
``deid.select`` (the first two photos of each validation person with a third one), each in the same blurred
surround, cut to the method's working crop and morphed under two fixed keys (``A<i>`` and ``B<i>``); columns:
original, key A, key B, in two halves side by side. Fast (no detector, no safety net: the morph alone), so a
configuration's faults can be counted by eye on the same faces and keys:
``python -m faceprivacy.deid.grid --val-faults --data ../shared/datakit --config '{}' --out F.jpg``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _frame(crop: np.ndarray, side: int = 260, face: int = 150) -> tuple[np.ndarray, int]:
    """The crop scaled to ``face`` px in the middle of a ``side`` px frame whose surround is the same photo
    scaled up and blurred (a plausible background with no second face)."""
    from PIL import Image, ImageFilter

    bg = Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(12))
    img = np.asarray(bg).copy()
    o = (side - face) // 2
    img[o:o + face, o:o + face] = np.asarray(Image.fromarray(crop).resize((face, face), Image.Resampling.BICUBIC))
    return img, o


def make_grid(data_root: str | Path, out: str | Path, n: int = 6, method: str = "donor", seed: int = 3) -> Path:
    """Write the grid JPEG (quality 85) and return its path."""
    from PIL import Image

    from ..core.data import celeba_subset, identity_split
    from ..core.detect import FaceDetector
    from ..core.fileio import atomic_write_bytes
    from ..core.imageio import load_image
    from .methods import make_method
    from .pipeline import Deidentifier

    test = identity_split(celeba_subset(Path(data_root) / "celeba_subset_aligned112"))["test"]
    ids = sorted(set(test.labels.tolist()))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ids))
    det = FaceDetector()
    d = Deidentifier(make_method(method), detector=det)
    blur = Deidentifier(make_method("blur"), detector=det)
    rows = []
    for k in order:
        if len(rows) >= n:
            break
        p = next(p for p, lab in zip(test.paths, test.labels, strict=True) if lab == ids[k])
        img, o = _frame(load_image(p))
        if len(det.detect(img)) != 1:  # HOG misses some profiles: the grid shows faces it finds
            continue
        cells = [img]
        outs = [d.anonymize(img, pw) for pw in (b"key one: correct horse", b"key two: battery staple",
                                                  b"key three: purple monkey")]
        cells += [x.image for x in outs]
        cells.append(d.recover(outs[0].image, outs[0].record, b"a wrong passphrase", plausible=True)[0])
        cells.append(blur.anonymize(img, b"blur").image)
        m = 12
        rows.append(np.concatenate([c[o - m:img.shape[0] - o + m, o - m:img.shape[1] - o + m] for c in cells], 1))
    grid = np.concatenate(rows, 0)
    import io

    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="JPEG", quality=85)
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)


def val_fault_grid(data_root: str | Path, out: str | Path, config: dict | None = None, side: int = 168) -> Path:
    """Write the validation fault grid (module docstring) as a JPEG (quality 85) and return its path."""
    import io

    from PIL import Image, ImageDraw

    from ..core.align import ARCFACE_TEMPLATE
    from ..core.fileio import atomic_write_bytes
    from .donor import PAD, DonorMorph
    from .pipeline import padded_crop
    from .select import _crops

    _, probes, *_ = _crops(Path(data_root), 2)
    m = DonorMorph(**(config or {}))
    rows = []
    for i, c in enumerate(probes):
        img, o = _frame(c)
        crop = padded_crop(img, ARCFACE_TEMPLATE * 150 / 112 + o, side, PAD)[0]
        cells = [crop] + [m.morph_checked(crop, f"{tag}{i}".encode().ljust(32, b"."))[0] for tag in "AB"]
        c = round(PAD * side / (1 + 2 * PAD))  # the ArcFace layout: the face, its hair and some background
        im = Image.fromarray(np.concatenate([x[c:side - c, c:side - c] for x in cells], 1))
        ImageDraw.Draw(im).text((3, 2), str(i), fill=(255, 40, 40))
        rows.append(np.asarray(im))
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:] + [np.full_like(rows[0], 255)] * (2 * half - len(rows))
    sep = np.full((rows[0].shape[0] * half, 6, 3), 255, np.uint8)
    grid = np.concatenate([np.concatenate(left, 0), sep, np.concatenate(right, 0)], 1)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="JPEG", quality=85)
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="grid of anonymized test faces for docs/deid.md")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("docs/deid_donor_grid.jpg"))
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--method", default="donor")
    ap.add_argument("--val-faults", action="store_true",
                    help="the validation fault grid of the donor method (module docstring) instead")
    ap.add_argument("--config", default="{}", help="with --val-faults: DonorMorph keyword arguments (JSON)")
    a = ap.parse_args(argv)
    if a.val_faults:
        import json
        import sys

        try:
            cfg = json.loads(a.config)
            if not isinstance(cfg, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            print(f"error: --config must be a JSON object of DonorMorph keywords: {e}", file=sys.stderr)
            return 2
        print(val_fault_grid(a.data, a.out, cfg))
        return 0
    print(make_grid(a.data, a.out, n=a.n, method=a.method))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
