"""Axial slices as the body-part classifier sees them: resampled onto the canonical LPS grid,
centred on the body, 2.5D, intensities normalised the same way for CT and MR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from ..schema import get_field, numbers, require
from ..errors import InputError
from ..grid import WorkingGrid, resample_to_grid, working_grid
from ..volume import Volume


__all__ = ["SliceGeometry", "SliceStack", "INTENSITY_FEATURES", "intensity_features", "slice_stack"]

@dataclass(frozen=True)
class SliceGeometry:
    """How slices are sampled: ``size`` x ``size`` pixels of ``pixel_mm`` mm, ``slice_mm`` mm
    apart, each with ``context`` neighbours on either side as extra channels."""

    size: int = 64
    pixel_mm: float = 6.0
    slice_mm: float = 8.0
    context: int = 1
    percentiles: tuple[float, float] = (0.5, 99.5)

    @property
    def channels(self) -> int:
        return 2 * self.context + 1

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "pixel_mm": self.pixel_mm, "slice_mm": self.slice_mm,
                "context": self.context, "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "slices") -> "SliceGeometry":
        size = get_field(data, "size", int, where)
        context = get_field(data, "context", int, where)
        require(8 <= size <= 512, f"{where}.size", "must be in 8..512")
        require(0 <= context <= 4, f"{where}.context", "must be in 0..4")
        pixel, slice_mm = numbers([data.get("pixel_mm"), data.get("slice_mm")], 2,
                                   f"{where}.pixel_mm/slice_mm", positive=True)
        low, high = numbers(data.get("percentiles"), 2, f"{where}.percentiles")
        require(0 <= low < high <= 100, f"{where}.percentiles", "must be 0 <= low < high <= 100")
        return cls(size, pixel, slice_mm, context, (low, high))


@dataclass
class SliceStack:
    """The network input for one volume: ``images`` [n, channels, size, size] float32, slice
    ``n`` at patient height ``z_mm[n]`` (LPS z, superior positive; increasing with n), the
    volume's :func:`intensity_features` and each slice's field-of-view coverage."""

    images: np.ndarray
    z_mm: np.ndarray
    grid: WorkingGrid
    features: np.ndarray
    coverage: np.ndarray  # [n]: share of each slice's window inside the input's field of view


#: Names of :func:`intensity_features`, in order.
INTENSITY_FEATURES = ("share_below_-500", "share_-1100_to_-900", "p1_per_1000", "p50_per_1000")


def intensity_features(array: np.ndarray) -> np.ndarray:
    """Modality evidence from raw intensities (float32 [4]): the shares of voxels below -500
    and within -1100..-900 (air in HU), and the 1st and 50th percentiles / 1000 (clipped to
    +-3)."""
    low, median = np.percentile(array, (1, 50))
    return np.array([(array < -500).mean(), ((array > -1100) & (array < -900)).mean(),
                     np.clip(low / 1000, -3, 3), np.clip(median / 1000, -3, 3)], np.float32)


def _decimated(volume: Volume, finest_mm: float) -> Volume:
    """A strided view of ``volume`` with voxels at most ``finest_mm`` / 2 apart (no copy of the
    full array), so that resampling a 512^3 CT to the coarse slice grid stays cheap."""
    strides = [max(1, int(finest_mm / (2 * s))) for s in volume.spacing]  # (i, j, k)
    if strides == [1, 1, 1]:
        return volume
    array = volume.array[::strides[2], ::strides[1], ::strides[0]]
    origin = volume.index_to_physical(np.zeros(3))
    spacing = cast("tuple[float, float, float]",  # one stride per axis
                   tuple(s * n for s, n in zip(volume.spacing, strides)))
    return Volume(np.ascontiguousarray(array), spacing, tuple(origin), volume.direction)


def _normalised(array: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map the ``percentiles`` of the voxels above the minimum to [0, 1] (clipped)."""
    floor = float(array.min())
    foreground = array[array > floor]
    if foreground.size == 0:
        raise InputError("the image is constant; cannot tell which body part it shows")
    low, high = np.percentile(foreground, percentiles)
    out = (array - low) / max(float(high - low), 1e-6)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32)


def _body_centre(array: np.ndarray) -> tuple[int, int]:
    """In-plane (j, i) centre of the body (normalised voxels above 0.1) over all slices."""
    body = array > 0.1
    _, rows, columns = array.shape
    if not body.any():
        return rows // 2, columns // 2
    return (int(round(np.nonzero(body.any(axis=(0, 2)))[0].mean())),
            int(round(np.nonzero(body.any(axis=(0, 1)))[0].mean())))


def _window(array: np.ndarray, centre: tuple[int, int], size: int) -> np.ndarray:
    """[k, j, i] -> [k, size, size] around ``centre`` (j, i), padded with 0."""
    _, rows, columns = array.shape
    out = np.zeros((array.shape[0], size, size), np.float32)
    j0, i0 = centre[0] - size // 2, centre[1] - size // 2
    src_j = slice(max(j0, 0), min(j0 + size, rows))
    src_i = slice(max(i0, 0), min(i0 + size, columns))
    out[:, src_j.start - j0:src_j.stop - j0, src_i.start - i0:src_i.stop - i0] = \
        array[:, src_j, src_i]
    return out


def _with_neighbours(array: np.ndarray, context: int) -> np.ndarray:
    """[n, h, w] -> [n, 2 * context + 1, h, w]: each slice with its neighbours (edges repeated)."""
    n = array.shape[0]
    index = np.clip(np.arange(n)[:, None] + np.arange(-context, context + 1)[None], 0, n - 1)
    return array[index]


def _inside_input(volume: Volume, grid: WorkingGrid) -> np.ndarray:
    """[k, j, i] float32 mask of the ``grid`` voxel centres that lie within ``volume``'s field
    of view (oblique inputs leave wedges of the axis-aligned grid empty)."""
    k, j, i = (np.arange(n, dtype=np.float64) for n in grid.shape)
    points = np.stack(np.meshgrid(i, j, k, indexing="ij"), -1) * grid.spacing + grid.origin
    to_index = np.linalg.inv(volume.direction * np.asarray(volume.spacing)[None, :])
    index = (points - np.asarray(volume.origin)) @ to_index.T
    upper = np.asarray(volume.size, dtype=np.float64) - 0.5
    inside = np.all((index >= -0.5) & (index <= upper), axis=-1)
    return inside.transpose(2, 1, 0).astype(np.float32)


def slice_stack(volume: Volume, geometry: SliceGeometry = SliceGeometry()) -> SliceStack:
    """Resample ``volume`` (any orientation) to the classifier's canonical axial slices."""
    spacing = (geometry.pixel_mm, geometry.pixel_mm, geometry.slice_mm)
    coarse = _decimated(volume, min(spacing))
    grid = working_grid(coarse, spacing)
    array = resample_to_grid(coarse, grid, default_value=float(coarse.array.min()))
    if not np.isfinite(array).all():
        raise InputError("the image holds NaN or Inf voxels; fix or mask them first")
    features = intensity_features(array)
    normalised = _normalised(array, geometry.percentiles)
    centre = _body_centre(normalised)
    images = _window(normalised, centre, geometry.size)
    coverage = _window(_inside_input(coarse, grid), centre, geometry.size).mean(axis=(1, 2))
    z = grid.origin[2] + np.arange(grid.size[2]) * grid.spacing[2]
    return SliceStack(_with_neighbours(images, geometry.context), z, grid, features, coverage)
