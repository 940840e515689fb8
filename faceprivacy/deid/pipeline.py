"""Full-frame de-identification: detect every face, align, anonymize, paste back with a soft mask, and
attach a sealed recovery record; recovery restores the original (bit-exact) or decrypts the latent.

Face detection/alignment/paste-back come from ``faceprivacy.core`` (``detect.FaceDetector``,
``align.arcface_crop`` / ``align.paste_back``); they are injectable so tests and other backends can swap them.

Keys: ``scrypt(passphrase, salt)`` -> master -> one HKDF key per face (``deid/latent/face/<i>``). With
``consistent`` a batch shares one salt, and faces are grouped by person (dlib descriptors, distance < 0.5)
into pseudonym slots, each with its own key (``deid/person/<slot>``): one person keeps one stranger across
the batch, different people get different strangers, and a known (original, anonymized) pair reveals only
that person's key, never the batch key. Every key label and face-derived value is sealed in the record.

Safety net (``deid.safety``): after the method has replaced the faces, each output face is compared with the
original by dlib and the CASIA MobileFaceNet (never the evaluation's ONNX judge); a face either still verifies
(FAR 1e-2 thresholds from validation identities) is redrawn under a key derived from its own
(``<purpose>/safety/<n>``), and if every redraw still verifies, obscured (below) over its last stranger, so the
obscured patch holds no pixel of the original face and two keys give two different patches. Deterministic: same key and
image -> same output. Opt-in (``SafetyNet(occlusion=True)``, ``anonymize --obscure-occluded``; off by default
because it also flags many clean faces): before any replacement, the net's occlusion check (``deid.occlusion``: a logistic
regression on the same two descriptors of the input crop) sends faces it calls occluded (mask, eye band, hand)
to the fallback, as the replacement would paint only what the occluder leaves: a keyed method still replaces
them (under their own keys, unchecked), and the fallback then obscures the stranger, so the obscured patch holds
no pixel of the original face and two keys give two different patches.

Fallback: a face that cannot be replaced is obscured in its grown box, never left as is: pixelated and blurred
(``safety.obscure``, record entry ``fallback/pixelate``), or filled with its mean colour (``fallback/mask``) if
the pixelated face still verifies. Three kinds: faces whose five points fail ``core.detect.landmarks_plausible``
(extreme pose, occlusion), *weak* detections (scored between the detector's floor and ``min_score``: their
landmarks are not trusted), occluded faces and faces the safety net could not fix. Original pixels are sealed like any other
face (exact recovery restores them; latent recovery leaves them obscured), each is logged on stderr and counted
in ``AnonymizeOutput`` (``blurred`` = all of them; ``weak``, ``unalignable``, ``escalated``, ``occluded``;
``redrawn``).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import AuthenticationError, InputError, NoFaceError
from ..core.fileio import same_file  # noqa: F401  (re-exported: deid callers import it from here)
from ..core.imageio import check_rgb, image_format, roundtrip
from ..core.keys import derive_master_key, face_purpose, new_salt, subkey
from .methods import Method
from .record import (
    PNG_KEY,
    FaceEntry,
    RecordBody,
    RecordHeader,
    WrongPassphraseError,
    build_record,
    master_from_header,
    open_record,
    parse_record,
    pixel_digest,
    read_record,
    sidecar_path,
)

log = logging.getLogger(__name__)

CropFn = Callable[..., tuple[np.ndarray, np.ndarray]]
PasteFn = Callable[..., np.ndarray]
#: dlib descriptor distance under which two faces of a ``consistent`` batch count as one person
PERSON_DISTANCE = 0.5
#: key label of a record entry for a face that was obscured instead of replaced (no key, no latent); records
#: made before the safety net say ``fallback/blur``; every label under ``fallback/`` is such an entry
FALLBACK_PURPOSE = "fallback/pixelate"
FALLBACK_MASK = "fallback/mask"
FALLBACK_PREFIX = "fallback/"


#: resampling of the working crop taken from a photo and of the result pasted back: bicubic, because bilinear
#: sampling at the sub-pixel offsets of a real photo smooths the face twice (crop, paste), and the pasted face
#: then reads softer than the photo around it (a face cropped and pasted back unchanged kept 60 % of its
#: high-frequency energy with bilinear, 101 % with bicubic: tests/test_deid_pipeline.py; docs/deid.md
#: "Candidates v4")
RESAMPLE = "bicubic"


def padded_crop(img: np.ndarray, five: np.ndarray, size: int, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """ArcFace-layout crop of side ``size`` whose face layout is shrunk to leave ``pad`` x its side on each
    side (``pad=0``: the plain ArcFace crop) -> (crop, 2x3 transform image -> crop)."""
    from ..core.align import ARCFACE_TEMPLATE, umeyama_similarity, warp_affine

    f = size / (1 + 2 * pad)
    m = umeyama_similarity(np.asarray(five, float), ARCFACE_TEMPLATE * (f / 112.0) + pad * f)
    return warp_affine(img, m, (size, size), resample=RESAMPLE), m


def _default_crop(img: np.ndarray, five: np.ndarray, size: int, pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    if pad:
        return padded_crop(img, five, size, pad)
    from ..core.align import arcface_crop

    return arcface_crop(img, five, size=size)


def _default_paste(frame: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    from ..core.align import paste_back

    return paste_back(frame, crop, m, mask=mask, resample=RESAMPLE)


@dataclass
class DetectedFace:
    """What the pipeline needs from a detector: a box and the five ArcFace points."""

    box: np.ndarray
    arcface5: np.ndarray
    alignable: bool = True
    weak: bool = False  # a detection below the detector's min_score (above its floor): obscured, not replaced


@dataclass
class AnonymizeOutput:
    """The anonymized frame, the sealed record and a short summary."""

    image: np.ndarray
    record: bytes
    n_faces: int
    faces: list[dict] = field(default_factory=list)
    blurred: int = 0  # faces obscured by the fallback (all kinds: the three below)
    unalignable: int = 0  # ... because their landmarks fail the check
    weak: int = 0  # ... because the detection was weak
    escalated: int = 0  # ... because the safety net still verified every redraw
    redrawn: int = 0  # faces the safety net redrew (and a redraw passed)
    safety_s: float = 0.0  # seconds spent in the safety net (checks, redraws, obscuring the faces it escalated)
    occluded: int = 0  # faces obscured (counted in ``blurred`` too) because the occlusion check flagged them


class PseudonymBook:
    """Pseudonym slots of one ``consistent`` batch: a face joins the nearest earlier person (dlib descriptor
    distance < ``PERSON_DISTANCE``), else opens a new slot. Two faces of one photo never share a slot."""

    def __init__(self) -> None:
        self.centres: list[np.ndarray] = []
        self.counts: list[int] = []
        self._embedder = None

    def descriptors(self, img: np.ndarray, faces: Sequence[DetectedFace]) -> np.ndarray:
        from ..core.align import arcface_crop
        from ..core.embedders import DlibEmbedder, arcface112_to_dlib150_uint8

        if self._embedder is None:
            self._embedder = DlibEmbedder()
        crops = np.stack([arcface_crop(img, f.arcface5, 112)[0] for f in faces])
        return self._embedder.raw(arcface112_to_dlib150_uint8(crops))

    def assign(self, desc: np.ndarray) -> list[int]:
        slots: list[int] = []
        for d in desc:
            dist = [np.linalg.norm(d - c) if k not in slots else np.inf for k, c in enumerate(self.centres)]
            k = int(np.argmin(dist)) if dist else -1
            if k < 0 or dist[k] >= PERSON_DISTANCE:
                self.centres.append(np.asarray(d, np.float64).copy())
                self.counts.append(1)
                k = len(self.centres) - 1
            else:
                self.counts[k] += 1
                self.centres[k] += (d - self.centres[k]) / self.counts[k]
            slots.append(k)
        return slots


class Deidentifier:
    """Detect -> align -> anonymize (a ``Method``) -> paste back, plus recovery from the record."""

    def __init__(self, method: Method, detector=None, crop_fn: CropFn | None = None,
                 paste_fn: PasteFn | None = None, min_face: float = 0.0, keep_pixels: bool = True,
                 safety=True):
        self.method = method
        self._detector = detector
        self.crop_fn = crop_fn or _default_crop
        self.paste_fn = paste_fn or _default_paste
        self.min_face = min_face
        self.keep_pixels = keep_pixels
        #: the post-replacement check (``deid.safety.SafetyNet``): True = the shared default, None/False = off
        self._safety = safety
        self._books: dict[bytes, PseudonymBook] = {}

    @property
    def detector(self):
        if not self._detector:
            from ..core.detect import anonymize_detector

            self._detector = anonymize_detector()
        return self._detector

    @property
    def safety(self):
        if self._safety is True:
            from .safety import default_net

            self._safety = default_net()
        return self._safety or None

    def detect(self, img: np.ndarray) -> list[DetectedFace]:
        """All faces, in a deterministic order (left to right, then top to bottom)."""
        faces = [DetectedFace(np.asarray(f.box, float), np.asarray(f.arcface5, float), getattr(f, "alignable", True),
                              bool(getattr(f, "weak", False))) for f in self.detector.detect(img)]
        faces = [f for f in faces if (f.box[2] - f.box[0]) >= self.min_face]
        return sorted(faces, key=lambda f: (round(float(f.box[0])), round(float(f.box[1]))))

    def _crop(self, img: np.ndarray, five: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        pad = float(getattr(self.method, "crop_pad", 0.0))
        if pad:
            return self.crop_fn(img, five, size, pad=pad)
        return self.crop_fn(img, five, size)

    def _paste(self, frame: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if mask is None:
            return self.paste_fn(frame, crop, m)
        return self.paste_fn(frame, crop, m, mask=mask)

    def person_purposes(self, img: np.ndarray, faces: Sequence[DetectedFace], master: bytes) -> list[str]:
        """Key labels of a ``consistent`` batch: one pseudonym slot per person (see ``PseudonymBook``)."""
        book_id = subkey(master, "deid/book-id", 16)
        book = self._books.setdefault(book_id, PseudonymBook())
        return [f"deid/person/{k}" for k in book.assign(book.descriptors(img, faces))]

    # ----- anonymize ---------------------------------------------------------------------------------
    def anonymize(self, img: np.ndarray, passphrase: bytes, salt: bytes | None = None,
                  consistent: bool = False, master: bytes | None = None,
                  faces: Sequence[DetectedFace] | None = None, out_ext: str = ".png") -> AnonymizeOutput:
        """Anonymize every face of ``img`` (uint8 HxWx3). ``salt``/``master`` may be shared by a batch
        (``consistent``: one pseudonym per person across the batch, see the module docstring). ``out_ext``
        names the output format: for lossy formats the record binds to the pixels the file will decode to."""
        img = check_rgb(img)
        faces = list(self.detect(img) if faces is None else faces)
        if not faces:
            raise NoFaceError("no face found in the image (nothing to anonymize; output not written)")
        salt = salt or new_salt()
        master = master or derive_master_key(passphrase, salt)
        unalignable = [f for f in faces if not f.alignable]
        weak = [f for f in faces if f.alignable and f.weak]
        faces = [f for f in faces if f.alignable and not f.weak]
        net = self.safety
        redrawn, escalated, occluded, ref = 0, [], [], None
        t_net = time.perf_counter()  # the net's whole cost: checks, redraws, obscuring what it could not fix
        if net is not None and faces and hasattr(net, "occluded"):
            # occluded faces (mask, eye band, hand) go straight to the obscuring fallback: the replacement
            # paints only what the occluder leaves, and that can still verify (deid.occlusion)
            from .safety import face_crops

            ref = net.embed(face_crops(img, [f.arcface5 for f in faces]))
            occ = net.occluded(ref)
            if occ.any():
                occluded = [f for f, o in zip(faces, occ, strict=True) if o]
                faces = [f for f, o in zip(faces, occ, strict=True) if not o]
                ref = {k: v[~occ] for k, v in ref.items()}
        t_net = time.perf_counter() - t_net
        purposes = (self.person_purposes(img, faces, master) if consistent and self.method.keyed and faces
                    else [face_purpose(i, False) for i in range(len(faces))])
        keys = [subkey(master, p) for p in purposes]
        results = self._results(img, faces, keys)
        frame, entries, originals = self._compose(img, faces, results, purposes)
        t0 = time.perf_counter()
        if net is not None and faces:
            frame, entries, originals, faces, redrawn, escalated = self._safety_net(
                net, master, img, frame, entries, originals, faces, results, keys, purposes, ref)
        t_net += time.perf_counter() - t0
        # entries under a fallback entry (an escalated or occluded face's stranger): sealed, not listed
        hidden: set[int] = set(range(len(entries) - len(escalated), len(entries))) if self.method.keyed else set()
        if occluded and self.method.keyed:
            # replace the occluded faces too, then obscure the stranger: the obscured patch then holds no
            # pixel of the original face, and two keys give two different patches (not one linkable blur)
            o_purposes = [face_purpose(len(purposes) + j, False) for j in range(len(occluded))]
            o_keys = [subkey(master, q) for q in o_purposes]
            frame, o_entries, o_originals = self._compose(img, occluded, self._results(img, occluded, o_keys),
                                                          o_purposes, frame=frame)
            hidden |= set(range(len(entries), len(entries) + len(o_entries)))
            entries, originals = entries + o_entries, originals + o_originals
        fallback = escalated + occluded + weak + unalignable
        if fallback:  # the net checks the obscured faces too (a face that still verifies is filled instead)
            from .safety import PIXEL_GROW, UNTRUSTED_GROW

            # weak, occluded and unalignable faces: their box may be partial, so a larger margin
            grows = [PIXEL_GROW] * len(escalated) + [UNTRUSTED_GROW] * (len(occluded) + len(weak) + len(unalignable))
            frame = _obscure_fallback(frame, fallback, entries, originals, img, net, grows)
        if unalignable:
            log.warning("%d face(s) could not be aligned (extreme pose or occlusion): obscured instead "
                        "(pixelated + blurred)", len(unalignable))
        if weak:
            log.warning("%d weak detection(s) (score below the detector's min-score): obscured instead "
                        "(pixelated + blurred)", len(weak))
        if redrawn:
            log.warning("safety net: %d face(s) still verified as the original (dlib / CASIA MobileFaceNet, "
                        "FAR 1e-2) and were redrawn under a derived key", redrawn)
        if escalated:
            log.warning("safety net: %d face(s) still verified as the original%s: obscured instead (pixelated + "
                        "blurred)", len(escalated), f" after {net.redraws} redraws" if self.method.keyed else "")
        if occluded:
            log.warning("safety net: %d face(s) look occluded (mask, eye band, hand): obscured instead (pixelated "
                        "+ blurred)", len(occluded))
        header = RecordHeader(method=self.method.name, salt=base64.b64encode(salt).decode("ascii"),
                              image_shape=list(img.shape),
                              pixel_sha256=pixel_digest(_lossy_pixels(frame, out_ext.lower())),
                              generator=self.method.generator_name, encryptor=self.method.encryptor_id)
        body = RecordBody(faces=entries, consistent=consistent)
        record = build_record(master, header, body, originals if self.keep_pixels else None)
        listed = [e for i, e in enumerate(entries) if i not in hidden]
        return AnonymizeOutput(frame, record, len(listed),
                               [{"box": e.box, "region": e.region}
                                | ({"fallback": e.key_purpose.split("/", 1)[1]}
                                   if e.key_purpose.startswith(FALLBACK_PREFIX) else {})
                                | ({"redrawn": True} if "/safety/" in e.key_purpose else {}) for e in listed],
                               len(fallback), len(unalignable), len(weak), len(escalated), redrawn,
                               t_net if net is not None else 0.0, len(occluded))

    def _safety_net(self, net, master, img, frame, entries, originals, faces, results, keys, purposes, ref=None):
        """Check every replaced face (module docstring); redraw the ones that still verify under
        ``<purpose>/safety/<n>`` keys, up to ``net.redraws`` times; the ones that still verify are taken out
        of the replaced faces -> (frame, entries, originals, faces kept, faces redrawn, faces to obscure).
        ``ref``: the input crops' descriptors (``SafetyNet.embed``), when already computed."""
        from .safety import face_crops

        orig = face_crops(img, [f.arcface5 for f in faces])
        anon = face_crops(frame, [f.arcface5 for f in faces])
        leak = net.leaks(orig, anon) if ref is None else net.leaks(orig, anon, ref)
        if not leak.any():
            return frame, entries, originals, faces, 0, []
        purposes, keys, results = list(purposes), list(keys), list(results)
        redrawn = set()
        for n in range(1, net.redraws + 1 if self.method.keyed else 1):
            idx = np.nonzero(leak)[0].tolist()
            if not idx:
                break
            for i in idx:
                purposes[i] = f"{purposes[i].split('/safety/')[0]}/safety/{n}"
                keys[i] = subkey(master, purposes[i])  # recorded, so latent recovery derives it again
                redrawn.add(i)
            sub = self._results(img, [faces[i] for i in idx], [keys[i] for i in idx])
            for j, i in enumerate(idx):
                results[i] = sub[j]
            frame, entries, originals = self._compose(img, faces, results, purposes)
            again = net.leaks(orig[idx], face_crops(frame, [faces[i].arcface5 for i in idx]))
            leak[:] = False
            leak[idx] = again
        bad = set(np.nonzero(leak)[0].tolist())
        if bad:
            keep = [i for i in range(len(faces)) if i not in bad]
            faces_k = [faces[i] for i in keep]
            # a keyed method's escalated faces keep their last stranger (composed last) under the obscuring,
            # as occluded faces do: the patch then holds no pixel of the original face, and two keys give two
            # patches, not one linkable pixelation of the original. A keyless method's are not composed.
            order = keep + (sorted(bad) if self.method.keyed else [])
            frame, entries, originals = self._compose(img, [faces[i] for i in order], [results[i] for i in order],
                                                      [purposes[i] for i in order])
            return frame, entries, originals, faces_k, len(redrawn - bad), [faces[i] for i in sorted(bad)]
        return frame, entries, originals, faces, len(redrawn), []

    def _apply(self, img, faces, keys, purposes, fn):
        """Crop every face from ``img``, run ``fn`` per crop size, paste back in order -> (frame, entries,
        original pixels of each changed region)."""
        return self._compose(img, faces, self._results(img, faces, keys, fn), purposes)

    def _results(self, img, faces, keys, fn=None):
        """Per face: (crop size, 2x3 affine, (anonymized crop, latent, paste mask)) from ``fn`` (default: the
        method's ``anonymize``) run once per crop size."""
        fn = fn or self.method.anonymize
        # crops are taken from the ORIGINAL image so overlapping faces do not see each other's output
        crops, affines, sizes = [], [], []
        for f in faces:
            size = self.method.crop_size(float(f.box[2] - f.box[0]))
            crop, m = self._crop(img, f.arcface5, size)
            crops.append(crop)
            affines.append(np.asarray(m, float))
            sizes.append(size)
        res = self._run_grouped(fn, crops, sizes, keys)
        return [(sizes[i], affines[i], res[i]) for i in range(len(faces))]

    def _compose(self, img, faces, results, purposes, frame=None):
        """Paste every face's result into a copy of ``img`` (or onto ``frame``), in order -> (frame, entries,
        the pixels each changed region held before)."""
        frame = img.copy() if frame is None else frame
        entries, originals = [], []
        sizes = [r[0] for r in results]
        affines = [r[1] for r in results]
        for i, f in enumerate(faces):
            anon_crop, ze, mask = results[i][2]
            before = frame
            frame = self._paste(frame, anon_crop, affines[i], mask)
            region = _changed_region(before, frame)
            originals.append(before[region[1]:region[3], region[0]:region[2]].copy())
            entries.append(FaceEntry(box=[float(v) for v in f.box], affine=affines[i].tolist(),
                                     crop_size=sizes[i], key_purpose=purposes[i], region=region,
                                     z_enc=None if ze is None else _b64_array(ze),
                                     z_shape=None if ze is None else list(ze.shape),
                                     crop_pad=float(getattr(self.method, "crop_pad", 0.0))))
        return frame, entries, originals

    def _run_grouped(self, fn, crops, sizes, keys):
        """Run the method once per crop size (baselines scale the crop with the face)."""
        out: list = [None] * len(crops)
        for s in sorted(set(sizes)):
            idx = [i for i, v in enumerate(sizes) if v == s]
            res = fn(np.stack([crops[i] for i in idx]), [keys[i] for i in idx])
            for j, i in enumerate(idx):
                out[i] = (res.crops[j], None if res.z_enc is None else res.z_enc[j],
                          None if res.masks is None else res.masks[j])
        return out

    # ----- recover -----------------------------------------------------------------------------------
    def recover(self, img: np.ndarray, record: bytes, passphrase: bytes, plausible: bool = False,
                from_latent: bool = False, allow_modified: bool = False,
                faces: Sequence[DetectedFace] | None = None) -> tuple[np.ndarray, str]:
        """Undo the anonymization -> (image, mode). Modes: "exact" (sealed original pixels pasted back),
        "latent" (decrypted latent decoded and pasted), "plausible" (wrong passphrase: the faces of the
        anonymized image anonymized again under the wrong key, i.e. other strangers; only when ``plausible``
        and only for keyed methods; ``faces`` overrides the detection on the anonymized image). A tampered
        record is never answered with a plausible image."""
        img = check_rgb(img)
        header, _, _ = parse_record(record)
        if list(img.shape) != list(header.image_shape):
            raise InputError(f"image size {img.shape} does not match the record {tuple(header.image_shape)}")
        try:
            opened = open_record(record, passphrase)
        except WrongPassphraseError:
            if not plausible:
                raise
            return self._plausible(img, header, master_from_header(passphrase, header), faces), "plausible"
        if pixel_digest(img) != opened.header.pixel_sha256 and not allow_modified:
            raise AuthenticationError("the image pixels changed since anonymization (edited or re-encoded); "
                                      "pass allow_modified / --allow-modified to restore anyway")
        body = opened.body
        if body.has_pixels and not from_latent:
            out = img.copy()
            for face, orig in zip(reversed(body.faces), reversed(opened.originals), strict=True):
                x1, y1, x2, y2 = face.region
                if orig.shape[:2] != (y2 - y1, x2 - x1):
                    raise InputError("recovery record region does not match its pixels")
                out[y1:y2, x1:x2] = orig
            return out, "exact"
        return self._latent_paste(img, opened.header, body, opened.master), "latent"

    def _plausible(self, img: np.ndarray, header: RecordHeader, master: bytes,
                   faces: Sequence[DetectedFace] | None = None) -> np.ndarray:
        """Wrong key: every face found in the anonymized image gets another stranger under that key."""
        if not self.method.keyed:
            raise WrongPassphraseError(f"wrong passphrase; method {header.method!r} is not keyed, so "
                                       "--plausible has no stranger to show")
        faces = [f for f in (self.detect(img) if faces is None else faces)
                 if getattr(f, "alignable", True) and not getattr(f, "weak", False)]
        if not faces:
            return img.copy()
        purposes = [face_purpose(i, False) for i in range(len(faces))]
        keys = [subkey(master, p) for p in purposes]
        frame, _, _ = self._apply(img, faces, keys, purposes, self.method.plausible)
        return frame

    def _latent_paste(self, img: np.ndarray, header: RecordHeader, body: RecordBody, master: bytes) -> np.ndarray:
        # fallback faces have no latent: they stay obscured (their pixels come back only in exact mode)
        body = RecordBody(faces=[f for f in body.faces if not f.key_purpose.startswith(FALLBACK_PREFIX)],
                          consistent=body.consistent)
        if not body.faces:
            return img.copy()
        if any(f.z_enc is None for f in body.faces):
            raise AuthenticationError(f"method {header.method!r} keeps no latent: recovery needs the sealed "
                                      "pixels (this record was made with --no-pixels or holds none)")
        if header.method != self.method.name or (self.method.encryptor_id and header.encryptor
                                                 and header.encryptor != self.method.encryptor_id):
            log.warning("record made with %s/%s, decrypting with %s/%s", header.method, header.encryptor,
                        self.method.name, self.method.encryptor_id)
        z = np.stack([_unb64_array(f.z_enc, f.z_shape) for f in body.faces])
        keys = [subkey(master, f.key_purpose) for f in body.faces]
        crops = self.method.decrypt(z, keys)
        out = img.copy()
        for face, crop in zip(body.faces, crops, strict=True):
            out = self.paste_fn(out, crop, np.asarray(face.affine))
        return out


