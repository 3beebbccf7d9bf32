"""Geometry is sacred: the output labelmap lies on exactly the input's grid, and the same
patient gives the same labels whatever the grid's orientation."""

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ellipsoid_scene
from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.metrics import dice
from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import read_volume, write_volume


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return load_model(tiny_model_path)


@pytest.fixture(scope="module")
def ellipsoid():
    return ellipsoid_scene(seed=21)


def _segment(volume, model):
    return segment_volume(volume, model, SegmentationOptions(crf=False)).labels


def _flip_axis(volume: Volume, axis_ijk: int) -> Volume:
    """Same patient, same voxels, the grid's ``axis_ijk`` reversed."""
    array_axis = 2 - axis_ijk
    flipped = np.flip(volume.array, axis=array_axis).copy()
    last = [0, 0, 0]
    last[axis_ijk] = volume.size[axis_ijk] - 1
    direction = volume.direction.copy()
    direction[:, axis_ijk] *= -1
    return Volume(flipped, volume.spacing, tuple(volume.index_to_physical(np.array(last))), direction)


def _permute_axes(volume: Volume, order_ijk: tuple[int, int, int]) -> Volume:
    """Same patient, the grid's axes reordered (new axis n = old axis order_ijk[n])."""
    array_order = [2 - order_ijk[2 - n] for n in range(3)]
    return Volume(np.transpose(volume.array, array_order).copy(),
                  tuple(volume.spacing[a] for a in order_ijk), volume.origin,
                  volume.direction[:, list(order_ijk)])


def _rotation(degrees: float, axis: int) -> np.ndarray:
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    a, b = [n for n in range(3) if n != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def _resample_onto(volume: Volume, reference: Volume, interpolator) -> Volume:
    out = sitk.Resample(volume.to_sitk(), reference.to_sitk(), sitk.Transform(), interpolator,
                        float(volume.array.min()))
    return Volume.from_sitk(out)


def _oblique_copy(volume: Volume, interpolator, degrees=25.0) -> Volume:
    """The same patient sampled on an oblique grid (rotated about two axes) of similar spacing."""
    direction = _rotation(degrees, 2) @ _rotation(degrees / 2, 0) @ volume.direction
    centre = volume.index_to_physical((np.asarray(volume.size) - 1) / 2)
    size = tuple(int(n * 1.25) for n in volume.size)
    origin = centre - direction @ ((np.asarray(size) - 1) / 2 * np.asarray(volume.spacing))
    reference = Volume(np.zeros(size[::-1], np.float32), volume.spacing, tuple(origin), direction)
    return _resample_onto(volume, reference, interpolator)


def _assert_same_grid(a: Volume, b: Volume) -> None:
    assert a.array.shape == b.array.shape
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6)
    np.testing.assert_allclose(a.origin, b.origin, atol=1e-4)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_flipped_grid_gives_the_same_labels_voxel_for_voxel(model, ellipsoid, axis):
    image, _ = ellipsoid
    reference = _segment(image, model)
    flipped_image = _flip_axis(image, axis)
    flipped = _segment(flipped_image, model)
    _assert_same_grid(flipped, flipped_image)
    undone = np.flip(flipped.array, axis=2 - axis)
    assert np.mean(undone == reference.array) >= 0.999


def test_permuted_axes_give_the_same_labels_voxel_for_voxel(model, ellipsoid):
    image, _ = ellipsoid
    reference = _segment(image, model)
    permuted_image = _permute_axes(image, (2, 0, 1))
    permuted = _segment(permuted_image, model)
    _assert_same_grid(permuted, permuted_image)
    back = _permute_axes(permuted, (1, 2, 0))
    assert np.mean(back.array == reference.array) >= 0.999


def test_output_geometry_matches_oblique_input_and_labels_agree_after_undoing_rotation(model, ellipsoid):
    image, truth = ellipsoid
    reference = _segment(image, model)
    oblique_image = _oblique_copy(image, sitk.sitkLinear)
    oblique = _segment(oblique_image, model)
    _assert_same_grid(oblique, oblique_image)
    undone = _resample_onto(oblique, reference, sitk.sitkNearestNeighbor)
    for value in (1, 2):
        assert dice(undone.array, reference.array, value) >= 0.9
        assert dice(undone.array, truth.array, value) >= 0.85


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_geometry_survives_files_in_every_format(model, ellipsoid, tmp_path, suffix):
    """NIfTI stores RAS on disk, NRRD/MHA LPS: the round trip must not care."""
    oblique = Volume(ellipsoid[0].array, (0.9, 1.7, 3.1), (12.5, -40.0, 7.25),
                     _rotation(-33, 1) @ np.diag([1.0, -1.0, 1.0]))
    path = write_volume(oblique, tmp_path / f"input{suffix}")
    loaded = read_volume(path)
    labels = _segment(loaded, model)
    out = write_volume(labels, tmp_path / f"labels{suffix}")
    _assert_same_grid(read_volume(out), oblique)


def test_working_grid_covers_the_whole_oblique_extent():
    volume = Volume(np.zeros((10, 20, 30), np.float32), (1.0, 2.0, 3.0), (5.0, 6.0, 7.0),
                    _rotation(40, 2))
    grid = working_grid(volume, (2.0, 2.0, 2.0))
    corners = np.array([[a, b, c] for a in (-0.5, 29.5) for b in (-0.5, 19.5) for c in (-0.5, 9.5)])
    physical = volume.index_to_physical(corners)
    low = np.asarray(grid.origin) - np.asarray(grid.spacing) / 2
    high = low + np.asarray(grid.size) * np.asarray(grid.spacing)
    assert np.all(physical >= low - 1e-6) and np.all(physical <= high + 1e-6)
