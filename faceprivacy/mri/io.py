"""NIfTI input/output for the MRI tools: strict validation on load, canonical RAS for processing,
results written back in the input's own orientation, affine, header and dtype (atomically)."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.fileio import atomic_path

#: largest accepted volume (voxels); a 512^3 head is ~134 M voxels
MAX_VOXELS = 400_000_000
#: voxel sizes outside this range (mm) are treated as a wrong affine
ZOOM_RANGE_MM = (0.1, 10.0)
#: voxel axes further than this from the nearest world axis are rejected as oblique (degrees)
MAX_OBLIQUITY_DEG = 25.0


@dataclass
class Volume:
    """A 3-D scan in canonical RAS voxel order (float32) plus what is needed to write results back."""

    data: np.ndarray
    affine: np.ndarray
    source: object | None = None  # the original nibabel image (header, dtype, affine, orientation)
    path: Path | None = None

    @property
    def zooms(self) -> np.ndarray:
        """Voxel size (mm) along the three canonical axes."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def with_data(self, data: np.ndarray) -> Volume:
        """Same geometry and source, new voxel values."""
        return Volume(np.asarray(data, dtype=np.float32), self.affine.copy(), self.source, self.path)


def obliquity_deg(affine: np.ndarray) -> float:
    """Largest angle (degrees) between a voxel axis and its closest world axis."""
    m = np.asarray(affine, dtype=float)[:3, :3]
    cols = m / np.maximum(np.linalg.norm(m, axis=0, keepdims=True), 1e-12)
    cosmax = np.clip(np.abs(cols).max(axis=0), -1.0, 1.0)
    return float(np.degrees(np.arccos(cosmax)).max())


def check_affine(affine: np.ndarray, max_obliquity_deg: float = MAX_OBLIQUITY_DEG) -> None:
    """Raise InputError for affines that cannot describe a head scan (non-finite, singular, absurd voxel
    sizes, strongly oblique, or two voxel axes mapped to the same world axis)."""
    a = np.asarray(affine, dtype=float)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise InputError("affine is not a finite 4x4 matrix")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise InputError("affine's last row is not [0 0 0 1]")
    det = np.linalg.det(a[:3, :3])
    if abs(det) < 1e-6:
        raise InputError("affine is singular (voxel axes are degenerate)")
    zooms = np.linalg.norm(a[:3, :3], axis=0)
    if zooms.min() < ZOOM_RANGE_MM[0] or zooms.max() > ZOOM_RANGE_MM[1]:
        raise InputError(f"implausible voxel size {np.round(zooms, 4).tolist()} mm "
                         f"(accepted {ZOOM_RANGE_MM[0]}..{ZOOM_RANGE_MM[1]} mm)")
    axes = np.abs(a[:3, :3]).argmax(axis=0)
    if len(set(axes.tolist())) != 3:
        raise InputError("affine maps two voxel axes onto the same world axis")
    ob = obliquity_deg(a)
    if ob > max_obliquity_deg:
        raise InputError(f"affine is oblique by {ob:.1f} deg (> {max_obliquity_deg:g}); "
                         "reslice to the scanner axes first")


def _is_nifti_name(p: Path) -> bool:
    n = p.name.lower()
    return n.endswith(".nii") or n.endswith(".nii.gz")


