"""Per-organ overlap and surface metrics: Dice (:func:`DeepOrganSegLib.metrics.dice`, the
engine's one Dice), and with MONAI the 95th-percentile Hausdorff distance and average symmetric
surface distance, distances in millimetres."""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from DeepOrganSegLib.metrics import dice_per_label

__all__ = ["organ_metrics"]


def organ_metrics(prediction: np.ndarray, truth: np.ndarray, values: Sequence[int],
                  spacing_kji: Sequence[float], surface: bool = True
                  ) -> dict[int, dict[str, float]]:
    """``{value: {"dice", "hd95_mm", "asd_mm"}}`` for label ``values`` of two [k, j, i] label
    arrays on the same grid with voxel spacing ``spacing_kji`` (mm). An organ absent from both
    scores Dice 1 and distance 0; absent from one only, Dice 0 and distance NaN."""
    dice = dice_per_label(prediction, truth, values, empty=1.0)
    results = {value: {"dice": dice[value]} for value in values}
    if not surface:
        return results
    lookup = np.zeros(max(int(prediction.max()), int(truth.max()), max(values)) + 1, np.int64)
    lookup[list(values)] = np.arange(1, len(values) + 1)
    classes = len(values) + 1

    def one_hot(array: np.ndarray) -> torch.Tensor:
        indices = torch.from_numpy(lookup[array])
        return torch.nn.functional.one_hot(indices, classes).permute(3, 0, 1, 2)[None].bool()

    y_pred, y = one_hot(prediction), one_hot(truth)
    spacing = [float(s) for s in spacing_kji]
    with warnings.catch_warnings():  # empty classes: handled below
        warnings.simplefilter("ignore", UserWarning)
        hd95 = compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing)[0]
        asd = compute_average_surface_distance(y_pred, y, symmetric=True, spacing=spacing)[0]
    for index, value in enumerate(values):
        in_pred, in_truth = bool(y_pred[0, index + 1].any()), bool(y[0, index + 1].any())
        both = in_pred and in_truth
        entry = results[value]
        entry["hd95_mm"] = float(hd95[index]) if both else (0.0 if not in_truth and not
                                                            in_pred else math.nan)
        entry["asd_mm"] = float(asd[index]) if both else (0.0 if not in_truth and not
                                                          in_pred else math.nan)
    return results
