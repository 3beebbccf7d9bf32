"""The working grid's class probabilities back on the input's exact voxel grid, fast.

Trilinear sampling of all C probability channels at every input voxel centre is the slow way:
21.7 s of a 39.5 s run for the 78 M voxels of a 512 x 512 x 300 CT (issue #31). Yet most input
voxels lie in a working-grid cell whose 8 corners all have the same argmax, and there the answer
is known without sampling C channels: the interpolated probabilities are a convex combination of
the corners', each corner's winner beats every other label at that corner, so it beats them in the
combination too, and the largest interpolated probability is the interpolated largest probability.
So :func:`labels_on_input_grid` looks each input voxel's cell up (a uint8 gather), interpolates one
channel (the largest probability) for the confidence, and samples all C channels only in the cells
where labels meet. That is exact, not an approximation: labels equal those of full trilinear
sampling up to float rounding at ties.

Interpolating axis by axis needs every input axis to run along one working-grid axis: a direction
matrix that is a signed permutation (LPS, RAS, flipped or permuted axes: what scanners write for
axial, coronal and sagittal series). An oblique input takes the general trilinear path,
:func:`.preprocess.resample_probabilities_to`, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .grid import WorkingGrid, iter_slabs
from .postprocess import normalised_entropy
from .preprocess import resample_probabilities_to
from .progress import CancelToken, ProgressFunction
from .volume import Volume

__all__ = ["InputGridResult", "labels_on_input_grid"]

_AXIS_TOLERANCE = 1e-5
"""Largest off-axis direction cosine still taken as axis-aligned: at 512 voxels of 1 mm it moves a
sample by 5 µm, while scanners' rounding of axis-aligned directions is about 1e-7."""

_MIXED = 255
"""Cell label of a working-grid cell whose corners disagree (label values stay below 128:
:data:`.strokes.REMOVE_OFFSET`)."""

_SLAB_VOXELS = 16_000_000
"""Input voxels per slab when only labels and confidence are made (about 100 MB of temporaries)."""

_SLAB_VALUES = 4_000_000
"""Input voxels x channels per slab when all probabilities are sampled."""


