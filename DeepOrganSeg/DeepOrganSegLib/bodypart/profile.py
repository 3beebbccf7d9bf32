"""From per-slice probabilities to a region profile along the superior-inferior axis
(Viterbi), and from the profile to task Auto's choice and abdominal slab."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, cast

import numpy as np

from ..errors import InputError
from ..progress import AutoTaskNote
from ..volume import Volume
from . import MODALITIES, REGIONS
from .classifier import BodyPartClassifier, bundled_classifier


__all__ = ["SLAB_MARGIN_ABOVE_MM", "SLAB_MARGIN_BELOW_MM", "MIN_REGION_MM", "viterbi_profile",
           "RegionRange", "RegionProfile", "region_profile", "choose_auto_task", "abdomen_slab",
           "AutoChoice", "auto_choice"]

#: Slab margins for the abdominal task (mm). Above the lung bases (the chest/abdomen boundary
#: is the right diaphragm dome): abdominal CTs, and the phantoms the abdominal task is trained
#: on, start up to 60 mm above the dome (liver dome, lower mediastinum, aorta), plus one
#: classifier slice of uncertainty. Below the pelvis boundary: one classifier slice and more.
SLAB_MARGIN_ABOVE_MM = 80.0
SLAB_MARGIN_BELOW_MM = 20.0
#: Regions shown over less than this (mm; e.g. one edge slice) do not count for the task choice.
MIN_REGION_MM = 20.0


def viterbi_profile(log_probabilities: np.ndarray) -> np.ndarray:
    """The most likely ordered, contiguous labelling of slices given top (superior) first.

    ``log_probabilities`` [n, R]: per-slice log-probabilities of regions in anatomical order.
    Along the slices the region index may only stay or step to the next one (no skipping: the
    body is contiguous); the first and last regions are free. Returns [n] region indices.
    """
    n, regions = log_probabilities.shape
    score = log_probabilities[0].astype(np.float64).copy()
    came_from_previous = np.zeros((n, regions), dtype=bool)
    for t in range(1, n):
        step = np.concatenate([[-np.inf], score[:-1]])
        came_from_previous[t] = step > score
        score = np.maximum(score, step) + log_probabilities[t]
    labels = np.empty(n, dtype=np.int64)
    labels[-1] = int(np.argmax(score))
    for t in range(n - 1, 0, -1):
        labels[t - 1] = labels[t] - int(came_from_previous[t, labels[t]])
    return labels


@dataclass(frozen=True)
class RegionRange:
    """One region of a profile: patient heights (LPS z, mm; ``z_top_mm`` > ``z_bottom_mm``) of
    its outer slice edges and, when the input's k axis runs superior-inferior, the input slice
    indices it covers (inclusive)."""

    name: str
    z_top_mm: float
    z_bottom_mm: float
    first_slice: int | None
    last_slice: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.name, "z_top_mm": round(self.z_top_mm, 1),
                "z_bottom_mm": round(self.z_bottom_mm, 1), "first_slice": self.first_slice,
                "last_slice": self.last_slice}


@dataclass(frozen=True)
class RegionProfile:
    """What a volume shows: modality (with its probability) and the regions from top down."""

    modality: str
    modality_probability: float
    regions: tuple[RegionRange, ...]
    slice_regions: np.ndarray  # classifier slices, top (superior) first: REGIONS indices
    slice_z_mm: np.ndarray  # their heights, mm

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def get(self, name: str) -> RegionRange | None:
        return next((r for r in self.regions if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality,
                "modality_probability": round(self.modality_probability, 4),
                "regions": [r.to_dict() for r in self.regions]}


def _input_slices_between(volume: Volume, z_low: float, z_high: float) -> slice | None:
    """Input k-slices whose voxel centres reach into [z_low, z_high] (LPS z, mm), or None when
    none does. Works for any direction matrix: a slice tilted against the S-I axis counts when any
    in-plane corner reaches the range."""
    ni, nj, nk = volume.size
    corners = np.array([[i, j] for i in (0, ni - 1) for j in (0, nj - 1)], dtype=np.float64)
    k = np.arange(nk, dtype=np.float64)
    points = np.concatenate([np.broadcast_to(corners, (nk, 4, 2)),
                             np.broadcast_to(k[:, None, None], (nk, 4, 1))], axis=2)
    z = volume.index_to_physical(points)[..., 2]
    inside = np.nonzero((z.max(axis=1) >= z_low) & (z.min(axis=1) <= z_high))[0]
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else None


def _k_runs_superior_inferior(volume: Volume) -> bool:
    """Whether the input's k axis is within about 25 degrees of the patient S-I axis."""
    return abs(float(volume.direction[2, 2])) > 0.9


