"""The working grid: where the network sees a volume, and resampling onto it. Torch-free.

The *working grid* is axis-aligned in LPS (identity direction: the canonical orientation), has
the task's voxel spacing (mm) and covers the input's whole physical extent. Whatever the input's
direction matrix (oblique, flipped, permuted, LPS or RAS on disk), the network always sees the
patient in the same orientation; :func:`.preprocess.resample_probabilities_to` maps its output
back onto the exact input grid. The body-part classifier resamples its slices with it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, cast

import numpy as np
import SimpleITK as sitk

from .volume import Volume

__all__ = ["WorkingGrid", "working_grid", "resample_to_grid", "iter_slabs"]

#: Pixel types whose every value float32 holds exactly: resampled without a float32 copy of the
#: input first (an int16 CT of 512x512x300 would cost 315 MB more), to the same values.
_EXACT_IN_FLOAT32 = (sitk.sitkFloat32, sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16,
                     sitk.sitkInt16)


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
    return WorkingGrid(cast("tuple[int, int, int]", tuple(int(s) for s in size)),
                       tuple(spacing.tolist()),
                       tuple(origin.tolist()))


def resample_to_grid(volume: Volume, grid: WorkingGrid, *, interpolator: int = sitk.sitkLinear,
                     default_value: float | None = None) -> np.ndarray:
    """Resample ``volume`` onto ``grid``; float32 array (k, j, i). Outside voxels get
    ``default_value`` (the input's minimum when None: air in CT, background in MR)."""
    image = volume.to_sitk()
    if image.GetPixelID() not in _EXACT_IN_FLOAT32:  # else Resample's float32 output suffices
        image = sitk.Cast(image, sitk.sitkFloat32)
    if default_value is None:
        default_value = float(np.min(volume.array))
    resampled = sitk.Resample(image, grid.size, sitk.Transform(), interpolator, grid.origin,
                              grid.spacing, np.eye(3).flatten().tolist(), default_value,
                              sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def iter_slabs(depth: int, voxels_per_slice: int, budget_voxels: int) -> Iterator[slice]:
    """Slices along k that hold at most ``budget_voxels`` voxels each (at least one slice)."""
    step = max(1, budget_voxels // max(1, voxels_per_slice))
    for start in range(0, depth, step):
        yield slice(start, min(depth, start + step))
