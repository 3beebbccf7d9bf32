"""Tier 2: where to look after a run, against the real MRML of the PyPI ``slicer-core`` wheel:
the engine's uncertainty as a volume node on the input's grid, shown over the input in the slice
views with a colour bar and hidden again; the organs' confidence and review flag; a second run
on the same input replacing the first one's uncertainty."""

from __future__ import annotations

import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (MRML)")

from helpers import ellipsoid_scene, fresh_mrml_scene  # noqa: E402
from DeepOrganSegLib.mrml.job import SegmentationRequest, run_segmentation  # noqa: E402
from DeepOrganSegLib.mrml.nodes import add_volume_node, volume_from_node  # noqa: E402
from DeepOrganSegLib.mrml.uncertainty import (FOREGROUND_OPACITY, UNCERTAINTY_OF,  # noqa: E402
                                              show_uncertainty, uncertainty_shown)
from DeepOrganSegLib.options import SegmentationOptions  # noqa: E402


@pytest.fixture
def mrml_scene():
    """A fresh scene with the colour legend node class registered, as Slicer's Colors module
    logic registers it at start (v5.8.0 ``vtkSlicerColorLogic.cxx:57-59``)."""
    for scene in fresh_mrml_scene():
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
        yield scene


def segment(volume, model, tmp_path):
    return run_segmentation(SegmentationRequest(volume, model,
                                                options=SegmentationOptions(task="abdomen-ct"),
                                                uncertainty=True), sys.executable,
                            temporary_root=tmp_path)


def test_a_runs_uncertainty_is_shown_over_its_input_with_a_colour_bar(mrml_scene,
                                                                      tiny_model_path, tmp_path):
    image, _truth = ellipsoid_scene(seed=3)
    volume = add_volume_node(mrml_scene, image, "CT")
    views = [mrml_scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _view in range(3)]
    for view in views:
        view.SetBackgroundVolumeID(volume.GetID())
    outcome = segment(volume, tiny_model_path, tmp_path).outcome

    node = outcome.uncertainty_node
    assert node.GetAttribute(UNCERTAINTY_OF) == volume.GetID()
    uncertainty = volume_from_node(node)
    assert uncertainty.size == image.size
    np.testing.assert_allclose(uncertainty.direction, image.direction, atol=1e-9)
    np.testing.assert_allclose(uncertainty.origin, image.origin, atol=1e-6)
    assert 0.0 <= uncertainty.array.min() and uncertainty.array.max() <= 1.0
    assert uncertainty.array.max() > 0.0  # the organs' borders are never certain
    assert not uncertainty_shown(node)

    show_uncertainty(node, True)
    assert all(view.GetForegroundVolumeID() == node.GetID() for view in views)
    assert all(view.GetForegroundOpacity() == pytest.approx(FOREGROUND_OPACITY) for view in views)
    legend = next(node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())
                  if node.GetNthDisplayNode(n).IsA("vtkMRMLColorLegendDisplayNode"))
    assert legend.GetVisibility() and legend.GetPrimaryDisplayNode() is node.GetDisplayNode()
    display = node.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)

    show_uncertainty(node, False)
    assert all(view.GetForegroundVolumeID() is None for view in views)
    assert all(view.GetBackgroundVolumeID() == volume.GetID() for view in views)
    assert not legend.GetVisibility()


def test_the_organs_carry_the_engines_confidence_and_review_flag(mrml_scene, tiny_model_path,
                                                                 tmp_path):
    image, _truth = ellipsoid_scene(seed=4)
    volume = add_volume_node(mrml_scene, image, "CT")
    organs = segment(volume, tiny_model_path, tmp_path).outcome.organs
    assert [organ.name for organ in organs] == ["liver", "spleen"]
    for organ in organs:
        assert 0.5 < organ.confidence <= 1.0
        assert organ.review is (organ.confidence < 0.85)


def test_a_second_run_on_the_same_input_replaces_the_first_ones_uncertainty(
        mrml_scene, tiny_model_path, tmp_path):
    image, _truth = ellipsoid_scene(seed=5)
    volume = add_volume_node(mrml_scene, image, "CT")
    first = segment(volume, tiny_model_path, tmp_path).outcome.uncertainty_node
    first_id = first.GetID()
    second = segment(volume, tiny_model_path, tmp_path).outcome.uncertainty_node
    assert mrml_scene.GetNodeByID(first_id) is None
    nodes = mrml_scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    assert [nodes.GetItemAsObject(n).GetAttribute(UNCERTAINTY_OF)
            for n in range(nodes.GetNumberOfItems())].count(volume.GetID()) == 1
    legends = mrml_scene.GetNodesByClass("vtkMRMLColorLegendDisplayNode")
    assert legends.GetNumberOfItems() == 1 and second.GetScene() is mrml_scene
