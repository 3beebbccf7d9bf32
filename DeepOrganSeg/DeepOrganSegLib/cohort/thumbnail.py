"""The QC picture of one case: :func:`DeepOrganSegLib.qc.save_overlay_png`'s axial, coronal
and sagittal planes through the organs, with each organ outlined in its model colour rather
than filled, so that the anatomy under it stays visible at a glance in the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..qc import save_overlay_png
from ..segment import SegmentationResult
from ..volume import Volume

__all__ = ["OUTLINE_SHARE", "outlines", "save_thumbnail"]

#: Outline width as a share of the field of view's largest extent: about one pixel of the QC
#: picture (its planes are at most 320 pixels across), so that resampling the planes never
#: breaks an outline.
OUTLINE_SHARE = 1 / 300


def outlines(labels: Volume, width_mm: float) -> Volume:
    """``labels`` kept only within ``width_mm`` (at least one voxel along each axis) of a
    boundary between two values: each organ's outline, in its own value."""
    array = labels.array
    reach = [max(1, math.ceil(width_mm / spacing)) for spacing in labels.spacing[::-1]]
    size = tuple(2 * r + 1 for r in reach)
    boundary = ndimage.maximum_filter(array, size=size) != ndimage.minimum_filter(array, size=size)
    return labels.with_array(np.where(boundary, array, 0).astype(array.dtype))


def save_thumbnail(image: Volume, result: SegmentationResult, path: Path, title: str) -> Path:
    """Write the QC picture of ``result`` (segmented from ``image``) to ``path``, organs
    outlined in the model's colours with their names in a legend, ``title`` above."""
    extent_mm = max(n * s for n, s in zip(image.array.shape[::-1], image.spacing))
    specs = {stats.label.value: stats.label for stats in result.statistics}
    return save_overlay_png(image, outlines(result.labels, extent_mm * OUTLINE_SHARE), path,
                            colors={value: spec.color for value, spec in specs.items()},
                            label_names={value: spec.display_name for value, spec in specs.items()},
                            title=title, alpha=1.0)
