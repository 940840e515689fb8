"""The post-replacement safety net of ``anonymize``: does a replaced face still verify as the original?

After the method has replaced a face, the face in the *output frame* (ArcFace crop at the face's five points)
is compared with the same crop of the *input frame* by two recognizers that are not the method's own choice
of donors: dlib's ResNet descriptor and the CASIA MobileFaceNet (never the ONNX MobileFaceNet, which stays the
evaluation's independent judge). A face counts as a **leak** when either cosine exceeds that recognizer's
threshold at FAR 1e-2 on impostor pairs of *validation* identities (:data:`THRESHOLDS`; recomputed by
``python -m faceprivacy.deid.safety``, ``docs/safety_thresholds_val.json``), a conservative bar: an
anonymized face must be farther from its original than 99 % of different people are from each other.

The pipeline (``pipeline.Deidentifier``) escalates a leak: a redraw under another key derived from the face's
key (``<purpose>/safety/<n>``, so the output stays a pure function of key and image), and when every redraw
still leaks, :func:`obscure` (pixelate + blur of the grown face box); if even that verifies, the box is filled
with its mean colour. Both fallbacks are sealed like any replaced face, so exact recovery is unchanged.

The identity push of ``donor`` (off by default) optimises against these same two recognizers; the pipeline
never turns it on for a redraw, so the check is not an attack on itself.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: cosine at FAR 1e-2 on the 138,429 impostor pairs of 539 validation-identity CelebA crops (24 people;
#: ``calibrate``, docs/safety_thresholds_val.json: 0.9081 and 0.2583, rounded down): above it, "same person"
THRESHOLDS = {"dlib": 0.908, "mobilefacenet": 0.258}
#: FAR the thresholds are taken at, and the number of redraws before the fallback
SAFETY_FAR = 1e-2
REDRAWS = 2
#: the fallback pixelates the face box grown by this fraction per side into blocks of side / PIXEL_BLOCKS, then
#: blurs with sigma = PIXEL_SIGMA x side
PIXEL_GROW, PIXEL_BLOCKS, PIXEL_SIGMA = 0.2, 5.0, 0.08
#: ... grown by this fraction instead when the box itself is not trusted (weak detections, occluded or unalignable
#: faces: a partial box, e.g. an occluded face's visible part). Chosen on validation scenes (val and an all-occluded
#: val set, docs/detection.md "Third pass"): the smallest of 0.2 / 0.35 / 0.5 / 0.75 whose grown box covers >= 95 %
#: of the true face box for >= 90 % of the weak and >= 95 % of the occluded faces (0.2: 60 % / 81 %)
UNTRUSTED_GROW = 0.5


class SafetyNet:
    """dlib + CASIA MobileFaceNet verification of (original, anonymized) crop pairs (module docstring).

    ``thresholds``: per recognizer, the cosine above which a pair verifies (default :data:`THRESHOLDS`).
    ``data_root``: the datakit holding the CASIA checkpoint (default: the configured one). Without it the net
    runs on dlib alone and says so once on stderr.
    """

    def __init__(self, thresholds: dict[str, float] | None = None, data_root=None, redraws: int = REDRAWS,
                 occlusion=False) -> None:
        self.thresholds = dict(THRESHOLDS if thresholds is None else thresholds)
        self.data_root, self.redraws = data_root, int(redraws)
        self._nets: dict | None = None
        #: the occlusion check (``deid.occlusion``): True = the shipped one, None/False = off (the default: on
        #: clean test photos it flags too many faces, darker-skinned ones most, docs/deid.md run 8), or an
        #: object with ``flags(features)``
        self._occlusion = occlusion
        self.seconds = 0.0  # time spent in checks (for the per-face cost)
        self.checks = 0

    @property
    def occlusion(self):
        if self._occlusion is True:
            from .occlusion import default_check

            self._occlusion = default_check()
        return self._occlusion or None

    def embed(self, crops112: np.ndarray) -> dict[str, np.ndarray]:
        """Per recognizer, the unit descriptors of 112x112 ArcFace crops."""
        from ..core.embedders import embed_arcface_crops

        crops112 = np.asarray(crops112)
        return {name: embed_arcface_crops(net, crops112) for name, net in self.nets().items()}

    def occluded(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """True per face whose input crop (descriptors ``feats`` from :meth:`embed`) the occlusion check
        calls occluded; all False without the check or without both recognizers."""
        n = len(next(iter(feats.values()))) if feats else 0
        chk = self.occlusion
        if chk is None or not n or not {"dlib", "mobilefacenet"} <= set(feats):
            return np.zeros(n, bool)
        return np.asarray(chk.flags(np.concatenate([feats["dlib"], feats["mobilefacenet"]], 1)), bool)

    def nets(self) -> dict:
        if self._nets is None:
            from ..core.embedders import get_embedder
            from ..core.errors import FacePrivacyError

            nets = {"dlib": get_embedder("dlib")}
            if "mobilefacenet" in self.thresholds:
                try:
                    nets["mobilefacenet"] = get_embedder("mobilefacenet", self.data_root)
                except (FacePrivacyError, OSError) as e:
                    log.warning("safety net: CASIA MobileFaceNet unavailable (%s): checking with dlib only", e)
            self._nets = nets
        return self._nets

    def scores(self, orig112: np.ndarray, anon112: np.ndarray,
               ref: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Per recognizer, the cosine of each (original, anonymized) pair of 112x112 ArcFace crops (``ref``:
        the originals' descriptors from :meth:`embed`, when already computed)."""
        import time

        from ..core.embedders import embed_arcface_crops

        t0 = time.perf_counter()
        orig112, anon112 = np.asarray(orig112), np.asarray(anon112)
        out = {}
        if len(orig112):
            for name, net in self.nets().items():
                if ref is not None and name in ref:
                    fo, fa = np.asarray(ref[name]), embed_arcface_crops(net, anon112)
                else:
                    f = embed_arcface_crops(net, np.concatenate([orig112, anon112]))
                    fo, fa = f[:len(orig112)], f[len(orig112):]
                out[name] = np.sum(fo * fa, 1)
        self.seconds += time.perf_counter() - t0
        self.checks += len(orig112)
        return out

    def leaks(self, orig112: np.ndarray, anon112: np.ndarray, ref: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """True per pair that any recognizer still verifies as one person."""
        s = self.scores(orig112, anon112, ref)
        hit = np.zeros(len(orig112), bool)
        for name, cos in s.items():
            hit |= cos > self.thresholds[name]
        return hit


def face_crops(img: np.ndarray, fives: Sequence[np.ndarray]) -> np.ndarray:
    """ArcFace 112x112 crops of ``img`` at each face's five points."""
    from ..core.align import arcface_crop

    if not len(fives):
        return np.zeros((0, 112, 112, 3), np.uint8)
    return np.stack([arcface_crop(img, np.asarray(f, float), 112)[0] for f in fives])


def grown_box(box: Sequence[float], shape: tuple[int, ...], grow: float = PIXEL_GROW) -> list[int]:
    """The face box grown by ``grow`` x its side on each side, clipped to the frame -> [x1, y1, x2, y2)."""
    h, w = shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    g = grow * max(x2 - x1, y2 - y1, 1.0)
    return [int(np.clip(np.floor(x1 - g), 0, w)), int(np.clip(np.floor(y1 - g), 0, h)),
            int(np.clip(np.ceil(x2 + g), 0, w)), int(np.clip(np.ceil(y2 + g), 0, h))]


def obscure(frame: np.ndarray, box: Sequence[float], solid: bool = False, grow: float = PIXEL_GROW) -> np.ndarray:
    """A copy of ``frame`` with the face box grown by ``grow`` pixelated (blocks of side / ``PIXEL_BLOCKS``, on a
    grid anchored at the region's corner) and then blurred (sigma ``PIXEL_SIGMA`` x side); ``solid``: filled with
    the region's mean colour instead."""
    from scipy.ndimage import gaussian_filter

    r = grown_box(box, frame.shape, grow)
    out = frame.copy()
    if r[2] <= r[0] or r[3] <= r[1]:
        return out
    reg = frame[r[1]:r[3], r[0]:r[2]].astype(np.float64)
    if solid:
        out[r[1]:r[3], r[0]:r[2]] = np.clip(reg.reshape(-1, 3).mean(0) + 0.5, 0, 255).astype(np.uint8)
        return out
    side = max(float(box[2]) - float(box[0]), float(box[3]) - float(box[1]), 1.0)
    b = max(2, int(round(side / PIXEL_BLOCKS)))
    hh, ww = reg.shape[:2]
    ny, nx = -(-hh // b), -(-ww // b)
    pad = np.pad(reg, ((0, ny * b - hh), (0, nx * b - ww), (0, 0)), mode="edge")
    means = pad.reshape(ny, b, nx, b, 3).mean((1, 3))
    pix = np.repeat(np.repeat(means, b, 0), b, 1)[:hh, :ww]
    sigma = max(1.0, PIXEL_SIGMA * side)
    pix = gaussian_filter(pix, (sigma, sigma, 0), mode="nearest")
    out[r[1]:r[3], r[0]:r[2]] = np.clip(pix + 0.5, 0, 255).astype(np.uint8)
    return out


def pipeline_net(obscure_occluded: bool = False):
    """The pipeline's ``safety`` argument for ``anonymize``'s options: True (the shared :func:`default_net`), or with
    ``--obscure-occluded`` a net that also runs the opt-in occlusion check."""
    return SafetyNet(occlusion=True) if obscure_occluded else True


@functools.cache
def default_net() -> SafetyNet:
    """The shared safety net of the pipeline (models load on first check)."""
    return SafetyNet()


def calibrate(data: Path, split: str = "val", far: float = SAFETY_FAR, n: int = 600, seed: int = 0) -> dict:
    """Thresholds at ``far`` on all impostor pairs of ``n`` random ``split``-identity CelebA crops."""
    from ..core.data import celeba_subset, identity_split
    from ..core.embedders import embed_arcface_crops, get_embedder
    from ..core.metrics import all_pairs, threshold_at_far
    from .crops import load_crops

    ds = identity_split(celeba_subset(Path(data) / "celeba_subset_aligned112"))[split]
    rng = np.random.default_rng(seed + 11)
    rows = np.sort(rng.permutation(len(ds.paths))[:n])
    x = load_crops([ds.paths[i] for i in rows])
    pairs, same = all_pairs(np.asarray(ds.labels)[rows])
    out: dict = {"split": split, "far": far, "photos": int(len(rows)),
                 "people": int(len(set(np.asarray(ds.labels)[rows].tolist()))),
                 "impostor_pairs": int((~same).sum()), "genuine_pairs": int(same.sum()), "thresholds": {},
                 "tar": {}}
    for name in ("dlib", "mobilefacenet"):
        f = embed_arcface_crops(get_embedder(name, str(data)), x)
        sims = np.sum(f[pairs[:, 0]] * f[pairs[:, 1]], 1)
        t = threshold_at_far(sims[~same], far)
        out["thresholds"][name] = float(t)
        out["tar"][name] = float(np.mean(sims[same] > t)) if same.any() else None
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m faceprivacy.deid.safety [--data D] [-o JSON]``: recompute :data:`THRESHOLDS`."""
    import argparse

    from ..core.paths import default_data_root

    p = argparse.ArgumentParser(prog="python -m faceprivacy.deid.safety", description=main.__doc__)
    p.add_argument("--data", default=None)
    p.add_argument("-o", "--out", default=None)
    p.add_argument("--far", type=float, default=SAFETY_FAR)
    a = p.parse_args(argv)
    data = a.data or default_data_root()
    res = calibrate(Path(data), far=a.far)
    text = json.dumps(res, indent=2)
    if a.out:
        from ..core.fileio import atomic_write_bytes

        atomic_write_bytes(Path(a.out), (text + "\n").encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
