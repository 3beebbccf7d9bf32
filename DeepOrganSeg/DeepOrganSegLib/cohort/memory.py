"""Memory for a batch's workers: what the machine, or the container or Slurm job it runs in,
lets the batch use, and what one case will take, before it is read.

``--workers K`` starts a case only while the workers' memory (each worker's own, measured once
its model is loaded, plus the estimates of the cases in flight) stays within the budget; a case
that is larger than the budget alone runs when no other is in flight. A case's estimate is
learned from the cases done (:class:`CaseMemory`: the largest peak per input voxel a worker has
measured, with a margin); before the first is done it is computed from the header
(:func:`case_bytes`), an upper bound (at the model's finest task spacing, the CRF over the whole
working grid) that may run the first cases one at a time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, cast

import SimpleITK as sitk

from ..model import ModelMetadata
from ..options import SegmentationOptions
from ..validation import MEMORY_SHARE, available_memory_bytes, working_memory_bytes

__all__ = ["WORKER_BYTES", "LEARNED_MARGIN", "memory_budget_bytes", "container_memory_left",
           "resident_bytes", "peak_resident_bytes", "case_bytes", "CaseMemory"]

#: A worker before its first case: Python, torch and a model file loaded (bytes). The estimate
#: until the workers report their own (resident size after loading the model).
WORKER_BYTES = 600_000_000

#: Margin over the largest peak per input voxel measured so far (cases differ in shape and
#: task).
LEARNED_MARGIN = 1.25

#: Where a cgroup states its memory limit and use: v2 (one file each), then v1.
_CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                 ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def container_memory_left() -> int | None:
    """Bytes this process's cgroup (a container's or a Slurm job's memory limit) may still
    use, or None when there is no limit: the machine's free memory overstates it, and going
    over gets the processes killed."""
    for limit_file, usage_file in _CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return max(0, int(limit) - usage)
    return None


def memory_budget_bytes(given_gb: float | None = None) -> int:
    """The batch's memory budget: ``given_gb``, else :data:`MEMORY_SHARE` of what is
    available to this process (its container's limit included)."""
    if given_gb is not None:
        return int(given_gb * 1e9)
    left = container_memory_left()
    available = available_memory_bytes()
    return int(MEMORY_SHARE * (available if left is None else min(available, left)))


def _header(path: Path) -> tuple[int, tuple[float, ...], int]:
    """Voxels, spacing (mm) and bytes per voxel of a volume file or DICOM series folder, from
    headers only (a series: its first file, times the number of files)."""
    reader = sitk.ImageFileReader()
    slices = 1
    if path.is_dir():
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        if not names:
            raise RuntimeError("no DICOM series")
        reader.SetFileName(names[0])
        slices = len(names)
    else:
        reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size, spacing = reader.GetSize(), reader.GetSpacing()
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = next((int(word.split("-")[0]) for word in pixel.split() if word.endswith("-bit")), 32)
    return (math.prod(size) * slices, spacing[:3],
            max(1, bits // 8) * reader.GetNumberOfComponents())


def case_bytes(path: Path, metadata: ModelMetadata, options: SegmentationOptions) -> int:
    """Peak memory (bytes) of segmenting the volume at ``path``: the input, its float copy and
    labelmap; the probabilities and uncertainty kept on its grid; the working grid's arrays
    at the finest of the model's task spacings (:func:`working_memory_bytes`); the network's
    activations, up to their budget. 0 when the header cannot be read (the case will then fail
    with the reason)."""
    try:
        voxels, spacing, voxel_bytes = _header(path)
    except (RuntimeError, OSError):
        return 0
    classes = max(len(task.labels) for task in metadata.tasks) + 1
    finest = min((task.spacing_mm for task in metadata.tasks), key=math.prod)
    working = int(voxels * math.prod(spacing) / math.prod(finest)) if len(spacing) == 3 \
        else voxels
    sides = len(metadata.parameters.get("side_output_levels", ())) if options.crf else 0
    kept = 4 * classes * options.keep_probabilities + 4 * options.keep_uncertainty
    return (voxels * (voxel_bytes + 4 + 1 + kept)
            + working_memory_bytes(working, classes, sides, options.crf)
            + min(options.inference.memory_budget_bytes,
                  _activation_bytes(metadata, working, bool(sides))))


def _activation_bytes(metadata: ModelMetadata, voxels: int, side_outputs: bool) -> int:
    """The network's activations over ``voxels`` at once (what tiling bounds by the budget),
    by :func:`~DeepOrganSegLib.inference.activation_bytes` from the file's architecture."""
    from types import SimpleNamespace

    from ..inference import activation_bytes
    from ..model.network import DSNConfig

    architecture = SimpleNamespace(config=DSNConfig.from_dict(metadata.parameters))
    return activation_bytes(cast(Any, architecture), voxels, side_outputs)


def resident_bytes() -> int:
    """This process's resident memory (Linux), else :data:`WORKER_BYTES`."""
    try:
        with open("/proc/self/statm", encoding="ascii") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return WORKER_BYTES


def peak_resident_bytes(reset: bool = False) -> int | None:
    """This process's peak resident memory since it started or since the last ``reset``
    (Linux ``VmHWM``; ``reset`` starts a new peak from now), or None where unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as stream:
            peak = next(int(line.split()[1]) * 1024 for line in stream
                        if line.startswith("VmHWM:"))
        if reset:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as stream:
                stream.write("5")
        return peak
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class CaseMemory:
    """What each case of a batch will take: learned from the peaks the workers measure, else
    :func:`case_bytes`."""

    def __init__(self, metadata: ModelMetadata, options: SegmentationOptions) -> None:
        self.metadata, self.options = metadata, options
        self.bytes_per_voxel: float | None = None
        self._voxels: dict[Path, int] = {}

    def _voxel_count(self, path: Path) -> int:
        if path not in self._voxels:
            try:
                self._voxels[path] = _header(path)[0]
            except (RuntimeError, OSError):
                self._voxels[path] = 0
        return self._voxels[path]

    def estimate(self, path: Path) -> int:
        """Bytes the case at ``path`` will take above its worker's own memory."""
        if self.bytes_per_voxel is None:
            return case_bytes(path, self.metadata, self.options)
        return int(LEARNED_MARGIN * self.bytes_per_voxel * self._voxel_count(path))

    def learn(self, path: Path, peak_bytes: int | None, worker_bytes: int) -> None:
        """A worker that held ``worker_bytes`` on its own peaked at ``peak_bytes`` on the case
        at ``path``."""
        voxels = self._voxel_count(path)
        if peak_bytes is None or not voxels:
            return
        measured = max(0, peak_bytes - worker_bytes) / voxels
        self.bytes_per_voxel = max(self.bytes_per_voxel or 0.0, measured)
