"""The segmentation pipeline: input volume + model -> labelmap on the input's exact grid.

load -> working grid (canonical orientation, task spacing) -> normalise -> network (whole or
tiled) -> certain background where the input is blank (masked-out, zero-filled) -> optional
dense CRF on the fused main/side outputs -> probabilities sampled back at the
input's voxel centres, slab by slab (bounded memory) -> argmax -> per-organ clean-up -> stats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .bodypart.profile import AutoChoice, auto_choice
from .crf.meanfield import fuse_side_outputs, refine_network_probabilities
from .crf.parameters import CRFParameters
from .grid import WorkingGrid, working_grid
from .model import LabelSpec, LoadedModel, ModelMetadata, TaskSpec
from .errors import InputError
from .cascade import network_probabilities
from .inference import resolve_device
from .options import SegmentationOptions
from .postprocess import OrganStatistics, fill_holes, keep_largest_component, organ_statistics
from .input_grid import labels_on_input_grid
from .preprocess import blank_background
from .progress import CancelToken, ProgressFunction, no_progress
from .validation import (check_volume, check_working_memory, geometry_warnings, guess_modality,
                         task_warnings)
from .volume import Volume

__all__ = ["SegmentationResult", "segment_volume", "segment_with_fallback", "StagedProgress",
]

#: Share of the overall progress bar each stage takes.
STAGE_WEIGHTS = {"load": 0.05, "preprocess": 0.10, "inference": 0.55, "crf": 0.15,
                 "postprocess": 0.10, "write": 0.05}


class StagedProgress:
    """Turns per-stage fractions into one overall fraction and forwards them."""

    def __init__(self, callback: ProgressFunction, weights: dict[str, float] = STAGE_WEIGHTS):
        self.callback, self.weights = callback, weights
        self.stages = list(weights)

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if stage not in self.weights:
            self.callback(stage, fraction, message)
            return
        done = sum(self.weights[s] for s in self.stages[: self.stages.index(stage)])
        overall = (done + self.weights[stage] * min(max(fraction, 0.0), 1.0)) / sum(
            self.weights.values())
        self.callback(stage, round(overall, 4), message)


@dataclass
class SegmentationResult:
    labels: Volume
    task: TaskSpec
    statistics: list[OrganStatistics]
    elapsed_s: float
    device: str
    crf_applied: bool
    probabilities: np.ndarray | None = None  # [k, j, i, C] on the input grid, if asked for
    uncertainty: np.ndarray | None = None  # [k, j, i] normalised entropy, if asked for
    channels: list[int] = field(default_factory=list)

    def stats_dict(self) -> dict:
        return {"task": self.task.name, "device": self.device,
                "elapsed_s": round(self.elapsed_s, 3), "crf": self.crf_applied,
                "labels": [s.to_dict() for s in self.statistics]}


def _choose_task(volume: Volume, metadata: ModelMetadata, requested: str
                 ) -> tuple[TaskSpec, AutoChoice | None]:
    """The task to run, and what the body-part classifier found when it chose it: the
    requested task, or for ``auto`` the one matching the volume (the body-part classifier when
    its file is installed, :mod:`.bodypart`; otherwise the modality alone,
    :func:`.validation.guess_modality`)."""
    if requested != "auto":
        return metadata.task(requested), None
    if len(metadata.tasks) == 1:
        return metadata.tasks[0], None
    choice = auto_choice(volume, [task.name for task in metadata.tasks])
    if choice is not None:
        return metadata.task(choice.task), choice
    modality = guess_modality(volume)
    candidates = [task for task in metadata.tasks if task.modality == modality]
    if len(candidates) == 1:
        return candidates[0], None
    names = ", ".join(task.name for task in (candidates or metadata.tasks))
    raise InputError(f"task auto cannot tell which {modality} task fits this volume; "
                     f"give --task (one of: {names})")


def _background_where_blank(probabilities: torch.Tensor, volume: Volume, grid: WorkingGrid,
                             progress: ProgressFunction) -> torch.Tensor:
    """Certain background ([1, 0, ...]) at the working voxels of the input's blank background
    (:func:`preprocess.blank_background`: masked-out, zero-filled), before the CRF sees them."""
    blank = torch.from_numpy(blank_background(volume, grid)).to(probabilities.device)
    if bool(blank.any()):
        probabilities[:, blank] = 0.0
        probabilities[0, blank] = 1.0
        litres = float(blank.sum()) * float(np.prod(grid.spacing)) / 1e6
        progress("inference", 1.0, f"{litres:.2f} L of blank background (no signal) "
                 "left as background")
    return probabilities


def _crf_unary(main: torch.Tensor, sides: list[torch.Tensor], parameters: CRFParameters
               ) -> torch.Tensor:
    """The probabilities the CRF starts from: ``main`` fused with the ``sides`` (outputs) where
    the model's CRF weighs them, else ``main`` itself."""
    if sides and parameters.side_output_weights:
        return fuse_side_outputs(main, sides, parameters.side_output_weights)
    return main


