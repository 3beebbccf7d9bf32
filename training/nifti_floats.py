"""Non-finite voxels of a NIfTI file, counted from its raw bytes.

ITK (and so SimpleITK and :func:`DeepOrganSegLib.volume_io.read_volume`) reads a NaN or an
infinity stored in a NIfTI image as 0, so a data set check that looks at what ITK returns
cannot see them, and a network would train on zeros that the file does not hold. This module
reads the NIfTI-1 or NIfTI-2 header itself (byte order from ``sizeof_hdr``), and, for float
data, streams the voxels in blocks and counts the ones that are not finite.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["is_nifti", "nifti_nonfinite_count"]

#: NIfTI ``datatype`` codes of real float voxels and their numpy kinds.
_FLOAT_TYPES = {16: "f4", 64: "f8"}

#: Voxels read at a time (bytes = this times the voxel's size).
_BLOCK_VOXELS = 1 << 22


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_nonfinite_count(path: str | Path) -> int | None:
    """NaN and infinite voxels in the NIfTI file ``path``; 0 for integer data, None where the
    header is not one this reader knows (then the caller's own check stands)."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rb") as stream:  # type: ignore[operator]
        header = _header(stream)
        if header is None:
            return None
        order, datatype, voxels, offset, read_so_far = header
        if datatype not in _FLOAT_TYPES:
            return 0
        stream.read(max(0, offset - read_so_far))
        dtype = np.dtype(order + _FLOAT_TYPES[datatype])
        count, left = 0, voxels
        while left > 0:
            block = stream.read(min(left, _BLOCK_VOXELS) * dtype.itemsize)
            if not block:
                break
            values = np.frombuffer(block[:len(block) // dtype.itemsize * dtype.itemsize], dtype)
            count += int(np.count_nonzero(~np.isfinite(values)))
            left -= values.size
        return count


def _header(stream: BinaryIO) -> tuple[str, int, int, int, int] | None:
    """(byte order, datatype, voxel count, data offset, bytes read) from a NIfTI-1 (348-byte)
    or NIfTI-2 (540-byte) header, or None if ``sizeof_hdr`` is neither in either order."""
    first = stream.read(4)
    if len(first) < 4:
        return None
    for order in "<>":
        size = struct.unpack(order + "i", first)[0]
        if size == 348:
            rest = stream.read(344)
            if len(rest) < 344:
                return None
            raw = first + rest
            dims = struct.unpack(order + "8h", raw[40:56])
            datatype = struct.unpack(order + "h", raw[70:72])[0]
            offset = int(struct.unpack(order + "f", raw[108:112])[0])
            return order, datatype, _voxels(dims), max(offset, 352), 348
        if size == 540:
            rest = stream.read(536)
            if len(rest) < 536:
                return None
            raw = first + rest
            datatype = struct.unpack(order + "h", raw[12:14])[0]
            dims = struct.unpack(order + "8q", raw[16:80])
            offset = struct.unpack(order + "q", raw[168:176])[0]
            return order, datatype, _voxels(dims), max(int(offset), 544), 540
    return None


def _voxels(dims: tuple[int, ...]) -> int:
    """Voxels the NIfTI ``dim`` field declares (``dim[0]`` dimensions, each at least 1)."""
    rank = max(1, min(int(dims[0]), 7))
    return int(np.prod([max(1, int(d)) for d in dims[1:rank + 1]], dtype=np.int64))
