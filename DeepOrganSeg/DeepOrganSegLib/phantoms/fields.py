"""Smooth random fields on a :class:`~.geometry.Grid`: textures, bias fields and deformations.

All are random lattices interpolated by separable cubic B-splines: the four non-zero taps per
axis are gathered directly (no dense matrix, no BLAS threads that would fight training workers
for the cores). Displacements are in millimetres and fixed in patient space, so a case deforms
the same way whatever grid it is rendered on.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .geometry import Grid


def _bspline_taps(position: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (each n x 4) of the cubic B-spline at continuous lattice indices."""
    position = np.clip(np.asarray(position, dtype=float), 0.0, n_in - 1.0)
    base = np.floor(position).astype(int)
    t = position - base
    weights = np.stack([(1 - t) ** 3, 3 * t ** 3 - 6 * t ** 2 + 4,
                        -3 * t ** 3 + 3 * t ** 2 + 3 * t + 1, t ** 3], axis=1) / 6.0
    indices = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return indices, weights.astype(np.float32)


def _interpolate_axis(array: np.ndarray, axis: int, position: np.ndarray) -> np.ndarray:
    """Cubic B-spline interpolation of ``array`` along one axis at continuous indices."""
    indices, weights = _bspline_taps(position, array.shape[axis])
    shape = [1] * array.ndim
    shape[axis] = -1
    result = np.take(array, indices[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for tap in range(1, 4):
        result += np.take(array, indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return result


def _separable(coarse: np.ndarray, positions: Sequence[np.ndarray]) -> np.ndarray:
    """Cubic B-spline interpolation of a (k, j, i) lattice at continuous (k, j, i) indices."""
    out = coarse.astype(np.float32)
    for axis in (2, 1, 0):
        out = _interpolate_axis(out, axis, positions[axis])
    return out


def upsample(coarse: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Smoothly enlarge a small (k, j, i) field to ``shape`` by separable cubic B-splines."""
    return _separable(coarse, [np.linspace(0.0, c - 1.0, s) for c, s in zip(coarse.shape, shape)])


def noise_field(rng: np.random.Generator, grid: Grid, correlation_mm: float) -> np.ndarray:
    """Gaussian random field on ``grid`` with unit SD and about ``correlation_mm`` correlation."""
    spacing = np.array(grid.spacing[::-1])  # (sk, sj, si)
    extent = np.array(grid.shape) * spacing
    coarse_shape = tuple(int(v) for v in np.maximum(
        np.ceil(extent / np.maximum(spacing, correlation_mm)), 4))
    field = upsample(rng.standard_normal(coarse_shape, dtype=np.float32), grid.shape)
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def smooth_displacement(rng: np.random.Generator, grid: Grid, amplitude_mm: float,
                        control_mm: float, half_extent_mm: Sequence[float]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random displacement (dx, dy, dz) in mm, fixed in patient space.

    Random values on a lattice of control points every ``control_mm`` within +-``half_extent_mm``
    (x, y, z) of the patient origin are B-spline interpolated at the grid's voxels, so a case
    deforms the same way whatever grid it is rendered on.
    """
    counts = [int(np.ceil(2 * h / control_mm)) + 1 for h in half_extent_mm]  # x, y, z
    positions = [(axis + h) / control_mm for axis, h in zip(grid.axes(), half_extent_mm)]
    fields = []
    for _ in range(3):
        lattice = rng.standard_normal(counts[::-1]).astype(np.float32) * amplitude_mm
        fields.append(_separable(lattice, positions[::-1]))
    return fields[0], fields[1], fields[2]
