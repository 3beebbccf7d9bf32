"""Sanity checks on input volumes that every entry point shares (CLI, engine API, Slicer Logic).

Each check raises :class:`~DeepOrganSegLib.errors.InputError` with one line that says what is
wrong, with the numbers, and what to do about it; :func:`geometry_warnings` and
:func:`task_warnings` return the doubts that should not stop a run (a thin slab; the image looks
like another modality than the task expects).

The order of the checks follows the data: the file header (before any voxel is read), the grid
geometry, the intensities, and the memory the working grid of a task will need.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .model import TaskSpec
    from .volume import Volume

__all__ = ["available_memory_bytes", "check_readable_size", "check_geometry",
           "check_intensities", "check_volume", "guess_modality", "task_warnings",
           "working_memory_bytes",
           "check_working_memory", "geometry_warnings", "MAX_ANISOTROPY", "MIN_VOXELS_PER_AXIS",
           "THIN_SLAB_VOXELS", "THIN_SLAB_MM", "LABELMAP_MAX_VALUES",
           "MEMORY_SHARE", "CT_AIR_HU", "MODALITY_PERCENTILE"]

#: Largest ratio of the coarsest to the finest voxel spacing that is segmented.
MAX_ANISOTROPY = 50.0
#: A 3D network needs some extent along every axis: fewer voxels is a 2D image or a single voxel.
MIN_VOXELS_PER_AXIS = 2
#: A volume with fewer voxels than this along an axis, or an extent (voxels x spacing) below
#: :data:`THIN_SLAB_MM`, is a thin slab (2-3 slices of 5-25 mm are the common case). It is
#: segmented, with a warning: across it the 3D network sees a few samples, or less than an organ
#: spans (liver, kidneys, heart and brain span 80-200 mm), and air padding beyond, so organs may
#: be missed or cut short. Both limits are heuristics.
THIN_SLAB_VOXELS = 8
#: The smallest extent along an axis (mm) that is not a thin slab; see :data:`THIN_SLAB_VOXELS`.
THIN_SLAB_MM = 50.0
#: An integer image with at most this many distinct non-negative values is taken for a labelmap.
LABELMAP_MAX_VALUES = 10
#: Tolerance on the direction matrix: |cos(angle)| between axes, and |1 - |column||.
DIRECTION_TOLERANCE = 1e-3
#: Share of the available memory a run may plan to use.
MEMORY_SHARE = 0.8
#: Voxels sampled (evenly) for the statistics of large images.
_SAMPLE_VOXELS = 2_000_000
#: Below this value a CT voxel is air (Hounsfield units): air is about -1000 HU and aerated lung
#: -900 to -700, while fat is about -100, water 0 and soft tissue 20 to 80; -500 is halfway
#: between air and water, the line the engine also draws between patient and air in CT. MR
#: intensities are non-negative (magnitude images, any scale), so no MR voxel lies below it.
CT_AIR_HU = -500.0
#: The percentile of the (sampled) voxel values that decides the modality, in percent: a CT has
#: at least this share of its voxels at air (the air around the patient, the lungs, bowel gas,
#: the padding outside the reconstruction circle), even when its field of view is cropped close
#: to the body, which a 5th percentile would miss; an MR has none.
MODALITY_PERCENTILE = 1.0


def available_memory_bytes() -> int:
    """Memory the process can still use: Linux ``MemAvailable`` (else total physical memory),
    and no more than its address-space limit leaves (``ulimit -v``)."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 8 * 1024**3
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as stream:
                used = int(stream.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            available = min(available, max(0, limit - used))
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return available


def _gb(count: float) -> str:
    return f"{count / 1e9:.1f} GB"


def _bytes_per_component(pixel_type: str) -> int:
    """Bytes of one component from SimpleITK's pixel type name, e.g. '16-bit signed integer'."""
    match = re.search(r"(\d+)-bit", pixel_type)
    bits = int(match.group(1)) if match else 64
    return max(1, bits // 8) * (2 if pixel_type.startswith("complex") else 1)


def check_readable_size(path: str | os.PathLike, size: Sequence[int], components: int,
                        pixel_type: str, available: int | None = None) -> None:
    """Refuse, from the header alone, an image that is empty or would not fit in memory.

    Reading allocates the whole image and the engine keeps a float32 copy and a uint8
    labelmap beside it; a header that claims more than the available memory (a corrupt header
    or a scan far too large) is refused before any allocation."""
    path = Path(path)
    if any(n <= 0 for n in size):
        raise InputError(f"{path}: header gives an empty image (size {tuple(size)}); "
                         f"re-export the image")
    voxels = math.prod(int(n) for n in size)
    needed = voxels * (components * _bytes_per_component(pixel_type) + 4 + 1)
    available = available_memory_bytes() if available is None else available
    if needed > MEMORY_SHARE * available:
        dims = " x ".join(str(n) for n in size)
        raise InputError(f"{path}: image of {dims} voxels ({pixel_type}) needs about "
                         f"{_gb(needed)} of memory to read, {_gb(available)} is available; "
                         f"crop or downsample it first")


def check_geometry(volume: Volume) -> None:
    """Grid size, voxel spacing and direction matrix the working-grid resampling can trust."""
    size = volume.size
    thin = [axis for axis, n in zip("ijk", size) if n < MIN_VOXELS_PER_AXIS]
    if thin:
        dims = " x ".join(str(n) for n in size)
        what = "a single voxel" if max(size) < MIN_VOXELS_PER_AXIS else (
            f"a single slice along {', '.join(thin)}")
        raise InputError(f"volume of {dims} voxels is {what}; give a 3D volume with at least "
                         f"{MIN_VOXELS_PER_AXIS} voxels along every axis")
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or spacing.min() <= 0:
        raise InputError(f"voxel spacing {volume.spacing} mm is not positive and finite; "
                         f"fix the image header")
    ratio = spacing.max() / spacing.min()
    if ratio > MAX_ANISOTROPY:
        shown = " x ".join(f"{s:g}" for s in spacing)
        raise InputError(f"voxel spacing {shown} mm is too anisotropic ({ratio:.0f}:1, at most "
                         f"{MAX_ANISOTROPY:.0f}:1 is supported); resample the image to more "
                         f"isotropic voxels first")
    direction = np.asarray(volume.direction, dtype=np.float64)
    if not np.all(np.isfinite(direction)):
        raise InputError("direction matrix holds NaN or Inf; fix the image header")
    if abs(np.linalg.det(direction)) < 1e-6:
        raise InputError("direction matrix is singular (two image axes point the same way or "
                         "one is zero); fix the image header")
    norms = np.linalg.norm(direction, axis=0)
    unit = direction / norms
    cosines = np.abs(unit.T @ unit - np.eye(3))
    if cosines.max() > DIRECTION_TOLERANCE or np.abs(norms - 1).max() > DIRECTION_TOLERANCE:
        angle = math.degrees(math.acos(min(1.0, float(cosines.max()))))
        raise InputError(f"direction matrix is not orthonormal (image axes at {angle:.1f} "
                         f"degrees instead of 90, i.e. a sheared grid); resample the image onto "
                         f"an orthogonal grid first")


def _sample(array: np.ndarray) -> np.ndarray:
    step = max(1, array.size // _SAMPLE_VOXELS)
    return array.reshape(-1)[::step]


def check_intensities(volume: Volume) -> None:
    """Voxel values that can be segmented: real numbers, finite, not constant, not labels."""
    array = volume.array
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array) \
            or array.dtype == np.bool_:
        raise InputError(f"pixel type {array.dtype} is not a real scalar; convert the image "
                         f"to an integer or float type")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InputError(f"the image holds {bad} NaN or Inf voxels; replace them (e.g. with "
                             f"the background value) first")
    low, high = array.min(), array.max()
    if low == high:
        raise InputError(f"the image is constant (every voxel is {low.item():g}); "
                         f"give the scan itself, not an empty or blank image")
    sample = _sample(array)
    if low >= 0 and high <= 255 and (np.issubdtype(array.dtype, np.integer)
                                     or np.all(np.mod(sample, 1) == 0)):
        values = np.unique(sample)
        if len(values) <= LABELMAP_MAX_VALUES:
            shown = ", ".join(f"{v:g}" for v in values.tolist())
            raise InputError(f"the image looks like a labelmap (only the values {shown}); "
                             f"give the scan (CT or MR) that was segmented instead")


def check_volume(volume: Volume) -> None:
    """All checks that do not depend on the task: geometry, then intensities."""
    check_geometry(volume)
    check_intensities(volume)


def geometry_warnings(volume: Volume) -> list[str]:
    """Doubts about the grid that should not stop the run, one line each: a thin slab (fewer
    than :data:`THIN_SLAB_VOXELS` voxels or :data:`THIN_SLAB_MM` along an axis), whose result
    is worth checking."""
    thin = [f"only {n} x {s:g} mm = {n * s:g} mm along {axis}"
            for axis, n, s in zip("ijk", volume.size, volume.spacing)
            if n < THIN_SLAB_VOXELS or n * s < THIN_SLAB_MM]
    if not thin:
        return []
    return [f"the volume is a thin slab ({', '.join(thin)}): the 3D model sees little anatomy "
            f"across it, so organs may be missed or cut short; check the result"]


def _low_and_high(volume: Volume) -> tuple[float, float]:
    """The :data:`MODALITY_PERCENTILE` and 99th percentiles of the sampled voxel values."""
    sample = _sample(volume.array).astype(np.float64)
    low, high = np.percentile(sample, [MODALITY_PERCENTILE, 99])
    return float(low), float(high)


def _modality_of(low: float) -> str:
    return "CT" if low < CT_AIR_HU else "MR"


def guess_modality(volume: Volume) -> str:
    """'CT' when the :data:`MODALITY_PERCENTILE` of the voxel values lies below
    :data:`CT_AIR_HU` (at least 1 % of the voxels are air in Hounsfield units), else 'MR'.

    The one modality guess of the engine: task ``auto`` picks a task by it when the body-part
    classifier is not installed, and :func:`task_warnings` warns exactly when it differs from
    the task's modality."""
    return _modality_of(_low_and_high(volume)[0])


def task_warnings(volume: Volume, task: TaskSpec) -> list[str]:
    """Doubts about the image for ``task`` that should not stop the run, one line each.

    CT images reach air (about -1000 HU) at their low percentiles; MR intensities are
    non-negative and arbitrary. An image whose :func:`guess_modality` is not the task's
    modality probably is another modality than the task expects, or a CT without its rescale
    slope/intercept."""
    low, high = _low_and_high(volume)
    modality = _modality_of(low)
    seen = f"the intensities ({low:.0f} to {high:.0f} at the 1st/99th percentiles)"
    if task.modality == "CT" and modality != "CT":
        return [f"{seen} do not look like CT in Hounsfield units (air at about -1000) but task "
                f"{task.name} expects CT; check the task and the image's rescale "
                f"slope/intercept"]
    if task.modality == "MR" and modality != "MR":
        return [f"{seen} look like CT in Hounsfield units but task {task.name} expects MR; "
                f"check the task"]
    return []


def working_memory_bytes(voxels: int, channels: int, side_outputs: int, crf: bool) -> int:
    """Peak memory (bytes) of the whole-grid arrays of one run on a working grid of ``voxels``.

    Counted per voxel: the normalised image and the tile blending weights (float32 each), the
    class probabilities of the main and side outputs (``channels`` float32 each), and for the
    dense CRF its unary, messages and lattice (about 8 float32 per class plus 64 bytes).
    The network's own activations are bounded separately by tiling (``memory_budget_bytes``)."""
    per_voxel = 4 + 4 + 4 * channels * (1 + side_outputs)
    if crf:
        per_voxel += 32 * channels + 64
    return int(voxels) * per_voxel


def check_working_memory(grid_size: Sequence[int], spacing_mm: Sequence[float], channels: int,
                         side_outputs: int, crf: bool, max_voxels: int,
                         available: int | None = None) -> None:
    """Refuse, with the numbers, a working grid over ``max_voxels`` or over the memory."""
    voxels = math.prod(int(n) for n in grid_size)
    dims = " x ".join(str(int(n)) for n in grid_size)
    spacing = " x ".join(f"{s:g}" for s in spacing_mm)
    if voxels > max_voxels:
        raise InputError(f"the volume covers {dims} voxels at {spacing} mm "
                         f"({voxels / 1e6:.0f} M > {max_voxels / 1e6:.0f} M allowed); "
                         f"crop it to the region of interest")
    needed = working_memory_bytes(voxels, channels, side_outputs, crf)
    available = available_memory_bytes() if available is None else available
    if needed > MEMORY_SHARE * available:
        raise InputError(f"segmenting this volume needs about {_gb(needed)} of memory (working "
                         f"grid {dims} voxels at {spacing} mm, {channels} classes"
                         f"{', CRF' if crf else ''}), {_gb(available)} is available; crop it to "
                         f"the region of interest{' or run without the CRF' if crf else ''}")
