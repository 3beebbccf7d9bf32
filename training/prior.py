"""Cascade stage 2's ``prior`` input during training: the perturbed truth (``PriorConfig``).

At inference the prior is stage 1's probabilities on its coarse grid, resampled to stage 2's
(``DeepOrganSegLib.cascade``): soft, blocky at the coarse spacing, sometimes missing an organ or
off by a voxel or two. :func:`perturbed_prior` makes the same kind of input from the reference
labels of a training patch, so stage 2 can be trained without running stage 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import PriorConfig

__all__ = ["perturbed_prior", "coarse_factors", "CoarsePrior", "stage1_view",
           "load_stage1", "stage1_spacings"]


def coarse_factors(stage1_spacing_mm: tuple[float, float, float],
                   spacing_mm: tuple[float, float, float]) -> tuple[float, float, float]:
    """How many stage-2 voxels one stage-1 voxel spans along (k, j, i)."""
    return tuple(c / s for c, s in zip(stage1_spacing_mm[::-1], spacing_mm[::-1]))


def _shifted(channel: torch.Tensor, shift: tuple[int, int, int]) -> torch.Tensor:
    """``channel`` [k, j, i] moved by ``shift`` voxels, zero where it moved in from outside."""
    out = torch.zeros_like(channel)
    source, target = [], []
    for offset, size in zip(shift, channel.shape):
        source.append(slice(max(0, -offset), size - max(0, offset)))
        target.append(slice(max(0, offset), size - max(0, -offset)))
    out[tuple(target)] = channel[tuple(source)]
    return out


def perturbed_prior(labels: np.ndarray, values: list[int], factors: tuple[float, float, float],
                    spacing_mm: tuple[float, float, float], settings: PriorConfig,
                    rng: np.random.Generator | None) -> np.ndarray:
    """The stand-in for stage 1's probabilities of ``values`` over ``labels`` [k, j, i]:
    [len(values), k, j, i] float32 in [0, 1], each label averaged down by ``factors`` (k, j, i)
    and interpolated back. With ``rng`` (training) each organ may be dropped, shifted by up to
    ``settings.shift_mm`` (``spacing_mm`` i, j, k: the patch's voxel size) and scaled in
    confidence; without it (validation) the prior is the coarse truth alone."""
    shape = labels.shape
    truth = torch.from_numpy(labels.astype(np.int64))  # a copy: cached labels are read-only maps
    one_hot = torch.stack([(truth == value).float() for value in values])
    coarse = tuple(max(1, round(n / f)) for n, f in zip(shape, factors))
    down = F.interpolate(one_hot[None], size=coarse, mode="area")[0]
    if rng is not None:
        reach = [settings.shift_mm / (f * s) for f, s in zip(factors, spacing_mm[::-1])]
        for row in range(len(values)):
            if rng.random() < settings.organ_dropout:
                down[row] = 0.0
                continue
            shift = tuple(int(round(rng.uniform(-r, r))) for r in reach)
            if any(shift):
                down[row] = _shifted(down[row], shift)
            down[row] *= float(rng.uniform(*settings.confidence))
    up = F.interpolate(down[None], size=shape, mode="trilinear", align_corners=False)[0]
    return up.clamp_(0.0, 1.0).numpy()


class CoarsePrior:
    """Stage 1's probabilities of one training case on stage 1's coarse grid (``coarse``
    [L, k, j, i] uint8, probability x 255), read as if trilinearly resampled to the case's
    working grid ``shape`` (k, j, i; ``F.interpolate``, ``align_corners=False``, as inference
    resamples them): a crop costs the crop, not the case. Held at full resolution, the priors
    of 9 labels took 9 bytes per working voxel, which put 140 abdomen cases over 24 GB."""

    def __init__(self, coarse: np.ndarray, shape: tuple[int, int, int]) -> None:
        self.coarse = coarse
        self.shape = tuple(int(n) for n in shape)

    def crop(self, origin: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
        """The resampled prior at working voxels ``origin .. origin + size`` (k, j, i; parts
        outside the case are zero, as padding), uint8 ``[L, *size]``."""
        out = self.coarse
        for axis, (start, count, fine, coarse) in enumerate(
                zip(origin, size, self.shape, self.coarse.shape[1:])):
            voxel = np.arange(start, start + count)
            source = np.maximum((np.clip(voxel, 0, fine - 1) + 0.5) * (coarse / fine) - 0.5, 0.0)
            low = source.astype(np.int64)  # source >= 0: truncation is the floor
            high = np.minimum(low + 1, coarse - 1)
            view = [1] * out.ndim
            view[axis + 1] = count
            weight = (source - low).astype(np.float32).reshape(view)
            below = np.take(out, low, axis=axis + 1).astype(np.float32)
            above = np.take(out, high, axis=axis + 1).astype(np.float32)
            out = (below * (1.0 - weight) + above * weight) * \
                ((voxel >= 0) & (voxel < fine)).reshape(view)
        return np.round(np.clip(out, 0.0, 255.0)).astype(np.uint8)


def stage1_view(metadata):
    """The metadata of the stage-1 network that model metadata ``metadata`` describes: itself
    for a stage-1 model, or a cascade's stage 1 (so a bundled cascade's stage 2 can be
    retrained over its own stage 1). The cascade's tasks keep their labels and get stage 1's
    coarse spacing, its inputs and patch size; its provenance is the cascade's record of it."""
    from dataclasses import replace

    stage = metadata.stage1
    if stage is None:
        return metadata
    return replace(metadata, architecture=stage.architecture, parameters=stage.parameters,
                   patch_size=stage.patch_size, inputs=stage.inputs, stage1=None, crf={},
                   tasks=tuple(replace(task, spacing_mm=stage.spacing_for(task.name), crf={})
                               for task in metadata.tasks),
                   provenance=dict(metadata.provenance.get("stage1") or {}))


def load_stage1(path: str):
    """Stage 1 of model file ``path`` (:func:`stage1_view`) as a ``LoadedModel``, in eval mode
    on CPU."""
    from DeepOrganSegLib.model import LoadedModel, load_model

    model = load_model(path)
    if model.stage1 is None:
        return model
    return LoadedModel(model.stage1, stage1_view(model.metadata), model.path)


def stage1_spacings(config) -> dict[str, tuple[float, float, float]]:
    """Stage 1's working spacing (mm, i, j, k) for each of ``config``'s tasks, read from
    ``config.prior.stage1_model`` (a stage-1 model file or a cascade, :func:`stage1_view`);
    an InputError when it has no stage 1 for these tasks and labels (it must know every task and
    give every label the value the config gives it)."""
    from DeepOrganSegLib.model import read_metadata
    from DeepOrganSegLib.errors import InputError, ModelFileError

    path = config.prior.stage1_model
    try:
        metadata = stage1_view(read_metadata(path))
    except ModelFileError as error:
        raise InputError(f"prior.stage1_model: {error}") from None
    spacings = {}
    for task in config.tasks:
        known = {spec.name: spec for spec in metadata.tasks}
        if task.name not in known:
            raise InputError(f"prior.stage1_model {path} has no task {task.name}; train stage 1 "
                             f"on the same tasks")
        theirs = {label.name: label.value for label in known[task.name].labels}
        for name in task.labels:
            if theirs.get(name) != config.label_value(name):
                raise InputError(f"prior.stage1_model {path}: label {name} of task {task.name} "
                                 f"has value {theirs.get(name)} there but "
                                 f"{config.label_value(name)} here; use the same 'labels' list")
        spacings[task.name] = known[task.name].spacing_mm
    return spacings
