"""Video files through PyAV: probe and refuse what cannot be processed, decode to RGB frames, encode with
the audio stream copied.

Frames carrying a display rotation (phone clips) are turned upright on decoding, so the detector sees upright
faces; the output is written upright with no rotation tag (it displays the same).

Refused (``InputError``, one line): a file FFmpeg cannot open or that breaks while demuxing or decoding, a
file without a video stream or without frames, variable frame rate (frame intervals that differ by more than
10 % and one tick), a frame size that changes mid-stream, frames smaller than ``MIN_SIDE`` or larger than
``max_pixels``, a clip longer than ``max_seconds``, and an odd width or height for H.264 (yuv420p) output.

Output codecs by extension: ``.mkv`` is FFV1 on 8-bit RGB (``bgr0``: every decoded RGB value comes back
exactly, so recovery is bit-exact); ``.mp4`` / ``.mov`` are H.264 (libx264, CRF ``H264_CRF``, yuv420p):
smaller and playable everywhere, but lossy, so recovery restores the faces' original pixels inside a frame
that went through the codec (the loss is measured and printed at run time). Audio packets are copied
without re-encoding; when the container cannot hold the input's audio codec (e.g. PCM in MP4), the audio is
re-encoded to AAC and a note says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ...core.errors import InputError

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm")
#: output extensions and their (container format, lossless?)
OUTPUT_FORMATS = {".mkv": ("matroska", True), ".mp4": ("mp4", False), ".mov": ("mov", False)}
MIN_SIDE = 32
#: default limits (the CLI's --max-seconds; frames above 4096 x 4096 are refused)
MAX_SECONDS = 600.0
MAX_PIXELS = 4096 * 4096
H264_CRF = 18
MARKER = "faceprivacy-anonymized"


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


@dataclass
class VideoInfo:
    """What a probe found (all checked). ``width`` / ``height`` are the upright frame's (after ``rotation``,
    the display rotation a phone records, which the frames are turned by before anything else sees them)."""

    path: Path
    width: int
    height: int
    fps: Fraction
    n_frames: int
    codec: str
    has_audio: bool
    audio_codec: str | None = None
    notes: list[str] = field(default_factory=list)
    rotation: int = 0

    @property
    def seconds(self) -> float:
        return self.n_frames / float(self.fps)


def _open(path: Path):
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a readable video ({_reason(e)})") from None


def _reason(e: BaseException) -> str:
    s = getattr(e, "strerror", None) or str(e)
    return s.split(":")[0].strip() if s else type(e).__name__


def output_format(path: str | os.PathLike) -> tuple[str, bool]:
    """(container format, lossless?) of an output video path, or InputError."""
    ext = Path(path).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise InputError(f"unsupported output video format {ext or '(none)'!r} for {path} (use .mkv for "
                         "exact recovery (FFV1), or .mp4 / .mov (H.264, lossy))")
    return OUTPUT_FORMATS[ext]


def probe(path: str | os.PathLike, *, max_seconds: float = MAX_SECONDS, max_pixels: int = MAX_PIXELS) -> VideoInfo:
    """Open, demux every video packet (no decoding) and check the clip -> VideoInfo, or InputError."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found")
    with _open(path) as c:
        vs = [s for s in c.streams if s.type == "video"]
        if not vs:
            raise InputError(f"{path}: no video stream (streams: {', '.join(s.type for s in c.streams) or 'none'})")
        v = vs[0]
        w, h = int(v.codec_context.width or 0), int(v.codec_context.height or 0)
        if w <= 0 or h <= 0:
            raise InputError(f"{path}: the video stream has no frame size (corrupt header)")
        if min(w, h) < MIN_SIDE:
            raise InputError(f"{path}: frames of {w}x{h} are too small (at least {MIN_SIDE} px a side)")
        if w * h > max_pixels:
            raise InputError(f"{path}: frames of {w}x{h} are too large (at most {max_pixels} pixels)")
        auds = [s for s in c.streams if s.type == "audio"]
        pts: list[int] = []
        try:
            for pkt in c.demux(v):
                if pkt.size and pkt.pts is not None:
                    pts.append(int(pkt.pts))
        except (av.error.FFmpegError, OSError) as e:
            raise InputError(f"{path}: the video is corrupt ({_reason(e)} after {len(pts)} frames)") from None
        if not pts:
            raise InputError(f"{path}: the video stream holds no frames")
        tb = v.time_base or Fraction(1, 1000)
        rate = v.average_rate or v.guessed_rate or v.base_rate
        fps = _check_constant_rate(path, np.sort(np.asarray(pts, np.int64)), tb, rate)
        n = len(pts)
        if n / float(fps) > max_seconds:
            raise InputError(f"{path}: the clip lasts {n / float(fps):.1f} s, over the limit of {max_seconds:g} s "
                             "(--max-seconds)")
        codec, audio_codec = v.codec_context.name, auds[0].codec_context.name if auds else None
    rot = _rotation(path)
    if rot % 180:
        w, h = h, w
    info = VideoInfo(path, w, h, fps, n, codec, audio_codec is not None, audio_codec, rotation=rot)
    if rot:
        info.notes.append(f"the input is displayed turned by {rot} degrees: its frames are processed and written "
                          "upright")
    return info


