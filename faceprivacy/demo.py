"""``make demo``: run every system once on the bundled defaults and write a summary.

Each step is a real ``faceprivacy`` command on small inputs (a few minutes in all on 2 cores). Results: ``out/demo/summary.json`` and ``out/demo/index.html``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

import numpy as np


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


def _cli(argv: list[str]) -> int:
    """Run one ``faceprivacy`` command in-process; a non-zero exit fails that demo step."""
    from .cli import main as cli_main

    rc = cli_main(["-q", *argv])
    if rc != 0:
        raise RuntimeError(f"faceprivacy {' '.join(argv)} exited {rc}")
    return rc


def generator_demo(data_root: Path | None, out: Path) -> dict:
    """Encode/decode held-out faces and sample the bundled lite generator (small evaluation)."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    _cli(["eval-generator", "--data", str(data_root), "--out", str(out), "--max-test", "48", "--n-samples", "48"])
    return {"report": str(out)}


def deid_demo(data_root: Path | None, out: Path) -> dict:
    """Anonymize the astronaut with a passphrase, recover her from the output file alone, check the result."""
    import skimage.data

    from .core.imageio import load_image, save_image
    from .core.metrics import psnr

    src = out / "astronaut.png"
    save_image(src, skimage.data.astronaut())
    pw = out / "passphrase.txt"
    pw.write_text("demo passphrase: correct horse battery staple\n")
    _cli(["anonymize", str(src), str(out / "anonymized.png"), "--passphrase-file", str(pw)])
    _cli(["anonymize", str(src), str(out / "blurred.png"), "--passphrase-file", str(pw), "--method", "blur"])
    _cli(["recover", str(out / "anonymized.png"), str(out / "recovered.png"), "--passphrase-file", str(pw)])
    a, r, x = (load_image(out / f) for f in ("astronaut.png", "recovered.png", "anonymized.png"))
    res = {"psnr_recovered_vs_original": psnr(a, r), "psnr_anonymized_vs_original": psnr(a, x)}
    print(f"  recovered vs original PSNR {res['psnr_recovered_vs_original']:.1f} dB; "
          f"anonymized vs original {res['psnr_anonymized_vs_original']:.1f} dB")
    return res


def audit_demo(data_root: Path | None, out: Path) -> dict:
    """Quick embedding-leakage audit of dlib embeddings (probes, inversion, protected templates)."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    _cli(["audit-embeddings", "--embedder", "dlib", "--data", str(data_root), "--out", str(out), "--quick"])
    return {"report": str(out)}


def mri_demo(data_root: Path | None, out: Path) -> dict:
    """Deface a real whole-head T1 (Chris, MRIcron) with the FSL-free template-mask defacer."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    head = data_root / "mri_heads" / "chris_t1_mricron" / "chris_t1.nii.gz"
    _cli(["deface", str(head), str(out / "chris_t1_defaced.nii.gz"), "--method", "mask",
          "--data", str(data_root), "--json", str(out / "deface.json")])
    return {"defaced": str(out / "chris_t1_defaced.nii.gz")}


def federated_demo(data_root: Path | None, out: Path) -> dict:
    """In-process FedFace on the real CelebA clients (167 training identities, one each; dlib head, 40 rounds),
    or on synthetic clients without the datakit."""
    if data_root is None:
        _cli(["fed-simulate", "--synthetic", "--clients", "40", "--rounds", "3", "--out", str(out)])
    else:
        _cli(["fed-simulate", "--data", str(data_root), "--rounds", "40", "--eval-every", "20",
              "--algorithms", "fedface,fedavg", "--out", str(out)])
    return {"report": str(out)}


def unlearn_demo(data_root: Path | None, out: Path) -> dict:
    """Forget one held-out CelebA person from the bundled task model with MetaUnlearn, from one photo."""
    if data_root is None:
        return {"skipped": "needs the datakit"}
    from .core.data import celeba_subset, identity_split

    ds = identity_split(celeba_subset(data_root / "celeba_subset_aligned112"))["test"]
    support = ds.select_identities([ds.identities[0]]).paths[0]
    _cli(["unlearn", "--support", str(support), "--out", str(out / "unlearned.pt"), "--method", "metaunlearn",
          "--labels", "model"])
    return {"model": str(out / "unlearned.pt")}


DEMOS = (("core", core_demo), ("generator", generator_demo), ("deid", deid_demo), ("audit", audit_demo),
         ("mri", mri_demo), ("federated", federated_demo), ("unlearn", unlearn_demo))


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
    failed = []
    for name, fn in DEMOS:
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            (out / name).mkdir(parents=True, exist_ok=True)
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