@dataclass
class InputGridResult:
    """Arrays on the input grid (k, j, i): ``labels`` (uint8 label values), ``confidence`` (the
    largest class probability, uint8 0-255), and where asked ``probabilities`` [k, j, i, C]
    (float32) and ``uncertainty`` (normalised entropy, float32 0-1)."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


@dataclass(frozen=True)
class _AxisMap:
    """Where the input voxels along one input array axis sample the working grid: the working
    array axis they run along, and per input index the lower corner (in the working array padded
    by one edge voxel at the end, so that ``lower + 1`` always exists) and the upper corner's
    linear weight (0 to 1; coordinates beyond the grid clamp to its edge, as padding "border")."""

    working_axis: int
    lower: torch.Tensor
    weight: torch.Tensor


def labels_on_input_grid(probabilities: torch.Tensor, grid: WorkingGrid, volume: Volume,
                         channels: list[int], *, keep_probabilities: bool = False,
                         keep_uncertainty: bool = False,
                         progress: ProgressFunction | None = None,
                         cancel: CancelToken | None = None) -> InputGridResult:
    """The argmax label (``channels[c]`` for channel c), its probability and, where asked, all
    probabilities and their entropy at ``volume``'s voxel centres, from working-grid
    ``probabilities`` [C, k, j, i], slab by slab. Progress goes to stage ``postprocess`` (0 to
    0.8); ``cancel`` is polled between slabs."""
    maps = _axis_maps(grid, volume)
    shape = volume.array.shape
    result = InputGridResult(
        labels=np.zeros(shape, np.uint8), confidence=np.zeros(shape, np.uint8),
        probabilities=np.zeros(shape + (len(channels),), np.float32) if keep_probabilities
        else None,
        uncertainty=np.zeros(shape, np.float32) if keep_uncertainty else None)
    lookup = torch.tensor(channels, dtype=torch.uint8)
    probabilities = probabilities.float().cpu()
    slabs: _EveryChannel | _ByCell
    if maps is None or keep_probabilities or keep_uncertainty:
        slabs = _EveryChannel(probabilities, grid, volume, maps, lookup, result)
    else:
        slabs = _ByCell(probabilities, maps, lookup)
    depth, rows, columns = shape
    budget = _SLAB_VOXELS if slabs.per_voxel_only else _SLAB_VALUES // len(channels)
    for slab in iter_slabs(depth, rows * columns, max(budget, rows * columns)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        labels, confidence = slabs(slab)
        result.labels[slab] = labels.numpy()
        result.confidence[slab] = (confidence * 255).round_().to(torch.uint8).numpy()
        if progress is not None:
            progress("postprocess", 0.8 * slab.stop / depth, "resampling to the input grid")
    return result


class _EveryChannel:
    """All C channels sampled at every input voxel: axis by axis where the input is axis-aligned
    (``maps``), by the general trilinear path where it is oblique; fills the result's
    probabilities and uncertainty where it has them."""

    per_voxel_only = False

    def __init__(self, probabilities: torch.Tensor, grid: WorkingGrid, volume: Volume,
                 maps: list[_AxisMap] | None, lookup: torch.Tensor,
                 result: InputGridResult) -> None:
        self.probabilities, self.grid, self.volume = probabilities, grid, volume
        self.maps, self.lookup, self.result = maps, lookup, result
        self.padded = None if maps is None else _padded(probabilities, maps)

    def __call__(self, slab: slice) -> tuple[torch.Tensor, torch.Tensor]:
        if self.maps is None or self.padded is None:
            sampled = resample_probabilities_to(self.probabilities, self.grid, self.volume, slab)
        else:
            sampled = _interpolate(self.padded, self.maps, slab, first_axis=1)
        top, winner = sampled.max(dim=0)
        if self.result.probabilities is not None:
            self.result.probabilities[slab] = sampled.permute(1, 2, 3, 0).numpy()
        if self.result.uncertainty is not None:
            self.result.uncertainty[slab] = normalised_entropy(sampled.numpy(), axis=0)
        return self.lookup[winner], top


class _ByCell:
    """Labels and confidence only: each input voxel's cell label, the interpolated largest
    probability, and all C channels sampled only where a cell's corners disagree."""

    per_voxel_only = True

    def __init__(self, probabilities: torch.Tensor, maps: list[_AxisMap],
                 lookup: torch.Tensor) -> None:
        largest, winner = probabilities.max(dim=0)
        self.maps, self.lookup = maps, lookup
        self.padded = _padded(probabilities, maps)
        self.cells = _cell_labels(_padded(lookup[winner], maps))
        self.largest = _padded(largest, maps)

    def __call__(self, slab: slice) -> tuple[torch.Tensor, torch.Tensor]:
        labels = self.cells
        for axis, axis_map in enumerate(self.maps):
            labels = labels.index_select(axis, axis_map.lower[slab] if axis == 0
                                         else axis_map.lower)
        confidence = _interpolate(self.largest, self.maps, slab, first_axis=0)
        mixed = (labels == _MIXED).nonzero()
        if len(mixed):
            top, winner = _sample_points(self.padded, self.maps, slab, mixed).max(dim=0)
            where = mixed.unbind(1)
            labels[where] = self.lookup[winner]
            confidence[where] = top
        return labels, confidence


