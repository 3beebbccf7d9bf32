"""Blank background -- masked-out or zero-filled space where the scan has no signal -- is never
an organ: the outside of a skull-stripped MR, the padding outside a CT's reconstruction circle.
A scanner's own noisy background and cavities inside the body are not blank. (End to end, on
the skull-stripped ICBM152 T1 with the bundled model: ``test_real_mr.py``.)"""

import numpy as np
import torch

from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.preprocess import blank_background
from DeepOrganSegLib.segment import _background_where_blank
from DeepOrganSegLib.volume import Volume

SHAPE = (40, 48, 48)  # k, j, i at 2 mm


def _head(rng: np.random.Generator, background: np.ndarray) -> tuple[Volume, np.ndarray]:
    """A noisy 'brain' sphere of radius 15 voxels in ``background``; also the sphere mask."""
    k, j, i = np.indices(SHAPE)
    brain = (k - 20) ** 2 + (j - 24) ** 2 + (i - 24) ** 2 < 15 ** 2
    image = background.astype(np.float32).copy()
    image[brain] = rng.uniform(50, 150, int(brain.sum()))
    return Volume(image, spacing=(2.0, 2.0, 2.0)), brain


def test_masked_space_around_a_skull_stripped_head_is_blank():
    volume, brain = _head(np.random.default_rng(0), np.zeros(SHAPE))
    blank = blank_background(volume, working_grid(volume, (2.0, 2.0, 2.0)))
    assert blank.shape == SHAPE
    assert not (blank & brain).any()
    assert blank[~brain].mean() > 0.99  # all of it, bar rounding at the sphere's surface
    coarse = blank_background(volume, working_grid(volume, (3.0, 3.0, 3.0)))
    assert coarse[0, 0, 0] and not coarse[13, 16, 16]  # a corner; the centre


def test_a_cavity_at_the_minimum_inside_the_body_is_not_blank():
    volume, brain = _head(np.random.default_rng(1), np.zeros(SHAPE))
    k, j, i = np.indices(SHAPE)
    cavity = (k - 20) ** 2 + (j - 24) ** 2 + (i - 24) ** 2 < 5 ** 2
    volume.array[cavity] = 0.0
    blank = blank_background(volume, working_grid(volume, (2.0, 2.0, 2.0)))
    assert not blank[cavity].any()
    assert blank[~brain].all()


def test_a_scanners_noisy_background_is_not_blank():
    rng = np.random.default_rng(2)
    noise = np.abs(rng.normal(0.0, 8.0, SHAPE))  # Rician-like magnitude noise outside the head
    volume, _ = _head(rng, noise)
    blank = blank_background(volume, working_grid(volume, (2.0, 2.0, 2.0)))
    assert blank.sum() <= 1  # at most the one voxel that happens to be the minimum


def test_blank_working_voxels_become_certain_background_and_the_rest_stays():
    volume, brain = _head(np.random.default_rng(3), np.zeros(SHAPE))
    grid = working_grid(volume, (2.0, 2.0, 2.0))
    probabilities = torch.full((3, *SHAPE), 1.0 / 3.0)
    out = _background_where_blank(probabilities, volume, grid, lambda *args: None)
    blank = torch.from_numpy(blank_background(volume, grid))
    assert torch.equal(out[:, blank], torch.tensor([[1.0], [0.0], [0.0]]).expand(3, int(blank.sum())))
    assert torch.allclose(out[:, torch.from_numpy(brain)], torch.tensor(1.0 / 3.0))