def segment_volume(volume: Volume, model: LoadedModel,
                   options: SegmentationOptions = SegmentationOptions(), *,
                   progress: ProgressFunction = no_progress,
                   cancel: CancelToken | None = None) -> SegmentationResult:
    """Segment ``volume`` with ``model``; the labelmap is on exactly ``volume``'s grid. The
    volume is checked (:func:`.validation.check_volume`: refused with what to do about it) and
    the task chosen here, once."""
    started = time.perf_counter()
    check_volume(volume)
    task, auto = _choose_task(volume, model.metadata, options.task)
    kept = model.metadata.selected_labels(task.name, options.organs)
    if auto is not None:
        progress("preprocess", 0.0, auto.summary())
        if auto.slab is not None:
            return _segment_slab(volume, auto.slab, model, task, kept, options, progress,
                                 cancel, started)
    return _segment_task(volume, model, task, kept, options, progress, cancel, started)


def _segment_task(volume: Volume, model: LoadedModel, task: TaskSpec, kept: tuple[LabelSpec, ...],
                  options: SegmentationOptions, progress: ProgressFunction,
                  cancel: CancelToken | None, started: float) -> SegmentationResult:
    """The pipeline for a checked volume and a chosen ``task``, keeping the ``kept`` organs."""
    device = resolve_device(options.inference.device)  # the device's one check of the run
    for warning in geometry_warnings(volume) + task_warnings(volume, task):
        progress("warning", 0.0, warning)
    crf = model.metadata.crf_parameters(task.name, options.crf_overrides) if options.crf \
        else None
    if crf is not None and not crf.has_weight:
        progress("warning", 0.0, f"CRF off for task {task.name}: its weights are 0")
        crf = None

    progress("preprocess", 0.0, f"task {task.name}: resampling to {task.spacing_mm} mm")
    grid = working_grid(volume, task.spacing_mm)
    check_working_memory(grid.size, task.spacing_mm, len(task.labels) + 1,
                         len(model.network.config.side_output_levels) if crf else 0,
                         crf is not None, options.max_working_voxels)
    if cancel is not None:
        cancel.raise_if_cancelled()
    progress("preprocess", 1.0, f"working grid {grid.size} voxels")

    channels = [0] + [label.value for label in task.labels]
    settings = replace(options.inference, device=device.type,
                       side_outputs=options.inference.side_outputs
                       or (crf is not None and bool(crf.side_output_weights)))
    output = network_probabilities(volume, model, task, grid, settings, progress=progress,
                                   cancel=cancel)
    image, prediction = output.image, output.prediction
    del output
    probabilities = _background_where_blank(prediction.main, volume, grid, progress)
    if crf is not None:
        probabilities = _crf_unary(probabilities, prediction.sides, crf)
    # the network's outputs go before the CRF builds its lattice: once fused, the main and
    # side outputs are 0.3 GB of a 512 x 512 x 300 CT's peak (docs/benchmarks.md)
    del prediction
    if crf is not None:
        probabilities = refine_network_probabilities(
            probabilities, torch.from_numpy(image), grid.spacing[::-1], crf, progress=progress,
            cancel=cancel)
    del image

    progress("postprocess", 0.0, "resampling to the input grid")
    on_input = labels_on_input_grid(probabilities, grid, volume, channels,
                                    keep_probabilities=options.keep_probabilities,
                                    keep_uncertainty=options.keep_uncertainty,
                                    progress=progress, cancel=cancel)
    labels = on_input.labels
    values = [label.value for label in task.labels]
    if len(kept) < len(values):  # --organs: the others are background
        labels[~np.isin(labels, [label.value for label in kept])] = 0
    if options.largest_component:
        keep_largest_component(labels, values)
    if options.fill_holes:
        fill_holes(labels, values)
    label_volume = volume.with_array(labels)
    statistics = organ_statistics(label_volume, volume, list(kept), on_input.confidence)
    progress("postprocess", 1.0, "done")
    return SegmentationResult(
        labels=label_volume, task=task, statistics=statistics,
        elapsed_s=time.perf_counter() - started,
        device=str(device), crf_applied=crf is not None,
        probabilities=on_input.probabilities, uncertainty=on_input.uncertainty,
        channels=channels)


