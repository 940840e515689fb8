"""``make demo``: run every system once on the bundled defaults and write a summary.

Each system may provide ``faceprivacy.<system>.demo.run_demo(data_root, out_dir) -> dict``; the core
part always runs. Results: ``out/demo/summary.json`` and ``out/demo/index.html``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

import numpy as np

SYSTEMS = ("deid", "audit", "mri", "federated", "unlearn")


def core_demo(data_root: Path | None, out: Path) -> dict:
    """Detect + align the astronaut; verify CelebA photo pairs with both recognizers."""
    import skimage.data

    from .core.align import arcface_crop
    from .core.data import celeba_subset, identity_split, load_images
    from .core.detect import FaceDetector
    from .core.embedders import embed_arcface_crops, get_embedder
    from .core.imageio import save_image

    img = skimage.data.astronaut()
    face = FaceDetector(upsample=0).detect_one(img)
    crop, _ = arcface_crop(img, face.arcface5)
    save_image(out / "astronaut_crop112.png", crop)
    res: dict = {"astronaut_box": face.box.tolist()}
    if data_root is None:
        return res
    ds = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))["test"]
    ids = ds.identities[:2]
    a = ds.select_identities([ids[0]]).paths[:2]
    b = ds.select_identities([ids[1]]).paths[:1]
    x = load_images(list(a) + list(b))
    for name in ("dlib", "mobilefacenet"):
        f = embed_arcface_crops(get_embedder(name, data_root), x)
        res[name] = {"same_person_cosine": float(f[0] @ f[1]), "different_person_cosine": float(f[0] @ f[2])}
        print(f"  {name:14s} same-person cos {res[name]['same_person_cosine']:.3f}   "
              f"different-person cos {res[name]['different_person_cosine']:.3f}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/datakit")
    ap.add_argument("--out", default="out/demo")
    args = ap.parse_args(argv)
    data_root = Path(args.data) if Path(args.data).is_dir() else None
    if data_root is None:
        print(f"note: datakit not found at {args.data}; running the parts that need no data")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from .core.fileio import atomic_write_json
    from .core.report import HtmlReport

    summary: dict = {}
    report = HtmlReport("faceprivacy demo")
    parts = [("core", core_demo)]
    for sysname in SYSTEMS:
        try:
            mod = importlib.import_module(f"faceprivacy.{sysname}.demo")
        except ModuleNotFoundError:
            continue
        parts.append((sysname, mod.run_demo))
    failed = []
    for name, fn in parts:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            summary[name] = fn(data_root, out / name)
        except Exception as e:
            traceback.print_exc()
            summary[name] = {"error": f"{type(e).__name__}: {e}"}
            failed.append(name)
        summary[name + "_seconds"] = round(time.perf_counter() - t0, 1)
        report.heading(name)
        report.paragraph(str({k: (round(v, 4) if isinstance(v, float | np.floating) else v)
                              for k, v in summary[name].items()}))
    atomic_write_json(out / "summary.json", summary)
    report.write(out / "index.html")
    print(f"wrote {out / 'summary.json'} and {out / 'index.html'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
