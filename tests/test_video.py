"""Video de-identification (deid.video) on tiny clips: codec round trips, tracking, the sealed record and
exact recovery, audio kept. Bad input lives in tests/badinput_corpus.py."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from faceprivacy.core.errors import AuthenticationError  # noqa: E402
from faceprivacy.deid.record import WrongPassphraseError, sidecar_path  # noqa: E402
from faceprivacy.deid.video import anonymize_video, compare_videos, probe, recover_video  # noqa: E402
from faceprivacy.deid.video.io import iter_frames  # noqa: E402
from faceprivacy.deid.video.synth import make_frames, write_clip  # noqa: E402
from faceprivacy.deid.video.track import Tracker, assign_slots, smooth_landmarks  # noqa: E402

PW = b"correct horse battery staple"


def _streams(path: Path) -> dict[str, tuple[str, int]]:
    import av

    out = {}
    for kind in ("video", "audio"):
        with av.open(str(path)) as c:
            ss = [s for s in c.streams if s.type == kind]
            if ss:
                out[kind] = (ss[0].codec_context.name, sum(1 for p in c.demux(ss[0]) if p.size))
    return out


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from skimage import data

    d = tmp_path_factory.mktemp("video")
    face = np.ascontiguousarray(data.astronaut()[20:276, 80:336])
    frames, gt = make_frames([face], 16, 120, 160, 100, cycles=0.15)
    return write_clip(d / "clip.mp4", frames, 25), frames, gt


def test_ffv1_rgb_round_trip_is_exact(tmp_path, clip):
    _, frames, _ = clip
    p = write_clip(tmp_path / "x.mkv", frames[:5], 25, codec="ffv1", audio=False)
    back = list(iter_frames(p))
    assert len(back) == 5 and all(np.array_equal(a, b) for a, b in zip(back, frames[:5], strict=True))
    info = probe(p)
    assert (info.width, info.height, info.n_frames, float(info.fps)) == (160, 120, 5, 25.0)


def test_donor_video_one_track_one_stranger_exact_recovery_audio_kept(tmp_path, clip):
    from faceprivacy.deid.donor import DonorMorph

    src, _, _ = clip
    out = tmp_path / "anon.mkv"
    res = anonymize_video(src, out, PW, DonorMorph())
    assert res.tracks == 1 and res.people == 1 and res.frames == 16 and res.faces == 16 and res.fallback == 0
    assert res.recovery["exact"] and res.recovery["exact_frames"] == 16
    assert sidecar_path(out).is_file()
    # every frame changed around the face, nothing else
    for a, b in zip(iter_frames(out), iter_frames(src), strict=True):
        diff = np.any(a != b, axis=2)
        assert 200 < diff.sum() < 0.5 * diff.size
    # audio copied packet for packet, not re-encoded
    s_in, s_out = _streams(src), _streams(out)
    assert s_out["audio"] == s_in["audio"] and s_out["video"] == ("ffv1", 16)
    # the public header says nothing about the faces
    rec = sidecar_path(out).read_bytes()
    hlen = struct.unpack("<I", rec[4:8])[0]
    header = json.loads(rec[8:8 + hlen])
    assert set(header) == {"method", "salt", "image_shape", "pixel_sha256", "kcv", "generator", "encryptor",
                           "scrypt", "version"}
    assert header["image_shape"] == [120, 160, 3]
    rec_out = tmp_path / "rec.mkv"
    recover_video(out, rec_out, PW)
    cmp = compare_videos(rec_out, src)
    assert cmp["identical_frames"] == cmp["frames"] == 16
    assert _streams(rec_out)["audio"] == s_in["audio"]


def test_keys_per_person_and_wrong_or_changed_inputs(tmp_path, clip):
    from faceprivacy.deid.methods import make_method

    src, _, _ = clip
    out = tmp_path / "anon.mp4"  # H.264: lossy, the loss is stated
    res = anonymize_video(src, out, PW, make_method("blur"))
    assert not res.recovery["exact"] and res.recovery["psnr_min"] > 30
    with pytest.raises(WrongPassphraseError):
        recover_video(out, tmp_path / "r.mkv", b"wrong horse battery staple")
    assert not (tmp_path / "r.mkv").exists()
    # a copy with one pixel edited, next to the same record: refused, unless --allow-modified (an exact copy of
    # the decoded frames in another codec is still the same video)
    frames = list(iter_frames(out))
    frames[3][0, 0, 0] ^= 1
    other = write_clip(tmp_path / "other.mkv", frames, 25, codec="ffv1", audio=False)
    shutil.copy(sidecar_path(out), sidecar_path(other))
    with pytest.raises(AuthenticationError, match="changed since anonymization"):
        recover_video(other, tmp_path / "r.mkv", PW)
    assert not (tmp_path / "r.mkv").exists()
    recover_video(other, tmp_path / "r.mkv", PW, allow_modified=True)
    cmp = compare_videos(tmp_path / "r.mkv", src)
    assert cmp["frames"] == 16 and cmp["psnr_min"] > 30


class _Scripted:
    """A detector that returns scripted faces (box + 68 points) per call, and the matching descriptors."""

    def __init__(self, script):
        self.script, self.k = script, -1
        rng = np.random.default_rng(0)
        self.shape = rng.uniform(0.1, 0.9, (68, 2))
        self.shape[[0, 16, 8, 19]] = [[0, 0.5], [1, 0.5], [0.5, 1], [0.3, 0]]

    def lm(self, x, y, s):
        return self.shape * s + np.array([x, y])

    def detect(self, frame):
        from types import SimpleNamespace

        self.k += 1
        return [SimpleNamespace(box=np.array([x, y, x + s, y + s], float), landmarks68=self.lm(x, y, s))
                for _, x, y, s in self.script(self.k)]

    def embed(self, frame, lm):
        c = lm.mean(0)
        faces = self.script(self.k)
        who = min(faces, key=lambda f: np.hypot(f[1] + f[3] * self.shape[:, 0].mean() - c[0],
                                                f[2] + f[3] * self.shape[:, 1].mean() - c[1]))[0]
        return np.eye(128)[who]


def test_tracks_keep_identities_when_people_cross_and_come_back():
    """A and B cross (their boxes overlap for several frames); A leaves for 15 frames and comes back."""

    def script(k):
        faces = []
        if k < 40 or k >= 55:
            faces.append((0, 20 + 5 * (k % 55 if k >= 55 else k), 40, 60))
        if k < 65:
            faces.append((1, 220 - 5 * min(k, 40), 70, 60))
        return faces

    det = _Scripted(script)
    tr = Tracker(det, embed=det.embed)
    blank = np.zeros((200, 320, 3), np.uint8)
    for i in range(65):
        tr.step(i, blank)
    tracks = tr.finish()
    det.k = -1
    who = {}
    for i in range(65):
        det.k = i
        for p, x, y, s in script(i):
            for t in tracks:
                if i in t.detected and np.allclose(t.lm[i], det.lm(x, y, s)):
                    who.setdefault(t.id, set()).add(p)
    assert all(len(v) == 1 for v in who.values()), who  # no identity switch
    by_person = {}
    for t in tracks:
        if t.id in who:
            by_person.setdefault(next(iter(who[t.id])), set()).add(t.slot)
    assert by_person[0] != by_person[1]
    assert len(by_person[0]) == 1 and len(by_person[1]) == 1  # A keeps one pseudonym across its two tracks
    assert sum(1 for t in tracks if t.id in who and 0 in who[t.id]) == 2


def test_smoothing_removes_jitter_and_slots_never_share_a_frame():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 100, (68, 2))
    raw = {f: base + rng.normal(0, 1.5, base.shape) for f in range(30)}
    raw[12] = None
    sm = smooth_landmarks(raw)
    err = lambda d: np.mean([np.abs(v - base).mean() for v in d.values() if v is not None])  # noqa: E731
    assert sm[12] is None and err(sm) < 0.6 * err(raw)

    from faceprivacy.deid.video.track import Track

    a, b = Track(0, 0), Track(1, 0)
    for t in (a, b):
        t.box = {f: np.zeros(4) for f in range(10)}
        t.desc = [np.zeros(128)]  # identical descriptors, but both on screen at once: two people
    assert assign_slots([a, b], 0.5) == 2 and a.slot != b.slot


def test_a_face_that_cannot_be_aligned_is_blurred_never_left_untouched():
    from faceprivacy.deid.methods import make_method
    from faceprivacy.deid.video.anonymize import _Renderer
    from faceprivacy.deid.video.track import Track

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    t = Track(0, 0, box={0: np.array([50.0, 30.0, 100.0, 80.0])}, slot=0)
    r = _Renderer(make_method("blur"), None)
    r.prepare([t])
    out, faces, fallback = r.render(frame, [(t, None, t.box[0])])
    assert fallback == 1 and len(faces) == 1
    changed = np.any(out != frame, axis=2)
    assert changed[45:65, 65:85].all()  # the middle of the face
    assert not changed[:, :20].any() and not changed[:10].any()  # far from it
    x1, y1, x2, y2 = faces[0][1]
    assert np.array_equal(faces[0][2], frame[y1:y2, x1:x2])  # the sealed original


def test_a_phone_clip_with_display_rotation_is_processed_upright(tmp_path, clip):
    _, frames, _ = clip
    p = write_clip(tmp_path / "rot.mp4", frames[:4], 25, rotation=90, audio=False)
    info = probe(p)
    assert (info.width, info.height, info.rotation) == (160, 120, 90)
    back = list(iter_frames(p))
    assert back[0].shape == (120, 160, 3)
    assert np.abs(back[0].astype(float) - frames[0]).mean() < 4  # upright again (H.264 loss only)


class _FakeNet:
    """A safety net stand-in: every check verifies (``leak``) or none does; counts its checks."""

    redraws = 2

    def __init__(self, leak: bool) -> None:
        self.leak, self.calls = leak, 0

    def embed(self, crops):
        return {}

    def leaks(self, orig, anon, ref=None):
        self.calls += 1
        return np.full(len(orig), self.leak)


def test_safety_net_redraws_then_obscures_a_person_in_every_frame(tmp_path, clip):
    from faceprivacy.deid.donor import DonorMorph
    from faceprivacy.deid.safety import obscure

    src, frames, gt = clip
    m = DonorMorph()
    passed = _FakeNet(leak=False)
    ok = anonymize_video(src, tmp_path / "ok.mkv", PW, m, safety=passed)
    assert passed.calls == 1 and ok.redrawn == 0 and ok.obscured == 0
    net = _FakeNet(leak=True)
    res = anonymize_video(src, tmp_path / "x.mkv", PW, m, safety=net)
    assert net.calls == 1 + net.redraws and res.obscured == 1 and res.people == 1
    assert any("obscured" in n for n in res.notes)
    # every frame holds the pixelated box (not the stranger), and recovery is still exact
    track = res.track_list[0]
    for i, (a, b) in enumerate(zip(iter_frames(tmp_path / "x.mkv"), iter_frames(src), strict=True)):
        assert np.array_equal(a, obscure(b, track.box[i]))
    recover_video(tmp_path / "x.mkv", tmp_path / "r.mkv", PW)
    assert compare_videos(tmp_path / "r.mkv", src)["identical_frames"] == 16


def test_donor_renders_each_persons_stranger_once_per_key(tmp_path, clip, monkeypatch):
    """The composite of donors is rendered once per person and key (``stranger_template``) and only warped per
    frame (``morph_template``); a safety-net redraw renders it again under the new key."""
    from faceprivacy.deid.donor import DonorMorph

    src, _, _ = clip
    m = DonorMorph()
    calls = {"stranger_template": [], "morph_template": 0, "morph_one": 0}
    for name in ("stranger_template", "morph_template", "morph_one"):
        orig = getattr(m, name)

        def counted(*a, _orig=orig, _name=name, **k):
            if _name == "stranger_template":
                calls[_name].append(a[1])
            else:
                calls[_name] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(m, name, counted)
    res = anonymize_video(src, tmp_path / "a.mkv", PW, m, safety=_FakeNet(leak=False))
    assert res.faces == 16 and res.fallback == 0 and res.recovery["exact"]
    assert len(calls["stranger_template"]) == 1
    assert calls["morph_template"] == 16 + 1  # every frame, and the safety net's view
    assert calls["morph_one"] <= m.max_redraws + 1  # only the donor choice (pinning) runs the whole morph
    calls["stranger_template"].clear()
    net = _FakeNet(leak=True)
    anonymize_video(src, tmp_path / "b.mkv", PW, m, safety=net)
    keys = calls["stranger_template"]
    assert len(keys) == 1 + net.redraws and len(set(keys)) == len(keys)


def test_the_render_runs_with_one_blas_thread(tmp_path, clip, monkeypatch):
    """Small matrix products per face: anonymize_video limits BLAS to one thread (restored afterwards)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from faceprivacy.deid.methods import make_method
    from faceprivacy.deid.video import anonymize as va

    seen = []
    orig = va._Renderer.render

    def render(self, *a, **k):
        seen.append({i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})
        return orig(self, *a, **k)

    monkeypatch.setattr(va._Renderer, "render", render)
    src, _, _ = clip
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    anonymize_video(src, tmp_path / "a.mkv", PW, make_method("blur"))
    assert len(seen) == 16 and all(s <= {1} for s in seen)
    assert [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"] == before


def test_predicted_boxes_stay_bounded_between_detections():
    """Only trusted boxes (detected, or followed with landmarks) feed the velocity, and speed and growth per
    frame are capped: a track whose follows failed between detections (``--detect-every 3``) used to swing its
    boxes ever wider until dlib's rectangle overflowed."""
    from faceprivacy.deid.video.track import MAX_SCALE_STEP, MAX_SHIFT_STEP, Track

    t = Track(id=0, first=0)
    good = np.array([100.0, 100.0, 200.0, 200.0])
    t.box[0], t.lm[0] = good, np.zeros((68, 2))
    t.detected.add(0)
    t.box[1], t.lm[1] = good + [5, 0, 5, 0], np.zeros((68, 2))
    assert np.allclose(t.predicted_box(2), good + [10, 0, 10, 0])  # steady motion: linear as before
    t.box[2], t.lm[2] = np.array([2000.0, 900.0, 1000.0, -100.0]), None  # a failed follow's inverted box
    assert np.allclose(t.predicted_box(3), good + [15, 0, 15, 0])  # ignored: not trusted
    t.box[3], t.lm[3] = good * 3, np.zeros((68, 2))  # a wild (trusted) jump: capped
    for n in range(4, 40):
        b = t.predicted_box(n)
        assert np.all(np.isfinite(b)) and b[2] > b[0] and b[3] > b[1]
    b4 = t.predicted_box(4)
    side = (good * 3)[2] - (good * 3)[0]
    assert b4[2] - b4[0] <= side * MAX_SCALE_STEP + 1e-9
    assert np.all(np.abs((b4[:2] + b4[2:]) / 2 - (good * 3)[:2] - side / 2) <= MAX_SHIFT_STEP * side + 1e-9)
