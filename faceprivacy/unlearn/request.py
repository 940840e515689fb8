"""One forget request as a user runs it (``faceprivacy unlearn``): check the support images, apply one
support-only method, and write the new model with its record extended.

Contract:
- every support image must show a face: dlib's HOG detector on the edge-padded crop, then its CNN detector
  for the few real crops HOG misses; a flat grey card or a noise image is refused with ``InputError``
  before the model is touched (unlearning on it only damages the model);
- the output model keeps the input model's record (``extra``: how it was trained) and appends this request
  to ``extra["unlearning_history"]``; model and record are one file, written atomically;
- the output path must not be any input: model, MetaLoss or a support image (inputs are never overwritten).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError

#: edge padding around a tight 112x112 ArcFace crop before face detection (dlib's boxes need a margin)
DETECT_PAD = 56


def load_support(paths: list[str], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Support images resized to the model's input (N, size, size, 3) and the 112x112 crops (teacher,
    embedder and face check)."""
    from PIL import Image

    from ..core.imageio import load_image

    crops, small = [], []
    for s in paths:
        rgb = Image.fromarray(load_image(s))  # EXIF, mode conversion, bomb/corrupt-file checks -> InputError
        crops.append(np.asarray(rgb.resize((112, 112), Image.BILINEAR)))
        small.append(np.asarray(rgb.resize((size, size), Image.BILINEAR)))
    return np.stack(small), crops


def faceless(crops: list[np.ndarray]) -> list[int]:
    """Indices of crops in which no face is found (HOG first, the CNN detector only for HOG's misses)."""
    from ..core.detect import FaceDetector

    padded = [np.pad(c, ((DETECT_PAD, DETECT_PAD), (DETECT_PAD, DETECT_PAD), (0, 0)), mode="edge") for c in crops]
    hog = FaceDetector("hog", upsample=1, with_68=False)
    miss = [i for i, im in enumerate(padded) if not hog.boxes(im)]
    if miss:
        cnn = FaceDetector("cnn", upsample=0, with_68=False)
        miss = [i for i in miss if not cnn.boxes(padded[i])]
    return miss


def check_support_faces(paths: list[str], crops: list[np.ndarray]) -> None:
    """Refuse support images without a face (``InputError`` naming them)."""
    bad = faceless(crops)
    if bad:
        names = ", ".join(str(paths[i]) for i in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise InputError(f"no face found in support image(s) {names}: each support image must be an aligned "
                         "face crop of a person to forget")


@dataclass(frozen=True)
class RequestResult:
    """What one request did: where the model went, the method, the number of support images, seconds."""

    out: Path
    method: str
    n_support: int
    seconds: float


def forget(model_path: str | os.PathLike, support: list[str], out: str | os.PathLike, *, method: str = "metaunlearn",
           metaloss_path: str | os.PathLike | None = None, labels: str = "auto", threads: int = 1,
           check_faces: bool = True, data_root: str | os.PathLike | None = None,
           support_ce: tuple[float, float] | list[float] | None = None) -> RequestResult:
    """Make the model at ``model_path`` forget the people shown in ``support`` and write it to ``out``;
    ``support_ce`` = (C, G) sets MetaUnlearn's per-request step rule (G = 0: off; None: the MetaLoss file's)."""
    import time

    import torch

    from ..core.fileio import check_output
    from .metaloss import load_metaloss, support_ce_rule
    from .methods import UnlearnContext, get_method
    from .model import load_model_with_record, predict, save_model, to_float

    # never overwrite an input (the model, the MetaLoss or a support image), before any work
    check_output(out, [*support, model_path, *([metaloss_path] if metaloss_path else [])])
    torch.set_num_threads(max(1, threads))
    model, record = load_model_with_record(model_path)
    x, crops = load_support(support, model.cfg.size)
    if check_faces:
        check_support_faces(support, crops)
    if model.cfg.kind == "mlp":
        from ..core.embedders import embed_arcface_crops, get_embedder
        from ..core.paths import default_data_root

        root = Path(data_root) if data_root else default_data_root()
        x = np.asarray(embed_arcface_crops(get_embedder(model.cfg.embedder or "dlib", root), np.stack(crops)),
                       np.float32)
    if labels == "auto":
        labels = "model" if model.cfg.kind == "mlp" else "teacher"
    if labels == "teacher":
        from .teacher import AgeGenderTeacher

        y = torch.as_tensor(AgeGenderTeacher().predict(crops)["label"], dtype=torch.long)
    else:
        y = predict(model, x).argmax(1)
    ctx = UnlearnContext()
    meta_info: dict = {}
    if method == "metaunlearn":
        if metaloss_path is None:
            raise InputError("metaunlearn needs a MetaLoss file")
        ctx.meta, extra = load_metaloss(metaloss_path)
        ctx.eta = float(extra.get("eta", ctx.eta))
        if support_ce is not None:
            ctx.meta.support_ce = support_ce_rule(support_ce)
        meta_info = {"metaloss": Path(metaloss_path).name, "eta": ctx.eta}
        if ctx.meta.support_ce is not None:
            meta_info["support_ce"] = list(ctx.meta.support_ce)
    fn, _full = get_method(method)
    t0 = time.perf_counter()
    new = fn(model, to_float(x), y, ctx)
    dt = time.perf_counter() - t0
    entry = {"method": method, "n_support": len(support), "labels": labels, **meta_info,
             "from_model": Path(model_path).name,
             "utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    record = {**record, "unlearning_history": [*record.get("unlearning_history", []), entry]}
    save_model(new, out, record)
    return RequestResult(Path(out), method, len(support), dt)