def _axis_maps(grid: WorkingGrid, volume: Volume) -> list[_AxisMap] | None:
    """One :class:`_AxisMap` per input array axis (k, j, i), or None for an oblique input."""
    direction = np.asarray(volume.direction, dtype=np.float64)
    maps = []
    for array_axis in range(3):
        index_axis = 2 - array_axis  # array (k, j, i) = ITK index (2, 1, 0)
        column = direction[:, index_axis]
        physical_axis = int(np.argmax(np.abs(column)))
        off_axis = np.delete(column, physical_axis)
        if np.any(np.abs(off_axis) > _AXIS_TOLERANCE):
            return None
        steps = np.arange(volume.size[index_axis], dtype=np.float64)
        position = volume.origin[physical_axis] + column[physical_axis] * volume.spacing[
            index_axis] * steps
        size = grid.size[physical_axis]
        coordinate = np.clip((position - grid.origin[physical_axis]) / grid.spacing[physical_axis],
                             0.0, size - 1)
        lower = np.minimum(np.floor(coordinate), size - 1)
        maps.append(_AxisMap(working_axis=2 - physical_axis,
                             lower=torch.from_numpy(lower.astype(np.int64)),
                             weight=torch.from_numpy((coordinate - lower).astype(np.float32))))
    if len({m.working_axis for m in maps}) != 3:  # two input axes along one working axis
        return None
    return maps


def _padded(values: torch.Tensor, maps: list[_AxisMap]) -> torch.Tensor:
    """``values`` ([k, j, i] or [C, k, j, i] on the working grid) with its grid axes in the
    input's axis order and one edge voxel repeated at the end of each."""
    leading = values.ndim - 3
    order = list(range(leading)) + [leading + m.working_axis for m in maps]
    values = values.permute(order)
    for axis in range(leading, values.ndim):
        values = torch.cat([values, values.narrow(axis, values.shape[axis] - 1, 1)], dim=axis)
    return values.contiguous()


def _cell_labels(labels: torch.Tensor) -> torch.Tensor:
    """Per cell of padded ``labels`` [k, j, i] (the cell spanning corners n to n + 1): the label
    of all 8 corners where they agree, :data:`_MIXED` where they do not."""
    corner = labels[:-1, :-1, :-1]
    agree = torch.ones_like(corner, dtype=torch.bool)
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                if dk or dj or di:
                    agree &= labels[dk:labels.shape[0] - 1 + dk, dj:labels.shape[1] - 1 + dj,
                                    di:labels.shape[2] - 1 + di] == corner
    return torch.where(agree, corner, torch.tensor(_MIXED, dtype=torch.uint8))


def _interpolate(padded: torch.Tensor, maps: list[_AxisMap], slab: slice,
                 first_axis: int) -> torch.Tensor:
    """Linear interpolation of ``padded`` along its last three axes (from ``first_axis``) at the
    input voxels of k-slices ``slab``, one axis after the other (trilinear, separably)."""
    values = padded
    for offset, axis_map in enumerate(maps):
        lower, weight = axis_map.lower, axis_map.weight
        if offset == 0:
            lower, weight = lower[slab], weight[slab]
        axis = first_axis + offset
        low = values.index_select(axis, lower)
        high = values.index_select(axis, lower + 1)
        view = [1] * values.ndim
        view[axis] = len(weight)
        values = low.lerp_(high, weight.view(view))
    return values


def _sample_points(padded: torch.Tensor, maps: list[_AxisMap], slab: slice,
                   points: torch.Tensor) -> torch.Tensor:
    """All C channels of ``padded`` [C, k, j, i] trilinearly interpolated at ``points`` [P, 3]
    (input indices within the slab): [C, P]."""
    lowers, weights = [], []
    for axis, axis_map in enumerate(maps):
        index = points[:, axis] + (slab.start if axis == 0 else 0)
        lowers.append(axis_map.lower[index])
        weights.append(axis_map.weight[index])
    strides = padded.stride()[1:]
    flat = padded.reshape(len(padded), -1)
    sampled = torch.zeros(len(padded), len(points))
    for corner in range(8):
        offsets = [(corner >> shift) & 1 for shift in (2, 1, 0)]
        index = torch.zeros(len(points), dtype=torch.int64)
        for lower, offset, stride in zip(lowers, offsets, strides):
            index += (lower + offset) * stride
        weight = torch.ones(len(points))
        for axis_weight, offset in zip(weights, offsets):
            weight = weight * (axis_weight if offset else 1 - axis_weight)
        sampled.add_(flat.index_select(1, index) * weight)
    return sampled