def segment_with_fallback(volume: Volume, model: LoadedModel, options: SegmentationOptions,
                          progress: ProgressFunction, cancel: CancelToken | None
                          ) -> SegmentationResult:
    """Run :func:`segment_volume`; on CUDA out-of-memory retry with half the memory budget
    (smaller tiles; twice), then on the CPU, saying so in ``warning`` progress events."""
    attempt = options
    for retry in range(3):
        try:
            return segment_volume(volume, model, attempt, progress=progress, cancel=cancel)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if retry == 2:
                break
            budget = attempt.inference.memory_budget_bytes // 2
            progress("warning", 0.0,
                     f"GPU out of memory: retrying with smaller tiles ({budget / 1e9:.2f} GB)")
            attempt = replace(attempt, inference=replace(attempt.inference,
                                                         memory_budget_bytes=budget))
    progress("warning", 0.0, "GPU out of memory: falling back to the CPU (slower)")
    model.network.to("cpu")
    return segment_volume(volume, model, replace(attempt, inference=replace(
        attempt.inference, device="cpu")), progress=progress, cancel=cancel)


def _segment_slab(volume: Volume, slab: slice, model: LoadedModel, task: TaskSpec,
                  kept: tuple[LabelSpec, ...], options: SegmentationOptions,
                  progress: ProgressFunction, cancel: CancelToken | None,
                  started: float) -> SegmentationResult:
    """Segment only the input k-slices ``slab`` (task Auto's abdominal slab) and paste the
    result into a labelmap on the whole input grid (background outside the slab)."""
    origin = volume.index_to_physical(np.array([0.0, 0.0, float(slab.start)]))
    cropped = Volume(volume.array[slab], volume.spacing, tuple(origin), volume.direction)
    result = _segment_task(cropped, model, task, kept, options, progress, cancel, started)
    labels = np.zeros(volume.array.shape, dtype=result.labels.array.dtype)
    labels[slab] = result.labels.array
    probabilities = None
    if result.probabilities is not None:
        probabilities = np.zeros(volume.array.shape + (len(result.channels),), np.float32)
        probabilities[..., 0] = 1.0
        probabilities[slab] = result.probabilities
    uncertainty = None
    if result.uncertainty is not None:  # certain background outside the slab
        uncertainty = np.zeros(volume.array.shape, np.float32)
        uncertainty[slab] = result.uncertainty
    # outside the slab is background: every organ's statistics are the slab's own
    return replace(result, labels=volume.with_array(labels), probabilities=probabilities,
                   uncertainty=uncertainty, elapsed_s=time.perf_counter() - started)
