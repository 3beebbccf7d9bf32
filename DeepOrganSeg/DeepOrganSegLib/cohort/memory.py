"""Memory for a batch's workers: what the machine, or the container or Slurm job it runs in,
lets the batch use, and what one case will take, estimated from its header before it is read.

``--workers K`` starts a case only while the workers' memory (each worker's own, measured once
its model is loaded, plus the estimates of the cases in flight) stays within the budget; a case
that is larger than the budget alone runs when no other is in flight.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import SimpleITK as sitk

from ..model import ModelMetadata
from ..options import SegmentationOptions
from ..validation import MEMORY_SHARE, available_memory_bytes, working_memory_bytes

__all__ = ["WORKER_BYTES", "memory_budget_bytes", "container_memory_left", "case_bytes"]

#: A worker before its first case: Python, torch and a model file loaded (bytes). The estimate
#: until the workers report their own (resident size after loading the model).
WORKER_BYTES = 600_000_000

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
