"""The engine's one Dice (``DeepOrganSegLib.metrics``), which training, benchmarks and tests use."""

from __future__ import annotations

import math

import numpy as np
import pytest

from DeepOrganSegLib.metrics import dice, dice_per_label


def test_dice_of_two_masks_counts_twice_the_overlap_over_both_sizes():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 0], bool)
    assert dice(a, b) == pytest.approx(2 * 2 / (3 + 3))
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_dice_of_a_label_compares_the_voxels_of_that_value_only():
    prediction = np.array([[0, 1, 1], [2, 2, 2]])
    reference = np.array([[0, 1, 0], [2, 2, 2]])
    assert dice(prediction, reference, 1) == pytest.approx(2 / 3)
    assert dice(prediction, reference, 2) == 1.0
    assert dice(prediction.astype(np.float32), reference, label=1) == pytest.approx(2 / 3)


def test_a_structure_absent_from_both_scores_empty_which_is_one_unless_told():
    nothing = np.zeros((2, 3), np.uint8)
    assert dice(nothing, nothing) == 1.0
    assert dice(nothing, nothing, 4, empty=0.0) == 0.0
    assert math.isnan(dice(nothing, nothing, empty=math.nan))
    assert dice(nothing, np.ones_like(nothing), empty=math.nan) == 0.0  # only 0/0 is "empty"


def test_a_mask_is_its_non_zero_voxels():
    assert dice(np.array([0, 255, 7]), np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_dice_refuses_arrays_of_different_shapes_instead_of_broadcasting():
    with pytest.raises(ValueError, match="different shapes"):
        dice(np.zeros((2, 3), bool), np.zeros((3,), bool))


def test_dice_per_label_scores_each_listed_label():
    prediction = np.array([0, 1, 1, 2, 2, 0])
    reference = np.array([0, 1, 0, 2, 2, 2])
    scores = dice_per_label(prediction, reference, [1, 2, 3])
    assert list(scores) == [1, 2, 3]
    assert scores[1] == pytest.approx(2 / 3)
    assert scores[2] == pytest.approx(4 / 5)
    assert scores[3] == 1.0
    assert dice_per_label(prediction, reference, [3], empty=0.0) == {3: 0.0}
    assert all(type(value) is float for value in scores.values())
