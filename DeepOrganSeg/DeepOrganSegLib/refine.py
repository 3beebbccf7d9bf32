"""Correct one organ in seconds: scribbles through the dense CRF, on the network's probabilities.

A user draws strokes saying "this is organ X" (add) and "this is not organ X" (remove). The
strokes are clamped; a term learned from them — their intensities (a Gaussian per connected
stroke, as MONAI Label's scribble likelihoods) times their geodesic distance (mm, along the
image: it stops at fat planes), since intensity alone cannot tell a spleen from a liver of the
same HU — is blended into the network's probabilities, so
that an organ the network missed entirely can still be grown from a few strokes; the dense CRF
then runs on the box around the organ and the strokes only. Every voxel that neither was nor
becomes the organ keeps its label.

Strokes arrive as :class:`.strokes.Scribbles` (the protocol: :mod:`.strokes`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from scipy import ndimage

from .model import ModelMetadata, Normalization, TaskSpec
from .crf.meanfield import bounding_box, dense_crf
from .crf.parameters import CRFParameters
from .errors import InputError
from .geodesic import geodesic_distance_mm
from .postprocess import fill_holes
from .preprocess import normalize_intensities
from .progress import CancelToken, ProgressFunction, no_progress
from .strokes import Scribbles, labelmap_codes, scribbles_for, stroked_organs
from .volume import Volume, grid_differences

__all__ = ["RefinementResult", "refine", "refine_volume"]

#: How far (mm) an "add" stroke's pull on its organ reaches (the e-folding distance): far, so
#: that a few strokes grow an organ the network missed.
REACH_MM = 40.0
#: How far a "remove" stroke pushes: near, since the organ it cuts looks like what it keeps.
REMOVE_REACH_MM = 8.0
#: Intensity models of at most this many separate strokes of one kind (the largest first).
MAX_STROKE_MODELS = 16
#: The geodesic distance is followed this many reaches (beyond it the pull is below e^-4).
GEODESIC_LIMIT = 4.0
#: Block size (mm, at least) on which the geodesic distance is computed.
GEODESIC_VOXEL_MM = 2.0
#: The box the CRF runs on: the organ and the strokes, grown by this much (mm).
MARGIN_MM = 15.0
#: A class whose probability stays at or below this everywhere in the box cannot win a voxel
#: there: the CRF leaves it out.
ABSENT_PROBABILITY = 1e-3


@dataclass
class RefinementResult:
    labels: np.ndarray  # uint8 [k, j, i], the whole segmentation with the organ corrected
    changed_voxels: int
    elapsed_s: float


def _stroke_term(intensity: np.ndarray, strokes: np.ndarray, spacing_kji: tuple[float, ...],
                 intensity_floor: float, reach_mm: float) -> np.ndarray:
    """How much a voxel looks like the stroke nearest in look (each connected stroke its own
    Gaussian: median μ, spread σ from its IQR, at least ``intensity_floor``, so that strokes in
    a stomach's gas and in its fluid each pull their own) times how near it lies to the strokes
    along the image: exp(-g / ``reach_mm``), g the geodesic distance (mm, :mod:`.geodesic`)
    whose steps cost more across intensity edges, so a stroke grows its organ along the organ
    and not across a fat plane into the next one."""
    parts, _ = ndimage.label(strokes)
    likeness = np.zeros(intensity.shape, np.float32)
    spreads = []
    largest = np.argsort(-np.bincount(parts.ravel())[1:])[:MAX_STROKE_MODELS] + 1
    for part in largest:
        values = intensity[parts == part]
        mean = float(np.median(values))
        spread = max(float(np.subtract(*np.percentile(values, [75, 25]))) / 1.35,
                     intensity_floor)
        spreads.append(spread)
        np.maximum(likeness, np.exp(-0.5 * ((intensity - mean) / (2 * spread)) ** 2),
                   out=likeness)
    distance = _coarse_geodesic_mm(intensity, strokes, spacing_kji, max(spreads),
                                   GEODESIC_LIMIT * reach_mm)
    return (likeness * np.exp(-distance / reach_mm)).astype(np.float32)


def _coarse_geodesic_mm(intensity: np.ndarray, strokes: np.ndarray,
                        spacing_kji: tuple[float, ...], intensity_scale: float,
                        limit_mm: float) -> np.ndarray:
    """:func:`.geodesic.geodesic_distance_mm` on blocks of about :data:`GEODESIC_VOXEL_MM`
    (their mean intensity: less noise, whose voxel-to-voxel jumps would make every step inside
    an organ dear; a stroke seeds every block it touches), repeated back onto the voxels: a
    fine CT's box in a quarter of the time."""
    factors = [max(1, int(GEODESIC_VOXEL_MM // step)) for step in spacing_kji]
    padded = [-(-size // f) * f for size, f in zip(intensity.shape, factors)]
    pad = [(0, p - size) for p, size in zip(padded, intensity.shape)]
    blocks = [n for p, f in zip(padded, factors) for n in (p // f, f)]
    coarse = np.pad(intensity, pad, mode="edge").reshape(blocks).mean(axis=(1, 3, 5))
    seeds = np.asarray(np.pad(strokes, pad).reshape(blocks).any(axis=(1, 3, 5)))
    distance = geodesic_distance_mm(coarse, seeds, [s * f for s, f in zip(spacing_kji, factors)],
                                    intensity_scale, limit_mm=limit_mm)
    for axis, f in enumerate(factors):
        distance = np.repeat(distance, f, axis=axis)
    return distance[tuple(slice(0, size) for size in intensity.shape)]


def refine(image: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
           channels: list[int], organ: int, scribbles: Scribbles,
           spacing_kji: tuple[float, float, float], normalization: Normalization,
           crf: CRFParameters = CRFParameters()) -> RefinementResult:
    """Correct organ ``organ`` (a label value) of ``labels`` from ``scribbles``.

    ``image`` [k, j, i] in scanner units (HU for CT); ``labels`` uint8 [k, j, i];
    ``probabilities`` [k, j, i, C], channel n being label value ``channels[n]`` (0 first:
    ``deeporganseg segment --probabilities``); ``spacing_kji`` mm; ``normalization`` and ``crf``
    as the model file gives them (θβ is in normalised units)."""
    started = time.perf_counter()
    if organ not in channels[1:]:
        raise InputError(f"label {organ} is not one of the segmentation's organs "
                         f"({', '.join(map(str, channels[1:]))})")
    if not (scribbles.add.any() or scribbles.remove.any()):
        raise InputError(f"no strokes for label {organ}: draw at least one")
    if probabilities.shape[:3] != labels.shape or probabilities.shape[3] != len(channels):
        raise InputError(f"the probabilities ({probabilities.shape}) do not match the "
                         f"segmentation ({labels.shape}, {len(channels)} channels)")
    target = channels.index(organ)
    region = (labels == organ) | scribbles.add | scribbles.remove
    box = bounding_box(torch.from_numpy(region), spacing_kji, MARGIN_MM)
    intensity = image[box].astype(np.float32)
    normalised = normalize_intensities(intensity.copy(), normalization)
    floor = 10.0 if normalization.kind == "ct" else 0.05 * float(np.subtract(
        *np.percentile(intensity, [95, 5])))
    p = np.moveaxis(probabilities[box], -1, 0).astype(np.float32)  # [C, z, y, x]
    add, remove = scribbles.add[box], scribbles.remove[box]
    before = p[target].copy()
    if add.any():
        p[target] = np.maximum(p[target], 0.95 * _stroke_term(intensity, add, spacing_kji, floor,
                                                              REACH_MM))
    if remove.any():
        p[target] *= 1.0 - _stroke_term(intensity, remove, spacing_kji, floor, REMOVE_REACH_MM)
    others = np.delete(np.arange(len(channels)), target)
    rest = p[others].sum(axis=0)
    # the other classes share what the organ gave up or took, in their old proportions
    # (all to the background where they had nothing)
    scale = np.where(rest > 1e-6, (1.0 - p[target]) / np.maximum(rest, 1e-6), 0.0)
    p[others] *= scale
    p[0] += np.where(rest > 1e-6, 0.0, 1.0 - p[target])
    clamp = np.full(add.shape, -1, np.int64)
    clamp[remove] = others[np.argmax(p[others][:, remove], axis=0)] if remove.any() else 0
    clamp[add] = target
    # the CRF only over the classes that are somewhere in the box (the real CT's spleen box
    # holds no right kidney and no cava: 8 of 10 classes), with the same labels
    stroked = clamp >= 0
    present = np.union1d(np.flatnonzero(p.reshape(len(p), -1).max(axis=1) > ABSENT_PROBABILITY),
                         [0, target, *np.unique(clamp[stroked])])
    row_of = np.full(len(channels), -1, np.int64)
    row_of[present] = np.arange(len(present))
    clamp[stroked] = row_of[clamp[stroked]]
    q = dense_crf(torch.from_numpy(np.ascontiguousarray(p[present])),
                  torch.from_numpy(normalised), spacing_kji, crf, clamp=torch.from_numpy(clamp))
    winners = np.asarray(channels, np.uint8)[present][q.argmax(dim=0).numpy()]
    old = labels[box]
    new = old.copy()
    touched = (old == organ) | (winners == organ)  # everything else keeps its label
    new[touched] = winners[touched]
    organ_mask = new == organ
    if organ_mask.any():  # keep the organ's parts that the strokes or the old organ hold
        parts, count = ndimage.label(organ_mask)
        anchors = add | ((old == organ) & ~remove & (before > 0.5))
        kept = np.unique(parts[anchors & organ_mask])
        stray = organ_mask & ~np.isin(parts, kept[kept > 0])
        new[stray] = np.where(old[stray] == organ, 0, old[stray])
    fill_holes(new, [organ])
    result = labels.copy()
    result[box] = new
    return RefinementResult(result, int((result != labels).sum()),
                            time.perf_counter() - started)


def _check_same_grid(image: Volume, other: Volume, what: str) -> None:
    if grid_differences(other, image, spacing_mm=1e-8, spacing_rtol=1e-4, origin_mm=1e-3,
                        direction=1e-4):
        raise InputError(f"the {what} is not on the input's grid (size, spacing, origin and "
                         f"direction must match); use the files of one segment run")


def _task_of(metadata: ModelMetadata, labels: np.ndarray, channel_count: int,
             requested: str | None) -> TaskSpec:
    """The one task of the model whose organs and channel count fit the segmentation."""
    present = set(np.flatnonzero(np.bincount(labels.ravel(), minlength=256)).tolist()) - {0}
    candidates = [task for task in metadata.tasks if requested in (None, task.name)
                  and len(task.labels) + 1 == channel_count
                  and present <= {label.value for label in task.labels}]
    if len(candidates) != 1:
        raise InputError("cannot tell which task of the model made this segmentation; give "
                         "--task" if len(candidates) > 1 else
                         "the segmentation and probabilities do not fit any task of the model "
                         "(--model, --task)")
    return candidates[0]


def refine_volume(image: Volume, segmentation: Volume, probabilities: np.ndarray,
                  probability_grid: Volume, scribble_labels: Volume, metadata: ModelMetadata,
                  task: str | None = None, *, progress: ProgressFunction = no_progress,
                  cancel: CancelToken | None = None) -> tuple[Volume, TaskSpec]:
    """Correct every organ that ``scribble_labels`` has strokes for (:mod:`.strokes`), organ by
    organ, on the files of one segment run: ``image`` (scanner units), its ``segmentation``,
    the class ``probabilities`` [k, j, i, C] on ``probability_grid``
    (:func:`.volume_io.read_probabilities`), all on one grid. The task is the one of
    ``metadata`` whose organs fit (or ``task``); the CRF is the model's for it. Returns the
    corrected labelmap and the task. Raises :class:`InputError` with one line for volumes on
    other grids, a task that does not fit, and strokes for no organ or an unknown one."""
    for volume, what in ((segmentation, "segmentation"), (scribble_labels, "scribble labelmap"),
                         (probability_grid, "probability file")):
        _check_same_grid(image, volume, what)
    labels = labelmap_codes(segmentation.array).astype(np.uint8, copy=False)
    chosen = _task_of(metadata, labels, probabilities.shape[3], task)
    channels = [0] + [label.value for label in chosen.labels]
    strokes = labelmap_codes(scribble_labels.array)
    organs = stroked_organs(strokes)
    unknown = [v for v in organs if v not in channels[1:]]
    if not organs or unknown:
        raise InputError("the scribble labelmap has no strokes" if not organs else
                         f"scribble value {unknown[0]} is no organ of task {chosen.name}")
    crf = metadata.crf_parameters(chosen.name) or CRFParameters()
    spacing = cast("tuple[float, float, float]", tuple(image.spacing[::-1]))
    for number, organ in enumerate(organs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress("crf", number / len(organs), f"refining label {organ}")
        labels = refine(image.array, labels, probabilities, channels, organ,
                        scribbles_for(strokes, organ), spacing, chosen.normalization,
                        crf).labels
    return image.with_array(labels), chosen
