"""Video de-identification (``faceprivacy anonymize clip.mp4``, ``faceprivacy recover clip_anon.mkv``):
tracking, one stranger per person for the whole clip, a sealed recovery record. See ``anonymize``.

The pipeline names load on first use, so that building the CLI parser (which reads ``io.MAX_SECONDS``) or
``is_video_path`` does not import the tracker, the donor method and the record code."""

from __future__ import annotations

from .io import VIDEO_EXTS, is_video_path, probe

_LAZY = {"VideoResult", "anonymize_video", "compare_videos", "recover_video"}

__all__ = ["VIDEO_EXTS", "VideoResult", "anonymize_video", "compare_videos", "is_video_path", "probe",
           "recover_video"]


def __getattr__(name: str):
    if name in _LAZY:
        from . import anonymize

        return getattr(anonymize, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
