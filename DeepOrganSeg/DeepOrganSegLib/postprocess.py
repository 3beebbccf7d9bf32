"""Post-processing on the input grid: clean-up of each organ and per-organ statistics."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from .model import LabelSpec
from .volume import Volume

__all__ = ["keep_largest_component", "fill_holes", "OrganStatistics", "organ_statistics"]


def _organ_boxes(labels: np.ndarray, values: list[int], margin: int = 1
                 ) -> dict[int, tuple[slice, ...]]:
    """The bounding box (grown by ``margin`` voxels, clipped) of each of ``values`` present in
    ``labels``, from one pass over the volume (``find_objects`` of the label image)."""
    objects = ndimage.find_objects(labels, max_label=max(values, default=0))
    boxes = {}
    for value in values:
        box = objects[value - 1] if 0 < value <= len(objects) else None
        if box is not None:
            boxes[value] = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin))
                                 for s, n in zip(box, labels.shape))
    return boxes


def keep_largest_component(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """For each label value, keep only its largest 26-connected component (others -> 0).

    Organs are single connected bodies; islands are false positives. Works inside each organ's
    bounding box (all boxes from one pass), so the cost scales with organ size, not volume
    size."""
    structure = np.ones((3, 3, 3), dtype=bool)
    for value, box in _organ_boxes(labels, values).items():
        region = labels[box]
        components, count = ndimage.label(region == value, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        region[(components != 0) & (components != int(sizes.argmax()))] = 0
    return labels


def fill_holes(labels: np.ndarray, values: list[int]) -> np.ndarray:
    """Fill background cavities fully enclosed by one organ (3D hole filling, per organ)."""
    for value, box in _organ_boxes(labels, values).items():
        region = labels[box]
        filled = ndimage.binary_fill_holes(region == value)
        region[filled & (region == 0)] = value
    return labels


@dataclass(frozen=True)
class OrganStatistics:
    """One organ's volume and what the network thought of it.

    ``confidence``: mean over the organ's voxels of the largest class probability (0-1);
    ``uncertain_share``: share of its voxels whose largest probability is below
    :data:`UNCERTAIN_PROBABILITY`; ``review``: a found organ whose confidence is below
    :data:`REVIEW_CONFIDENCE`. NaN / False when the probabilities were not kept, and for an
    organ not found."""

    label: LabelSpec
    voxels: int
    volume_ml: float
    mean_intensity: float
    confidence: float = float("nan")
    uncertain_share: float = float("nan")
    review: bool = False

    def to_dict(self) -> dict:
        return {**self.label.to_dict(), "voxels": self.voxels,
                "volume_ml": round(self.volume_ml, 3),
                "mean_intensity": round(self.mean_intensity, 3),
                "confidence": round(self.confidence, 4),
                "uncertain_share": round(self.uncertain_share, 4), "review": self.review}


#: A voxel whose largest class probability is below this is uncertain.
UNCERTAIN_PROBABILITY = 0.7
#: An organ whose mean confidence is below this is flagged for review. Chosen by hand; how it
#: relates to Dice on held-out phantoms and the real CT: docs/model-card.md, *Limitations*.
REVIEW_CONFIDENCE = 0.85


def normalised_entropy(probabilities: np.ndarray, axis: int = -1) -> np.ndarray:
    """Voxelwise uncertainty of class probabilities (the C classes along ``axis``): their
    entropy divided by ln C, float32 in [0, 1] without that axis (0: one class is certain, 1:
    all C equally likely). Its temporaries are as large as ``probabilities``: give it a slab."""
    classes = probabilities.shape[axis]
    if classes < 2:
        return np.zeros(np.delete(probabilities.shape, axis), np.float32)
    p = np.clip(probabilities, 0.0, 1.0)
    entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=axis)
    return np.clip(entropy / np.log(classes), 0.0, 1.0).astype(np.float32)


def organ_statistics(labels: Volume, image: Volume, specs: list[LabelSpec],
                     confidence: np.ndarray | None = None) -> list[OrganStatistics]:
    """Voxel count, volume (mL) and mean input intensity of each organ, in one pass; with
    ``confidence`` (the largest class probability per voxel, uint8 0-255 on the labels' grid)
    also each organ's mean confidence, uncertain share and review flag."""
    # organ voxels only (most of a volume is background): bincounts over them, not all
    organ_voxels = np.flatnonzero(labels.array)
    values = labels.array.ravel()[organ_voxels]
    counts = np.bincount(values, minlength=256)
    sums = np.bincount(values, weights=image.array.ravel()[organ_voxels], minlength=256)
    if confidence is not None:
        certainty = confidence.ravel()[organ_voxels]
        confident_sums = np.bincount(values, weights=certainty, minlength=256) / 255
        uncertain = np.bincount(values[certainty < round(UNCERTAIN_PROBABILITY * 255)],
                                minlength=256)
    statistics = []
    for spec in specs:
        count = int(counts[spec.value])
        mean = float(sums[spec.value] / count) if count else float("nan")
        organ = OrganStatistics(spec, count, count * labels.voxel_volume_ml, mean)
        if confidence is not None:
            score = float(confident_sums[spec.value] / count) if count else float("nan")
            share = float(uncertain[spec.value] / count) if count else float("nan")
            organ = replace(organ, confidence=score, uncertain_share=share,
                            review=bool(count) and score < REVIEW_CONFIDENCE)
        statistics.append(organ)
    return statistics