def _rotation(path: Path) -> int:
    """The display rotation of the first decoded frame (0, 90, 180 or 270, counter-clockwise)."""
    import av

    with _open(path) as c:
        try:
            for fr in c.decode(c.streams.video[0]):
                rot = int(round(float(getattr(fr, "rotation", 0) or 0))) % 360
                if rot % 90:
                    raise InputError(f"{path}: display rotation of {rot} degrees (only multiples of 90 are supported)")
                return rot
        except (av.error.FFmpegError, OSError) as e:
            raise InputError(f"{path}: the video is corrupt ({_reason(e)} at frame 0)") from None
    raise InputError(f"{path}: the video stream holds no decodable frame")


def _upright(arr: np.ndarray, rot: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(arr, k=rot // 90)) if rot else arr


def _check_constant_rate(path: Path, pts: np.ndarray, tb: Fraction, rate: Fraction | None) -> Fraction:
    if len(np.unique(pts)) != len(pts):
        raise InputError(f"{path}: two video frames share a timestamp (corrupt or variable-frame-rate stream)")
    if len(pts) >= 3:
        d = np.diff(pts)
        med = float(np.median(d))
        tol = max(1.0, 0.1 * med)
        if np.any(np.abs(d - med) > tol):
            ms = d.astype(float) * float(tb) * 1000
            raise InputError(f"{path}: variable frame rate (frame intervals from {ms.min():.1f} to {ms.max():.1f} ms); "
                             "convert it to a constant rate first, e.g. ffmpeg -i IN -fps_mode cfr -r 25 OUT.mkv")
        fps = Fraction(1) / (Fraction(med).limit_denominator(1 << 20) * tb)
        if rate and abs(float(rate) - float(fps)) / float(fps) < 0.01:
            fps = Fraction(rate)
        return fps.limit_denominator(100000)
    if rate:
        return Fraction(rate)
    raise InputError(f"{path}: the video has no frame rate")


def iter_packets(path: Path) -> Iterator[tuple[str, object]]:
    """Packets of the first video stream and the first audio stream in file order: ("video", frame array)
    after decoding, ("audio", packet) as stored. Size changes and decoding errors -> InputError."""
    import av

    with _open(path) as c:
        v = c.streams.video[0]
        streams = [v] + ([c.streams.audio[0]] if c.streams.audio else [])
        w, h = v.codec_context.width, v.codec_context.height
        k = rot0 = 0
        try:
            for pkt in c.demux(*streams):
                if pkt.stream.type == "audio":
                    if pkt.size:
                        yield "audio", pkt
                    continue
                for fr in pkt.decode():
                    if (fr.width, fr.height) != (w, h):
                        raise InputError(f"{path}: the frame size changes at frame {k} ({w}x{h} -> "
                                         f"{fr.width}x{fr.height})")
                    rot = int(round(float(getattr(fr, "rotation", 0) or 0))) % 360
                    if k == 0:
                        rot0 = rot
                    elif rot != rot0:
                        raise InputError(f"{path}: the display rotation changes at frame {k}")
                    yield "video", _upright(fr.to_ndarray(format="rgb24"), rot)
                    k += 1
        except (av.error.FFmpegError, OSError) as e:
            raise InputError(f"{path}: the video is corrupt ({_reason(e)} at frame {k})") from None


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """The RGB uint8 frames of the first video stream, in presentation order."""
    for kind, x in iter_packets(path):
        if kind == "video":
            yield x  # type: ignore[misc]


class VideoWriter:
    """Encode RGB frames (and copy audio packets) into ``path``; the format follows ``name``'s extension
    (``path`` may be a temporary file with another name)."""

    def __init__(self, path: Path, name: str | os.PathLike, info: VideoInfo, *, copy_audio: bool = True,
                 metadata: dict[str, str] | None = None) -> None:
        import av

        fmt, self.lossless = output_format(name)
        if not self.lossless and (info.width % 2 or info.height % 2):
            raise InputError(f"odd frame size {info.width}x{info.height}: H.264 (yuv420p) needs even sides; "
                             "write .mkv (lossless FFV1) instead")
        self.notes: list[str] = []
        self.out = av.open(str(path), "w", format=fmt)
        for k, val in (metadata or {}).items():
            self.out.metadata[k] = val
        if self.lossless:
            s = self.out.add_stream("ffv1", rate=info.fps)
            s.pix_fmt = "bgr0"
            s.options = {"level": "3", "slicecrc": "1", "threads": "1"}
        else:
            s = self.out.add_stream("libx264", rate=info.fps)
            s.pix_fmt = "yuv420p"
            s.options = {"crf": str(H264_CRF), "preset": "medium", "threads": "1"}
        s.width, s.height = info.width, info.height
        self.vstream = s
        self.k = 0
        self.astream = None
        self._aenc = None
        self._src_audio = None
        if copy_audio and info.has_audio:
            self._add_audio(info)

    def _add_audio(self, info: VideoInfo) -> None:
        with _open(info.path) as c:
            src = c.streams.audio[0]
            name = src.codec_context.name
            if name in self._copyable():
                self.astream = self.out.add_stream_from_template(src)
                return
            rate = src.codec_context.sample_rate or 48000
            self._aenc = self.out.add_stream("flac" if self.lossless else "aac", rate=rate)
            self.astream = self._aenc
            self.notes.append(f"audio re-encoded ({name} -> {self._aenc.codec_context.name}): the container "
                              "cannot hold the original codec")

    def _copyable(self) -> tuple[str, ...]:
        if self.lossless:  # Matroska takes nearly anything
            return ("aac", "mp3", "opus", "vorbis", "flac", "ac3", "pcm_s16le", "pcm_s24le", "pcm_f32le", "alac")
        return ("aac", "mp3", "ac3", "alac", "opus")

    def write_frame(self, rgb: np.ndarray) -> None:
        import av

        fr = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        fr.pts = self.k
        self.k += 1
        for p in self.vstream.encode(fr):
            self.out.mux(p)

    def write_audio(self, pkt) -> None:
        if self.astream is None:
            return
        if self._aenc is not None:
            for fr in pkt.decode():
                fr.pts = None
                for p in self._aenc.encode(fr):
                    self.out.mux(p)
            return
        pkt.stream = self.astream
        self.out.mux(pkt)

    def close(self) -> None:
        for p in self.vstream.encode(None):
            self.out.mux(p)
        if self._aenc is not None:
            for p in self._aenc.encode(None):
                self.out.mux(p)
        self.out.close()


def read_marker(path: str | os.PathLike) -> str:
    """The container's ``comment`` metadata ('' when none)."""
    with _open(Path(path)) as c:
        return str(c.metadata.get("comment", "") or c.metadata.get("COMMENT", ""))
