"""The post-replacement safety net and the fallbacks of ``anonymize`` (deid.safety, deid.pipeline): redraws
under derived keys, the obscuring fallback, weak detections, determinism and exact recovery; the union
detector's weak tier."""

from __future__ import annotations

import numpy as np
import pytest

from faceprivacy.core.align import ARCFACE_TEMPLATE
from faceprivacy.core.detect import Face
from faceprivacy.deid.base import AnonResult, Method
from faceprivacy.deid.pipeline import FALLBACK_MASK, FALLBACK_PURPOSE, Deidentifier
from faceprivacy.deid.record import open_record
from faceprivacy.deid.safety import grown_box, obscure

PW = b"correct horse battery staple"


class KeyedPaint(Method):
    """A keyed toy method: paints the crop one colour derived from the key (records the keys it saw)."""

    name = "keyed-paint"
    keyed = True

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def crop_size(self, face_px: float) -> int:
        return 64

    def anonymize(self, crops, keys=None):
        self.seen += list(keys)
        out = np.stack([np.full_like(c, keys[i][0]) for i, c in enumerate(crops)])
        return AnonResult(out)


class FakeNet:
    """A safety net that says 'still verifies' for the first ``leaky`` checks of each face (by call count)."""

    redraws = 2

    def __init__(self, leaky: int) -> None:
        self.leaky, self.calls, self.seconds, self.checks = leaky, 0, 0.0, 0

    def leaks(self, orig, anon):
        self.calls += 1
        self.checks += len(orig)
        return np.full(len(orig), self.calls <= self.leaky)


class FixedNet:
    """An ONNX detector stand-in that returns the same detections for any frame."""

    def __init__(self, d):
        self.d = d

    def detect(self, img):
        return self.d


class Replay:
    def __init__(self, faces):
        self.faces = faces

    def detect(self, img):
        return self.faces


def _face(x: float, y: float, side: float = 60.0, weak: bool = False) -> Face:
    pts = ARCFACE_TEMPLATE.astype(float) * (side / 112) + [x, y]
    return Face(np.array([x, y, x + side, y + side]), 0.9, np.zeros((5, 2)), None, pts, True, weak)


@pytest.fixture()
def img():
    return np.random.default_rng(0).integers(0, 256, (160, 240, 3)).astype(np.uint8)


