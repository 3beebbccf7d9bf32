"""Pre-processing: from any input grid to the model's working grid, and back.

The *working grid* is axis-aligned in LPS (identity direction: the canonical orientation), has
the task's voxel spacing (mm) and covers the input's whole physical extent. Whatever the input's
direction matrix (oblique, flipped, permuted, LPS or RAS on disk), the network always sees the
patient in the same orientation; :func:`resample_probabilities_to` maps its output back onto the
exact input grid, voxel for voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .bundle import Normalization
from .errors import InputError
from .volume import Volume

__all__ = ["WorkingGrid", "working_grid", "resample_to_grid", "normalize_intensities",
           "resample_probabilities_to", "iter_slabs"]


@dataclass(frozen=True)
class WorkingGrid:
    """An axis-aligned LPS grid: ``size`` (i, j, k) voxels, ``spacing`` mm, ``origin`` LPS mm."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (k, j, i)."""
        return self.size[::-1]


def _corners(volume: Volume) -> np.ndarray:
    """The 8 outer corners (voxel edges, not centres) of ``volume`` in LPS mm."""
    extent = np.asarray(volume.size, dtype=np.float64)
    offsets = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], np.float64)
    return volume.index_to_physical(offsets * extent - 0.5)


def working_grid(volume: Volume, spacing_mm: tuple[float, float, float]) -> WorkingGrid:
    """The axis-aligned grid of spacing ``spacing_mm`` that covers ``volume``'s extent."""
    corners = _corners(volume)
    low, high = corners.min(axis=0), corners.max(axis=0)
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    size = np.maximum(np.ceil((high - low) / spacing - 1e-6).astype(int), 1)
    origin = (low + high) / 2 - (size - 1) * spacing / 2  # centred on the input's extent
    return WorkingGrid(tuple(int(s) for s in size), tuple(spacing.tolist()),
                       tuple(origin.tolist()))


def resample_to_grid(volume: Volume, grid: WorkingGrid, *, interpolator: int = sitk.sitkLinear,
                     default_value: float | None = None) -> np.ndarray:
    """Resample ``volume`` onto ``grid``; float32 array (k, j, i). Outside voxels get
    ``default_value`` (the input's minimum when None: air in CT, background in MR)."""
    image = volume.to_sitk()
    if image.GetPixelID() != sitk.sitkFloat32:
        image = sitk.Cast(image, sitk.sitkFloat32)
    if default_value is None:
        default_value = float(np.min(volume.array))
    resampled = sitk.Resample(image, grid.size, sitk.Transform(), interpolator, grid.origin,
                              grid.spacing, np.eye(3).flatten().tolist(), default_value,
                              sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def normalize_intensities(array: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Normalise a working-grid image as the model file says (float32 out, in place where
    possible). CT: clip in HU then centre/scale. MR: percentile clip then z-score over the
    non-zero voxels (the background of skull-stripped or masked MR stays at its clipped low)."""
    array = np.asarray(array, dtype=np.float32)
    if normalization.kind == "ct":
        low, high = normalization.clip_hu
        np.clip(array, low, high, out=array)
        array -= normalization.center_hu
        array /= normalization.scale_hu
        return array
    sample = array[:: max(1, array.shape[0] // 64)].ravel()
    foreground = sample[sample > sample.min()]
    if foreground.size == 0:
        raise InputError("the image is constant; nothing to segment")
    low, high = np.percentile(foreground, normalization.percentiles)
    np.clip(array, low, high, out=array)
    inside = foreground.clip(low, high)
    mean, std = float(inside.mean()), float(inside.std())
    array -= mean
    array /= max(std, 1e-6)
    return array


def iter_slabs(depth: int, voxels_per_slice: int, budget_voxels: int) -> Iterator[slice]:
    """Slices along k that hold at most ``budget_voxels`` voxels each (at least one slice)."""
    step = max(1, budget_voxels // max(1, voxels_per_slice))
    for start in range(0, depth, step):
        yield slice(start, min(depth, start + step))


def _physical_to_grid_normalized(points: torch.Tensor, grid: WorkingGrid) -> torch.Tensor:
    """LPS mm -> grid_sample coordinates (x=i, y=j, z=k in [-1, 1], align_corners=True)."""
    origin = torch.tensor(grid.origin, dtype=points.dtype, device=points.device)
    spacing = torch.tensor(grid.spacing, dtype=points.dtype, device=points.device)
    extent = torch.tensor([max(s - 1, 1) for s in grid.size], dtype=points.dtype,
                          device=points.device)
    return (points - origin) / spacing / extent * 2 - 1


def resample_probabilities_to(probabilities: torch.Tensor, grid: WorkingGrid, target: Volume,
                              k_slices: slice) -> torch.Tensor:
    """Trilinearly sample working-grid ``probabilities`` [C, k, j, i] at the voxel centres of
    ``target`` slices ``k_slices``: returns [C, slab_k, j, i] (float32). Points outside the
    working grid take the nearest edge value."""
    ni, nj, _ = target.size
    k = torch.arange(k_slices.start, k_slices.stop, dtype=torch.float64)
    j = torch.arange(nj, dtype=torch.float64)
    i = torch.arange(ni, dtype=torch.float64)
    kk, jj, ii = torch.meshgrid(k, j, i, indexing="ij")
    ijk = torch.stack((ii, jj, kk), dim=-1)
    matrix = torch.as_tensor(target.direction * np.asarray(target.spacing)[None, :],
                             dtype=torch.float64)
    points = torch.as_tensor(target.origin, dtype=torch.float64) + ijk @ matrix.T
    sample_at = _physical_to_grid_normalized(points, grid).to(torch.float32)
    sampled = F.grid_sample(probabilities[None].float(), sample_at[None], mode="bilinear",
                            padding_mode="border", align_corners=True)
    return sampled[0]
