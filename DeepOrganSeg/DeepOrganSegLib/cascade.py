"""The network's class probabilities on a working grid, for a single-stage or a cascade model.

A single-stage model runs once over the working grid. A cascade (Roth et al., "Hierarchical 3D
fully convolutional networks for multi-organ segmentation", arXiv 1704.06382) first runs its
stage-1 network on the whole volume at a coarse spacing (abdomen 6 mm: a whole CT in one pass),
where it sees the whole body and finds the organs coarsely. Stage 2, the full-resolution DSN,
then runs only inside stage 1's organ region plus a margin (no work on air, arms and legs), and
takes stage 1's probabilities, resampled to its grid, as extra input channels (auto-context):
it refines boundaries with the whole-body view already decided.

This is the one place that turns a volume into network probabilities: ``segment``, CRF tuning
and the benchmarks all call :func:`network_probabilities`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import numpy as np
import torch

from .model import INPUT_CHANNELS, LoadedModel, TaskSpec
from .options import InferenceSettings
from .inference import Prediction, predict
from .grid import WorkingGrid, working_grid
from .preprocess import prepare_image, probabilities_on_grid
from .progress import CancelToken, ProgressFunction, no_progress
from .volume import Volume

__all__ = ["NetworkInput", "NetworkOutput", "network_input", "network_probabilities",
           "organ_region", "prior_channels", "STAGE1_SHARE"]

#: Share of the inference progress that stage 1 takes (it runs on ~1/14 of the voxels).
STAGE1_SHARE = 0.15

Region = tuple[slice, slice, slice]


@dataclass
class NetworkOutput:
    """``prediction``: probabilities [C, k, j, i] over the whole working grid (C = the task's
    channels, background first); ``image``: the normalised image channel on that grid [k, j, i]
    (the CRF's appearance term); ``region``: where stage 2 ran (k, j, i slices of the working
    grid; the whole grid for a single-stage model). Outside it everything is background."""

    prediction: Prediction
    image: np.ndarray
    region: Region


def _scaled(progress: ProgressFunction, low: float, high: float, prefix: str) -> ProgressFunction:
    def report(stage: str, fraction: float, message: str = "") -> None:
        if stage == "inference":
            progress(stage, low + (high - low) * fraction, f"{prefix}{message}")
        else:
            progress(stage, fraction, message)
    return report


def organ_region(probabilities: torch.Tensor, coarse: WorkingGrid, grid: WorkingGrid,
                 margin_mm: float) -> Region | None:
    """The box of ``grid`` (k, j, i slices) that holds every coarse voxel where an organ wins
    (``probabilities`` [C, k, j, i] on ``coarse``, background channel first), widened by
    ``margin_mm`` on every side and clipped to ``grid``; None when no organ wins anywhere."""
    found = probabilities.argmax(0) > 0
    if not bool(found.any()):
        return None
    region = []
    for axis, array_axis in zip(range(3), (2, 1, 0)):  # i, j, k physical axes
        other = tuple(a for a in range(3) if a != array_axis)
        occupied = torch.nonzero(found.any(dim=other[1]).any(dim=other[0])).flatten()
        first, last = int(occupied.min()), int(occupied.max())
        low = coarse.origin[axis] + (first - 0.5) * coarse.spacing[axis] - margin_mm
        high = coarse.origin[axis] + (last + 0.5) * coarse.spacing[axis] + margin_mm
        start = int(np.floor((low - grid.origin[axis]) / grid.spacing[axis] + 0.5))
        stop = int(np.ceil((high - grid.origin[axis]) / grid.spacing[axis] + 0.5))
        start, stop = max(0, start), min(grid.size[axis], stop)
        region.append(slice(start, max(stop, start + 1)))
    return cast(Region, tuple(region[::-1]))


def _subgrid(grid: WorkingGrid, region: Region) -> WorkingGrid:
    """The part ``region`` (k, j, i slices) of ``grid`` as a grid of its own."""
    starts = [r.start for r in region[::-1]]
    sizes = tuple(r.stop - r.start for r in region[::-1])
    origin = tuple(o + s * d for o, s, d in zip(grid.origin, starts, grid.spacing))
    return WorkingGrid(sizes, grid.spacing, origin)


def prior_channels(probabilities: torch.Tensor, coarse: WorkingGrid, target: WorkingGrid,
                   channels: list[int], num_classes: int) -> np.ndarray:
    """Stage 1's organ probabilities (``probabilities`` [C, k, j, i] over ``channels`` on
    ``coarse``) as stage 2's ``prior`` input on ``target``: [num_classes - 1, k, j, i] float32,
    channel ``value - 1`` for label ``value``, zero for labels outside the task."""
    sampled = probabilities_on_grid(probabilities[1:], coarse, target)
    prior = np.zeros((num_classes - 1, *target.shape), dtype=np.float32)
    for row, value in enumerate(channels[1:]):
        prior[value - 1] = sampled[row].numpy()
    return prior


def _paste(prediction: Prediction, shape: tuple[int, int, int], region: Region) -> Prediction:
    """``prediction`` of ``region`` on a whole grid of ``shape``: background outside."""
    def whole(part: torch.Tensor) -> torch.Tensor:
        full = torch.zeros((part.shape[0], *shape), dtype=part.dtype)
        full[0] = 1.0
        full[(slice(None), *region)] = part
        return full
    return Prediction(whole(prediction.main), [whole(side) for side in prediction.sides],
                      prediction.channels)


@dataclass
class NetworkInput:
    """What the (stage-2) network reads: ``tensor`` [channels, k, j, i] over ``region`` of the
    working grid (the whole grid for a single-stage model), and the normalised image channel
    over the whole grid, ``image`` [k, j, i] (the CRF's appearance term)."""

    tensor: torch.Tensor
    image: np.ndarray
    region: Region


def network_input(volume: Volume, model: LoadedModel, task: TaskSpec, grid: WorkingGrid,
                  settings: InferenceSettings = InferenceSettings(), *,
                  progress: ProgressFunction = no_progress,
                  cancel: CancelToken | None = None) -> NetworkInput:
    """The input of ``model.network`` for ``volume`` on ``grid``: the prepared image channels
    for a single-stage model; for a cascade, stage 1 runs on the whole volume (progress 0 to
    :data:`STAGE1_SHARE`) and stage 2's input is its organ region with stage 1's prior."""
    metadata = model.metadata
    channels = [0] + [label.value for label in task.labels]
    own_inputs = tuple(name for name in metadata.inputs if name != "prior")
    image = prepare_image(volume, task, grid, own_inputs)
    if model.stage1 is None:
        return NetworkInput(torch.from_numpy(image), image[0],
                            cast(Region, tuple(slice(0, n) for n in grid.shape)))

    stage1 = metadata.stage1
    assert stage1 is not None  # model.stage1 is built from it (model.file.load_model)
    coarse = working_grid(volume, stage1.spacing_for(task.name))
    coarse_input = prepare_image(volume, task, coarse, stage1.inputs)
    first = predict(model.stage1, torch.from_numpy(coarse_input), channels,
                    stage1.patch_size_kji,
                    replace(settings, side_outputs=False),
                    progress=_scaled(progress, 0.0, STAGE1_SHARE, "stage 1: "), cancel=cancel)
    region = organ_region(first.main, coarse, grid, stage1.margin_mm)
    if region is None:
        progress("warning", 0.0, f"stage 1 finds no {task.name} organ in this volume; stage 2 "
                                 f"runs on all of it")
        region = cast(Region, tuple(slice(0, n) for n in grid.shape))
    inside = _subgrid(grid, region)
    prior = prior_channels(first.main, coarse, inside, channels, metadata.num_classes)
    own = image[(slice(None), *region)]
    parts, used = [], 0
    for name in metadata.inputs:
        if name == "prior":
            parts.append(prior)
        else:
            count = INPUT_CHANNELS[name]
            assert count is not None  # only "prior" has no fixed count
            parts.append(own[used:used + count])
            used += count
    stacked = torch.from_numpy(np.concatenate(parts))
    # a copy of the image channel, so that the position channels over the whole grid go now
    return NetworkInput(stacked, image[0].copy(), region)


def network_probabilities(volume: Volume, model: LoadedModel, task: TaskSpec,
                          grid: WorkingGrid, settings: InferenceSettings = InferenceSettings(),
                          *, progress: ProgressFunction = no_progress,
                          cancel: CancelToken | None = None) -> NetworkOutput:
    """Class probabilities of ``volume`` on the working ``grid`` for ``task``: stage 1 on the
    whole volume and stage 2 in its organ region for a cascade, one pass otherwise."""
    channels = [0] + [label.value for label in task.labels]
    inputs = network_input(volume, model, task, grid, settings, progress=progress, cancel=cancel)
    cascade = model.stage1 is not None
    second = predict(model.network, inputs.tensor, channels, model.metadata.patch_size_kji,
                     settings, progress=_scaled(progress, STAGE1_SHARE, 1.0, "stage 2: ")
                     if cascade else progress, cancel=cancel)
    prediction = _paste(second, grid.shape, inputs.region) if cascade else second
    return NetworkOutput(prediction, inputs.image, inputs.region)
