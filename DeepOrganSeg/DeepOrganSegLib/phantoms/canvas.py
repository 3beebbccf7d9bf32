"""The tissue and organ maps of a torso case, painted shape by shape on the render grid.

Painting order is anatomy: a later shape overwrites an earlier one, and ``within`` restricts it
to voxels of given tissues, which is how organs come to touch without overlapping (the kidney
carves the liver, the psoas carves the kidney).
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import numpy as np

from .geometry import Grid
from .labels import ORGAN_ID, TISSUE_ID
from .shapes import Shape, View


class Canvas:
    """Tissue and organ maps on a render grid, painted shape by shape (later shapes win)."""

    def __init__(self, grid: Grid, displacement: tuple[np.ndarray, np.ndarray, np.ndarray]):
        """``displacement`` (dx, dy, dz; mm, on ``grid``) deforms every shape painted here."""
        ax, ay, az = grid.axes()
        dx, dy, dz = displacement
        self.grid = grid
        self.axes = (ax, ay, az)
        self.x = dx + ax[None, None, :]
        self.y = dy + ay[None, :, None]
        self.z = dz + az[:, None, None]
        self.margin = float(max(np.abs(d).max() for d in displacement)) if dx.size else 0.0
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)
        self.organ = np.zeros(grid.shape, dtype=np.uint8)

    def visible_radius_mm(self, radius_mm: float) -> float:
        """``radius_mm``, or half the diagonal of the grid's two longest voxel sides if that is
        larger: a small dense object (a 1 mm clip or plaque) would otherwise fall between the
        voxel centres of a coarse grid and vanish, where a scanner blooms it into a bright dot
        of about a voxel (in whatever direction it lies)."""
        spacing = sorted(self.grid.spacing)
        return max(float(radius_mm), 0.5 * float(np.hypot(spacing[1], spacing[2])))

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices covering the mm box [lo, hi] (plus the deformation margin), or None."""
        slices = []
        for axis in (2, 1, 0):  # k, j, i
            a = self.axes[axis]
            step = self.grid.spacing[axis]
            first = int(np.floor((lo[axis] - self.margin - a[0]) / step))
            last = int(np.ceil((hi[axis] + self.margin - a[0]) / step)) + 1
            first, last = max(first, 0), min(last, a.size)
            if first >= last:
                return None
            slices.append(slice(first, last))
        return tuple(slices)  # type: ignore[return-value]

    def view(self, box: tuple[slice, slice, slice]) -> View:
        return View(self.x[box], self.y[box], self.z[box], box)

    def paint(self, shape: Shape | Iterable[Shape], tissue: str, organ: str = "none",
              within: Sequence[str] | None = None) -> None:
        """Set ``tissue``/``organ`` inside ``shape``, over voxels whose tissue is ``within``."""
        if not isinstance(shape, Shape):
            for part in shape:
                self.paint(part, tissue, organ, within)
            return
        box = self.box(shape.lo, shape.hi)
        if box is None:
            return
        mask = shape.inside(self.view(box))
        if within is not None:
            mask &= _tissue_lut(tuple(within))[self.tissue[box]]
        self.tissue[box][mask] = TISSUE_ID[tissue]
        self.organ[box][mask] = ORGAN_ID[organ]


@functools.lru_cache(maxsize=None)
def _tissue_lut(names: tuple[str, ...]) -> np.ndarray:
    lut = np.zeros(256, dtype=bool)
    lut[[TISSUE_ID[n] for n in names]] = True
    return lut