def test_obscure_changes_only_the_grown_box_and_is_deterministic(img):
    box = [60.0, 40.0, 120.0, 100.0]
    a, b = obscure(img, box), obscure(img, box)
    assert np.array_equal(a, b)
    x1, y1, x2, y2 = grown_box(box, img.shape)
    assert (x1, y1, x2, y2) == (48, 28, 132, 112)
    outside = np.ones(img.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(a[outside], img[outside])
    inner = a[y1:y2, x1:x2].astype(float)
    assert inner.std() < img[y1:y2, x1:x2].astype(float).std() / 4
    solid = obscure(img, box, solid=True)[y1:y2, x1:x2]
    assert len(np.unique(solid.reshape(-1, 3), axis=0)) == 1


def test_a_face_that_still_verifies_is_redrawn_under_a_recorded_derived_key(img):
    m = KeyedPaint()
    d = Deidentifier(m, detector=Replay([_face(40, 40)]), safety=FakeNet(leaky=1))
    out = d.anonymize(img, PW, salt=b"s" * 16)
    assert out.redrawn == 1 and out.blurred == 0 and out.faces[0].get("redrawn")
    assert len(m.seen) == 2 and m.seen[0] != m.seen[1]
    body = open_record(out.record, PW).body
    assert body.faces[0].key_purpose.endswith("/safety/1")
    # same key and image -> same output (the redraw is a function of the key)
    again = Deidentifier(KeyedPaint(), detector=Replay([_face(40, 40)]), safety=FakeNet(leaky=1)).anonymize(
        img, PW, salt=b"s" * 16)
    assert np.array_equal(out.image, again.image)
    rec, mode = d.recover(out.image, out.record, PW)
    assert mode == "exact" and np.array_equal(rec, img)


def test_a_face_that_verifies_after_every_redraw_is_obscured_reported_and_recovered(img, caplog):
    m = KeyedPaint()
    d = Deidentifier(m, detector=Replay([_face(40, 40), _face(150, 60, 50)]), safety=FakeNet(leaky=10 ** 6))
    with caplog.at_level("WARNING"):
        out = d.anonymize(img, PW)
    assert out.escalated == 2 and out.blurred == 2 and out.redrawn == 0
    assert len(m.seen) == 2 * 3  # the first draw and two redraws each
    # the fake net still verifies the obscured faces: they are filled instead
    assert [f.get("fallback") for f in out.faces] == ["mask", "mask"]
    assert "after 2 redraws" in caplog.text
    body = open_record(out.record, PW).body
    # each face's last stranger is sealed (not listed) under its obscuring
    assert [f.key_purpose.split("/")[-2:] for f in body.faces[:2]] == [["safety", "2"]] * 2
    assert [f.key_purpose for f in body.faces[2:]] == [FALLBACK_MASK, FALLBACK_MASK]
    rec, mode = d.recover(out.image, out.record, PW)
    assert mode == "exact" and np.array_equal(rec, img)
    # the obscured patch comes from the stranger, not the original: another passphrase, another patch
    other = Deidentifier(KeyedPaint(), detector=Replay([_face(40, 40), _face(150, 60, 50)]),
                         safety=FakeNet(leaky=10 ** 6)).anonymize(img, b"another passphrase")
    x1, y1, x2, y2 = (int(v) for v in out.faces[0]["region"])
    assert not np.array_equal(out.image[y1:y2, x1:x2], other.image[y1:y2, x1:x2])


def test_keyless_methods_skip_redraws_and_the_net_can_be_switched_off(img):
    from faceprivacy.deid.methods import make_method

    net = FakeNet(leaky=1)  # the first check verifies, the check of the obscured face does not
    out = Deidentifier(make_method("blur"), detector=Replay([_face(40, 40)]), safety=net).anonymize(img, PW)
    assert out.escalated == 1 and out.redrawn == 0 and out.faces[0]["fallback"] == "pixelate"
    off = Deidentifier(make_method("blur"), detector=Replay([_face(40, 40)]), safety=False).anonymize(img, PW)
    assert off.escalated == 0 and "fallback" not in off.faces[0]


def test_weak_detections_are_obscured_not_replaced(img, caplog):
    m = KeyedPaint()
    d = Deidentifier(m, detector=Replay([_face(40, 40), _face(150, 60, 50, weak=True)]), safety=FakeNet(0))
    with caplog.at_level("WARNING"):
        out = d.anonymize(img, PW)
    assert out.weak == 1 and out.blurred == 1 and len(m.seen) == 1
    assert [f.get("fallback") for f in out.faces] == [None, "pixelate"]
    assert "weak detection" in caplog.text
    body = open_record(out.record, PW).body
    assert body.faces[1].key_purpose == FALLBACK_PURPOSE
    rec, mode = d.recover(out.image, out.record, PW)
    assert mode == "exact" and np.array_equal(rec, img)


def test_union_weak_tier_keeps_uncovered_low_scores_only():
    """retinaface+rfb320 with a floor: strong faces as before; RetinaFace boxes in [floor, min_score) and
    RFB-320 boxes in [floor, min_score) + offset that no kept face covers come back marked weak."""
    from faceprivacy.core.detect import FaceDetector
    from faceprivacy.core.detect_onnx import Detections

    retina = Detections(np.array([[10, 10, 60, 60.0], [100, 10, 140, 50], [14, 12, 58, 62]]),
                        np.array([0.9, 0.4, 0.35]), np.full((3, 5, 2), 30.0))
    rfb = Detections(np.array([[200, 100, 230, 130.0], [300, 100, 330, 130], [102, 12, 138, 48]]),
                     np.array([0.6, 0.4, 0.65]), None)

    det = FaceDetector("retinaface+rfb320", floor=0.3)
    det._onnx = {"retinaface": FixedNet(retina), "rfb320": FixedNet(rfb)}
    got = sorted((tuple(np.round(b).astype(int)), round(s, 2)) for b, s, _ in det._raw(np.zeros((200, 400, 3),
                                                                                             np.uint8)))
    # strong RetinaFace 0.9; weak RetinaFace 0.4 (uncovered); RetinaFace 0.35 covered by the strong one: dropped;
    # RFB 0.6 -> 0.4 weak; RFB 0.4 -> 0.2 below the floor; RFB 0.65 covered by the weak RetinaFace box: dropped
    assert got == [((10, 10, 60, 60), 0.9), ((100, 10, 140, 50), 0.4), ((200, 100, 230, 130), 0.4)]
    none = FaceDetector("retinaface+rfb320")
    none._onnx = det._onnx
    assert [round(s, 2) for _, s, _ in none._raw(np.zeros((200, 400, 3), np.uint8))] == [0.9]
    assert FaceDetector("retinaface+rfb320", floor=0.6).floor is None  # a floor above min_score keeps nothing


def test_union_weak_tier_drops_a_weak_box_on_the_same_head():
    """A weak box centred just beyond a strong face's edge (the astronaut's hair scored 0.49 right above her
    face) is that head, not a second face: dropped, not obscured; one a face-width away is kept."""
    from faceprivacy.core.detect import FaceDetector
    from faceprivacy.core.detect_onnx import Detections

    # strong face 100x120 at (100, 100); weak "hair" box centred 15 px above its top edge; weak face beside it
    retina = Detections(np.array([[100, 100, 200, 220.0], [120, 70, 180, 100], [260, 110, 340, 210]]),
                        np.array([0.99, 0.45, 0.45]), np.full((3, 5, 2), 30.0))
    rfb = Detections(np.zeros((0, 4)), np.zeros(0), None)

    det = FaceDetector("retinaface+rfb320", floor=0.3)
    det._onnx = {"retinaface": FixedNet(retina), "rfb320": FixedNet(rfb)}
    got = sorted(tuple(np.round(b).astype(int)) for b, _, _ in det._raw(np.zeros((300, 400, 3), np.uint8)))
    assert got == [(100, 100, 200, 220), (260, 110, 340, 210)]


def test_real_safety_net_flags_an_unchanged_face_and_passes_an_obscured_one(datakit):
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.core.imageio import load_image
    from faceprivacy.deid.safety import SafetyNet

    x = load_image(celeba_subset(datakit / "celeba_subset_aligned112").paths[0])[None]
    net = SafetyNet(data_root=datakit)
    assert net.leaks(x, x).tolist() == [True]
    ob = obscure(x[0], [8.0, 8.0, 104.0, 104.0])[None]
    assert net.leaks(x, ob).tolist() == [False]


class OcclusionNet(FakeNet):
    """A fake net whose occlusion check flags the faces at the given indices (and never verifies a face)."""

    def __init__(self, flagged: set[int]) -> None:
        super().__init__(0)
        self.flagged = flagged

    def embed(self, crops):
        return {"dlib": np.zeros((len(crops), 128)), "mobilefacenet": np.zeros((len(crops), 128))}

    def occluded(self, feats):
        n = len(feats["dlib"])
        return np.array([i in self.flagged for i in range(n)])

    def leaks(self, orig, anon, ref=None):
        assert ref is None or len(ref["dlib"]) == len(orig)  # descriptors of the faces still replaced
        return super().leaks(orig, anon)


def test_occluded_faces_go_straight_to_the_obscuring_fallback_and_recover_exactly(img, caplog):
    m = KeyedPaint()
    d = Deidentifier(m, detector=Replay([_face(40, 40), _face(150, 60, 50)]), safety=OcclusionNet({1}))
    with caplog.at_level("WARNING"):
        out = d.anonymize(img, PW)
    # the occluded face is replaced under its own key (2 keys seen), then the stranger is obscured
    assert out.occluded == 1 and out.blurred == 1 and out.escalated == 0 and len(m.seen) == 2
    assert out.n_faces == 2 and sorted(f.get("fallback") or "-" for f in out.faces) == ["-", "pixelate"]
    assert "look occluded" in caplog.text
    rec, mode = d.recover(out.image, out.record, PW)
    assert mode == "exact" and np.array_equal(rec, img)
    # the obscured patch comes from the stranger, not the original: another key gives another patch
    other = Deidentifier(KeyedPaint(), detector=Replay([_face(40, 40), _face(150, 60, 50)]),
                         safety=OcclusionNet({1})).anonymize(img, b"another passphrase")
    x1, y1, x2, y2 = (int(v) for v in out.faces[-1]["region"])
    assert not np.array_equal(out.image[y1:y2, x1:x2], other.image[y1:y2, x1:x2])
    # every face occluded: nothing replaced, all obscured
    all_occ = Deidentifier(KeyedPaint(), detector=Replay([_face(40, 40)]), safety=OcclusionNet({0})).anonymize(
        img, PW)
    assert all_occ.occluded == 1 and all_occ.n_faces == 1 and all_occ.faces[0]["fallback"] == "pixelate"


def test_occlusion_check_weights_flag_a_covered_face_more_than_the_clean_one(datakit):
    from faceprivacy.core.data import celeba_subset
    from faceprivacy.core.imageio import load_image
    from faceprivacy.deid.occlusion import default_check, synth_occlude
    from faceprivacy.deid.safety import SafetyNet

    chk = default_check()
    assert chk is not None and 0 < chk.threshold < 1
    paths = celeba_subset(datakit / "celeba_subset_aligned112").paths[:4]
    clean = np.stack([load_image(p) for p in paths])
    rng = np.random.default_rng(0)
    covered = np.stack([synth_occlude(c, k, rng) for c, k in zip(clean, ("mask", "eyes", "mask", "eyes"),
                                                                  strict=True)])
    net = SafetyNet(data_root=datakit, occlusion=True)
    assert SafetyNet(data_root=datakit).occlusion is None  # opt-in
    pc = chk.prob(np.concatenate(list(net.embed(clean).values()), 1))
    po = chk.prob(np.concatenate(list(net.embed(covered).values()), 1))
    assert po.mean() > pc.mean()
    assert net.occluded(net.embed(covered)).sum() >= 2


def test_union_flip_adds_the_mirrored_passes_faces_mapped_back():
    """With ``flip``, RetinaFace also runs on the mirrored frame; its faces come back in frame coordinates with
    the left/right points swapped, and a face both passes find is kept once."""
    from faceprivacy.core.detect import FaceDetector
    from faceprivacy.core.detect_onnx import Detections

    lm = np.array([[[20, 30], [40, 30], [30, 40], [22, 50], [38, 50.0]]])

    class Net:
        def detect(self, img):
            if img[0, 0, 0] == 255:  # the frame as given: one face on the left
                return Detections(np.array([[10, 20, 50, 60.0]]), np.array([0.9]), lm.copy())
            return Detections(np.array([[10, 20, 50, 60.0], [150, 20, 190, 60]]), np.array([0.8, 0.6]),
                              np.concatenate([lm, lm + [140, 0]]))

    class NoFaces:
        def detect(self, img):
            return Detections(np.zeros((0, 4)), np.zeros(0), None)

    img = np.zeros((100, 200, 3), np.uint8)
    img[0, 0] = 255
    det = FaceDetector("retinaface+rfb320", flip=True)
    det._onnx = {"retinaface": Net(), "rfb320": NoFaces()}
    got = sorted(det._raw(img), key=lambda t: t[0][0])
    assert [tuple(np.round(b).astype(int)) for b, _, _ in got] == [(10, 20, 50, 60), (150, 20, 190, 60)]
    assert [round(s, 2) for _, s, _ in got] == [0.9, 0.8]
    # the mirrored pass's face at x 10-50 is the frame's face at x 150-190; its left eye is the mirrored right eye
    assert np.allclose(got[1][2][0], [200 - 40, 30]) and np.allclose(got[1][2][3], [200 - 38, 50])
    assert FaceDetector("retinaface", flip=True).flip is False  # the union only


def test_untrusted_boxes_are_obscured_with_the_larger_margin(img):
    from faceprivacy.deid.safety import UNTRUSTED_GROW

    d = Deidentifier(KeyedPaint(), detector=Replay([_face(150, 60, 50, weak=True)]), safety=FakeNet(0))
    out = d.anonymize(img, PW)
    assert out.faces[0]["region"] == grown_box([150, 60, 200, 110], img.shape, UNTRUSTED_GROW)
    assert grown_box([150, 60, 200, 110], img.shape, UNTRUSTED_GROW) != grown_box([150, 60, 200, 110], img.shape)