def _obscure_fallback(frame: np.ndarray, faces: Sequence[DetectedFace], entries: list, originals: list,
                      img: np.ndarray | None = None, net=None, grows: Sequence[float] | None = None) -> np.ndarray:
    """Obscure each face's grown box (``safety.obscure``: pixelate + blur); with a safety ``net``, a face whose
    obscured crop still verifies as ``img``'s is filled with its mean colour instead. Appends a record entry
    and the original pixels per face, so exact recovery restores them like any other face."""
    from .safety import PIXEL_GROW, face_crops, grown_box, obscure

    for k, f in enumerate(faces):
        g = PIXEL_GROW if grows is None else float(grows[k])
        r = grown_box(f.box, frame.shape, g)
        if r[2] <= r[0] or r[3] <= r[1]:
            continue
        before = frame
        frame, purpose = obscure(before, f.box, grow=g), FALLBACK_PURPOSE
        if net is not None and img is not None and net.leaks(face_crops(img, [f.arcface5]),
                                                             face_crops(frame, [f.arcface5]))[0]:
            frame, purpose = obscure(before, f.box, solid=True, grow=g), FALLBACK_MASK
        region = _changed_region(before, frame)
        if region[2] <= region[0]:
            region = r
        originals.append(before[region[1]:region[3], region[0]:region[2]].copy())
        entries.append(FaceEntry(box=[float(v) for v in f.box], affine=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                                 crop_size=0, key_purpose=purpose, region=region))
    return frame


