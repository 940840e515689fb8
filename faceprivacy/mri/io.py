"""NIfTI input/output for the MRI tools: strict validation on load, canonical RAS for processing,
results written back exactly like the input (atomically, never over it).

A loaded scan keeps its file's header and extension bytes, its stored values and their scaling
(``scl_slope``/``scl_inter`` from ``dataobj``, not the float-converted header). ``save_like`` writes
those header bytes unchanged (NIfTI-1 or -2, q/sform fields, dtype, scaling) and re-encodes only the
voxels that changed, so every other voxel is byte-identical to the input."""

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
#: voxel axes further than this from the nearest world axis are rejected as oblique (degrees); the
#: multi-start registration is tested with header rotations up to 25 degrees on heads already ~2 degrees oblique
MAX_OBLIQUITY_DEG = 30.0


@dataclass(frozen=True)
class SourceImage:
    """What is needed to write a result back exactly like its input: the file's header and extension
    bytes (written back unchanged), its raw stored values (file dtype and voxel order), the scaling
    (``scl_slope``/``scl_inter`` as read) and the file's own affine and shape."""

    prefix: bytes  # header (+ extensions) up to the data offset, byte for byte
    raw: np.ndarray  # stored values in the file's voxel order and dtype (byte order included)
    slope: float
    inter: float
    affine: np.ndarray
    shape: tuple[int, ...]  # the file's data shape (may carry a trailing length-1 axis)
    nifti_version: int  # 1 or 2

    @property
    def dtype(self) -> np.dtype:
        return self.raw.dtype


@dataclass
class Volume:
    """A 3-D scan in canonical RAS voxel order (float32) plus what is needed to write results back."""

    data: np.ndarray
    affine: np.ndarray
    source: SourceImage | None = None
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
    if ob > max_obliquity_deg + 1e-3:  # a 25.000 degree header is 25 degrees
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
        # the stored values and the file's own scaling: get_fdata() alone would hide scl_slope/scl_inter
        # (nibabel moves them out of the header), and writing floats back would re-quantise every voxel
        raw = np.asanyarray(img.dataobj.get_unscaled())
        slope, inter = float(img.dataobj.slope), float(img.dataobj.inter)
        prefix = _read_prefix(p, int(img.dataobj.offset))
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError, AttributeError) as e:
        raise InputError(f"{p}: truncated or corrupt image data ({type(e).__name__}: {e})") from None
    if raw.dtype.kind not in "iuf" or not np.isfinite(slope) or not np.isfinite(inter) or slope == 0:
        raise InputError(f"{p}: unsupported data type {raw.dtype} or scaling ({slope}, {inter})")
    raw3 = raw.reshape(shape)
    data = raw3.astype(np.float32) if (slope, inter) == (1.0, 0.0) else \
        (raw3.astype(np.float64) * slope + inter).astype(np.float32)
    if not np.all(np.isfinite(data)):
        n = int((~np.isfinite(data)).sum())
        raise InputError(f"{p}: {n} voxels are NaN or infinite")
    if float(data.max()) <= float(data.min()):
        raise InputError(f"{p}: image is constant")
    src = SourceImage(prefix, raw, slope, inter, np.asarray(img.affine, float), tuple(img.shape),
                      2 if isinstance(img, nib.Nifti2Image) else 1)
    ornt = nib.orientations.io_orientation(img.affine)
    can = nib.orientations.apply_orientation(data, ornt)
    can_aff = img.affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    return Volume(np.ascontiguousarray(can, dtype=np.float32), can_aff, src, p)


