"""Probabilities back on the input grid: the fast path (labels by cell agreement, channels only
where labels meet, axis by axis) gives what full trilinear sampling gives, on every orientation a
scanner writes, and oblique inputs take the general path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.input_grid import labels_on_input_grid
from DeepOrganSegLib.preprocess import resample_probabilities_to
from DeepOrganSegLib.volume import Volume

CHANNELS = [0, 1, 2, 5]

AXIAL_LPS = np.eye(3)
AXIAL_RAS = np.diag([-1.0, -1.0, 1.0])
CORONAL = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # rows L P S, columns i j k
SAGITTAL_FLIPPED = np.array([[0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]])
c, s = np.cos(0.3), np.sin(0.3)
OBLIQUE = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _scene(direction: np.ndarray, spacing=(0.7, 0.9, 1.3), size=(37, 29, 23)):
    """An input volume of ``size`` (i, j, k) and smooth random probabilities of 4 classes on its
    2 mm working grid."""
    volume = Volume(np.zeros(size[::-1], np.int16), spacing=spacing, origin=(-11.0, 7.5, 3.2),
                    direction=direction)
    grid = working_grid(volume, (2.0, 1.5, 2.5))
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(0, 3, (len(CHANNELS),) + grid.shape)).float()
    logits = F.avg_pool3d(logits[None], 3, stride=1, padding=1)[0] * 3
    return volume, grid, logits.softmax(0)


def _reference(probabilities, grid, volume):
    """Full trilinear sampling of every channel at every input voxel (the general path)."""
    sampled = resample_probabilities_to(probabilities, grid, volume, slice(0, volume.array.shape[0]))
    top, winner = sampled.max(0)
    labels = torch.tensor(CHANNELS, dtype=torch.uint8)[winner].numpy()
    return labels, (top * 255).round().to(torch.uint8).numpy(), sampled.permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize("direction", [AXIAL_LPS, AXIAL_RAS, CORONAL, SAGITTAL_FLIPPED, OBLIQUE],
                         ids=["axial-LPS", "axial-RAS", "coronal", "sagittal-flipped", "oblique"])
def test_labels_and_confidence_equal_full_trilinear_sampling(direction):
    volume, grid, probabilities = _scene(direction)
    labels, confidence, _ = _reference(probabilities, grid, volume)
    result = labels_on_input_grid(probabilities, grid, volume, CHANNELS)
    assert np.mean(result.labels == labels) > 0.9999
    assert np.abs(result.confidence.astype(int) - confidence).max() <= 1
    assert set(np.unique(result.labels)) <= set(CHANNELS)


@pytest.mark.parametrize("direction", [AXIAL_RAS, CORONAL, OBLIQUE], ids=["axial-RAS", "coronal", "oblique"])
def test_kept_probabilities_and_uncertainty_equal_full_trilinear_sampling(direction):
    volume, grid, probabilities = _scene(direction)
    labels, _, sampled = _reference(probabilities, grid, volume)
    result = labels_on_input_grid(probabilities, grid, volume, CHANNELS, keep_probabilities=True,
                                  keep_uncertainty=True)
    assert result.probabilities is not None and result.uncertainty is not None
    np.testing.assert_allclose(result.probabilities, sampled, atol=1e-5)
    assert np.mean(result.labels == labels) > 0.9999
    assert result.uncertainty.shape == labels.shape
    assert 0.0 <= result.uncertainty.min() and result.uncertainty.max() <= 1.0


def test_voxels_beyond_the_working_grid_take_its_edge_value():
    """An input voxel centre outside the working grid's centres (the grid covers the input's
    extent from voxel edge to edge) samples the nearest edge, as padding 'border' does."""
    volume, grid, probabilities = _scene(AXIAL_LPS, spacing=(3.1, 2.9, 3.3), size=(5, 4, 3))
    labels, confidence, _ = _reference(probabilities, grid, volume)
    result = labels_on_input_grid(probabilities, grid, volume, CHANNELS)
    np.testing.assert_array_equal(result.labels, labels)
    assert np.abs(result.confidence.astype(int) - confidence).max() <= 1


def test_one_label_everywhere_needs_no_channel_sampling():
    volume, grid, _ = _scene(AXIAL_RAS)
    probabilities = torch.zeros((len(CHANNELS),) + grid.shape)
    probabilities[2] = 0.7
    probabilities[0] = 0.3
    result = labels_on_input_grid(probabilities, grid, volume, CHANNELS)
    assert (result.labels == 2).all()
    assert (result.confidence == round(0.7 * 255)).all()