def load_volume(path: str | Path, max_obliquity_deg: float = MAX_OBLIQUITY_DEG) -> Volume:
    """Load and validate a 3-D NIfTI scan; returns it reoriented to canonical RAS as float32.

    Raises InputError for non-NIfTI files, truncated/corrupt data, 4-D series, NaN/inf voxels and
    wrong or oblique affines, so nothing downstream runs on a bad scan."""
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if not _is_nifti_name(p):
        raise InputError(f"{p}: not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(p))
    except Exception as e:  # nibabel raises many types for junk headers
        raise InputError(f"{p}: not a readable NIfTI file ({type(e).__name__}: {e})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{p}: not a NIfTI-1/2 image ({type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{p}: expected a 3-D volume, got shape {tuple(img.shape)} "
                         "(split 4-D series into 3-D volumes first)")
    if min(shape) < 8:
        raise InputError(f"{p}: volume {shape} is too small to be a head scan")
    if int(np.prod(shape)) > MAX_VOXELS:
        raise InputError(f"{p}: volume {shape} exceeds {MAX_VOXELS} voxels")
    check_affine(img.affine, max_obliquity_deg)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32)).reshape(shape)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise InputError(f"{p}: truncated or corrupt image data ({type(e).__name__}: {e})") from None
    if not np.all(np.isfinite(data)):
        n = int((~np.isfinite(data)).sum())
        raise InputError(f"{p}: {n} voxels are NaN or infinite")
    if float(data.max()) <= float(data.min()):
        raise InputError(f"{p}: image is constant")
    img3 = img if len(img.shape) == 3 else nib.Nifti1Image(data, img.affine, img.header)
    ornt = nib.orientations.io_orientation(img3.affine)
    can = nib.orientations.apply_orientation(data, ornt)
    can_aff = img3.affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return Volume(np.ascontiguousarray(can, dtype=np.float32), can_aff, img, p)


def volume_from_array(data: np.ndarray, affine: np.ndarray) -> Volume:
    """Wrap an in-memory array + affine (any orientation) as a canonical RAS Volume (for tests/tools)."""
    import nibabel as nib

    data = np.asarray(data)
    check_affine(affine, max_obliquity_deg=89.0)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=float))
    ornt = nib.orientations.io_orientation(img.affine)
    can = nib.orientations.apply_orientation(data.astype(np.float32), ornt)
    can_aff = img.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return Volume(np.ascontiguousarray(can, dtype=np.float32), can_aff, img, None)


def to_source_orientation(vol: Volume, data_ras: np.ndarray) -> np.ndarray:
    """Undo the canonical reorientation: array in the input file's voxel order."""
    import nibabel as nib

    if vol.source is None:
        return np.asarray(data_ras)
    src_aff = vol.source.affine  # type: ignore[attr-defined]
    ornt = nib.orientations.io_orientation(src_aff)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
    return nib.orientations.apply_orientation(np.asarray(data_ras), back)


def save_like(vol: Volume, data_ras: np.ndarray, out_path: str | Path, dtype: object | None = None) -> Path:
    """Write ``data_ras`` (canonical RAS, same grid as ``vol``) with the input's orientation, affine,
    header and on-disk dtype (integer types rounded and clipped). Atomic; refuses to overwrite the input."""
    import nibabel as nib

    out = Path(out_path)
    if not _is_nifti_name(out):
        raise InputError(f"{out}: output must end in .nii or .nii.gz")
    if vol.path is not None and out.resolve() == Path(vol.path).resolve():
        raise InputError("refusing to overwrite the input file; choose another output path")
    if tuple(np.shape(data_ras)) != vol.shape:
        raise ValueError(f"data shape {np.shape(data_ras)} != volume shape {vol.shape}")
    arr = to_source_orientation(vol, data_ras)
    if vol.source is not None:
        src = vol.source
        hdr = src.header.copy()  # type: ignore[attr-defined]
        dt = np.dtype(dtype) if dtype is not None else np.dtype(src.get_data_dtype())  # type: ignore[attr-defined]
        if len(src.shape) == 4:  # type: ignore[attr-defined]
            arr = arr[..., None]
        affine = src.affine  # type: ignore[attr-defined]
    else:
        hdr = None
        dt = np.dtype(dtype or np.float32)
        affine = vol.affine
    slope = inter = None
    if hdr is not None:
        slope, inter = hdr.get_slope_inter()
    if np.issubdtype(dt, np.integer) and (slope in (None, 1.0)) and (inter in (None, 0.0)):
        info = np.iinfo(dt)
        arr = np.clip(np.rint(arr), info.min, info.max).astype(dt)
    img = nib.Nifti1Image(arr, affine, header=hdr) if hdr is not None else nib.Nifti1Image(arr.astype(dt), affine)
    img.set_data_dtype(dt)
    if hdr is not None:
        img.set_qform(affine, int(hdr["qform_code"]))
        img.set_sform(affine, int(hdr["sform_code"]))
    with atomic_path(out) as tmp:
        nib.save(img, str(tmp))
    return out