def region_profile(volume: Volume, classifier: BodyPartClassifier) -> RegionProfile:
    """Classify every axial slice of ``volume`` and smooth the result into ordered regions."""
    stack, log_probabilities, modality = classifier.predict(volume)
    top_first = np.arange(len(stack.z_mm))[::-1]
    labels = viterbi_profile(log_probabilities[top_first])
    z = stack.z_mm[top_first]
    half = classifier.metadata.slices.slice_mm / 2
    axial = _k_runs_superior_inferior(volume)
    ranges = []
    for index in dict.fromkeys(labels.tolist()):
        heights = z[labels == index]
        top, bottom = float(heights.max() + half), float(heights.min() - half)
        covered = _slice_centres_between(volume, bottom, top) if axial else None
        ranges.append(RegionRange(REGIONS[index], top, bottom,
                                  None if covered is None else covered[0],
                                  None if covered is None else covered[1]))
    best = int(np.argmax(modality))
    return RegionProfile(MODALITIES[best], float(np.exp(modality[best])), tuple(ranges),
                         labels, z)


def _slice_centres_between(volume: Volume, z_low: float, z_high: float
                           ) -> tuple[int, int] | None:
    """(first, last) input k whose in-plane centre lies in [z_low, z_high), or None."""
    ni, nj, nk = volume.size
    centres = np.stack([np.full(nk, (ni - 1) / 2), np.full(nk, (nj - 1) / 2), np.arange(nk)], 1)
    z = volume.index_to_physical(centres)[:, 2]
    inside = np.nonzero((z >= z_low) & (z < z_high))[0]
    return (int(inside.min()), int(inside.max())) if inside.size else None


def choose_auto_task(profile: RegionProfile, available: Sequence[str]) -> str:
    """The task for a profile: MR head -> brain-mr, MR chest -> heart-mr, CT chest, abdomen or
    pelvis -> abdomen-ct; otherwise :class:`InputError` naming what was detected. Regions
    shown over less than :data:`MIN_REGION_MM` do not count."""
    names = {name for name in profile.names if _extent(profile, name) >= MIN_REGION_MM}
    if profile.modality == "MR":
        shown = [name for name in ("head", "chest") if name in names]
        wanted = ("brain-mr" if max(shown, key=lambda n: _extent(profile, n)) == "head"
                  else "heart-mr") if shown else None
    else:
        wanted = "abdomen-ct" if names & {"chest", "abdomen", "pelvis"} else None
    if wanted is not None and wanted in available:
        return wanted
    detected = f"{profile.modality} {'..'.join(profile.names)}"
    reason = (f"needs task {wanted}, which this model lacks" if wanted
              else "matches no task")
    raise InputError(f"task auto: the volume shows {detected}, which {reason}; "
                     f"give --task (one of: {', '.join(available)})")


def _extent(profile: RegionProfile, name: str) -> float:
    region = profile.get(name)
    return 0.0 if region is None else region.z_top_mm - region.z_bottom_mm


def abdomen_slab(profile: RegionProfile, volume: Volume,
                 above_mm: float = SLAB_MARGIN_ABOVE_MM,
                 below_mm: float = SLAB_MARGIN_BELOW_MM) -> slice | None:
    """Input k-slices from the lung bases (top of the abdomen, ``above_mm`` higher) to the
    bottom of the pelvis (``below_mm`` lower); None when the volume shows no abdomen or pelvis
    (then nothing is cropped)."""
    parts: Sequence[RegionRange | None] = [profile.get(name) for name in ("abdomen", "pelvis")]
    parts = cast("list[RegionRange]", [p for p in parts if p is not None])
    if not parts:
        return None
    top = max(p.z_top_mm for p in parts) + above_mm
    bottom = min(p.z_bottom_mm for p in parts) - below_mm
    return _input_slices_between(volume, bottom, top)


@dataclass(frozen=True)
class AutoChoice:
    """What task Auto found: the task, the profile behind it and the input slab to segment
    (None: the whole volume)."""

    task: str
    profile: RegionProfile
    slab: slice | None

    def summary(self) -> AutoTaskNote:
        """One status line, e.g. ``auto: CT, regions chest..pelvis, task abdomen-ct, slab
        slices 40-310``, that carries the task chosen as its ``auto_task``: the progress
        message that reports the choice (written as the JSON line's ``auto_task`` field)."""
        text = (f"auto: {self.profile.modality}, regions {'..'.join(self.profile.names)}, "
                f"task {self.task}")
        if self.slab is not None:
            text += f", slab slices {self.slab.start}-{self.slab.stop - 1}"
        return AutoTaskNote(text, self.task)


def auto_choice(volume: Volume, available: Sequence[str],
                classifier: BodyPartClassifier | None = None) -> AutoChoice | None:
    """Task Auto with the body-part classifier (the bundled one by default); None when no
    classifier file is installed."""
    classifier = classifier or bundled_classifier()
    if classifier is None:
        return None
    profile = region_profile(volume, classifier)
    task = choose_auto_task(profile, available)
    slab = abdomen_slab(profile, volume) if task == "abdomen-ct" else None
    if slab is not None and slab.stop - slab.start == volume.array.shape[0]:
        slab = None
    return AutoChoice(task, profile, slab)
