"""The bad-input corpus: one table row per case, across every sub-command, and the files they use.

Each ``Case`` is: an id, the command line (``{d}`` is the case's own folder, holding copies of the named
library files), the files it needs (``uses``), and the documented outcome: ``rc`` (2 = one clear error
line; 0/1/3 = documented successes) and the outputs it may leave (``makes``; anything else is a stray).
Add a row when you add a command or a failure mode. ``python tests/badinput_corpus.py OUTDIR`` writes the
library files to look at.

Library files (built by ``build_library``) are small: a 256x256 crop of scikit-image's astronaut (one real face), the same face in
CMYK / 16-bit / palette / RGBA / EXIF-rotated / unicode and space names, zero-byte, truncated, wrong-type,
decompression-bomb (PNG and 29-byte GIF headers), tiny and face-less images, NIfTI volumes (4-D, NaN,
oblique, truncated, not NIfTI), passphrase files, and a recoverable anonymized image with tampered copies of
its record and sidecar.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PASS = "correct horse battery staple"


@dataclass
class Case:
    """One bad-input case: argv template, library files it copies into its folder, expected outcome."""

    id: str
    argv: list[str]
    uses: tuple[str, ...] = ()
    rc: int | tuple[int, ...] = 2
    makes: tuple[str, ...] = ()  # outputs (relative to the case folder) a success may write
    setup: str | None = None  # name of a special setup (links, unwritable folders) done in the test
    stdin: str | None = None
    #: a known defect in another area (owner, row): the case runs and is reported as xfail until fixed
    known: str | None = None
    #: a defect that would cost minutes or kill the test process: not run until fixed (owner, what)
    skip: str | None = None

    @property
    def command(self) -> str:
        return self.argv[0]


# ----- library ----------------------------------------------------------------------------------------

def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h but carries one tiny IDAT (a decompression-bomb header)."""
    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def _gif_bomb() -> bytes:
    """A 29-byte GIF whose logical screen claims 65535 x 65535 pixels."""
    return (b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b"," + struct.pack("<HHHH", 0, 0, 65535, 65535)
            + b"\x00\x02\x02D\x01\x00;")


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[20:276, 80:336])  # 256x256 around her face (fast to detect)


def _nifti(path: Path, arr: np.ndarray, affine: np.ndarray | None = None) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))