def _read_prefix(path: Path, offset: int) -> bytes:
    """The first ``offset`` bytes of the (possibly gzipped) file: header and extensions."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        b = f.read(offset)
    if len(b) != offset:
        raise EOFError(f"header shorter than the data offset {offset}")
    return b


def volume_from_array(data: np.ndarray, affine: np.ndarray) -> Volume:
    """Wrap an in-memory array + affine (any orientation) as a canonical RAS Volume (for tests/tools);
    it is written back as a NIfTI-1 file of the array's dtype in the array's own voxel order."""
    import nibabel as nib

    data = np.asarray(data)
    check_affine(affine, max_obliquity_deg=89.0)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=float))
    hdr = img.header
    hdr.set_data_offset(352)
    src = SourceImage(hdr.binaryblock + b"\0\0\0\0", data.copy(), 1.0, 0.0, img.affine.copy(),
                      tuple(data.shape), 1)
    ornt = nib.orientations.io_orientation(img.affine)
    can = nib.orientations.apply_orientation(data.astype(np.float32), ornt)
    can_aff = img.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return Volume(np.ascontiguousarray(can, dtype=np.float32), can_aff, src, None)


def to_source_orientation(vol: Volume, data_ras: np.ndarray) -> np.ndarray:
    """Undo the canonical reorientation: array in the input file's voxel order."""
    import nibabel as nib

    if vol.source is None:
        return np.asarray(data_ras)
    ornt = nib.orientations.io_orientation(vol.source.affine)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
    return nib.orientations.apply_orientation(np.asarray(data_ras), back)


def check_output_path(out_path: str | Path, inputs: list[Path] | tuple[Path, ...] = ()) -> Path:
    """Refuse an output path before any work: wrong suffix, an existing folder, a file where a parent
    folder should be, or one of the inputs."""
    out = Path(out_path)
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{out}: {parent} is a file, not a folder")
            break
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give an output file ending in .nii or .nii.gz")
    if not _is_nifti_name(out):
        raise InputError(f"{out}: output must end in .nii or .nii.gz")
    for i in inputs:
        if out.resolve() == Path(i).resolve():
            raise InputError("refusing to overwrite the input file; choose another output path")
    return out


def encode(values: np.ndarray, src: SourceImage) -> np.ndarray:
    """Real-world values -> stored values in the source's dtype and scaling (rounded and clipped for
    integer types)."""
    v = (np.asarray(values, np.float64) - src.inter) / src.slope
    dt = src.dtype
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.clip(np.rint(v), info.min, info.max).astype(dt)
    return v.astype(dt)


def save_like(vol: Volume, data_ras: np.ndarray, out_path: str | Path, dtype: object | None = None,
              changed: np.ndarray | None = None) -> Path:
    """Write ``data_ras`` (canonical RAS, same grid as ``vol``) exactly like the input file.

    The header and extension bytes are the input's, byte for byte (NIfTI version, q/sform fields,
    dtype, scl_slope/scl_inter all kept); only voxels in ``changed`` (default: where ``data_ras``
    differs from ``vol.data``) are re-encoded, every other voxel keeps its stored bytes. Atomic;
    refuses to overwrite the input. ``dtype`` applies only to volumes without a source file."""
    import nibabel as nib

    out = check_output_path(out_path, [vol.path] if vol.path is not None else [])
    if tuple(np.shape(data_ras)) != vol.shape:
        raise ValueError(f"data shape {np.shape(data_ras)} != volume shape {vol.shape}")
    src = vol.source
    if src is None:
        dt = np.dtype(dtype or np.float32)
        arr = np.asarray(data_ras)
        if dt.kind in "iu":
            info = np.iinfo(dt)
            arr = np.clip(np.rint(arr), info.min, info.max)
        with atomic_path(out) as tmp:
            nib.save(nib.Nifti1Image(arr.astype(dt), vol.affine), str(tmp))
        return out
    if changed is None:
        changed = np.asarray(data_ras) != vol.data
    ch = to_source_orientation(vol, changed).reshape(src.raw.shape)
    raw = src.raw.copy()
    if ch.any():
        vals = to_source_orientation(vol, data_ras).reshape(src.raw.shape)
        raw[ch] = encode(vals[ch], src)
    payload = src.prefix + np.asarray(raw, order="F").tobytes(order="F")
    with atomic_path(out) as tmp:
        if out.name.lower().endswith(".gz"):
            with gzip.open(tmp, "wb", compresslevel=6) as f:
                f.write(payload)
        else:
            tmp.write_bytes(payload)
    return out
