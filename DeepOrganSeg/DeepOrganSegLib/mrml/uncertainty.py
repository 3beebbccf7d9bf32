"""Where to look after a run: the engine's voxelwise uncertainty (``deeporganseg segment
--uncertainty``: the entropy of the class probabilities over ln(classes), 0 certain to 1 all
classes equally likely) as a volume node shown over the input in the slice views, with a colour
bar.

* :func:`set_uncertainty_node` puts a run's uncertainty into the scene: one node per input
  volume (tagged :data:`UNCERTAINTY_OF`; the next run on the same input replaces it), beside the
  input in the subject hierarchy, window 0-1 on :func:`uncertainty_colors` (dark where the
  network is sure, bright where it hesitates), with a colour legend display node;
* :func:`show_uncertainty` shows or hides it as the foreground of every slice view, with its
  colour bar.

MRML only (the colour legend node is core MRML since Slicer 5.0): pytest runs this against the
``slicer-core`` wheel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..volume import Volume
from .nodes import add_volume_node, place_next_to

__all__ = ["UNCERTAINTY_OF", "COLOR_TABLE_NAME", "FOREGROUND_OPACITY", "uncertainty_colors",
           "set_uncertainty_node", "show_uncertainty", "uncertainty_shown"]

#: Node attribute of an uncertainty volume: the ID of the input volume it belongs to.
UNCERTAINTY_OF = "DeepOrganSeg.UncertaintyOf"
#: The colour table the uncertainty is shown with (one per scene).
COLOR_TABLE_NAME = "DeepOrganSeg uncertainty"
#: How much of the input shows through the overlay.
FOREGROUND_OPACITY = 0.45
#: Anchors of the colour ramp (uncertainty, RGB 0-1): black-blue, purple, orange, yellow.
_RAMP = ((0.0, (0.0, 0.0, 0.05)), (0.35, (0.35, 0.05, 0.55)), (0.7, (0.95, 0.45, 0.1)),
         (1.0, (1.0, 0.95, 0.3)))


def uncertainty_colors(scene) -> Any:
    """The scene's colour table for uncertainty (made once): 256 colours along :data:`_RAMP`."""
    found = scene.GetFirstNodeByName(COLOR_TABLE_NAME)
    if found is not None and found.IsA("vtkMRMLColorTableNode"):
        return found
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE_NAME)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    positions = [anchor for anchor, _color in _RAMP]
    channels = np.array([color for _anchor, color in _RAMP])
    for index, value in enumerate(np.linspace(0.0, 1.0, 256)):
        red, green, blue = (np.interp(value, positions, channels[:, c]) for c in range(3))
        table.SetColor(index, f"{value:.2f}", red, green, blue, 1.0)
    return table


def _find(scene, input_volume) -> Any:
    nodes = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    for index in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(index)
        if node.GetAttribute(UNCERTAINTY_OF) == input_volume.GetID():
            return node
    return None


def set_uncertainty_node(input_volume, uncertainty: Volume) -> Any:
    """Put ``uncertainty`` (on ``input_volume``'s grid) into the scene as ``input_volume``'s
    uncertainty node, in place of the one of an earlier run; returns the node, hidden."""
    scene = input_volume.GetScene()
    earlier = _find(scene, input_volume)
    if earlier is not None:
        legend = _legend(earlier)
        if legend is not None:
            scene.RemoveNode(legend)
        scene.RemoveNode(earlier)
    node = add_volume_node(scene, uncertainty, f"{input_volume.GetName()} uncertainty")
    node.SetAttribute(UNCERTAINTY_OF, input_volume.GetID())
    node.SetAndObserveTransformNodeID(input_volume.GetTransformNodeID())
    place_next_to(node, input_volume)
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(uncertainty_colors(scene).GetID())
    display.SetAutoWindowLevel(False)
    display.SetWindowLevelMinMax(0.0, 1.0)
    legend = scene.AddNewNodeByClass("vtkMRMLColorLegendDisplayNode",
                                     f"{node.GetName()} color legend")
    legend.SetTitleText("Uncertainty")
    legend.SetLabelFormat("%.1f")
    legend.SetAndObservePrimaryDisplayNode(display)
    legend.SetVisibility(False)
    node.AddAndObserveDisplayNodeID(legend.GetID())
    return node


def _legend(node) -> Any:
    for index in range(node.GetNumberOfDisplayNodes()):
        display = node.GetNthDisplayNode(index)
        if display is not None and display.IsA("vtkMRMLColorLegendDisplayNode"):
            return display
    return None


def _slice_views(scene) -> list:
    nodes = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    return [nodes.GetItemAsObject(index) for index in range(nodes.GetNumberOfItems())]


def show_uncertainty(node, show: bool) -> None:
    """Show ``node`` over the input in every slice view, with its colour bar, or hide both
    (a view whose foreground is another volume is left alone when hiding)."""
    for view in _slice_views(node.GetScene()):
        if show:
            view.SetForegroundVolumeID(node.GetID())
            view.SetForegroundOpacity(FOREGROUND_OPACITY)
        elif view.GetForegroundVolumeID() == node.GetID():
            view.SetForegroundVolumeID(None)
    legend = _legend(node)
    if legend is not None:
        legend.SetVisibility(show)


def uncertainty_shown(node) -> bool:
    """Whether ``node`` is the foreground of a slice view."""
    return any(view.GetForegroundVolumeID() == node.GetID()
               for view in _slice_views(node.GetScene()))
