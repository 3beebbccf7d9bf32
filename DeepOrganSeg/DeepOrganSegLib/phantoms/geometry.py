"""Voxel grids and frames in patient space (LPS millimetres: x to the patient's left, y
posterior, z superior).

Every map of a case is rendered on an axis-aligned :class:`Grid` (identity direction); a
direction matrix other than the identity is only applied at the very end
(:mod:`.orientation`). Arrays are indexed (k, j, i), i.e. (z, y, x).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, cast

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class Grid:
    """An LPS-aligned voxel grid (identity direction): shape (k, j, i), spacing (si, sj, sk) mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # centre of voxel (0, 0, 0), patient LPS mm

    @classmethod
    def centred(cls, shape: Sequence[int], spacing: Sequence[float],
                centre: ArrayLike) -> "Grid":
        """The grid whose centre voxel sits at ``centre`` (LPS mm)."""
        extent = (np.array(shape[::-1]) - 1) * np.array(spacing)
        return cls(cast("tuple[int, int, int]", tuple(int(s) for s in shape)),  # 3D grid
                   cast("tuple[float, float, float]", tuple(float(s) for s in spacing)),
                   cast("tuple[float, float, float]",
                        tuple(float(v) for v in np.asarray(centre) - extent / 2)))

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along x (i), y (j), z (k), in mm."""
        k, j, i = self.shape
        return tuple(  # type: ignore[return-value]
            (self.origin[a] + np.arange(n) * self.spacing[a]).astype(np.float32)
            for a, n in enumerate((i, j, k)))

    def subdivided(self, n: int) -> "Grid":
        """The grid with ``n`` (odd) sub-slices per slice, centred on the original slices."""
        if n == 1:
            return self
        k, j, i = self.shape
        dz = self.spacing[2] / n
        origin = (self.origin[0], self.origin[1], self.origin[2] - (n - 1) / 2 * dz)
        return Grid((k * n, j, i), (self.spacing[0], self.spacing[1], dz), origin)


def unit(v: ArrayLike) -> np.ndarray:
    """``v`` scaled to length 1."""
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def frame(primary: ArrayLike, secondary: ArrayLike) -> np.ndarray:
    """Orthonormal axes (columns): ``primary``, then ``secondary`` made orthogonal to it."""
    a = unit(primary)
    b = np.asarray(secondary, dtype=float)
    b = unit(b - (b @ a) * a)
    return np.stack([a, b, np.cross(a, b)], axis=1)


def rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, y and z, applied in that order."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx
