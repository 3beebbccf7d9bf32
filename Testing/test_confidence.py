"""Per-organ confidence from the network's probabilities: the mean largest class probability
inside each organ, the share of its voxels below 0.7, and a review flag."""

import json

import numpy as np
import SimpleITK as sitk

from helpers import TINY_LABELS, ellipsoid_scene, tiny_metadata
from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.postprocess import REVIEW_CONFIDENCE, normalised_entropy, organ_statistics
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import write_volume


def test_confidence_is_the_mean_largest_probability_inside_each_organ():
    labels = np.zeros((2, 2, 4), np.uint8)
    labels[0, 0, :2] = 1  # two liver voxels, probabilities 1.0 and 0.6
    labels[1] = 2  # eight spleen voxels at 0.8
    confidence = np.full(labels.shape, round(0.8 * 255), np.uint8)
    confidence[0, 0, :2] = (255, round(0.6 * 255))
    volume = Volume(labels.astype(np.float32))
    specs = list(tiny_metadata().tasks[0].labels)
    liver, spleen = organ_statistics(volume.with_array(labels), volume, specs, confidence)
    assert abs(liver.confidence - 0.8) < 0.01 and liver.uncertain_share == 0.5
    assert abs(spleen.confidence - 0.8) < 0.01 and spleen.uncertain_share == 0.0
    assert liver.review is (liver.confidence < REVIEW_CONFIDENCE)


def test_an_organ_not_found_has_no_confidence_and_is_not_flagged():
    labels = np.zeros((2, 2, 2), np.uint8)
    volume = Volume(labels.astype(np.float32))
    specs = list(tiny_metadata().tasks[0].labels)
    stats = organ_statistics(volume.with_array(labels), volume, specs,
                             np.zeros(labels.shape, np.uint8))
    assert all(np.isnan(s.confidence) and not s.review for s in stats)


def test_a_well_segmented_scene_is_confident_and_the_stats_file_says_so(tiny_model_path,
                                                                       tmp_path):
    image, _ = ellipsoid_scene(seed=11)
    result = segment_volume(image, load_model(tiny_model_path), SegmentationOptions(crf=False))
    for stats in result.statistics:
        assert 0.5 < stats.confidence <= 1.0 and 0.0 <= stats.uncertain_share <= 1.0
    source = write_volume(image, tmp_path / "ct.nrrd")
    assert main(["segment", str(source), str(tmp_path / "labels.nrrd"), "--model",
                 str(tiny_model_path), "--stats", str(tmp_path / "stats.json"),
                 "--progress", "none"]) == 0
    organs = json.loads((tmp_path / "stats.json").read_text())["labels"]
    assert {organ["name"] for organ in organs} == set(TINY_LABELS.values())
    assert all({"confidence", "uncertain_share", "review"} <= set(organ) for organ in organs)


def test_uncertainty_is_zero_for_a_certain_voxel_and_one_for_a_uniform_one():
    probabilities = np.zeros((2, 1, 3, 4), np.float32)
    probabilities[0, 0, 0] = [1, 0, 0, 0]  # certain
    probabilities[0, 0, 1] = 0.25  # all four classes equally likely
    probabilities[0, 0, 2] = [0.5, 0.5, 0, 0]  # two of four: ln 2 / ln 4
    probabilities[1, 0, :, 2] = 1.0
    uncertainty = normalised_entropy(probabilities)
    assert uncertainty.dtype == np.float32 and uncertainty.shape == (2, 1, 3)
    assert np.allclose(uncertainty, [[[0.0, 1.0, 0.5]], [[0.0, 0.0, 0.0]]], atol=1e-6)


def test_the_uncertainty_volume_lies_on_the_input_grid_and_is_highest_at_organ_edges(
        tiny_model_path, tmp_path):
    image, _ = ellipsoid_scene(seed=11)
    source = write_volume(image, tmp_path / "ct.nrrd")
    assert main(["segment", str(source), str(tmp_path / "labels.nrrd"), "--model",
                 str(tiny_model_path), "--uncertainty", str(tmp_path / "uncertainty.nrrd"),
                 "--progress", "none"]) == 0
    written = sitk.ReadImage(str(tmp_path / "uncertainty.nrrd"))
    assert written.GetSize() == sitk.ReadImage(str(source)).GetSize()
    assert written.GetSpacing() == sitk.ReadImage(str(source)).GetSpacing()
    uncertainty = sitk.GetArrayFromImage(written)
    assert uncertainty.dtype == np.float32
    assert 0.0 <= uncertainty.min() and uncertainty.max() <= 1.0
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "labels.nrrd")))
    organ = labels > 0
    from scipy import ndimage as ndi
    edge = organ & ~ndi.binary_erosion(organ, iterations=2)
    core = ndi.binary_erosion(organ, iterations=4)
    assert edge.any() and core.any()
    assert float(uncertainty[edge].mean()) > float(uncertainty[core].mean())
    assert not (tmp_path / "stats.json").exists()  # only what was asked for
