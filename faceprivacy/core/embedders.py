"""Concrete face recognizers behind the ``Embedder`` interface.

- ``dlib``: the PyTorch port of dlib's ResNet descriptor (models/dlib_resnet.py), batched; 150x150 dlib chips.
- ``dlib-native``: dlib's own ``compute_face_descriptor`` (reference; slow, one chip at a time).
- ``mobilefacenet``: the CASIA MobileFaceNet checkpoint (torch, batched); 112x112 ArcFace crops.
- ``mobilefacenet-onnx``: the photo_analyze MobileFaceNet ONNX (onnxruntime, batch 1); 112x112 ArcFace crops.
The MobileFaceNets are independent recognizers for evaluation: never train against them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from .embedder import Embedder, l2_normalize
from .errors import InputError, ModelLoadError

MFN_CKPT = Path("mobilefacenet_casia_xiaoccer") / "068.ckpt"
MFN_ONNX = Path("onnx_face_models_photo_analyze") / "mobilefacenet.onnx"


class DlibEmbedder(Embedder):
    """dlib's 128-D descriptor through the exact PyTorch port (batched, differentiable model in ``.net``)."""

    name = "dlib"
    input_size = (150, 150)
    alignment = "dlib150"
    dim = 128
    #: dlib's own same-person rule: Euclidean distance < 0.6 between raw descriptors
    distance_threshold = 0.6

    def __init__(self, batch_size: int = 64) -> None:
        import torch

        from ..models.dlib_resnet import load_dlib_resnet

        self.torch = torch
        self.net = load_dlib_resnet()
        self.batch_size = batch_size

    def raw(self, batch: np.ndarray) -> np.ndarray:
        """Unnormalised descriptors exactly as dlib computes them (for the 0.6 distance rule)."""
        batch = self.check_batch(batch)
        torch = self.torch
        outs = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(batch[i:i + self.batch_size])).permute(0, 3, 1, 2)
                outs.append(self.net(x.float()).numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 128), np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalize(self.raw(batch))


class DlibNativeEmbedder(Embedder):
    """dlib's own ``compute_face_descriptor`` on 150x150 chips (the reference the port is checked against)."""

    name = "dlib-native"
    input_size = (150, 150)
    alignment = "dlib150"
    dim = 128

    def __init__(self) -> None:
        import dlib

        from .paths import dlib_model_path

        self.model = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))

    def raw(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        return np.array([np.asarray(self.model.compute_face_descriptor(np.ascontiguousarray(c)))
                         for c in batch], dtype=np.float32).reshape(-1, 128)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalize(self.raw(batch))


class MobileFaceNetEmbedder(Embedder):
    """CASIA MobileFaceNet (torch). Takes ArcFace 112x112 crops, uses columns 8:104 (its 112x96 layout);
    the feature is the sum of the image's and its mirror's, as in the checkpoint's own evaluation."""

    name = "mobilefacenet"
    input_size = (112, 112)
    alignment = "arcface112"
    dim = 128

    def __init__(self, ckpt: str | os.PathLike, flip: bool = True, batch_size: int = 128) -> None:
        import torch

        from ..models.mobilefacenet import load_mobilefacenet

        self.torch = torch
        self.net = load_mobilefacenet(ckpt)
        self.flip, self.batch_size = flip, batch_size

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        torch = self.torch
        outs = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(batch[i:i + self.batch_size, :, 8:104]))
                x = x.permute(0, 3, 1, 2).float()
                f = self.net(x)
                if self.flip:
                    f = f + self.net(torch.flip(x, dims=[3]))
                outs.append(f.numpy())
        return l2_normalize(np.concatenate(outs)) if outs else np.zeros((0, 128), np.float32)


class OnnxMobileFaceNetEmbedder(Embedder):
    """photo_analyze MobileFaceNet ONNX (fixed batch 1), (x - 127) / 128 on 112x112 ArcFace crops."""

    name = "mobilefacenet-onnx"
    input_size = (112, 112)
    alignment = "arcface112"
    dim = 128

    def __init__(self, onnx_path: str | os.PathLike) -> None:
        import onnxruntime as ort

        if not Path(onnx_path).is_file():
            raise ModelLoadError(f"ONNX model not found: {onnx_path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.inp = self.sess.get_inputs()[0].name

    def embed(self, batch: np.ndarray) -> np.ndarray:
        batch = self.check_batch(batch)
        outs = []
        for c in batch:
            x = ((c.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None]
            outs.append(self.sess.run(None, {self.inp: x})[0][0])
        return l2_normalize(np.array(outs).reshape(-1, 128))


EMBEDDERS = ("dlib", "dlib-native", "mobilefacenet", "mobilefacenet-onnx")


@functools.lru_cache(maxsize=8)
def get_embedder(name: str, data_root: str | os.PathLike | None = None) -> Embedder:
    """Build (and cache) a named embedder; MobileFaceNets need the datakit folder ``data_root``."""
    if name == "dlib":
        return DlibEmbedder()
    if name == "dlib-native":
        return DlibNativeEmbedder()
    if name in ("mobilefacenet", "mobilefacenet-onnx"):
        if data_root is None:
            from .paths import default_data_root

            data_root = default_data_root()
        if data_root is None:
            raise ModelLoadError(f"{name} needs the datakit folder (pass --data)")
        root = Path(data_root)
        if name == "mobilefacenet":
            return MobileFaceNetEmbedder(root / MFN_CKPT)
        return OnnxMobileFaceNetEmbedder(root / MFN_ONNX)
    raise InputError(f"unknown embedder {name!r}; choose from {', '.join(EMBEDDERS)}")


def crops_for(embedder: Embedder, img: np.ndarray, face) -> np.ndarray:
    """The crop an embedder needs for one detected face (``core.detect.Face``) of a full image."""
    from .align import arcface_crop, dlib_chip

    if embedder.alignment == "dlib150":
        return dlib_chip(img, face.shape5, size=150, padding=0.25)
    crop, _ = arcface_crop(img, face.arcface5, size=embedder.input_size[0])
    return crop


def embed_arcface_crops(embedder: Embedder, crops112: np.ndarray) -> np.ndarray:
    """Embed 112x112 ArcFace-layout crops (CelebA subset images, generator outputs) with any embedder:
    dlib embedders get them warped into dlib's chip layout by the fixed ArcFace->dlib transform."""
    crops112 = np.asarray(crops112)
    if embedder.alignment == "arcface112":
        return embedder.embed(crops112)
    from .chip import arcface112_to_dlib150_np

    return embedder.embed(arcface112_to_dlib150_np(crops112))
