"""The whole-head template used by the defacers: pydeface's population-mean T1 (MIT) with its face mask,
a brain mask on the same grid, and 3-D facial landmarks used to align face renders.

The brain mask is derived once from Colin27 (MRIcron ``ch2.nii.gz`` + ``ch2bet.nii.gz``): ch2 is
affinely registered to the template (careful settings), the bet brain (>0) is pulled onto the
template grid, holes are filled and it is dilated by 2 mm as a safety margin. The result is a small
committed file (``models/weights/mri_template_brainmask.nii.gz``); ``build_template_brain_mask``
recreates it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.paths import weights_dir
from .io import Volume, load_volume

TEMPLATE_SUBDIR = Path("mri_heads") / "pydeface_template_pypi"
BRAINMASK_FILE = "mri_template_brainmask.nii.gz"

#: facial landmarks on the pydeface template in template world mm (RAS), picked on its frontal
#: render: eye centres, nose tip, mouth corners (ArcFace 5-point order: subject's right eye first,
#: i.e. image-left in a frontal view) and dlib's 5 points (eye corners + subnasale).
#: The points were found by dlib's HOG detector + 68/5-point predictors on the template's frontal render
#: (camera centre (0, 20, 0), 0.75 mm pixels) and lifted to 3-D with the render's depth map.
TEMPLATE_LANDMARKS: dict[str, tuple[float, float, float]] = {
    "arc_reye": (34.5, 90.4, -25.9),
    "arc_leye": (-31.9, 96.9, -22.4),
    "arc_nose": (6.0, 117.4, -63.0),
    "arc_rmouth": (20.2, 90.7, -101.2),
    "arc_lmouth": (-20.2, 95.7, -99.8),
    "dlib5_0": (-42.0, 93.2, -24.8),
    "dlib5_1": (-16.5, 95.6, -26.2),
    "dlib5_2": (45.0, 83.6, -27.8),
    "dlib5_3": (19.5, 91.3, -27.8),
    "dlib5_4": (0.0, 113.1, -77.2),
}
ARCFACE5 = ("arc_reye", "arc_leye", "arc_nose", "arc_rmouth", "arc_lmouth")
DLIB5 = tuple(f"dlib5_{i}" for i in range(5))
#: camera centre (template world mm) used for face renders
RENDER_CENTRE = (0.0, 20.0, -20.0)


@dataclass
class Template:
    """Template head (canonical RAS), keep-mask (1 = keep, 0 = face) and brain mask on its grid."""

    head: Volume
    keep: np.ndarray
    brain: np.ndarray
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    _face_source: np.ndarray | None = None

    @property
    def face_source(self) -> np.ndarray:
        """The head with thin non-anatomical parts (coil frame) removed; computed on first use (only
        refacing needs it)."""
        if self._face_source is None:
            self._face_source = clean_template_head(self.head)
        return self._face_source

    @property
    def face(self) -> np.ndarray:
        """Boolean face region (the voxels pydeface removes)."""
        return self.keep < 0.5


def find_template_dir(data_root: str | Path | None) -> Path:
    """Folder holding ``mean_reg2mean.nii.gz`` and ``facemask.nii.gz`` (the datakit folder or the folder
    itself)."""
    if data_root is None:
        from ..core.paths import default_data_root

        data_root = default_data_root()
        if data_root is None:
            raise InputError("no template: pass --data (datakit root) or set FACEPRIVACY_DATA")
    root = Path(data_root)
    for cand in (root, root / TEMPLATE_SUBDIR, root / "pydeface_template_pypi"):
        if (cand / "mean_reg2mean.nii.gz").is_file() and (cand / "facemask.nii.gz").is_file():
            return cand
    raise InputError(f"pydeface template (mean_reg2mean.nii.gz + facemask.nii.gz) not found under {root}")


_CACHE: dict[str, Template] = {}


def load_template(data_root: str | Path | None = None, brain_mask: str | Path | None = None) -> Template:
    """Load (and cache per process) the template, its face mask and brain mask."""
    tdir = find_template_dir(data_root)
    key = f"{tdir}|{brain_mask}"
    if key in _CACHE:
        return _CACHE[key]
    head = load_volume(tdir / "mean_reg2mean.nii.gz")
    keep = load_volume(tdir / "facemask.nii.gz").data
    bm_path = Path(brain_mask) if brain_mask else weights_dir() / BRAINMASK_FILE
    if bm_path.is_file():
        brain = load_volume(bm_path).data > 0.5
    else:
        brain = build_template_brain_mask(head, tdir.parent.parent if tdir.name else tdir)
    if brain.shape != head.shape:
        raise InputError(f"brain mask {brain.shape} does not match template {head.shape}")
    lm = {k: np.asarray(v, float) for k, v in TEMPLATE_LANDMARKS.items()}
    t = Template(head, keep.astype(np.float32), brain, lm)
    _CACHE[key] = t
    return t


def build_template_brain_mask(head: Volume, data_root: str | Path, dilate_mm: float = 2.0,
                              out: str | Path | None = None) -> np.ndarray:
    """Derive the template brain mask from Colin27 (ch2 + ch2bet) by careful affine registration."""
    from scipy import ndimage

    from .io import save_like
    from .register import register_affine, resample_to

    cdir = Path(data_root) / "mri_heads" / "colin27_ch2_mricron"
    if not (cdir / "ch2.nii.gz").is_file():
        raise InputError(f"need {cdir}/ch2.nii.gz and ch2bet.nii.gz to build the template brain mask")
    ch2 = load_volume(cdir / "ch2.nii.gz")
    bet = load_volume(cdir / "ch2bet.nii.gz")
    reg = register_affine(head, ch2, "careful")  # template world -> ch2 world
    m = resample_to((bet.data > 0).astype(np.float32), bet.affine, head.shape, head.affine, reg.matrix) > 0.5
    m = ndimage.binary_fill_holes(m)
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        m = lab == (1 + int(np.argmax(sizes)))
    if dilate_mm > 0:
        m = ndimage.distance_transform_edt(~m, sampling=head.zooms) <= dilate_mm
    if out is not None:
        save_like(head, m.astype(np.float32), out, dtype=np.uint8)
    return m


def clean_template_head(head: Volume, open_mm: float = 3.0) -> np.ndarray:
    """The template intensities with thin structures outside the head removed: the averaged coil /
    mirror frame in front of the eyes would otherwise be pasted into refaced scans."""
    from scipy import ndimage

    from .register import robust_max

    m = head.data > 0.12 * robust_max(head.data)
    it = max(1, int(round(open_mm / float(min(head.zooms)))))
    ball = ndimage.generate_binary_structure(3, 1)
    opened = ndimage.binary_opening(m, ball, iterations=it)
    lab, n = ndimage.label(opened)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        opened = lab == int(np.argmax(sizes))
    keep = ndimage.binary_fill_holes(ndimage.binary_dilation(opened, ball, iterations=1))
    return np.where(keep, head.data, 0).astype(np.float32)
