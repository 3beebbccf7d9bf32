"""Reading and writing volumes with SimpleITK, safely.

Reading refuses what would exhaust memory or hang before SimpleITK allocates anything
(decompression bombs, headers announcing more voxels than the file holds, DICOM folders with
gaps); every writer goes through a temporary file in the destination folder and an atomic
rename, so a crash or a kill never leaves a half-written output behind.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .validation import MEMORY_SHARE, available_memory_bytes, check_readable_size
from .volume import Volume

__all__ = ["read_volume", "write_volume", "read_probabilities", "write_probabilities", "write_atomically",
           "remove_pending_temporaries"]

_READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")


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
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's tags, for its position
    image = reader.Execute()
    _check_slice_spacing(folder, reader)
    return image


#: Largest difference between two DICOM slice gaps, as a share of the series' median gap.
SLICE_GAP_TOLERANCE = 0.01


def _check_slice_spacing(folder: Path, reader: sitk.ImageSeriesReader) -> None:
    """Refuse a series whose slices are not evenly spaced (a slice missing or doubled, or two
    acquisitions mixed): ITK stacks the slices at their average spacing and only warns, which
    would silently put every slice after the gap at the wrong place. The slices' positions
    (Image Position Patient) along the slice normal (from Image Orientation Patient) are
    compared; a series without them (e.g. secondary captures) is stacked as ITK does."""
    count = len(reader.GetFileNames())
    position, orientation = "0020|0032", "0020|0037"
    if count < 3 or not reader.HasMetaDataKey(0, orientation) or not all(
            reader.HasMetaDataKey(n, position) for n in range(count)):
        return
    try:
        axes = np.array(reader.GetMetaData(0, orientation).split("\\"), dtype=np.float64)
        corners = np.array([reader.GetMetaData(n, position).split("\\") for n in range(count)],
                           dtype=np.float64)
    except ValueError:  # malformed tags: nothing to compare, ITK's stacking stands
        return
    if axes.shape != (6,) or corners.shape != (count, 3):
        return
    along = corners @ np.cross(axes[:3], axes[3:])
    gaps = np.diff(along)
    usual = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - usual)))
    if abs(gaps[worst] - usual) > SLICE_GAP_TOLERANCE * abs(usual):
        raise InputError(
            f"{folder}: DICOM slices are unevenly spaced: {abs(gaps[worst]):.4g} mm between "
            f"slices {worst + 1} and {worst + 2} of {count} (at {along[worst]:.4g} and "
            f"{along[worst + 1]:.4g} mm along the slice normal), {abs(usual):.4g} mm between "
            f"the others; a slice is missing or doubled, and stacking them evenly would "
            f"misplace the slices after the gap; re-export the complete series")


def _itk_reason(error: RuntimeError) -> str:
    """The informative part of a (long, multi-line) ITK exception message: its last line of
    words (not a matrix row, not MetaIO's stale ``Reason:`` errno), prefixes and source
    locations removed, first sentence only."""
    lines = [line.strip() for line in str(error).strip().splitlines()
             if re.search(r"[A-Za-z]{3}", line) and not line.strip().startswith("Reason:")]
    reason = lines[-1] if lines else "unreadable"
    reason = re.sub(r"^(\[\w+\]\s*|sitk::ERROR:\s*|ITK ERROR:\s*|\w+\(0x[0-9a-f]+\):\s*)+", "",
                    reason)
    return reason.split(". ")[0].rstrip(".:") or "unreadable"


def _corrupt_stream(path: Path, error: Exception) -> InputError:
    """The refusal of a ``.gz`` file whose stream gzip/zlib cannot decompress."""
    return InputError(f"{path}: compressed data is truncated or corrupt ({error}); "
                      f"re-copy or re-export the image")


#: Bytes of a file's start that hold a NIfTI-1 (348) or NIfTI-2 (540) header.
_NIFTI_HEAD_BYTES = 540


def _read_head(path: Path, compressed: bool) -> bytes:
    """The file's first bytes, decompressed for a ``.gz`` file: where a NIfTI header is."""
    if not compressed:
        with open(path, "rb") as stream:
            return stream.read(_NIFTI_HEAD_BYTES)
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(_NIFTI_HEAD_BYTES)
    except (EOFError, OSError, zlib.error) as error:
        raise _corrupt_stream(path, error) from None


#: Uncompressed bytes a ``.nii.gz`` stream may hold past the image its header describes.
#: Writers put nothing there; a stream that goes on far beyond is a damaged file or a
#: decompression bomb (a few MB that expand to terabytes of zeros).
_GZIP_TRAILING_BYTES = 1024 * 1024


def _check_gzip_stream(path: Path, nifti: _NiftiHeader | None) -> int:
    """Decompress a ``.gz`` file to its end, 16 MB at a time and without keeping it: ITK's
    readers accept a truncated or damaged stream and fill the missing voxels silently.

    The stream may expand to the NIfTI header's image plus :data:`_GZIP_TRAILING_BYTES`, or
    without a NIfTI header to the memory a readable image could take; a stream that goes
    further is refused as soon as it does, never expanded to its end (a decompression bomb
    would take minutes to hours). Returns the uncompressed length."""
    if nifti is not None:
        limit = nifti.data_end + _GZIP_TRAILING_BYTES
        beyond = f"while its header describes {nifti.data_end} bytes of image"
    else:
        limit = int(MEMORY_SHARE * available_memory_bytes())
        beyond = "more than could be read into the available memory"
    length = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(16 * 1024 * 1024):
                length += len(chunk)
                if length > limit:
                    raise InputError(f"{path}: compressed data expands to more than {limit} "
                                     f"bytes, {beyond} (a decompression bomb or a damaged "
                                     f"file); re-export the image")
    except (EOFError, OSError, zlib.error) as error:
        raise _corrupt_stream(path, error) from None
    return length


#: NIfTI datatype codes of real scalars: SimpleITK's name of the pixel type (for the memory
#: estimate from the header) and bytes per voxel.
_NIFTI_SCALARS = {2: ("8-bit unsigned integer", 1), 256: ("8-bit signed integer", 1),
                  4: ("16-bit signed integer", 2), 512: ("16-bit unsigned integer", 2),
                  8: ("32-bit signed integer", 4), 768: ("32-bit unsigned integer", 4),
                  1024: ("64-bit signed integer", 8), 1280: ("64-bit unsigned integer", 8),
                  16: ("32-bit float", 4), 64: ("64-bit float", 8), 1536: ("128-bit float", 16)}


#: NIfTI datatypes that are not real scalars: complex and colour.
_NIFTI_NOT_SCALAR = {32: "complex64", 1792: "complex128", 2048: "complex256", 128: "RGB",
                     2304: "RGBA"}


@dataclass(frozen=True)
class _NiftiHeader:
    """What a single-file NIfTI header says about its image, checked before ITK reads it."""

    size: tuple[int, ...]  # dim[1..rank]
    pixel_type: str  # SimpleITK's name of the voxel type
    data_end: int  # bytes the file must hold: header (or data offset) plus the voxels


def _read_nifti_header(path: Path, head: bytes) -> _NiftiHeader | None:
    """Parse and check a single-file NIfTI-1/-2 header (``head``: the file's first
    uncompressed bytes); None when the file is no single-file NIfTI (ITK decides).

    niftilib crashes or loops forever on zero sizes, and ITK misreads a voxel spacing
    (``pixdim``) that is not positive: it mirrors an axis of negative spacing (nibabel drops
    the sign, and an sform, where there is one, places the voxels without pixdim at all) and
    takes 1 mm for 0 or NaN, so the organs would come out mirrored or mis-measured. Both are
    refused here."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack_from(order + "i", head)[0] == 348 \
                and head[344:348] == b"n+1\0":
            dims = struct.unpack_from(order + "8h", head, 40)
            datatype = struct.unpack_from(order + "h", head, 70)[0]
            pixdim = struct.unpack_from(order + "8f", head, 76)
            offset, header_end = struct.unpack_from(order + "f", head, 108)[0], 352
            break
        if len(head) >= 540 and struct.unpack_from(order + "i", head)[0] == 540 \
                and head[4:8] == b"n+2\0":
            dims = struct.unpack_from(order + "8q", head, 16)
            datatype = struct.unpack_from(order + "h", head, 12)[0]
            pixdim = struct.unpack_from(order + "8d", head, 104)
            offset, header_end = struct.unpack_from(order + "q", head, 168)[0], 544
            break
    else:
        return None
    rank = dims[0]
    if not 1 <= rank <= 7 or any(n < 1 for n in dims[1: rank + 1]):
        raise InputError(f"{path}: NIfTI header gives an empty or invalid image size "
                         f"(dim {list(dims[: max(1, min(rank, 7)) + 1])}); re-export the image")
    if datatype in _NIFTI_NOT_SCALAR:  # refused anyway; their readers crashed on bad headers
        raise InputError(f"{path}: NIfTI pixel type {_NIFTI_NOT_SCALAR[datatype]} is not a real "
                         f"scalar; give a grey-level volume")
    if datatype not in _NIFTI_SCALARS:
        raise InputError(f"{path}: NIfTI header has unknown datatype {datatype}; "
                         f"re-export the image")
    spacing = pixdim[1: min(rank, 3) + 1]
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        shown = " x ".join(f"{s:g}" for s in spacing)
        raise InputError(f"{path}: NIfTI header gives voxel spacing {shown} mm (pixdim), not "
                         f"positive; ITK would mirror a negative axis and take 1 mm for 0 or "
                         f"NaN, misplacing or mis-measuring the organs; re-export the image with "
                         f"positive spacing")
    if not (math.isfinite(offset) and offset >= 0):
        raise InputError(f"{path}: NIfTI header has an invalid data offset ({offset}); "
                         f"re-export the image")
    pixel_type, voxel_bytes = _NIFTI_SCALARS[datatype]
    size = tuple(int(n) for n in dims[1: rank + 1])
    return _NiftiHeader(size, pixel_type, max(int(offset), header_end)
                        + math.prod(size) * voxel_bytes)


def _check_nifti_length(path: Path, nifti: _NiftiHeader, length: int) -> None:
    """Refuse a NIfTI file whose data (``length`` uncompressed bytes) is shorter than its
    header says: niftilib crashed on some, and ITK would fill the missing voxels."""
    if length < nifti.data_end:
        raise InputError(f"{path}: image data is shorter than its header says ({length} of "
                         f"{nifti.data_end} bytes): the file is truncated; re-copy or re-export "
                         f"it")


#: Longest token accepted in text-encoded voxel data: teem's NRRD text parser (inside ITK)
#: crashes the process on tokens of a few thousand characters.
_MAX_ASCII_TOKEN = 256


def _check_text_data(path: Path) -> None:
    """Refuse text-encoded voxel data that ITK's parsers crash on: NRRD ``encoding: ascii`` and
    MetaImage ``BinaryData = False`` whose data is not plain numbers, and MetaImage headers
    that claim text and compressed data at once."""
    with open(path, "rb") as stream:
        head = stream.read(1 << 20)
    if head.startswith(b"NRRD"):
        header, separator, attached = head.partition(b"\n\n")
        fields = dict(re.findall(rb"^([a-z ]+):=?\s*(.*?)\s*$", header, flags=re.M))
        if fields.get(b"encoding", b"").lower() not in (b"ascii", b"text", b"txt"):
            return
        data_file = fields.get(b"data file") or fields.get(b"datafile")
    elif re.match(rb"\s*(ObjectType|NDims)\s*=", head):
        header, separator, attached = head.partition(b"ElementDataFile")
        fields = dict(re.findall(rb"^\s*(\w+)\s*=\s*(.*?)\s*$", header, flags=re.M))
        if fields.get(b"BinaryData", b"True").lower() not in (b"false", b"0"):
            return
        if fields.get(b"CompressedData", b"False").lower() in (b"true", b"1"):
            raise InputError(f"{path}: MetaImage header claims text data that is compressed; "
                             f"re-export the image")
        data_file, _, attached = attached.partition(b"\n")
        data_file = data_file.strip(b" =\r")
        data_file = None if data_file.upper() == b"LOCAL" else data_file
    else:
        return
    if data_file:
        detached = path.parent / data_file.decode("utf-8", "replace")
        data = detached.read_bytes() if detached.is_file() else b""
    else:
        data = (attached if separator else b"") + path.read_bytes()[len(head):]
    if re.search(rb"[^\x09-\x0d\x20-\x7e]|\S{%d,}" % (_MAX_ASCII_TOKEN + 1), data):
        raise InputError(f"{path}: text-encoded voxel data is corrupt (not numbers separated by "
                         f"spaces); re-export the image")


def _read_file(path: Path) -> sitk.Image:
    """Read one image file, checking its header (dimension, size) before any voxel data.

    A NIfTI header is checked first, with the memory its image needs, so that a huge claim is
    refused before a compressed stream is expanded; the stream is then verified to its end."""
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes); re-export or re-copy the image")
    compressed = path.name.lower().endswith(".gz")
    nifti = _read_nifti_header(path, _read_head(path, compressed))
    if nifti is not None:
        check_readable_size(path, nifti.size, 1, nifti.pixel_type)
    length = _check_gzip_stream(path, nifti) if compressed else path.stat().st_size
    if nifti is not None:
        _check_nifti_length(path, nifti, length)
    _check_text_data(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = reader.GetSize()
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) != 3:
        raise InputError(f"{path}: image is {len(size)}D (size {tuple(size)}); give one 3D volume")
    check_readable_size(path, tuple(size), reader.GetNumberOfComponents(),
                        sitk.GetPixelIDValueAsString(reader.GetPixelID()))
    return reader.Execute()


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI/NRRD/MHA file or a DICOM series folder into a :class:`Volume`.

    Every failure is an :class:`InputError` with one line saying what is wrong: a missing path,
    an empty or unreadable file (truncated, corrupt, unknown format, a compressed stream that
    expands far beyond its image), a NIfTI header whose voxel spacing is not positive, a folder
    without exactly one DICOM series or whose slices are unevenly spaced, a non-3D or vector
    image, or one too large to hold in memory (checked from the header, before reading
    voxels)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        image = _read_dicom_folder(path) if path.is_dir() else _read_file(path)
    except RuntimeError as error:
        raise InputError(
            f"{path}: cannot read image ({_itk_reason(error)}); "
            f"give a NIfTI, NRRD, MHA file or a DICOM folder"
        ) from None
    except OSError as error:
        raise InputError(f"{path}: cannot read image ({error.strerror or error})") from None
    except MemoryError:
        raise InputError(f"{path}: not enough memory to read the image; crop or downsample it "
                         f"first") from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise InputError(f"{path}: image is {image.GetDimension()}D; give one 3D volume")
    try:
        return Volume.from_sitk(image)
    except InputError as error:
        raise InputError(f"{path}: {error}") from None
    except MemoryError:
        dims = " x ".join(str(n) for n in image.GetSize())
        raise InputError(f"{path}: not enough memory to hold the image ({dims} voxels); crop "
                         f"or downsample it first") from None


#: Temporary files of writes in progress, removed by :func:`remove_pending_temporaries`.
_PENDING_TEMPORARIES: set[Path] = set()


def write_atomically(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary name keeps the destination's suffixes so that format-sniffing writers
    (SimpleITK picks the format from the extension) write the right format. While the write
    runs the temporary file is registered, so that a hard exit can remove it
    (:func:`remove_pending_temporaries`).
    """
    path = Path(path)
    suffix = "".join(path.suffixes) or ".tmp"
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix,
                                                 dir=path.parent)
    except OSError as error:
        raise InputError(f"{path}: cannot write ({error.strerror or error}); check the folder's "
                         f"permissions and free space") from None
    os.close(descriptor)
    pending = Path(temporary)
    _PENDING_TEMPORARIES.add(pending)
    try:
        write(pending)
        os.chmod(pending, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs are shared
        os.replace(pending, path)
    except (OSError, RuntimeError) as error:  # I/O failures: full disk, quota, vanished folder
        pending.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else (
            _itk_reason(error) if isinstance(error, RuntimeError) else str(error))
        raise InputError(f"{path}: cannot write ({reason}); check the folder's permissions "
                         f"and free space") from None
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    finally:
        _PENDING_TEMPORARIES.discard(pending)
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_pending_temporaries() -> None:
    """Delete the temporary files of writes still in progress (before a hard exit)."""
    for pending in list(_PENDING_TEMPORARIES):
        pending.unlink(missing_ok=True)


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``volume`` to NIfTI/NRRD/MHA (format from the suffix), atomically."""
    return write_atomically(
        path, lambda tmp: sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=compress)
    )


def read_probabilities(path: str | os.PathLike) -> tuple[np.ndarray, Volume]:
    """Read what :func:`write_probabilities` wrote: the class probabilities ``[k, j, i, C]``
    (float32) and their grid (a :class:`Volume` holding the background channel), through the
    same checks as :func:`read_volume`. A file that is not a vector image with one component
    per class (at least two) is an :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        image = _read_file(path)
    except RuntimeError as error:
        raise InputError(f"{path}: cannot read the probabilities ({_itk_reason(error)})") from None
    except MemoryError:
        raise InputError(f"{path}: not enough memory to read the probabilities") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() < 2:
        raise InputError(f"{path}: not a probability file of segment (a 3D vector image with "
                         f"one component per class)")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)  # [k, j, i, C]
    grid = Volume(array[..., 0], image.GetSpacing(), image.GetOrigin(),
                  np.reshape(image.GetDirection(), (3, 3)))
    return array, grid


def write_probabilities(probabilities: np.ndarray, grid: Volume, path: str | os.PathLike) -> Path:
    """Write class probabilities ``[k, j, i, C]`` on ``grid``'s geometry as a compressed vector
    image, one component per class (what ``deeporganseg refine`` reads back), atomically."""
    image = grid.to_sitk(probabilities, is_vector=True)
    return write_atomically(path, lambda tmp: sitk.WriteImage(image, str(tmp), True))
