"""Video de-identification (``faceprivacy anonymize clip.mp4``, ``faceprivacy recover clip_anon.mkv``):
tracking, one stranger per person for the whole clip, a sealed recovery record. See ``anonymize``."""

from .anonymize import VideoResult, anonymize_video, compare_videos, recover_video
from .io import VIDEO_EXTS, is_video_path, probe

__all__ = ["VIDEO_EXTS", "VideoResult", "anonymize_video", "compare_videos", "is_video_path", "probe",
           "recover_video"]
