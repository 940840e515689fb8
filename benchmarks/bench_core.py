"""Detection + alignment throughput (faces/s) on real photos, HOG vs dlib's MMOD CNN, and the
ArcFace-crop path vs dlib's own chip extraction, all measured in this run."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _images(data_root: Path, n: int) -> list[np.ndarray]:
    from faceprivacy.core.imageio import load_image

    d = data_root / "utkface_crop_part1" / "images"
    if d.is_dir():
        return [load_image(p) for p in sorted(d.iterdir())[:n]]
    import skimage.data

    return [skimage.data.astronaut()] * n


def run(data_root: Path, out_dir: Path) -> dict:
    from faceprivacy.core.align import arcface_crop, dlib_chip
    from faceprivacy.core.detect import FaceDetector

    imgs = _images(data_root, 60)
    res: dict = {"n_images": len(imgs), "image_size": list(imgs[0].shape)}
    for method, n in (("hog", len(imgs)), ("cnn", 6)):
        det = FaceDetector(method, upsample=0 if method == "cnn" else 1)
        t0 = time.perf_counter()
        nf = 0
        for im in imgs[:n]:
            for f in det.detect(im):
                arcface_crop(im, f.arcface5)
                dlib_chip(im, f.shape5)
                nf += 1
        dt = time.perf_counter() - t0
        res[f"{method}_images_per_s"] = n / dt
        res[f"{method}_faces_found"] = f"{nf}/{n}"
        print(f"   detect+landmarks+align ({method}): {n / dt:7.2f} images/s ({nf}/{n} faces)")
    res["hog_vs_cnn_speed_ratio"] = res["hog_images_per_s"] / res["cnn_images_per_s"]
    print(f"   HOG is {res['hog_vs_cnn_speed_ratio']:.1f}x faster than dlib's MMOD CNN")
    return res
