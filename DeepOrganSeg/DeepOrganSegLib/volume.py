"""The engine's volume type: a voxel array plus the geometry that places it in patient space.

SimpleITK/ITK/DICOM conventions throughout:

* ``array`` is indexed ``[k, j, i]`` (slice, row, column), the order of
  ``SimpleITK.GetArrayFromImage``; axis ``i`` is the image's first (x) axis.
* ``spacing`` is ``(si, sj, sk)`` in millimetres, ``origin`` the centre of voxel (0, 0, 0) in LPS
  millimetres, ``direction`` a 3x3 matrix whose *columns* are the i, j, k axis directions in LPS.

Reading and writing files: :mod:`.volume_io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from .errors import InputError

__all__ = ["Volume", "grid_differences"]


@dataclass
class Volume:
    """A 3D scalar image with its patient-space geometry (LPS, millimetres)."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(f"expected a 3D volume, got an array of shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def size(self) -> tuple[int, int, int]:
        """Number of voxels along (i, j, k), SimpleITK's ``GetSize`` order."""
        k, j, i = self.array.shape
        return (i, j, k)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm³)."""
        return float(np.prod(self.spacing)) / 1000.0

    def with_array(self, array: np.ndarray) -> "Volume":
        """A volume on the same grid holding ``array``."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.array.shape}")
        return replace(self, array=array, direction=self.direction.copy())

    def index_to_physical(self, ijk: np.ndarray) -> np.ndarray:
        """Map continuous (i, j, k) indices, shape (..., 3), to LPS millimetres."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T

    def to_sitk(self, array: np.ndarray | None = None, is_vector: bool = False) -> sitk.Image:
        """This volume as a SimpleITK image, or ``array`` ([k, j, i], or [k, j, i, C] with
        ``is_vector``) on this volume's geometry."""
        image = sitk.GetImageFromArray(self.array if array is None else array, isVector=is_vector)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction.flatten().tolist())
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Volume":
        if image.GetDimension() != 3:
            raise InputError(
                f"expected a 3D image, got {image.GetDimension()}D; give one 3D volume"
            )
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(
                f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components "
                "per voxel (vector/RGB); extract one channel first"
            )
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=np.array(image.GetDirection()).reshape(3, 3),
        )


def grid_differences(volume: Volume, reference: Volume, *, spacing_mm: float,
                     origin_mm: float, direction: float, spacing_rtol: float = 1e-5
                     ) -> list[str]:
    """How ``volume``'s grid differs from ``reference``'s beyond the tolerances (``np.allclose``:
    absolute mm for spacing and origin, unitless for the direction matrix, plus numpy's relative
    1e-5, or ``spacing_rtol`` for the spacing); [] when it is the same grid."""
    problems = []
    if volume.array.shape != reference.array.shape:
        problems.append(f"size {volume.size} != {reference.size}")
    if not np.allclose(volume.spacing, reference.spacing, rtol=spacing_rtol, atol=spacing_mm):
        problems.append(f"spacing {volume.spacing} != {reference.spacing}")
    if not np.allclose(volume.origin, reference.origin, atol=origin_mm):
        problems.append(f"origin {volume.origin} != {reference.origin}")
    if not np.allclose(volume.direction, reference.direction, atol=direction):
        problems.append("direction differs")
    return problems
