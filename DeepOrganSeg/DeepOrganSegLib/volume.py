"""The engine's volume type and its SimpleITK I/O.

A :class:`Volume` is a voxel array plus the geometry that places it in patient space, in
SimpleITK/ITK/DICOM conventions throughout:

* ``array`` is indexed ``[k, j, i]`` (slice, row, column), the order of
  ``SimpleITK.GetArrayFromImage``; axis ``i`` is the image's first (x) axis.
* ``spacing`` is ``(si, sj, sk)`` in millimetres, ``origin`` the centre of voxel (0, 0, 0) in LPS
  millimetres, ``direction`` a 3x3 matrix whose *columns* are the i, j, k axis directions in LPS.

Every writer goes through a temporary file in the destination folder and an atomic rename, so a
crash or a kill never leaves a half-written output behind.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

__all__ = ["Volume", "read_volume", "write_volume", "write_atomically"]

_READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


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

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
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


def _read_dicom_folder(folder: Path) -> sitk.Image:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series; give a volume file or a DICOM folder")
    if len(series) > 1:
        raise InputError(
            f"{folder}: folder holds {len(series)} DICOM series; put one series per folder"
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    return reader.Execute()


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder into a :class:`Volume`."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            image = _read_dicom_folder(path)
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise InputError(
            f"{path}: cannot read image ({first_line.strip()}); "
            f"give a NIfTI, NRRD, MHA file or a DICOM folder"
        ) from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{path}: image is {image.GetDimension()}D; give one 3D volume")
    try:
        return Volume.from_sitk(image)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None


def write_atomically(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary name keeps the destination's suffixes so that format-sniffing writers
    (SimpleITK picks the format from the extension) write the right format.
    """
    path = Path(path)
    suffix = "".join(path.suffixes) or ".tmp"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``volume`` to NIfTI/NRRD/MHA (format from the suffix), atomically."""
    return write_atomically(
        path, lambda tmp: sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=compress)
    )
