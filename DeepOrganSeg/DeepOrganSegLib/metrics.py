"""The Dice coefficient, written once for the engine, training, benchmarks and tests.

    dice(prediction, reference)                   # two masks (non-zero = inside)
    dice(prediction, reference, label=3)          # one label value of two labelmaps
    dice_per_label(prediction, reference, [1, 2]) # {1: ..., 2: ...}

Dice = 2 |P ∩ R| / (|P| + |R|), counted exactly in voxels, on arrays of the same shape (no
broadcasting). When neither array has a voxel of the structure the ratio is 0/0; the result is
then ``empty``: 1.0 by default (both agree the structure is absent, as MONAI's ``compute_dice``
with ``ignore_empty=False``), 0.0 for scores that count an organ missing from both as a miss,
or ``math.nan`` to leave it out of a ``np.nanmean``.

NumPy only (no torch): Slicer's process imports this module (the self-test's Dice). Torch
tensors on the CPU are accepted (converted with ``np.asarray``).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["dice", "dice_per_label"]


def _mask(array, label) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(bool, copy=False) if label is None else array == label


def dice(prediction, reference, label=None, *, empty: float = 1.0) -> float:
    """Dice overlap of ``prediction`` and ``reference``.

    With ``label`` None both are masks (non-zero voxels are inside); otherwise both are
    labelmaps and the voxels equal to ``label`` are compared. ``empty`` is the score when
    neither has such a voxel (see the module docstring). Raises ValueError when the shapes
    differ."""
    a, b = _mask(prediction, label), _mask(reference, label)
    if a.shape != b.shape:
        raise ValueError(f"Dice of arrays of different shapes {a.shape} and {b.shape}")
    total = np.count_nonzero(a) + np.count_nonzero(b)
    if not total:
        return float(empty)
    return float(2.0 * np.count_nonzero(a & b) / total)


def dice_per_label(prediction, reference, labels: Iterable[int], *, empty: float = 1.0
                   ) -> dict[int, float]:
    """``{label: dice(prediction, reference, label, empty=empty)}`` for each of ``labels``
    of two labelmaps of the same shape."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    return {label: dice(prediction, reference, label, empty=empty) for label in labels}
