"""Video de-identification: every tracked face of a clip gets its person's stranger (one key per person for
the whole clip, ``--consistent`` semantics), the original face regions are sealed in one recovery record,
and ``recover_video`` puts them back.

Pass 1 decodes and tracks (``track.Tracker``); the keys, and for ``donor`` one donor choice per person (its
largest view; the donor privacy check runs on it), are fixed before pass 2 decodes again; the safety net of the
photos (``deid.safety``) checks each person's stranger on the largest view of each of its tracks, redraws it or
obscures that person in every frame. For ``donor`` the donors' composite of each person is rendered once per
key on that largest view (``DonorMorph.stranger_template``) and, per frame, only warped onto the face's new
geometry and blended (``morph_template``). Pass 2 renders every frame and encodes it with the audio copied. A third
pass decodes what was written, runs the recovery on it and compares with the input: the record binds to the decoded pixels (SHA-256 over every frame), and the
summary states whether recovery is bit-exact (``.mkv``, FFV1 RGB) or how much the codec loses (PSNR).

Record (sidecar ``OUT.fpx``, the envelope of ``deid.record``: public header with the scrypt salt and cost,
method, frame size and the digest of the anonymized frames, nothing derived from a face; AES-256-GCM payload
under the passphrase)::

    u32 body length | body JSON | u32 n | n x (u32 length | PNG of one face region's original pixels)

The body (sealed) lists the tracks (person slot, HKDF label of its key, frames) and per rendered face
(frame, track, changed region). The video and its record are written as one unit (``core.fileio``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import AuthenticationError, InputError
from ...core.keys import check_passphrase_strength, derive_master_key, new_salt, subkey
from ...core.progress import progress
from ...core.threads import one_blas_thread
from ..base import Method
from ..record import MAX_RECORD_BYTES, RecordHeader, open_payload, seal_payload, sidecar_path
from .io import MARKER, VideoInfo, VideoWriter, iter_frames, iter_packets, output_format, probe, read_marker
from .track import Track, Tracker

log = logging.getLogger(__name__)

BODY_KIND = "video"


@dataclass
class VideoResult:
    """What ``anonymize_video`` / ``recover_video`` did."""

    outputs: list[str]
    frames: int
    faces: int = 0  # face-frames changed
    fallback: int = 0  # face-frames blurred because the face could not be aligned
    redrawn: int = 0  # people the safety net redrew (and a redraw passed)
    obscured: int = 0  # people the safety net obscured in every frame (every redraw still verified)
    tracks: int = 0
    people: int = 0
    lossless: bool = True
    recovery: dict = field(default_factory=dict)  # exact / PSNR of a recovery of the written file
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time (the machine may be shared: wall time alone misleads)
    notes: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)  # seconds per stage (track, render, verify)
    track_list: list = field(default_factory=list, repr=False)  # the tracks (for evaluations)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def frame_digest() -> hashlib._Hash:
    return hashlib.sha256(b"faceprivacy-video")


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _unpng(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError):
        raise InputError("recovery record holds corrupt pixels") from None


# ----- rendering -----------------------------------------------------------------------------------------

def _changed_region(before: np.ndarray, after: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(np.any(before != after, axis=2))
    if len(ys) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _paste_local(out: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``core.align.paste_back`` restricted to the window the crop lands on (a 720p frame is not warped
    whole for a 160-px face), resampled as photos are (``pipeline.RESAMPLE``)."""
    from ...core.align import invert_affine, paste_back
    from ..pipeline import RESAMPLE

    h, w = out.shape[:2]
    s = crop.shape[0]
    inv = invert_affine(m)
    c = np.array([[0, 0], [s, 0], [0, s], [s, s]], float) @ inv[:, :2].T + inv[:, 2]
    x0, y0 = max(0, int(np.floor(c[:, 0].min())) - 2), max(0, int(np.floor(c[:, 1].min())) - 2)
    x1, y1 = min(w, int(np.ceil(c[:, 0].max())) + 2), min(h, int(np.ceil(c[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return out
    ml = np.asarray(m, float).copy()
    ml[:, 2] += ml[:, :2] @ np.array([x0, y0], float)
    res = out.copy()
    res[y0:y1, x0:x1] = paste_back(np.ascontiguousarray(out[y0:y1, x0:x1]), crop, ml, mask=mask,
                                   resample=RESAMPLE)
    return res


def blur_box(out: np.ndarray, box: np.ndarray, strength: float = 0.12) -> np.ndarray:
    """The fallback: a strong Gaussian blur over the face box (grown by 30 %) through a feathered ellipse."""
    from scipy.ndimage import gaussian_filter

    h, w = out.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    r = 0.65 * max(box[2] - box[0], box[3] - box[1])
    x0, y0, x1, y1 = int(max(0, cx - r)), int(max(0, cy - r)), int(min(w, cx + r)), int(min(h, cy + r))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return out
    reg = out[y0:y1, x0:x1].astype(np.float64)
    sig = max(2.0, strength * 2 * r)
    blurred = np.stack([gaussian_filter(reg[..., k], sig, mode="nearest") for k in range(3)], -1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    d = np.hypot((xx + 0.5 - cx) / r, (yy + 0.5 - cy) / r)
    a = np.clip((1.0 - d) / 0.15, 0, 1)[..., None]
    res = out.copy()
    res[y0:y1, x0:x1] = np.clip(a * blurred + (1 - a) * reg + 0.5, 0, 255).astype(np.uint8)
    return res


@dataclass
class _Person:
    """A pseudonym slot: its key and, for donor, the pinned donor choice."""

    key: bytes | None
    purpose: str
    info: dict | None = None  # pinned gender/age/lab/donors (donor)
    morph_key: bytes | None = None
    obscure: bool = False  # the safety net still verified every redraw: pixelated in every frame
    redrawn: bool = False
    view: tuple | None = None  # (working crop, its 68 landmarks) of the largest view (donor's template)
    template: tuple | None = None  # (morph key, ``DonorMorph.stranger_template``): rendered once per key


def _obscure_box(out: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A face the safety net escalated: pixelated and blurred in its grown box, as photos are."""
    from ..safety import obscure

    return obscure(out, box)


class _Renderer:
    """Per-person keys and donor choices (``prepare``), then the faces of each frame (``render``).

    ``safety``: a ``deid.safety.SafetyNet`` (or None): each person's stranger is checked on the largest view of
    every one of its tracks, as photos are checked; a stranger that dlib or the CASIA MobileFaceNet still
    verifies as the original is redrawn under ``<purpose>/safety/<n>``, and a person whose every redraw still
    verifies is obscured in every frame. Other frames of a track are not checked (one check per view keeps the
    cost per person, not per frame)."""

    def __init__(self, method: Method, master: bytes | None, safety=None) -> None:
        self.method = method
        self.master = master
        self.safety = safety
        self.people: dict[int, _Person] = {}
        self.sizes: dict[int, int] = {}

    @property
    def donor(self) -> bool:
        return hasattr(self.method, "morph_one") and hasattr(self.method, "source_info")

    def _crop(self, img: np.ndarray, five: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        from ..pipeline import padded_crop

        return padded_crop(img, five, size, float(getattr(self.method, "crop_pad", 0.0)))

    def prepare(self, tracks: list[Track]) -> None:
        """Keys per person, crop size per track, and for donor one donor choice per person."""

        for t in tracks:
            widths = [b[2] - b[0] for b in t.box.values()]
            self.sizes[t.id] = self.method.crop_size(float(np.median(widths)))
        by_slot: dict[int, list[Track]] = {}
        for t in tracks:
            by_slot.setdefault(t.slot, []).append(t)
        for slot, ts in sorted(by_slot.items()):
            purpose = f"deid/person/{slot}"
            key = subkey(self.master, purpose) if self.master is not None else None
            p = _Person(key, purpose)
            anchored = [t for t in ts if t.anchor is not None]
            if self.donor and key is not None and anchored:  # (never aligned: every frame is blurred)
                p.view = self._best_view(anchored)
                p.info, p.morph_key = self._pin(p.view[0], key)
            self.people[slot] = p
            if self.safety is not None and key is not None and self.method.keyed and anchored:
                self._check(p, anchored)

    def _best_view(self, anchored: list[Track]) -> tuple[np.ndarray, np.ndarray]:
        """The working crop of a person's largest view and its landmarks in the crop (the donor choice is
        pinned on it, and the stranger's template rendered on it)."""
        from ...core.detect import arcface5_from_68

        _, wid, patch, _, lm = max(anchored, key=lambda t: t.anchor[1]).anchor
        crop, m = self._crop(patch, arcface5_from_68(lm), self.method.crop_size(wid))
        return crop, lm @ m[:, :2].T + m[:, 2]

    def _check(self, p: _Person, anchored: list[Track]) -> None:
        """The safety net on the largest view of each of the person's tracks (class docstring)."""
        from ...core.detect import arcface5_from_68
        from ..safety import face_crops

        net = self.safety
        views = [(t, t.anchor[2], t.anchor[4]) for t in anchored]
        orig = np.concatenate([face_crops(patch, [arcface5_from_68(lm)]) for _, patch, lm in views])
        ref = net.embed(orig)
        for n in range(net.redraws + 1):
            if n:
                k = subkey(self.master, f"{p.purpose}/safety/{n}")
                if self.donor and p.info is not None:
                    p.info, p.morph_key = self._pin(p.view[0], k)
                else:
                    p.key = k
            anon = []
            for t, patch, lm in views:
                crop, m, mask = self.face(patch, t, lm, p)
                anon.append(face_crops(_paste_local(patch, crop, m, mask), [arcface5_from_68(lm)])[0])
            if not net.leaks(orig, np.stack(anon), ref).any():
                p.redrawn = n > 0
                return
        p.obscure = True
        log.warning("safety net: a person's stranger still verified as the original after %d redraws: "
                    "obscured in every frame", net.redraws)

    def _pin(self, crop: np.ndarray, key: bytes) -> tuple[dict, bytes]:
        """Attributes and donors of one person from its largest view, redrawn (as ``morph_checked`` does)
        while dlib verifies the result as one of its donors."""
        from ..donor import DONOR_MAX_COSINE

        m = self.method
        info = m.source_info(crop)  # type: ignore[attr-defined]
        best = None
        for attempt in range(m.max_redraws + 1 if m.donor_check else 1):  # type: ignore[attr-defined]
            k = key if attempt == 0 else subkey(key, f"deid/donor/redraw/{attempt}")
            donors = m.choose(info, k)  # type: ignore[attr-defined]
            if not m.donor_check:  # type: ignore[attr-defined]
                best = (0.0, k, donors)
                break
            out, _ = m.morph_one(crop, k, {**info, "donors": donors})  # type: ignore[attr-defined]
            score = m.donor_similarity(out, donors[0])  # type: ignore[attr-defined]
            if best is None or score < best[0]:
                best = (score, k, donors)
            if score < DONOR_MAX_COSINE:
                break
        assert best is not None
        pinned = {"gender": info["gender"], "age": info["age"], "lab": info["lab"], "donors": best[2]}
        return pinned, best[1]

    def _template(self, p: _Person) -> dict | None:
        """The person's stranger rendered once on its largest view (``DonorMorph.stranger_template``; again
        after a redraw changes the key); None where the method has no templates (every frame is morphed)."""
        if not hasattr(self.method, "stranger_template") or p.view is None or p.info is None:
            return None
        if p.template is None or p.template[0] != p.morph_key:
            from ..donor import mouth_features
            from ..donor_bank import pose_features

            crop, lm = p.view
            info = {**p.info, "lm": lm, "pose": pose_features(lm), "mouth": mouth_features(lm)}
            p.template = (p.morph_key, self.method.stranger_template(crop, p.morph_key, info))  # type: ignore[attr-defined]
        return p.template[1]

    def face(self, frame: np.ndarray, t: Track, lm: np.ndarray, person: _Person | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(new crop, crop transform, paste mask) of track ``t`` at landmarks ``lm`` (frame coordinates)."""
        from ...core.detect import arcface5_from_68

        person = person or self.people[t.slot]
        crop, m = self._crop(frame, arcface5_from_68(lm), self.sizes[t.id])
        if self.donor and person.info is not None:
            from ..donor import mouth_features
            from ..donor_bank import pose_features

            lm_c = lm @ m[:, :2].T + m[:, 2]
            info = {**person.info, "lm": lm_c, "pose": pose_features(lm_c), "mouth": mouth_features(lm_c)}
            tpl = self._template(person)
            if tpl is None:
                out, mask = self.method.morph_one(crop, person.morph_key, info)  # type: ignore[attr-defined]
            else:
                out, mask = self.method.morph_template(crop, person.morph_key, info, tpl)  # type: ignore[attr-defined]
            return out, m, mask
        res = self.method.anonymize(crop[None], None if person.key is None else [person.key])
        return res.crops[0], m, None if res.masks is None else res.masks[0]

    def render(self, frame: np.ndarray, items: list[tuple[Track, np.ndarray | None, np.ndarray]]
               ) -> tuple[np.ndarray, list[tuple[int, list[int], np.ndarray]], int]:
        """Anonymize one frame -> (frame, [(track id, region, original pixels of the region)], fallbacks).
        Crops come from the input frame, so overlapping faces never see each other's output."""
        out = frame
        faces = []
        fallback = 0
        for t, lm, box in items:
            before = out
            new = None
            if self.people[t.slot].obscure:
                new = _obscure_box(out, box)
            elif lm is not None:
                try:
                    crop, m, mask = self.face(frame, t, lm)
                    new = _paste_local(out, crop, m, mask)
                except (ValueError, np.linalg.LinAlgError, IndexError) as e:  # degenerate geometry
                    log.debug("track %d: alignment failed (%s); blurred", t.id, e)
                    new = None
            if new is None:
                fallback += 1
                new = blur_box(out, box)
            out = new
            region = _changed_region(before, out)
            if region is not None:
                x1, y1, x2, y2 = region
                faces.append((t.id, region, before[y1:y2, x1:x2].copy()))
        return out, faces, fallback


def _items(tracks: list[Track]) -> dict[int, list[tuple[Track, np.ndarray | None, np.ndarray]]]:
    per: dict[int, list] = {}
    for t in tracks:
        for f, box in t.box.items():
            per.setdefault(f, []).append((t, t.smooth.get(f), box))
    for v in per.values():  # deterministic order: left to right, then top to bottom
        v.sort(key=lambda x: (round(float(x[2][0])), round(float(x[2][1])), x[0].id))
    return per


def _make_detector(detector, upsample: int, min_score: float | None, min_size: float | None):
    if not isinstance(detector, str):
        return detector
    from ...core.detect import FaceDetector

    return FaceDetector(detector, upsample=upsample, min_score=min_score, min_size=min_size)


def track_clip(path: Path, info: VideoInfo, detector, *, detect_every: int = 1, embed=None) -> list[Track]:
    """Pass 1: decode and track every face -> tracks (smoothed, with pseudonym slots)."""
    tracker = Tracker(detector, detect_every=detect_every, embed=embed)
    for i, frame in enumerate(progress(iter_frames(path), desc="tracking faces", total=info.n_frames,
                                       unit="frame")):
        tracker.step(i, frame)
    return tracker.finish()


@one_blas_thread
def anonymize_video(inp: str | os.PathLike, out: str | os.PathLike, passphrase: bytes | None, method: Method, *,
                    detector: str | object = "retinaface", upsample: int = 1, min_score: float | None = None,
                    min_size: float | None = None, detect_every: int = 1, max_seconds: float | None = None,
                    embed=None, safety=True) -> VideoResult:
    """Anonymize every face of a clip into ``out`` (with the sealed record ``out.fpx`` when a passphrase is
    given); see the module docstring. ``safety``: the safety net of ``_Renderer`` (True: the shared one of
    ``deid.safety``, as for photos; None/False: off)."""
    from ...core.fileio import atomic_files, check_output

    t0, c0 = time.perf_counter(), time.process_time()
    inp, out = Path(inp), Path(out)
    if method.keyed and passphrase is None:
        raise InputError(f"method {method.name} is keyed: it needs a passphrase (--passphrase-file FILE or -)")
    if passphrase is not None:
        check_passphrase_strength(passphrase)
    if not 1 <= int(detect_every) <= 100:
        raise InputError(f"--detect-every must be 1..100, got {detect_every}")
    _, lossless = output_format(out)
    check_output(out, [inp])
    info = probe(inp, **({} if max_seconds is None else {"max_seconds": max_seconds}))
    if not lossless and (info.width % 2 or info.height % 2):
        raise InputError(f"odd frame size {info.width}x{info.height}: H.264 (yuv420p) needs even sides; "
                         "write .mkv (lossless FFV1) instead")
    if read_marker(inp).startswith(MARKER):
        raise InputError(f"{inp} is already anonymized by faceprivacy; anonymizing it again would seal the "
                         "stranger, not the original")
    det = _make_detector(detector, upsample, min_score, min_size)
    t1 = time.perf_counter()
    tracks = track_clip(inp, info, det, detect_every=detect_every, embed=embed)
    t2 = time.perf_counter()
    salt = new_salt()
    master = derive_master_key(passphrase, salt) if passphrase is not None else None
    if safety is True:
        from ..safety import default_net

        safety = default_net()
    renderer = _Renderer(method, master, safety or None)
    renderer.prepare(tracks)
    per_frame = _items(tracks)
    res = VideoResult(outputs=[], frames=info.n_frames, tracks=len(tracks),
                      people=len({t.slot for t in tracks}), lossless=lossless)
    res.redrawn = sum(p.redrawn for p in renderer.people.values())
    res.obscured = sum(p.obscure for p in renderer.people.values())
    if res.obscured:
        res.notes.append(f"safety net: {res.obscured} person(s) still verified as the original after every redraw "
                         "(dlib / CASIA MobileFaceNet): obscured (pixelated) in every frame instead")
    if not tracks:
        res.notes.append("no face found in any frame: the video is written unchanged")
    recoverable = passphrase is not None
    dests = [sidecar_path(out), out] if recoverable else [out]
    entries: list[list] = []
    blobs: list[bytes] = []
    size = 0
    with atomic_files(dests, [".fpx", out.suffix] if recoverable else [out.suffix]) as tmps:
        tmp_video = tmps[-1]
        writer = VideoWriter(tmp_video, out, info, metadata={"comment": MARKER})
        res.notes += writer.notes

        for i, frame in enumerate(progress(_frames_copying_audio(inp, writer), desc=f"anonymizing ({method.name})", total=info.n_frames,
                                           unit="frame")):
            new, faces, fb = renderer.render(frame, per_frame.get(i, []))
            res.fallback += fb
            res.faces += len(per_frame.get(i, []))
            if recoverable:
                for tid, region, orig in faces:
                    b = _png(orig)
                    size += len(b) + 4
                    if size > MAX_RECORD_BYTES:
                        raise InputError(f"the recovery record would exceed {MAX_RECORD_BYTES >> 20} MB: split "
                                         "the clip (or lower --max-seconds)")
                    entries.append([i, tid, *region])
                    blobs.append(b)
            writer.write_frame(new)
        writer.close()
        t3 = time.perf_counter()
        res.timings = {"probe": t1 - t0, "track": t2 - t1, "render": t3 - t2}
        if recoverable:
            digest, res.recovery = _verify(tmp_video, inp, entries, blobs, info)
            header = RecordHeader(method=method.name, salt=base64.b64encode(salt).decode("ascii"),
                                  image_shape=[info.height, info.width, 3], pixel_sha256=digest,
                                  generator=method.generator_name, encryptor=method.encryptor_id)
            body = {"kind": BODY_KIND, "frames": info.n_frames, "fps": str(info.fps),
                    "tracks": [{"track": t.id, "slot": t.slot, "key_purpose": renderer.people[t.slot].purpose,
                                "first": min(t.box), "last": max(t.box)} for t in tracks],
                    "faces": entries}
            record = seal_payload(master, header, _payload(body, blobs))  # type: ignore[arg-type]
            tmps[0].write_bytes(record)
    res.outputs = [str(out)] + ([str(sidecar_path(out))] if recoverable else [])
    res.seconds = time.perf_counter() - t0
    res.cpu_seconds = time.process_time() - c0
    res.timings["verify_and_write"] = time.perf_counter() - t3
    res.track_list = tracks
    return res


def _frames_copying_audio(inp: Path, writer: VideoWriter) -> Iterator[np.ndarray]:
    """The input's frames; its audio packets go straight to ``writer`` as they come."""
    for kind, x in iter_packets(inp):
        if kind == "audio":
            writer.write_audio(x)
        else:
            yield x  # type: ignore[misc]


def _payload(body: dict, blobs: list[bytes]) -> bytes:
    bj = json.dumps(body, separators=(",", ":"), sort_keys=True).encode("utf-8")
    parts = [struct.pack("<I", len(bj)), bj, struct.pack("<I", len(blobs))]
    for b in blobs:
        parts += [struct.pack("<I", len(b)), b]
    return b"".join(parts)


def _unpayload(payload: bytes) -> tuple[dict, list[bytes]]:
    def u32(pos: int) -> tuple[int, int]:
        if pos + 4 > len(payload):
            raise InputError("recovery record payload is truncated")
        return struct.unpack("<I", payload[pos:pos + 4])[0], pos + 4

    blen, pos = u32(0)
    try:
        body = json.loads(payload[pos:pos + blen].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InputError("recovery record body is corrupt") from None
    if not isinstance(body, dict) or body.get("kind") != BODY_KIND:
        raise InputError("this recovery record belongs to an image, not a video")
    n, pos = u32(pos + blen)
    blobs = []
    for _ in range(n):
        ln, pos = u32(pos)
        blobs.append(payload[pos:pos + ln])
        pos += ln
    faces = body.get("faces")
    if not (isinstance(faces, list) and len(faces) == n and all(
            isinstance(f, list) and len(f) == 6 and all(isinstance(v, int) for v in f) for f in faces)):
        raise InputError("recovery record body is corrupt: bad faces")
    return body, blobs


def _restore(frame: np.ndarray, faces: list[tuple[list[int], bytes]]) -> np.ndarray:
    """Paste the sealed originals of one frame back, last face first."""
    out = frame.copy()
    for region, blob in reversed(faces):
        x1, y1, x2, y2 = region
        orig = _unpng(blob)
        if orig.shape[:2] != (y2 - y1, x2 - x1) or x2 > out.shape[1] or y2 > out.shape[0]:
            raise InputError("recovery record region does not match its pixels")
        out[y1:y2, x1:x2] = orig
    return out


def _by_frame(entries: list[list], blobs: list[bytes]) -> dict[int, list[tuple[list[int], bytes]]]:
    per: dict[int, list] = {}
    for e, b in zip(entries, blobs, strict=True):
        per.setdefault(int(e[0]), []).append((list(e[2:6]), b))
    return per


def _verify(written: Path, inp: Path, entries: list[list], blobs: list[bytes], info: VideoInfo) -> tuple[str, dict]:
    """Decode what was written, recover it and compare with the input -> (digest of the decoded frames,
    {exact, frames, psnr_min, psnr_mean})."""
    per = _by_frame(entries, blobs)
    h = frame_digest()
    psnr: list[float] = []
    n = 0
    for i, (a, b) in enumerate(zip(iter_frames(written), iter_frames(inp), strict=False)):
        h.update(np.ascontiguousarray(a).tobytes())
        rec = _restore(a, per.get(i, []))
        mse = float(np.mean((rec.astype(np.float64) - b) ** 2))
        psnr.append(float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse))
        n += 1
    if n != info.n_frames:
        raise InputError(f"the written video decodes to {n} frames, not {info.n_frames}")
    finite = [p for p in psnr if np.isfinite(p)]
    return h.hexdigest(), {"exact": not finite, "frames": n, "exact_frames": n - len(finite),
                           "psnr_min": min(finite) if finite else None,
                           "psnr_mean": float(np.mean(finite)) if finite else None}


# ----- recovery ----------------------------------------------------------------------------------------

def read_video_record(path: Path) -> bytes:
    side = sidecar_path(path)
    if not side.is_file():
        raise InputError(f"{path} has no recovery record ({side.name} not found; it was written without a "
                         "passphrase, or the sidecar was not copied with it)")
    if side.stat().st_size > MAX_RECORD_BYTES:
        raise InputError(f"sidecar {side} is too large")
    return side.read_bytes()


def recover_video(inp: str | os.PathLike, out: str | os.PathLike, passphrase: bytes, *,
                  allow_modified: bool = False) -> VideoResult:
    """Restore the original faces of an anonymized clip into ``out`` (``.mkv``: lossless)."""
    from ...core.fileio import atomic_path, check_output

    t0 = time.perf_counter()
    inp, out = Path(inp), Path(out)
    _, lossless = output_format(out)
    check_output(out, [inp, sidecar_path(inp)])
    info = probe(inp, max_seconds=float("inf"))
    header, _, payload = open_payload(read_video_record(inp), passphrase)
    body, blobs = _unpayload(payload)
    if [info.height, info.width, 3] != list(header.image_shape) or info.n_frames != body.get("frames"):
        raise InputError(f"{inp} ({info.width}x{info.height}, {info.n_frames} frames) does not match its record "
                         f"({header.image_shape[1]}x{header.image_shape[0]}, {body.get('frames')} frames)")
    per = _by_frame(body["faces"], blobs)
    res = VideoResult(outputs=[str(out)], frames=info.n_frames, faces=len(blobs), lossless=lossless,
                      tracks=len(body.get("tracks", [])))
    h = frame_digest()
    with atomic_path(out, out.suffix) as tmp:
        writer = VideoWriter(tmp, out, info)
        res.notes += writer.notes
        for k, x in enumerate(progress(_frames_copying_audio(inp, writer), desc="recovering",
                                       total=info.n_frames, unit="frame")):
            h.update(np.ascontiguousarray(x).tobytes())
            writer.write_frame(_restore(x, per.get(k, [])))
        writer.close()
        if h.hexdigest() != header.pixel_sha256 and not allow_modified:
            raise AuthenticationError("the video's frames changed since anonymization (edited or re-encoded, "
                                      "or the record belongs to another video); pass --allow-modified to "
                                      "restore anyway")
    res.seconds = time.perf_counter() - t0
    if not lossless:
        res.notes.append("lossy output (H.264): the recovered faces went through the codec again; write .mkv "
                         "for bit-exact frames")
    return res


def compare_videos(a: str | os.PathLike, b: str | os.PathLike) -> dict:
    """Frame-by-frame comparison of two clips: frames, identical frames, worst and mean PSNR (dB)."""
    psnr = []
    n = same = 0
    for x, y in zip(iter_frames(Path(a)), iter_frames(Path(b)), strict=False):
        n += 1
        if x.shape != y.shape:
            raise InputError("the clips differ in frame size")
        mse = float(np.mean((x.astype(np.float64) - y) ** 2))
        if mse == 0:
            same += 1
        else:
            psnr.append(10 * np.log10(255.0 ** 2 / mse))
    return {"frames": n, "identical_frames": same, "psnr_min": min(psnr) if psnr else None,
            "psnr_mean": float(np.mean(psnr)) if psnr else None}