def _changed_region(before: np.ndarray, after: np.ndarray) -> list[int]:
    """Bounding box [x1, y1, x2, y2) of the pixels that differ (empty box if none)."""
    diff = np.any(before != after, axis=2)
    ys, xs = np.nonzero(diff)
    if len(ys) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _b64_array(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def _unb64_array(s: str, shape: Sequence[int] | None) -> np.ndarray:
    try:
        a = np.frombuffer(base64.b64decode(s.encode("ascii"), validate=True), dtype="<f8")
        return a.reshape(shape) if shape else a
    except ValueError:
        raise InputError("recovery record holds a corrupt latent") from None


# ----- files -----------------------------------------------------------------------------------------
#
# Every anonymized file carries a marker: PNG text chunk ``faceprivacy`` or, in other formats, the EXIF
# ImageDescription, reading ``faceprivacy-anonymized`` (+ `` record=<id>`` when a sidecar holds its record).
# The id (SHA-256 of the record, 128 bits) ties an image to its ``.fpx`` sidecar: image and sidecar are
# written as one unit (temp files, fsync, sidecar renamed first, image last), and a reader refuses a
# sidecar whose id is not the image's, so an interrupted write can never pair a new image with an old
# record (or an old image with a new one). Folder runs skip files that carry the marker.

MARKER_KEY = "faceprivacy"
MARKER = "faceprivacy-anonymized"


def record_id(record: bytes) -> str:
    """The id that ties an image to its sidecar record: the first 128 bits of SHA-256(record), hex."""
    return hashlib.sha256(record).hexdigest()[:32]


def _marker(record: bytes | None) -> str:
    return MARKER if record is None else f"{MARKER} record={record_id(record)}"


def output_format(path: str | os.PathLike) -> str:
    """Pillow format of an anonymized output path; only formats that can carry the marker are allowed."""
    from ..core.imageio import WRITABLE_FORMATS

    try:
        fmt = image_format(path)
    except InputError:
        fmt = None
    if fmt not in WRITABLE_FORMATS:
        raise InputError(f"unsupported output format {Path(path).suffix or '(none)'!r} for {path} "
                         "(use .png, .jpg, .webp or .tif)")
    return fmt


def write_anonymized(out_path: str | os.PathLike, img: np.ndarray, record: bytes | None,
                     sidecar: bool = False, icc_profile: bytes | None = None) -> list[Path]:
    """Write the anonymized image, with its record when one is given; returns the written paths.

    PNG embeds the record in an iTXt chunk; other formats (or ``sidecar``) put it in ``OUT.fpx``, written
    with the image as one unit and tied to it by the record id. ``record=None`` writes a plain image
    (marker only). JPEG/WebP use ``core.imageio.JPEG_QUALITY``, the quality the record's pixel hash
    assumed (``Deidentifier.anonymize(out_ext=...)``). ``icc_profile`` is the input's colour profile.
    """
    from ..core.fileio import atomic_write_bytes, atomic_write_many
    from ..core.imageio import encode_image

    out_path = Path(out_path)
    fmt = output_format(out_path)
    if record is None or (fmt == "PNG" and not sidecar):
        text = {MARKER_KEY: MARKER}
        if record is not None:
            text[PNG_KEY] = base64.b64encode(record).decode("ascii")
        data = encode_image(img, fmt, icc_profile=icc_profile, png_text=text if fmt == "PNG" else None,
                            description=None if fmt == "PNG" else MARKER)
        atomic_write_bytes(out_path, data)
        # a sidecar left by an earlier run into the same name belongs to another image: remove it (were this
        # step interrupted, the reader would still refuse it, since the new image names no record id)
        sidecar_path(out_path).unlink(missing_ok=True)
        return [out_path]
    mark = _marker(record)
    data = encode_image(img, fmt, icc_profile=icc_profile, png_text={MARKER_KEY: mark} if fmt == "PNG" else None,
                        description=None if fmt == "PNG" else mark)
    side = sidecar_path(out_path)
    # the sidecar first, the image (which names the sidecar's id) last
    atomic_write_many([(side, record), (out_path, data)])
    return [out_path, side]


def _lossy_pixels(img: np.ndarray, ext: str) -> np.ndarray:
    """What the file ``write_anonymized`` writes for ``ext`` decodes to (the record binds to those pixels)."""
    return roundtrip(img, output_format("x" + ext)) if ext else img


def marker_of(path: str | os.PathLike) -> tuple[bool, str | None, bool]:
    """(anonymized by faceprivacy?, record id named by the marker or None, PNG record chunk present?)."""
    from ..core.imageio import read_image_text

    text = read_image_text(path)
    embedded = PNG_KEY in text
    mark = text.get(MARKER_KEY) or text.get("description") or ""
    if not mark.startswith(MARKER):
        return embedded, None, embedded
    rid = mark.split("record=", 1)[1].strip() if "record=" in mark else None
    return True, rid, embedded


def is_anonymized(path: str | os.PathLike) -> bool:
    """True when a file carries faceprivacy's marker or recovery record (a folder run skips it)."""
    try:
        marked, _, _ = marker_of(path)
    except InputError:
        return False
    return marked or sidecar_path(path).is_file()


def read_anonymized(path: str | os.PathLike) -> tuple[np.ndarray, bytes]:
    """(pixels, record) of an anonymized image file; refuses a sidecar that does not belong to the image."""
    from ..core.imageio import load_image

    marked, rid, embedded = marker_of(path)
    if marked and not embedded and rid is None:
        raise InputError(f"{path} is a plain anonymized image: it holds no recovery record (it was written "
                         "without --recoverable or a passphrase)")
    record = read_record(path)
    if not embedded and rid is not None and record_id(record) != rid:
        raise InputError(f"{sidecar_path(path)} does not belong to {path} (record id differs: an interrupted "
                         "write or files mixed up); recovery refused")
    return load_image(path), record
