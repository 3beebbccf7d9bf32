"""Geodesic distance from seeds (``DeepOrganSegLib.geodesic``): the path length in mm, each step
dearer across an intensity edge, exact on the 6-connected grid."""

from __future__ import annotations

import numpy as np
import pytest

from DeepOrganSegLib.geodesic import geodesic_distance_mm


def test_in_one_tissue_it_is_the_path_length_in_millimetres():
    flat = np.zeros((3, 4, 5))
    seeds = np.zeros(flat.shape, bool)
    seeds[0, 0, 0] = True
    distance = geodesic_distance_mm(flat, seeds, (3.0, 2.0, 1.0), 10.0)
    assert distance[0, 0, 4] == 4.0 and distance[0, 3, 0] == 6.0 and distance[2, 0, 0] == 6.0
    assert distance[2, 3, 4] == 6.0 + 6.0 + 4.0  # city-block on the 6-connected grid


def test_an_edge_costs_its_jump_over_the_scale_so_a_fat_plane_is_a_wall():
    image = np.full((1, 1, 9), 40.0)
    image[0, 0, 4] = -100.0  # a one-voxel fat plane between two organs of 40 HU
    seeds = np.zeros(image.shape, bool)
    seeds[0, 0, 0] = True
    distance = geodesic_distance_mm(image, seeds, (1.0, 1.0, 1.0), 10.0)
    assert list(distance[0, 0, :4]) == [0.0, 1.0, 2.0, 3.0]
    assert distance[0, 0, 4] == 3.0 + 15.0  # 1 mm x (1 + 140 / 10)
    assert distance[0, 0, 5] == 18.0 + 15.0  # and back up: the far organ is 33 mm away


def test_the_cheapest_path_goes_around_an_edge():
    image = np.zeros((1, 5, 5))
    image[0, :4, 2] = 1000.0  # a wall with a gap at the bottom row
    seeds = np.zeros(image.shape, bool)
    seeds[0, 0, 0] = True
    distance = geodesic_distance_mm(image, seeds, (1.0, 1.0, 1.0), 10.0)
    assert distance[0, 0, 4] == 4 + 4 + 4  # down, through the gap, up: 12 mm, not 101 x 2


def test_beyond_the_limit_and_without_seeds_it_is_infinite():
    flat = np.zeros((1, 1, 10))
    seeds = np.zeros(flat.shape, bool)
    assert np.isinf(geodesic_distance_mm(flat, seeds, (1, 1, 1), 1.0)).all()
    seeds[0, 0, 0] = True
    distance = geodesic_distance_mm(flat, seeds, (1, 1, 1), 1.0, limit_mm=3.5)
    assert np.isfinite(distance[0, 0, :4]).all() and np.isinf(distance[0, 0, 4:]).all()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        geodesic_distance_mm(np.zeros((2, 2, 2)), np.zeros((2, 2, 3), bool), (1, 1, 1), 1.0)
    with pytest.raises(ValueError):
        geodesic_distance_mm(np.zeros((2, 2, 2)), np.ones((2, 2, 2), bool), (1, 1, 1), 0.0)
