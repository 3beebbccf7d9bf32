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

__all__ = ["perturbed_prior", "coarse_factors"]


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
    truth = torch.from_numpy(np.ascontiguousarray(labels)).long()
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


def stage1_spacings(config) -> dict[str, tuple[float, float, float]]:
    """Stage 1's working spacing (mm, i, j, k) for each of ``config``'s tasks, read from the
    stage-1 model file ``config.prior.stage1_model``; an InputError when that file is no
    stage-1 model for these tasks and labels (it must know every task and give every label the
    value the config gives it)."""
    from DeepOrganSegLib.bundle import read_metadata
    from DeepOrganSegLib.errors import InputError, ModelFileError

    path = config.prior.stage1_model
    try:
        metadata = read_metadata(path)
    except ModelFileError as error:
        raise InputError(f"prior.stage1_model: {error}") from None
    if metadata.stage1 is not None or "prior" in metadata.inputs:
        raise InputError(f"prior.stage1_model {path} is itself a cascade; give the stage-1 "
                         f"model that training/configs/cascade-stage1.yaml makes")
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
