"""Deterministic test clips: face photos pasted on a textured background, moving and scaling smoothly, with
a sine-tone audio track; the ground-truth box of every face in every frame is returned. Used by the tests
(tiny clips) and by ``eval-video`` (a 10-second 720p clip of CelebA test identities)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth coloured texture (low-frequency noise plus a gradient)."""
    from scipy.ndimage import gaussian_filter, zoom

    rng = np.random.default_rng(seed)
    small = rng.uniform(40, 200, size=(max(2, h // 40), max(2, w // 40), 3))
    big = zoom(small, (h / small.shape[0], w / small.shape[1], 1), order=1)[:h, :w]
    big = gaussian_filter(big, (3, 3, 0))
    yy = np.linspace(0, 30, h)[:, None, None]
    return np.clip(big + yy, 0, 255).astype(np.uint8)


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BILINEAR))


def paths(n_faces: int, n_frames: int, h: int, w: int, side: float, seed: int = 0, cycles: float = 1.0
          ) -> np.ndarray:
    """(n_faces, n_frames, 3) centre x, centre y and side of each face: smooth sinusoidal motion (``cycles``
    periods over the clip) and +-20 % scale, faces in separate horizontal lanes (they may come close, never
    cover each other)."""
    rng = np.random.default_rng(seed + 1)
    t = cycles * np.arange(n_frames) / max(1, n_frames - 1)
    out = np.zeros((n_faces, n_frames, 3))
    lane = w / n_faces
    for k in range(n_faces):
        ph = rng.uniform(0, 2 * np.pi, 3)
        s = side * (1 + 0.2 * np.sin(2 * np.pi * t * 0.7 + ph[2]))
        amp_x = max(0.0, (lane - 1.25 * side) / 2)
        cx = lane * (k + 0.5) + amp_x * np.sin(2 * np.pi * t + ph[0])
        cy = h / 2 + 0.18 * h * np.sin(2 * np.pi * t * 0.8 + ph[1])
        out[k] = np.stack([cx, cy, s], 1)
    return out


def make_frames(faces: list[np.ndarray], n_frames: int, h: int, w: int, side: float, seed: int = 0,
                cycles: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames and the ground-truth tracks (n_faces, n_frames, 3) (see ``paths``)."""
    bg = background(h, w, seed)
    gt = paths(len(faces), n_frames, h, w, side, seed, cycles)
    frames = []
    for i in range(n_frames):
        f = bg.astype(np.float64)
        for k, face in enumerate(faces):
            cx, cy, s = gt[k, i]
            side_i = int(round(s))
            patch = _resize(face, side_i).astype(np.float64)
            yy, xx = np.mgrid[0:side_i, 0:side_i]
            d = np.hypot((xx + 0.5 - side_i / 2) / (0.5 * side_i), (yy + 0.5 - side_i / 2) / (0.55 * side_i))
            a = np.clip((1.0 - d) / 0.12, 0, 1)[..., None]
            x0, y0 = int(round(cx - side_i / 2)), int(round(cy - side_i / 2))
            xs, ys = slice(max(0, x0), min(w, x0 + side_i)), slice(max(0, y0), min(h, y0 + side_i))
            px = slice(xs.start - x0, xs.stop - x0)
            py = slice(ys.start - y0, ys.stop - y0)
            f[ys, xs] = a[py, px] * patch[py, px] + (1 - a[py, px]) * f[ys, xs]
        frames.append(np.clip(f + 0.5, 0, 255).astype(np.uint8))
    return frames, gt


def write_clip(path: str | Path, frames: list[np.ndarray], fps: int = 25, *, codec: str = "libx264",
               audio: bool = True, crf: int = 16, pts: list[int] | None = None, rotation: int = 0) -> Path:
    """Encode frames (H.264 yuv420p in .mp4, or ``codec="ffv1"`` RGB) with a 440 Hz AAC tone; ``pts``
    overrides the frame timestamps (in 1/(4 fps) units; a variable-rate clip for the tests); ``rotation``
    stores the frames turned and tags them to be displayed upright (a phone clip)."""
    import av

    path = Path(path)
    if rotation:
        frames = [np.ascontiguousarray(np.rot90(f, k=-(rotation // 90))) for f in frames]
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        v = c.add_stream(codec, rate=fps)
        v.width, v.height = w, h
        v.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        if codec == "libx264":
            v.options = {"crf": str(crf), "threads": "1"}
        if rotation:
            v.set_display_rotation(rotation)
        if pts is not None:
            v.codec_context.time_base = Fraction(1, fps * 4)
        a = None
        if audio:
            a = c.add_stream("aac", rate=44100)
            a.layout = "mono"
        for i, fr in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(fr), format="rgb24")
            if pts is not None:
                vf.pts = pts[i]
                vf.time_base = Fraction(1, fps * 4)
            else:
                vf.pts = i
            for p in v.encode(vf):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        if a is not None:
            sr, n = 44100, int(44100 * len(frames) / fps)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
            for s in range(0, n, 1024):
                chunk = tone[s:s + 1024]
                af = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
                af.sample_rate = sr
                af.pts = s
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path