def build_library(root: Path) -> Path:
    """Write every library file into ``root`` (a few MB, ~2 s; one recoverable anonymize included)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    face = _astronaut()
    im = Image.fromarray(face)
    im.save(root / "face.png")
    im.save(root / "face.jpg", quality=95)
    im.convert("CMYK").save(root / "cmyk.jpg", quality=95)
    g16 = (np.asarray(im.convert("L")).astype(np.uint16) * 257)
    Image.fromarray(g16).save(root / "gray16.png")
    im.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    rgba = im.convert("RGBA")
    a = np.asarray(rgba).copy()
    a[:40, :40, 3] = 0
    Image.fromarray(a).save(root / "rgba.png")
    rot = im.rotate(90, expand=True)  # stored turned left; EXIF orientation 6 turns it upright on display
    exif = rot.getexif()
    exif[0x0112] = 6
    rot.save(root / "exif_rotated.jpg", exif=exif, quality=95)
    im.save(root / "фото ü.jpg", quality=95)
    im.save(root / "my photo.png")
    Image.fromarray(np.full((96, 128, 3), 128, np.uint8)).save(root / "noface.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(root / "noise.png")
    Image.fromarray(np.full((4, 4, 3), 90, np.uint8)).save(root / "tiny.png")
    (root / "empty.png").write_bytes(b"")
    (root / "empty.jpg").write_bytes(b"")
    data = (root / "face.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 3])
    jd = (root / "face.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jd[: len(jd) // 4])
    (root / "text.jpg").write_text("this is not an image\n")
    (root / "notes.txt").write_text("hello\n")
    (root / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    (root / "bomb9400.png").write_bytes(_png_header_only(9400, 9400))
    (root / "bomb.gif").write_bytes(_gif_bomb())
    (root / "adir").mkdir(exist_ok=True)
    (root / "adir" / "keep.txt").write_text("x\n")
    (root / "afile").write_text("a file, not a folder\n")
    # passphrases
    (root / "pw.txt").write_text(PASS + "\n")
    (root / "wrong_pw.txt").write_text("wrong horse battery staple\n")
    (root / "short_pw.txt").write_text("abc\n")
    (root / "empty_pw.txt").write_text("")
    # models / weights
    (root / "garbage.pt").write_bytes(b"not a torch file at all" * 10)
    (root / "empty.pt").write_bytes(b"")
    (root / "emb.npy").write_bytes(b"\x93NUMPY garbage")
    # volumes
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 10, (24, 28, 20)).astype(np.float32)
    _nifti(root / "vol4d.nii.gz", np.stack([vol, vol], -1))
    nan = vol.copy()
    nan[3, 3, 3] = np.nan
    _nifti(root / "nan.nii.gz", nan)
    _nifti(root / "small.nii.gz", vol)
    obl = np.eye(4)
    obl[:3, :3] = [[0.9, -0.43, 0], [0.43, 0.9, 0], [0, 0, 1]]
    _nifti(root / "oblique.nii.gz", vol, obl)
    full = (root / "small.nii.gz").read_bytes()
    (root / "truncated.nii.gz").write_bytes(full[: len(full) // 2])
    (root / "empty.nii.gz").write_bytes(b"")
    (root / "notnifti.nii").write_bytes(b"\x00" * 400)
    (root / "png_as.nii.gz").write_bytes(data[:2000])
    bids = root / "bids_empty"
    bids.mkdir(exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "x", "BIDSVersion": "1.8.0"}))
    # a recoverable anonymized image (PNG with the record) and a JPEG + sidecar, then tampered copies
    _anonymized(root)
    _videos(root)
    return root


def _videos(root: Path) -> None:
    """Tiny clips (8 frames, 160x120, the astronaut's face moving slowly, AAC tone) and broken ones, and a
    recoverable anonymized clip (blur, FFV1 .mkv + .fpx) with a tampered record."""
    import av

    from faceprivacy.cli import main
    from faceprivacy.deid.video.synth import make_frames, write_clip

    frames, _ = make_frames([_astronaut()], 8, 120, 160, 100, cycles=0.1)
    write_clip(root / "clip.mp4", frames, 25)
    data = (root / "clip.mp4").read_bytes()
    (root / "clip_truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "clip_text.mp4").write_text("not a video\n")
    (root / "clip_empty.mp4").write_bytes(b"")
    write_clip(root / "clip_vfr.mp4", frames, 25, pts=[0, 4, 8, 20, 24, 28, 44, 48])
    odd = [np.ascontiguousarray(np.pad(f, ((0, 1), (0, 1), (0, 0)), mode="edge")) for f in frames]
    write_clip(root / "clip_odd.mkv", odd, 25, codec="ffv1", audio=False)
    with av.open(str(root / "audio_only.mp4"), "w") as c:  # a .mp4 with sound and no picture
        a = c.add_stream("aac", rate=44100)
        a.layout = "mono"
        af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        af.sample_rate = 44100
        af.pts = 0
        for p in [*a.encode(af), *a.encode(None)]:
            c.mux(p)
    rc = main(["-q", "anonymize", str(root / "clip.mp4"), str(root / "anon_clip.mkv"), "--method", "blur",
               "--passphrase-file", str(root / "pw.txt")])
    assert rc == 0, "building the corpus: video anonymize failed"
    rec = (root / "anon_clip.mkv.fpx").read_bytes()
    shutil.copy(root / "anon_clip.mkv", root / "anon_clip_flip.mkv")
    flipped = bytearray(rec)
    flipped[-5] ^= 0x40
    (root / "anon_clip_flip.mkv.fpx").write_bytes(bytes(flipped))
    shutil.copy(root / "anon_clip.mkv", root / "anon_clip_nofpx.mkv")
    shutil.copy(root / "anon_clip.mkv", root / "anon_clip_imgrec.mkv")
    shutil.copy(root / "anon.jpg.fpx", root / "anon_clip_imgrec.mkv.fpx")  # an image's record beside a video


def _anonymized(root: Path) -> None:
    from faceprivacy.cli import main

    rc = main(["-q", "anonymize", str(root / "face.png"), str(root / "anon.png"), "--method", "blur",
               "--passphrase-file", str(root / "pw.txt")])
    assert rc == 0, "building the corpus: anonymize failed"
    rc = main(["-q", "anonymize", str(root / "face.png"), str(root / "anon.jpg"), "--method", "blur",
               "--passphrase-file", str(root / "pw.txt")])
    assert rc == 0
    rc = main(["-q", "anonymize", str(root / "face.png"), str(root / "plain.png"), "--method", "pixelate"])
    assert rc == 0
    from PIL import Image

    from faceprivacy.deid.record import PNG_KEY, read_record

    rec = read_record(root / "anon.png")
    face = np.asarray(Image.open(root / "anon.png").convert("RGB"))

    def png_with(record: bytes, name: str) -> None:
        from faceprivacy.core.imageio import encode_image

        (root / name).write_bytes(encode_image(face, "PNG", png_text={
            PNG_KEY: base64.b64encode(record).decode("ascii")}))

    hlen = struct.unpack("<I", rec[4:8])[0]
    header = json.loads(rec[8:8 + hlen])

    def with_header(**kw) -> bytes:
        h = dict(header)
        h.update(kw)
        hj = json.dumps(h, separators=(",", ":"), sort_keys=True).encode()
        return rec[:4] + struct.pack("<I", len(hj)) + hj + rec[8 + hlen:]

    png_with(b"XXXX" + rec[4:], "rec_badmagic.png")
    png_with(rec[: len(rec) // 2], "rec_truncated.png")
    flipped = bytearray(rec)
    flipped[-5] ^= 0x40
    png_with(bytes(flipped), "rec_payload_flip.png")
    png_with(rec[:8] + b"{" * hlen + rec[8 + hlen:], "rec_header_garbage.png")
    png_with(with_header(kcv="00" * 8), "rec_kcv.png")
    png_with(with_header(scrypt=[2 ** 30, 8, 1]), "rec_scrypt_huge.png")
    png_with(with_header(scrypt=["a", 8, 1]), "rec_scrypt_type.png")
    png_with(with_header(salt="!!notbase64!!"), "rec_salt.png")
    png_with(with_header(version=99), "rec_version.png")
    png_with(with_header(image_shape=[10, 10, 3]), "rec_shape.png")
    png_with(with_header(faces="nope"), "rec_faces_type.png")
    # PNG chunk that is not base64
    from faceprivacy.core.imageio import encode_image

    (root / "rec_notb64.png").write_bytes(encode_image(face, "PNG", png_text={PNG_KEY: "%%%% not base64"}))
    # the JPEG's sidecar: zero-byte, garbage, and one that belongs to another image
    for name, side in (("side_empty", b""), ("side_garbage", b"garbage" * 20)):
        shutil.copy(root / "anon.jpg", root / f"{name}.jpg")
        (root / f"{name}.jpg.fpx").write_bytes(side)
    shutil.copy(root / "anon.jpg", root / "side_other.jpg")
    (root / "side_other.jpg.fpx").write_bytes(rec)  # the PNG's record beside the JPEG
    shutil.copy(root / "anon.jpg", root / "side_missing.jpg")
    shutil.copy(root / "anon.jpg.fpx", root / "anon_copy.jpg.fpx")  # a sidecar for an image that is not there


# ----- cases ------------------------------------------------------------------------------------------

BAD_IMAGES = ("missing.png", "empty.png", "empty.jpg", "truncated.png", "truncated.jpg", "text.jpg", "notes.txt",
              "bomb.png", "bomb9400.png", "bomb.gif", "tiny.png", "adir")
GOOD_VARIANTS = ("cmyk.jpg", "gray16.png", "palette.png", "rgba.png", "exif_rotated.jpg", "фото ü.jpg",
                 "my photo.png")
TAMPERED = ("rec_badmagic.png", "rec_truncated.png", "rec_payload_flip.png", "rec_header_garbage.png",
            "rec_kcv.png", "rec_scrypt_huge.png", "rec_scrypt_type.png", "rec_salt.png", "rec_version.png",
            "rec_shape.png", "rec_faces_type.png", "rec_notb64.png", "side_empty.jpg", "side_garbage.jpg",
            "side_other.jpg", "side_missing.jpg", "plain.png", "face.png", "bomb.gif", "missing.png")
PW = ("--passphrase-file", "{d}/pw.txt")


def _uses(*names: str) -> tuple[str, ...]:
    out = []
    for n in names:
        if n == "missing.png" or n.startswith("missing"):
            continue
        out.append(n)
        if n.endswith(".jpg") and n.startswith(("anon", "side_")) and n != "side_missing.jpg":
            out.append(n + ".fpx")
    return tuple(out)


def cases() -> list[Case]:
    """Every case of the corpus."""
    c: list[Case] = []
    add = c.append
    # ---- detect
    for f in BAD_IMAGES:
        add(Case(f"detect-{f}", ["detect", f"{{d}}/{f}"], _uses(f)))
    for f in GOOD_VARIANTS:
        add(Case(f"detect-ok-{f}", ["detect", f"{{d}}/{f}"], _uses(f), rc=(0, 1)))
    add(Case("detect-noface", ["detect", "{d}/noface.png"], _uses("noface.png"), rc=1))
    add(Case("detect-out-is-input", ["detect", "{d}/face.png", "--out", "{d}/face.png"], _uses("face.png")))
    add(Case("detect-out-is-input-dotdot", ["detect", "{d}/face.png", "--out", "{d}/adir/../face.png"],
             _uses("face.png", "adir")))
    add(Case("detect-out-parent-is-file", ["detect", "{d}/face.png", "--out", "{d}/afile/x.json"],
             _uses("face.png", "afile")))
    add(Case("detect-out-is-folder", ["detect", "{d}/face.png", "--out", "{d}/adir"], _uses("face.png", "adir")))
    add(Case("detect-draw-onto-input", ["detect", "{d}/x.png", "{d}/x_faces.png", "--draw", "{d}"], setup="x_faces"))
    add(Case("detect-draw-is-file", ["detect", "{d}/face.png", "--draw", "{d}/afile"], _uses("face.png", "afile")))
    add(Case("detect-upsample-bad", ["detect", "{d}/face.png", "--upsample", "9"], _uses("face.png")))
    add(Case("detect-min-score-nan", ["detect", "{d}/face.png", "--min-score", "nan"], _uses("face.png")))
    add(Case("detect-min-score-word", ["detect", "{d}/face.png", "--min-score", "high"], _uses("face.png")))
    # ---- embed
    for f in BAD_IMAGES:
        add(Case(f"embed-{f}", ["embed", f"{{d}}/{f}", "--out", "{d}/e.npy"], _uses(f)))
    add(Case("embed-out-is-input", ["embed", "{d}/face.png", "--out", "{d}/face.png"], _uses("face.png")))
    add(Case("embed-out-is-input-npy", ["embed", "{d}/emb.npy", "--out", "{d}/emb.npy"], _uses("emb.npy")))
    add(Case("embed-out-parent-is-file", ["embed", "{d}/face.png", "--out", "{d}/afile/e.npy"],
             _uses("face.png", "afile")))
    add(Case("embed-out-is-folder", ["embed", "{d}/face.png", "--out", "{d}/adir.npy"], setup="dir_npy"))
    add(Case("embed-noface", ["embed", "{d}/noface.png", "--out", "{d}/e.npy"], _uses("noface.png")))
    add(Case("embed-unknown-embedder", ["embed", "{d}/face.png", "--out", "{d}/e.npy", "--embedder", "nope"],
             _uses("face.png")))
    add(Case("embed-ok", ["embed", "{d}/face.png", "--out", "{d}/e.npy"], _uses("face.png"), rc=0,
             makes=("e.npy",)))
    # ---- verify
    for f in ("missing.png", "empty.png", "bomb.gif", "truncated.jpg", "noface.png"):
        add(Case(f"verify-{f}", ["verify", "{d}/face.png", f"{{d}}/{f}"], _uses("face.png", f)))
    add(Case("verify-unknown-embedder", ["verify", "{d}/face.png", "{d}/face.jpg", "--embedder", "nope"],
             _uses("face.png", "face.jpg")))
    # ---- eval-verification
    add(Case("evalver-folder-missing", ["eval-verification", "--dataset", "folder:{d}/nope", "--out", "{d}/o"]))
    add(Case("evalver-folder-empty", ["eval-verification", "--dataset", "folder:{d}/adir", "--out", "{d}/o"],
             _uses("adir")))
    add(Case("evalver-lfw-bad", ["eval-verification", "--dataset", "lfw:{d}/notes.txt:{d}/adir", "--out", "{d}/o"],
             _uses("notes.txt", "adir")))
    add(Case("evalver-unknown-dataset", ["eval-verification", "--dataset", "bogus", "--data", "{d}/adir",
                                         "--out", "{d}/o"], _uses("adir")))
    add(Case("evalver-data-missing", ["eval-verification", "--data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evalver-split-bad", ["eval-verification", "--split", "nope"]))
    # ---- anonymize
    for f in BAD_IMAGES:
        add(Case(f"anonymize-{f}", ["anonymize", f"{{d}}/{f}", "{d}/out.png", "--method", "blur"], _uses(f)))
    for f in GOOD_VARIANTS:
        add(Case(f"anonymize-ok-{f}", ["anonymize", f"{{d}}/{f}", "{d}/out.png", "--method", "blur"], _uses(f),
                 rc=0, makes=("out.png",)))
    add(Case("anonymize-noface", ["anonymize", "{d}/noface.png", "{d}/out.png", "--method", "blur"],
             _uses("noface.png")))
    add(Case("anonymize-noise", ["anonymize", "{d}/noise.png", "{d}/out.png", "--method", "mask"], _uses("noise.png")))
    for i, out in enumerate(("{d}/face.png", "{d}/./face.png", "{d}/adir/../face.png", "{d}/FACE_LINK.png",
                             "{d}/hard.png")):
        add(Case(f"anonymize-out-is-in-{i}", ["anonymize", "{d}/face.png", out, "--method", "blur"],
                 _uses("face.png", "adir"), setup="links"))
    add(Case("anonymize-folder-out-is-in", ["anonymize", "{d}/adir", "{d}/adir", "--method", "blur"], _uses("adir")))
    add(Case("anonymize-folder-out-is-in-dot", ["anonymize", "{d}/adir", "{d}/adir/.", "--method", "blur"],
             _uses("adir")))
    add(Case("anonymize-folder-no-images", ["anonymize", "{d}/adir", "{d}/o", "--method", "blur"], _uses("adir")))
    add(Case("anonymize-out-parent-is-file", ["anonymize", "{d}/face.png", "{d}/afile/o.png", "--method", "blur"],
             _uses("face.png", "afile")))
    add(Case("anonymize-out-is-folder", ["anonymize", "{d}/face.png", "{d}/adir", "--method", "blur"],
             _uses("face.png", "adir")))
    add(Case("anonymize-out-unwritable", ["anonymize", "{d}/face.png", "{d}/ro/o.png", "--method", "blur"],
             _uses("face.png"), setup="readonly"))
    add(Case("anonymize-out-ext-bmp", ["anonymize", "{d}/face.png", "{d}/o.bmp", "--method", "blur"],
             _uses("face.png")))
    add(Case("anonymize-out-ext-txt", ["anonymize", "{d}/face.png", "{d}/o.txt", "--method", "blur"],
             _uses("face.png")))
    add(Case("anonymize-out-no-ext", ["anonymize", "{d}/face.png", "{d}/o", "--method", "blur"], _uses("face.png")))
    add(Case("anonymize-format-mismatch", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                           "--format", "jpg"], _uses("face.png")))
    add(Case("anonymize-format-bad", ["anonymize", "{d}/face.png", "{d}/o.png", "--format", "gif"], _uses("face.png")))
    add(Case("anonymize-pw-missing", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                      "--passphrase-file", "{d}/nope.txt"], _uses("face.png")))
    add(Case("anonymize-pw-empty", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                    "--passphrase-file", "{d}/empty_pw.txt"], _uses("face.png", "empty_pw.txt")))
    add(Case("anonymize-pw-short", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                    "--passphrase-file", "{d}/short_pw.txt"], _uses("face.png", "short_pw.txt")))
    add(Case("anonymize-pw-folder", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                     "--passphrase-file", "{d}/adir"], _uses("face.png", "adir")))
    add(Case("anonymize-pw-stdin-empty", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                          "--passphrase-file", "-"], _uses("face.png"), stdin=""))
    add(Case("anonymize-pw-stdin-ok", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                       "--passphrase-file", "-"], _uses("face.png"), stdin=PASS + "\n", rc=0,
             makes=("o.png",)))
    add(Case("anonymize-recoverable-no-tty", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                              "--recoverable"], _uses("face.png"), stdin=""))
    add(Case("anonymize-riddle-no-pw", ["anonymize", "{d}/face.png", "{d}/o.png"], _uses("face.png"), stdin=""))
    add(Case("anonymize-again", ["anonymize", "{d}/plain.png", "{d}/o.png", "--method", "blur"], _uses("plain.png")))
    add(Case("anonymize-upsample-bad", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                        "--upsample", "-1"], _uses("face.png")))
    add(Case("anonymize-min-score-nan", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "blur",
                                         "--min-score", "nan"], _uses("face.png")))
    add(Case("anonymize-method-bad", ["anonymize", "{d}/face.png", "{d}/o.png", "--method", "swirl"],
             _uses("face.png")))
    add(Case("anonymize-encryptor-missing", ["anonymize", "{d}/face.png", "{d}/o.png", *PW, "--method", "riddle",
                                             "--encryptor", "{d}/nope.pt"], _uses("face.png", "pw.txt")))
    add(Case("anonymize-encryptor-garbage", ["anonymize", "{d}/face.png", "{d}/o.png", *PW, "--method", "riddle",
                                             "--encryptor", "{d}/garbage.pt"], _uses("face.png", "pw.txt", "garbage.pt")))
    add(Case("anonymize-donor-bank-garbage", ["anonymize", "{d}/face.png", "{d}/o.png", *PW, "--donor-bank",
                                              "{d}/garbage.pt"], _uses("face.png", "pw.txt", "garbage.pt")))
    add(Case("anonymize-folder-collide", ["anonymize", "{d}/in", "{d}/o", "--method", "blur", "--format", "png"],
             setup="collide", rc=0, makes=("o/a_jpg.png", "o/a_png.png")))
    add(Case("anonymize-folder-skips-noface", ["anonymize", "{d}/in", "{d}/o", "--method", "blur"],
             setup="mixed", rc=3, makes=("o/a.jpg",)))
    add(Case("anonymize-folder-out-inside", ["anonymize", "{d}/in", "{d}/in/anon", "--method", "blur"],
             setup="outinside", rc=0, makes=("in/anon/a.jpg",)))
    # ---- recover
    for f in TAMPERED:  # every tampered record, header fields included, is one clean error (issue 13 row 5)
        add(Case(f"recover-{f}", ["recover", f"{{d}}/{f}", "{d}/r.png", *PW], _uses(f, "pw.txt")))
    add(Case("recover-wrong-pw", ["recover", "{d}/anon.png", "{d}/r.png", "--passphrase-file", "{d}/wrong_pw.txt"],
             _uses("anon.png", "wrong_pw.txt")))
    add(Case("recover-wrong-pw-allow-modified", ["recover", "{d}/side_other.jpg", "{d}/r.png", *PW,
                                                 "--allow-modified"], _uses("side_other.jpg", "pw.txt")))
    add(Case("recover-out-is-in", ["recover", "{d}/anon.png", "{d}/anon.png", *PW], _uses("anon.png", "pw.txt")))
    add(Case("recover-out-is-sidecar", ["recover", "{d}/anon.jpg", "{d}/anon.jpg.fpx", *PW],
             _uses("anon.jpg", "pw.txt")))
    add(Case("recover-out-parent-is-file", ["recover", "{d}/anon.png", "{d}/afile/r.png", *PW],
             _uses("anon.png", "pw.txt", "afile")))
    add(Case("recover-out-is-folder", ["recover", "{d}/anon.png", "{d}/adir", *PW],
             _uses("anon.png", "pw.txt", "adir")))
    add(Case("recover-pw-missing", ["recover", "{d}/anon.png", "{d}/r.png", "--passphrase-file", "{d}/nope"],
             _uses("anon.png")))
    add(Case("recover-no-pw-no-tty", ["recover", "{d}/anon.png", "{d}/r.png"], _uses("anon.png"), stdin=""))
    add(Case("recover-ok-png", ["recover", "{d}/anon.png", "{d}/r.png", *PW], _uses("anon.png", "pw.txt"), rc=0,
             makes=("r.png",)))
    add(Case("recover-ok-jpg", ["recover", "{d}/anon.jpg", "{d}/r.png", *PW], _uses("anon.jpg", "pw.txt"), rc=0,
             makes=("r.png",)))
    # ---- eval-detection
    add(Case("evaldet-data-missing", ["eval-detection", "--data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evaldet-data-empty", ["eval-detection", "--data", "{d}/adir", "--out", "{d}/o"], _uses("adir")))
    add(Case("evaldet-out-parent-file", ["eval-detection", "--data", "{d}/adir", "--out", "{d}/afile/o"],
             _uses("adir", "afile")))
    add(Case("evaldet-faces-zero", ["eval-detection", "--faces", "0", "--data", "{d}/adir", "--out", "{d}/o"],
             _uses("adir")))
    add(Case("evaldet-face-px-bad", ["eval-detection", "--face-px", "300", "80", "--data", "{d}/adir",
                                     "--out", "{d}/o"], _uses("adir")))
    add(Case("evaldet-far-bad", ["eval-detection", "--far", "2", "--data", "{d}/adir", "--out", "{d}/o"],
             _uses("adir")))
    add(Case("evaldet-unknown-detector", ["eval-detection", "--detectors", "mtcnn", "--out", "{d}/o"]))
    add(Case("evaldet-floor-bad", ["eval-detection", "--floors", "2", "--data", "{d}/adir", "--out", "{d}/o"],
             _uses("adir")))
    add(Case("evaldet-occluded-bad", ["eval-detection", "--occluded", "1.5", "--data", "{d}/adir", "--out",
                                      "{d}/o"], _uses("adir")))
    # ---- video (anonymize / recover / eval-video)
    vpw = ("pw.txt",)
    for f in ("clip_truncated.mp4", "clip_text.mp4", "clip_empty.mp4", "clip_vfr.mp4", "audio_only.mp4",
              "missing.mp4"):
        add(Case(f"anonymize-video-{f}", ["anonymize", f"{{d}}/{f}", "{d}/o.mkv", "--method", "blur", *PW],
                 _uses(f, *vpw)))
    add(Case("anonymize-video-odd-to-mp4", ["anonymize", "{d}/clip_odd.mkv", "{d}/o.mp4", "--method", "blur", *PW],
             _uses("clip_odd.mkv", *vpw)))
    add(Case("anonymize-video-too-long", ["anonymize", "{d}/clip.mp4", "{d}/o.mkv", "--method", "blur", *PW,
                                          "--max-seconds", "0.1"], _uses("clip.mp4", *vpw)))
    add(Case("anonymize-video-out-ext", ["anonymize", "{d}/clip.mp4", "{d}/o.avi", "--method", "blur", *PW],
             _uses("clip.mp4", *vpw)))
    add(Case("anonymize-video-out-png", ["anonymize", "{d}/clip.mp4", "{d}/o.png", "--method", "blur", *PW],
             _uses("clip.mp4", *vpw)))
    add(Case("anonymize-video-out-is-in", ["anonymize", "{d}/clip.mp4", "{d}/clip.mp4", "--method", "blur", *PW],
             _uses("clip.mp4", *vpw)))
    add(Case("anonymize-video-detect-every-0", ["anonymize", "{d}/clip.mp4", "{d}/o.mkv", "--method", "blur", *PW,
                                                "--detect-every", "0"], _uses("clip.mp4", *vpw)))
    add(Case("anonymize-video-format-flag", ["anonymize", "{d}/clip.mp4", "{d}/o.mkv", "--method", "blur", *PW,
                                             "--format", "png"], _uses("clip.mp4", *vpw)))
    add(Case("anonymize-video-again", ["anonymize", "{d}/anon_clip.mkv", "{d}/o.mkv", "--method", "blur", *PW],
             _uses("anon_clip.mkv", *vpw)))
    add(Case("anonymize-video-ok", ["anonymize", "{d}/clip.mp4", "{d}/o.mkv", "--method", "blur", *PW],
             _uses("clip.mp4", *vpw), rc=0, makes=("o.mkv",)))
    add(Case("recover-video-wrong-pw", ["recover", "{d}/anon_clip.mkv", "{d}/r.mkv", "--passphrase-file",
                                        "{d}/wrong_pw.txt"], ("anon_clip.mkv", "anon_clip.mkv.fpx", "wrong_pw.txt")))
    add(Case("recover-video-tampered", ["recover", "{d}/anon_clip_flip.mkv", "{d}/r.mkv", *PW],
             ("anon_clip_flip.mkv", "anon_clip_flip.mkv.fpx", *vpw)))
    add(Case("recover-video-no-record", ["recover", "{d}/anon_clip_nofpx.mkv", "{d}/r.mkv", *PW],
             ("anon_clip_nofpx.mkv", *vpw)))
    add(Case("recover-video-image-record", ["recover", "{d}/anon_clip_imgrec.mkv", "{d}/r.mkv", *PW],
             ("anon_clip_imgrec.mkv", "anon_clip_imgrec.mkv.fpx", *vpw)))
    add(Case("recover-video-plain-input", ["recover", "{d}/clip.mp4", "{d}/r.mkv", *PW], ("clip.mp4", *vpw)))
    add(Case("recover-video-corrupt", ["recover", "{d}/clip_truncated.mp4", "{d}/r.mkv", *PW],
             ("clip_truncated.mp4", *vpw)))
    add(Case("recover-video-out-is-sidecar", ["recover", "{d}/anon_clip.mkv", "{d}/anon_clip.mkv.fpx", *PW],
             ("anon_clip.mkv", "anon_clip.mkv.fpx", *vpw)))
    add(Case("recover-video-ok", ["recover", "{d}/anon_clip.mkv", "{d}/r.mkv", *PW],
             ("anon_clip.mkv", "anon_clip.mkv.fpx", *vpw), rc=0, makes=("r.mkv",)))
    add(Case("evalvideo-data-missing", ["eval-video", "--data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evalvideo-data-empty", ["eval-video", "--data", "{d}/adir", "--out", "{d}/o"], _uses("adir")))
    add(Case("evalvideo-seconds-bad", ["eval-video", "--data", "{d}/adir", "--seconds", "0", "--out", "{d}/o"],
             _uses("adir")))
    add(Case("evalvideo-width-odd", ["eval-video", "--data", "{d}/adir", "--width", "641", "--out", "{d}/o"],
             _uses("adir")))
    # ---- serve: every refusal comes before the server binds a port
    for cid, opts in (("port-too-big", ["--port", "99999"]), ("port-negative", ["--port", "-1"]),
                      ("port-word", ["--port", "http"]), ("host-any", ["--host", "0.0.0.0"]),
                      ("host-any6", ["--host", "::"]), ("host-lan", ["--host", "192.168.1.5"]),
                      ("host-name", ["--host", "example.com"]), ("host-with-port", ["--host", "127.0.0.1:80"]),
                      ("max-upload-zero", ["--max-upload-mb", "0"]), ("max-upload-nan", ["--max-upload-mb", "nan"]),
                      ("max-upload-huge", ["--max-upload-mb", "1e9"]), ("method-bad", ["--method", "swirl"])):
        add(Case(f"serve-{cid}", ["serve", *opts]))
    add(Case("serve-donor-bank-missing", ["serve", "--port", "0", "--donor-bank", "{d}/nope.npz"]))
    add(Case("serve-donor-bank-garbage", ["serve", "--port", "0", "--donor-bank", "{d}/garbage.pt"],
             _uses("garbage.pt")))
    add(Case("serve-encryptor-garbage", ["serve", "--port", "0", "--method", "riddle", "--encryptor",
                                         "{d}/garbage.pt"], _uses("garbage.pt")))
    # ---- eval-deid / train-deid / train-deid-surrogate
    add(Case("evaldeid-data-missing", ["eval-deid", "--data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evaldeid-data-empty", ["eval-deid", "--data", "{d}/adir", "--out", "{d}/o"], _uses("adir")))
    add(Case("evaldeid-out-parent-file", ["eval-deid", "--data", "{d}/adir", "--out", "{d}/afile/o"],
             _uses("adir", "afile")))
    add(Case("evaldeid-test-data-missing", ["eval-deid", "--test-data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evaldeid-face-px-bad", ["eval-deid", "--data", "{d}/adir", "--face-px", "300", "80", "--out", "{d}/o"],
             _uses("adir")))
    add(Case("evaldeid-method-unknown", ["eval-deid", "--data", "{d}/adir", "--methods", "nope", "--out", "{d}/o"],
             _uses("adir")))
    add(Case("traindeid-data-missing", ["train-deid", "--data", "{d}/nope", "--out", "{d}/e.pt"]))
    add(Case("traindeid-init-missing", ["train-deid", "--data", "{d}/adir", "--out", "{d}/e.pt", "--init",
                                        "{d}/nope.pt"], _uses("adir")))
    add(Case("traindeid-out-parent-file", ["train-deid", "--data", "{d}/adir", "--out", "{d}/afile/e.pt"],
             _uses("adir", "afile")))
    add(Case("trainsur-data-missing", ["train-deid-surrogate", "--data", "{d}/nope", "--cache", "{d}/c.npz",
                                       "--out", "{d}/e.pt"]))
    add(Case("trainsur-cache-garbage", ["train-deid-surrogate", "--data", "{d}/adir", "--cache", "{d}/garbage.pt",
                                        "--out", "{d}/e.pt"], _uses("adir", "garbage.pt")))
    add(Case("trainsur-cache-is-dir", ["train-deid-surrogate", "--data", "{d}/adir", "--cache", "{d}/adir",
                                       "--out", "{d}/e.pt"], _uses("adir")))
    # ---- train-generator / eval-generator
    add(Case("traingen-data-missing", ["train-generator", "--data", "{d}/nope", "--out", "{d}/g.pt", "--tiny"]))
    add(Case("traingen-init-missing", ["train-generator", "--data", "{d}/adir", "--out", "{d}/g.pt", "--init",
                                       "{d}/nope.pt", "--tiny"], _uses("adir")))
    add(Case("traingen-pack-garbage", ["train-generator", "--pack", "{d}/garbage.pt", "--out", "{d}/g.pt",
                                       "--tiny"], _uses("garbage.pt")))
    add(Case("evalgen-weights-missing", ["eval-generator", "--weights", "{d}/nope.pt", "--out", "{d}/o"]))
    add(Case("evalgen-weights-empty", ["eval-generator", "--weights", "{d}/empty.pt", "--out", "{d}/o"],
             _uses("empty.pt")))
    add(Case("evalgen-weights-garbage", ["eval-generator", "--weights", "{d}/garbage.pt", "--out", "{d}/o"],
             _uses("garbage.pt")))
    add(Case("evalgen-data-missing", ["eval-generator", "--data", "{d}/nope", "--out", "{d}/o"]))
    # ---- audit-embeddings
    add(Case("audit-data-missing", ["audit-embeddings", "--data", "{d}/nope", "--out", "{d}/o", "--quick"]))
    add(Case("audit-embedder-bad", ["audit-embeddings", "--embedder", "nope", "--out", "{d}/o", "--quick"]))
    add(Case("audit-generator-path-missing", ["audit-embeddings", "--generator-path", "{d}/nope.pt", "--out",
                                              "{d}/o", "--quick"]))
    add(Case("audit-out-parent-file", ["audit-embeddings", "--out", "{d}/afile/o", "--quick", "--data",
                                       "{d}/nope"], _uses("afile")))
    add(Case("audit-ensemble-is-judge", ["audit-embeddings", "--wb-ensemble", "mobilefacenet-onnx", "--out", "{d}/o",
                                         "--quick"]))
    add(Case("audit-ensemble-bad", ["audit-embeddings", "--wb-ensemble", "nope", "--out", "{d}/o", "--quick"]))
    add(Case("audit-cache-dir-file", ["audit-embeddings", "--cache-dir", "{d}/afile", "--out", "{d}/o", "--quick"],
             _uses("afile")))
    # ---- deface
    for f in ("missing.nii.gz", "empty.nii.gz", "truncated.nii.gz", "notnifti.nii", "png_as.nii.gz",
              "vol4d.nii.gz", "nan.nii.gz", "face.png", "notes.txt"):
        add(Case(f"deface-{f}", ["deface", f"{{d}}/{f}", "{d}/o.nii.gz"], _uses(f) if "missing" not in f else ()))
    add(Case("deface-out-is-in", ["deface", "{d}/small.nii.gz", "{d}/small.nii.gz"], _uses("small.nii.gz")))
    add(Case("deface-out-parent-file", ["deface", "{d}/small.nii.gz", "{d}/afile/o.nii.gz"],
             _uses("small.nii.gz", "afile")))
    add(Case("deface-out-png", ["deface", "{d}/small.nii.gz", "{d}/o.png"], _uses("small.nii.gz")))
    add(Case("deface-out-folder", ["deface", "{d}/small.nii.gz", "{d}/adir"], _uses("small.nii.gz", "adir")))
    add(Case("deface-not-a-head", ["deface", "{d}/small.nii.gz", "{d}/o.nii.gz"], _uses("small.nii.gz")))
    add(Case("deface-bids-label-missing", ["deface", "{d}/bids_empty", "--participant-label", "99"],
             _uses("bids_empty")))
    add(Case("deface-bids-empty", ["deface", "{d}/bids_empty", "{d}/o"], _uses("bids_empty")))
    add(Case("deface-method-bad", ["deface", "{d}/small.nii.gz", "{d}/o.nii.gz", "--method", "blur"],
             _uses("small.nii.gz")))
    add(Case("deface-data-missing", ["deface", "{d}/small.nii.gz", "{d}/o.nii.gz", "--data", "{d}/nope"],
             _uses("small.nii.gz")))
    # ---- eval-deface
    add(Case("evaldeface-data-missing", ["eval-deface", "--data", "{d}/nope", "--out", "{d}/o", "--quick"]))
    add(Case("evaldeface-out-parent-file", ["eval-deface", "--data", "{d}/nope", "--out", "{d}/afile/o", "--quick"],
             _uses("afile")))
    add(Case("evaldeface-heads-bogus", ["eval-deface", "--data", "{d}/adir", "--heads", "nobody", "--out", "{d}/o",
                                        "--quick"], _uses("adir")))
    # ---- mri-audit
    add(Case("mriaudit-missing", ["mri-audit", "{d}/nope", "{d}/o"]))
    add(Case("mriaudit-file", ["mri-audit", "{d}/notes.txt", "{d}/o"], _uses("notes.txt")))
    add(Case("mriaudit-empty", ["mri-audit", "{d}/bids_empty", "{d}/o", "participant"], _uses("bids_empty")))
    add(Case("mriaudit-out-parent-file", ["mri-audit", "{d}/bids_empty", "{d}/afile/o"],
             _uses("bids_empty", "afile")))
    add(Case("mriaudit-level-bad", ["mri-audit", "{d}/bids_empty", "{d}/o", "group"], _uses("bids_empty")))
    # ---- eval-deface
    add(Case("evaldeface-data-missing", ["eval-deface", "--data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evaldeface-out-is-file", ["eval-deface", "--data", "{d}/adir", "--out", "{d}/afile"],
             _uses("adir", "afile")))
    # ---- federated
    add(Case("fedsim-data-missing", ["fed-simulate", "--data", "{d}/nope", "--out", "{d}/o", "--rounds", "1"]))
    add(Case("fedsim-clients-zero", ["fed-simulate", "--synthetic", "--clients", "0", "--out", "{d}/o"]))
    add(Case("fedsim-rounds-neg", ["fed-simulate", "--synthetic", "--rounds", "-1", "--out", "{d}/o"]))
    add(Case("fedsim-algorithms-bad", ["fed-simulate", "--synthetic", "--algorithms", "bogus", "--out", "{d}/o"]))
    add(Case("fedsim-val-folds-without-val", ["fed-simulate", "--synthetic", "--val-folds", "3", "--out", "{d}/o"]))
    add(Case("fedsim-val-folds-seed-out-of-range", ["fed-simulate", "--synthetic", "--eval-split", "val",
                                                    "--val-folds", "3", "--seeds", "0,5", "--out", "{d}/o"]))
    add(Case("fedsim-server-lr-min-bad", ["fed-simulate", "--synthetic", "--server-lr-min", "2", "--out", "{d}/o"]))
    add(Case("fedsim-spread-boost-zero", ["fed-simulate", "--synthetic", "--spread-boost", "0", "--out", "{d}/o"]))
    add(Case("fedsim-centred-margin-bad", ["fed-simulate", "--synthetic", "--centred-margin", "2", "--out", "{d}/o"]))
    add(Case("fedsim-adam-eps-neg", ["fed-simulate", "--synthetic", "--server-adam-eps", "-1", "--out", "{d}/o"]))
    add(Case("fedsim-spread-warmup-neg", ["fed-simulate", "--synthetic", "--spread-warmup", "-1", "--out", "{d}/o"]))
    add(Case("fedsim-out-parent-file", ["fed-simulate", "--synthetic", "--rounds", "1", "--clients", "2",
                                        "--out", "{d}/afile/o"], _uses("afile")))
    add(Case("fedserver-port-bad", ["fed-server", "--port", "99999", "--insecure", "--out", "{d}/o"]))
    add(Case("fedserver-cert-missing", ["fed-server", "--ssl-certfile", "{d}/nope.pem", "--ssl-keyfile",
                                        "{d}/nope.key", "--ssl-ca-certfile", "{d}/nope.ca", "--out", "{d}/o"]))
    add(Case("fedserver-rounds-zero", ["fed-server", "--rounds", "0", "--insecure", "--out", "{d}/o"]))
    add(Case("fedclient-superlink-bad", ["fed-client", "--superlink", "nohostport", "--image-dir", "{d}/adir",
                                         "--insecure"], _uses("adir")))
    add(Case("fedclient-imagedir-missing", ["fed-client", "--superlink", "127.0.0.1:1", "--image-dir", "{d}/nope",
                                            "--insecure"]))
    add(Case("fedclient-rootcert-missing", ["fed-client", "--superlink", "127.0.0.1:1", "--image-dir", "{d}/adir",
                                            "--root-certificates", "{d}/nope.pem", "--auth-key", "{d}/nope.key"],
             _uses("adir")))
    # ---- unlearn
    add(Case("unlearn-support-missing", ["unlearn", "--support", "{d}/nope.png", "--out", "{d}/m.pt"]))
    add(Case("unlearn-support-ce-bad", ["unlearn", "--support", "{d}/face.png", "--support-ce", "0", "1", "--out",
                                        "{d}/m.pt"], _uses("face.png")))
    for f in ("empty.png", "bomb.gif", "truncated.jpg", "text.jpg"):
        add(Case(f"unlearn-support-{f}", ["unlearn", "--support", f"{{d}}/{f}", "--out", "{d}/m.pt"], _uses(f)))
    # issue 13 row 11 (fixed in i17): face-less support images are refused
    add(Case("unlearn-support-noface", ["unlearn", "--support", "{d}/noface.png", "--out", "{d}/m.pt"],
             _uses("noface.png")))
    add(Case("unlearn-support-noise", ["unlearn", "--support", "{d}/noise.png", "--out", "{d}/m.pt"],
             _uses("noise.png")))
    add(Case("unlearn-model-missing", ["unlearn", "--model", "{d}/nope.pt", "--support", "{d}/face.png", "--out",
                                       "{d}/m.pt"], _uses("face.png")))
    add(Case("unlearn-model-garbage", ["unlearn", "--model", "{d}/garbage.pt", "--support", "{d}/face.png",
                                       "--out", "{d}/m.pt"], _uses("face.png", "garbage.pt")))
    add(Case("unlearn-out-is-model", ["unlearn", "--model", "{d}/garbage.pt", "--support", "{d}/face.png",
                                      "--out", "{d}/garbage.pt"], _uses("face.png", "garbage.pt")))
    add(Case("unlearn-out-is-support", ["unlearn", "--support", "{d}/face.png", "--out", "{d}/face.png"],
             _uses("face.png")))
    add(Case("unlearn-out-parent-file", ["unlearn", "--support", "{d}/face.png", "--out", "{d}/afile/m.pt"],
             _uses("face.png", "afile")))
    add(Case("unlearn-metaloss-garbage", ["unlearn", "--support", "{d}/face.png", "--metaloss", "{d}/garbage.pt",
                                          "--out", "{d}/m.pt"], _uses("face.png", "garbage.pt")))
    add(Case("evalunlearn-data-missing", ["eval-unlearning", "--data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evalunlearn-out-parent-file", ["eval-unlearning", "--data", "{d}/nope", "--out", "{d}/afile/o"],
             _uses("afile")))
    add(Case("evalunlearn-k-zero", ["eval-unlearning", "--k", "0", "--data", "{d}/nope", "--out", "{d}/o"]))
    add(Case("evalunlearn-meta-k-reversed", ["eval-unlearning", "--meta-k", "9", "3", "--data", "{d}/nope", "--out",
                                             "{d}/o"]))
    add(Case("evalunlearn-meta-unroll-zero", ["eval-unlearning", "--meta-unroll", "0", "--data", "{d}/nope", "--out",
                                              "{d}/o"]))
    add(Case("evalunlearn-from-json-garbage", ["eval-unlearning", "--from-json", "{d}/garbage.pt", "--out",
                                               "{d}/o"], _uses("garbage.pt")))
    add(Case("evalunlearn-from-json-missing", ["eval-unlearning", "--from-json", "{d}/nope.json", "{d}/nope2.json",
                                               "--out", "{d}/o"]))
    # ---- top level
    add(Case("top-unknown-command", ["frobnicate"]))
    return c


def commands_of(all_cases: list[Case]) -> dict[str, int]:
    """Case count per sub-command."""
    out: dict[str, int] = {}
    for k in all_cases:
        out[k.argv[0] if k.argv else "(none)"] = out.get(k.argv[0] if k.argv else "(none)", 0) + 1
    return out


if __name__ == "__main__":
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "out/badinput_library")
    build_library(dest)
    counts = commands_of(cases())
    print(json.dumps({"library": str(dest), "cases": sum(counts.values()), "per_command": counts}, indent=1))
