"""Head surfaces and the face-region mean surface distance (MSD, mm) used to score how much of a face
a defaced / refaced / attacked scan still carries (Gao et al. 2025's metric)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .deface import head_threshold
from .io import Volume


def head_mask(data: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Binary head (skin and everything inside): threshold, keep the largest component, fill holes."""
    from scipy import ndimage

    thr = head_threshold(data) if threshold is None else threshold
    m = data > thr
    m = ndimage.binary_opening(m, iterations=1)
    lab, n = ndimage.label(m)
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        m = lab == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(m)


def smooth_occupancy(mask: np.ndarray, sigma_vox: float = 1.0) -> np.ndarray:
    """Gaussian-smoothed mask in [0, 1]: its 0.5 level set is a smooth version of the mask boundary."""
    from scipy import ndimage

    return ndimage.gaussian_filter(mask.astype(np.float32), sigma_vox)


@dataclass
class Surface:
    """Triangle mesh in world mm (vertices (V, 3), faces (F, 3)) with per-vertex normals."""

    verts: np.ndarray
    faces: np.ndarray
    normals: np.ndarray


def head_surface(vol: Volume, mask: np.ndarray | None = None, step: int = 1) -> Surface:
    """Marching-cubes surface of the (smoothed) head mask in world coordinates."""
    from skimage.measure import marching_cubes

    m = head_mask(vol.data) if mask is None else mask
    occ = np.pad(smooth_occupancy(m), 1)  # closed surface even where the head touches the field of view
    v, f, n, _ = marching_cubes(occ, 0.5, step_size=step, allow_degenerate=False)
    v = v - 1.0
    w = v @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    nw = n @ np.linalg.inv(vol.affine[:3, :3])
    nw /= np.maximum(np.linalg.norm(nw, axis=1, keepdims=True), 1e-9)
    return Surface(w.astype(np.float32), f, nw.astype(np.float32))


def vertices_in_region(surf: Surface, vol: Volume, region: np.ndarray) -> np.ndarray:
    """Boolean per vertex: does the vertex fall in the voxel region (nearest voxel)?"""
    ijk = np.rint((surf.verts - vol.affine[:3, 3]) @ np.linalg.inv(vol.affine[:3, :3]).T).astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.array(vol.shape)), axis=1)
    inside = np.zeros(len(ijk), bool)
    inside[ok] = region[ijk[ok, 0], ijk[ok, 1], ijk[ok, 2]]
    return inside


def face_msd(ref: Surface, test: Surface, vol: Volume, region: np.ndarray) -> dict[str, float]:
    """Mean surface distance (mm) between two head surfaces restricted to a face region (subject grid).

    ``test_to_ref`` = mean over test vertices in the region of the distance to the reference surface
    (the paper's "rebuilt face to original face"); ``ref_to_test`` the other way; ``msd`` = their mean."""
    from scipy.spatial import cKDTree

    r_in = vertices_in_region(ref, vol, region)
    t_in = vertices_in_region(test, vol, region)
    out: dict[str, float] = {"ref_vertices": int(r_in.sum()), "test_vertices": int(t_in.sum())}
    if r_in.sum() == 0:
        return {**out, "msd": float("nan"), "test_to_ref": float("nan"), "ref_to_test": float("nan")}
    ref_tree = cKDTree(ref.verts)
    test_tree = cKDTree(test.verts)
    d_rt = test_tree.query(ref.verts[r_in])[0]
    d_tr = ref_tree.query(test.verts[t_in])[0] if t_in.any() else d_rt
    out["ref_to_test"] = float(d_rt.mean())
    out["test_to_ref"] = float(d_tr.mean())
    out["msd"] = 0.5 * (out["ref_to_test"] + out["test_to_ref"])
    return out


def face_region_for_msd(face: np.ndarray, vol: Volume, grow_mm: float = 5.0) -> np.ndarray:
    """The face region grown by a few mm so surfaces pushed outwards/inwards are still compared."""
    from scipy import ndimage

    if grow_mm <= 0:
        return face
    return ndimage.distance_transform_edt(~face, sampling=vol.zooms) <= grow_mm
