"""Position channels: the network may see where each voxel lies across the body (left-right and
antero-posterior offsets from the body's centre, mm / 100), so that the spleen is not left to
texture. Their geometry, their model-file contract and the warm start that adds them."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from helpers import TINY_CONFIG, ellipsoid_scene, tiny_metadata
from test_geometry import _flip_axis, _oblique_copy, _permute_axes
import SimpleITK as sitk
from DeepOrganSegLib.errors import ModelFileError
from DeepOrganSegLib.model import load_model, read_metadata, save_model
from DeepOrganSegLib.model.network import DSN3D
from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.preprocess import POSITION_SCALE_MM, prepare_image
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume

POSITION_INPUTS = ("image", "position")


def _task():
    return tiny_metadata().tasks[0]


def _liver_offsets(image, labels):
    """Mean (left-right, antero-posterior) position channel values inside the liver."""
    task = _task()
    grid = working_grid(image, task.spacing_mm)
    channels = prepare_image(image, task, grid, POSITION_INPUTS)
    from DeepOrganSegLib.grid import resample_to_grid

    liver = resample_to_grid(labels, grid, interpolator=sitk.sitkNearestNeighbor,
                             default_value=0) == 1
    return channels[1][liver].mean(), channels[2][liver].mean(), channels


def test_position_channels_are_offsets_from_the_body_centre_in_units_of_100_mm():
    image, labels = ellipsoid_scene(seed=3)
    lr, _, channels = _liver_offsets(image, labels)
    assert channels.shape[0] == 3 and channels.dtype == np.float32
    spacing = working_grid(image, _task().spacing_mm).spacing
    # one voxel to the patient's left adds spacing / 100 mm to the left-right channel
    np.testing.assert_allclose(np.diff(channels[1][0, 0, :2]), spacing[0] / POSITION_SCALE_MM,
                               rtol=1e-5)
    np.testing.assert_allclose(np.diff(channels[2][0, :2, 0]), spacing[1] / POSITION_SCALE_MM,
                               rtol=1e-5)
    assert lr < -0.1  # the scene's liver lies on the patient's right (negative x in LPS)


@pytest.mark.parametrize("reorient", ["flip_i", "flip_j", "permute", "oblique"])
def test_position_channels_follow_the_patient_not_the_array_orientation(reorient):
    image, labels = ellipsoid_scene(seed=3)
    reference_lr, reference_ap, _ = _liver_offsets(image, labels)
    change = {"flip_i": lambda v, _: _flip_axis(v, 0), "flip_j": lambda v, _: _flip_axis(v, 1),
              "permute": lambda v, _: _permute_axes(v, (2, 0, 1)),
              "oblique": lambda v, interpolator: _oblique_copy(v, interpolator, degrees=12.0)}
    moved_image = change[reorient](image, sitk.sitkLinear)
    moved_labels = change[reorient](labels, sitk.sitkNearestNeighbor)
    lr, ap, _ = _liver_offsets(moved_image, moved_labels)
    assert abs(lr - reference_lr) < 0.08 and abs(ap - reference_ap) < 0.08


def test_position_channels_do_not_move_with_the_table():
    image, labels = ellipsoid_scene(seed=3)
    shifted = [v.__class__(v.array, v.spacing, tuple(np.add(v.origin, (37.0, -21.0, 5.0))),
                           v.direction) for v in (image, labels)]
    reference = _liver_offsets(image, labels)[:2]
    moved = _liver_offsets(*shifted)[:2]
    np.testing.assert_allclose(moved, reference, atol=0.03)


def _position_model(tmp_path, seed=0):
    torch.manual_seed(seed)
    network = DSN3D(replace(TINY_CONFIG, in_channels=3)).eval()
    metadata = replace(tiny_metadata(), parameters=network.config.to_dict(),
                       inputs=POSITION_INPUTS)
    return save_model(tmp_path / "position.safetensors", network, metadata)


def test_a_model_file_round_trips_its_inputs(tmp_path):
    path = _position_model(tmp_path)
    assert read_metadata(path).inputs == POSITION_INPUTS
    assert load_model(path).network.config.in_channels == 3


def test_a_model_file_without_inputs_takes_the_image_alone(tiny_model_path):
    assert read_metadata(tiny_model_path).inputs == ("image",)


def test_a_model_file_whose_inputs_disagree_with_its_network_is_refused(tmp_path):
    network = DSN3D(TINY_CONFIG)  # one input channel
    path = save_model(tmp_path / "bad.safetensors", network,
                      replace(tiny_metadata(), inputs=POSITION_INPUTS))
    with pytest.raises(ModelFileError, match="input channels"):
        load_model(path)


@pytest.mark.parametrize("inputs", [["position"], ["image", "image"], ["image", "elevation"]])
def test_a_model_file_with_unknown_or_misordered_inputs_is_refused(tmp_path, inputs):
    from DeepOrganSegLib.model import ModelMetadata

    document = tiny_metadata().to_dict()
    document["inputs"] = inputs
    with pytest.raises(ModelFileError, match="inputs"):
        ModelMetadata.from_dict(document)


@pytest.mark.parametrize("reorient", ["flip_i", "oblique"])
def test_segment_with_position_inputs_keeps_the_exact_input_grid(tmp_path, reorient):
    model = load_model(_position_model(tmp_path))
    image, _ = ellipsoid_scene(seed=5)
    moved = (_flip_axis(image, 0) if reorient == "flip_i"
             else _oblique_copy(image, sitk.sitkLinear, degrees=20.0))
    result = segment_volume(moved, model, SegmentationOptions(crf=False))
    labels = result.labels
    assert labels.array.shape == moved.array.shape
    np.testing.assert_allclose(labels.spacing, moved.spacing)
    np.testing.assert_allclose(labels.origin, moved.origin)
    np.testing.assert_allclose(labels.direction, moved.direction)


def test_a_thin_slab_is_padded_so_that_position_channels_stay_exact():
    """Inference pads a slab thinner than a tile: the image with air, position channels with
    their edge values, which along z are exact (they do not vary along z)."""
    from DeepOrganSegLib.inference import _pad_input

    image = torch.randn(3, 5, 8, 8)
    image[1] = torch.linspace(-1, 1, 8)[None, None, :]
    padded = _pad_input(image, (16, 8, 8))
    assert padded.shape == (3, 16, 8, 8)
    assert torch.equal(padded[1, 5:], image[1, :1].expand(11, 8, 8))
    assert float(padded[0, 5:].max()) == float(image[0].min())
