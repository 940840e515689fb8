"""Locating bundled model files and data roots without hard-coding paths in library code."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import ModelLoadError

DLIB_MODEL_FILES = {
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "shape68": "shape_predictor_68_face_landmarks.dat",
    "shape5": "shape_predictor_5_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
}


def dlib_model_path(key: str) -> Path:
    """Path of one of dlib's models shipped by pip ``face-recognition-models``.

    Found with ``importlib.util.find_spec`` so the package (which imports the removed
    ``pkg_resources``) is never imported.
    """
    fname = DLIB_MODEL_FILES.get(key, key)
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("pip package 'face-recognition-models' is not installed (needed for dlib models)")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "models" / fname
        if p.is_file():
            return p
    raise ModelLoadError(f"dlib model file {fname} not found in face_recognition_models")


def default_data_root() -> Path | None:
    """The datakit folder used by CLI defaults: $FACEPRIVACY_DATA, else ../shared/datakit from the
    current directory or from the source checkout. None if absent (callers must then take a path)."""
    env = os.environ.get("FACEPRIVACY_DATA")
    cands = [Path(env)] if env else []
    cands += [Path.cwd() / ".." / "shared" / "datakit",
              Path(__file__).resolve().parents[3] / "shared" / "datakit"]
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return None


def weights_dir() -> Path:
    """Folder of weights trained by this project and shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "models" / "weights"
