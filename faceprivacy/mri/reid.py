"""Re-identification risk of head renders: face crops from renders, face-recognizer embeddings and
rank-1 matching of probes (defaced / refaced / attacked renders) against a gallery of undefaced renders.

Crops are aligned with the template's 3-D landmarks moved through the subject's registration and
projected into each render (an attacker knows where the face is even when a detector fails); the
detector's hit rate is reported separately. Recognizers come from ``faceprivacy.core.embedders``;
until core provides them, dlib's own ResNet (same network) and the MobileFaceNet ONNX are used."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the standard 112x112 ArcFace 5-point template
ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def arcface_crop(img: np.ndarray, pts5: np.ndarray, size: int = 112) -> np.ndarray:
    """Similarity-warp ``img`` so the 5 points land on the ArcFace template (uses core.align if present)."""
    try:
        from ..core.align import arcface_crop as core_crop  # type: ignore[attr-defined]

        return core_crop(img, np.asarray(pts5, np.float32), size=size)[0]
    except ImportError:
        pass
    from skimage.transform import SimilarityTransform, warp

    tf = SimilarityTransform.from_estimate(ARCFACE_DST * size / 112.0, np.asarray(pts5, float)) \
        if hasattr(SimilarityTransform, "from_estimate") else None
    if tf is None:
        tf = SimilarityTransform()
        tf.estimate(ARCFACE_DST * size / 112.0, np.asarray(pts5, float))
    out = warp(img, tf, output_shape=(size, size), order=1, preserve_range=True)
    return np.clip(out, 0, 255).astype(np.uint8)


def dlib_chip(img: np.ndarray, shape5: np.ndarray, size: int = 150) -> np.ndarray:
    """dlib's 150x150 face chip from its 5 landmark points (uses core.align if present)."""
    try:
        from ..core.align import dlib_chip as core_chip  # type: ignore[attr-defined]

        return core_chip(img, np.asarray(shape5, np.float32), size=size)
    except ImportError:
        pass
    import dlib

    pts = [dlib.point(int(round(x)), int(round(y))) for x, y in np.asarray(shape5)]
    x0, y0 = np.asarray(shape5).min(0)
    x1, y1 = np.asarray(shape5).max(0)
    det = dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), pts)
    return np.asarray(dlib.get_face_chip(np.ascontiguousarray(img), det, size=size, padding=0.25))


class _DlibFallback:
    """dlib's ResNet descriptor used directly (identical to core's torch port) on dlib150 chips."""

    name = "dlib"
    alignment = "dlib150"
    input_size = (150, 150)

    def __init__(self) -> None:
        import dlib

        from ..core.paths import dlib_model_path

        self.net = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))

    def embed(self, batch: np.ndarray) -> np.ndarray:
        f = np.array([np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(c))) for c in batch])
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


class _OnnxMobileFaceNet:
    """MobileFaceNet ONNX (datakit) on ArcFace 112 crops: RGB, (x-127)/128, 128-d."""

    name = "mobilefacenet-onnx"
    alignment = "arcface112"
    input_size = (112, 112)

    def __init__(self, data_root: Path) -> None:
        import onnxruntime as ort

        p = Path(data_root) / "onnx_face_models_photo_analyze" / "mobilefacenet.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])

    def embed(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for c in batch:
            x = ((c.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None]
            out.append(self.sess.run(None, {"input": x})[0][0])
        f = np.array(out)
        return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def get_recognizer(name: str, data_root: str | Path | None = None):
    """A face embedder by name: core's ``get_embedder`` when available, else a local equivalent."""
    try:
        from ..core.embedders import get_embedder  # type: ignore[import-not-found]

        return get_embedder(name, data_root=data_root)
    except ImportError:
        pass
    if name == "dlib":
        return _DlibFallback()
    if name in ("mobilefacenet", "mobilefacenet-onnx"):
        if data_root is None:
            raise ValueError("mobilefacenet needs the datakit root")
        return _OnnxMobileFaceNet(Path(data_root))
    raise ValueError(f"unknown recognizer {name!r}")


@dataclass
class RenderFace:
    """One render with its projected landmarks (ArcFace 5 and dlib 5, pixel coordinates)."""

    image: np.ndarray
    arc5: np.ndarray
    dlib5: np.ndarray
    label: str
    state: str
    yaw: float


def crops_for(embedder, faces: list[RenderFace]) -> np.ndarray:
    """Aligned crops in the embedder's layout."""
    if getattr(embedder, "alignment", "arcface112") == "dlib150":
        return np.stack([dlib_chip(f.image, f.dlib5) for f in faces])
    crops = np.stack([arcface_crop(f.image, f.arc5) for f in faces])
    if tuple(getattr(embedder, "input_size", (112, 112))) != (112, 112):
        from ..core.embedders import embed_arcface_crops  # type: ignore[import-not-found]

        return embed_arcface_crops(embedder, crops)
    return crops


def embed_faces(embedder, faces: list[RenderFace]) -> np.ndarray:
    """Unit-norm embeddings of the render faces."""
    if not faces:
        return np.zeros((0, 128), np.float32)
    return np.asarray(embedder.embed(crops_for(embedder, faces)), np.float32)


def detect_rate(faces: list[RenderFace]) -> float:
    """Fraction of renders in which dlib's HOG detector (upsample 1) finds a face."""
    import dlib

    det = dlib.get_frontal_face_detector()
    hits = [len(det(np.ascontiguousarray(f.image), 1)) > 0 for f in faces]
    return float(np.mean(hits)) if hits else float("nan")


def rank1(probe: np.ndarray, probe_labels: list[str], gallery: np.ndarray, gallery_labels: list[str]) -> float:
    """Rank-1 identification rate: each probe's most similar gallery entry (cosine) has its label."""
    if len(probe) == 0:
        return float("nan")
    sim = probe @ gallery.T
    best = np.asarray(gallery_labels)[np.argmax(sim, axis=1)]
    return float(np.mean(best == np.asarray(probe_labels)))
