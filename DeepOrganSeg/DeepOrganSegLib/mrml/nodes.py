"""MRML nodes <-> engine objects: volumes (RAS nodes <-> LPS engine volumes), labelmaps ->
segments merged into a segmentation node, terminology, placement in the Data tree.

Only what the PyPI ``slicer-core`` wheel provides as well (MRML core, the segmentations logic
classes, ``slicer.util`` array helpers): no Qt, no ``slicer.app``, no ``slicer.modules``.

Geometry: Slicer volume nodes are RAS, engine volumes (SimpleITK) are LPS; the conversion is
``diag(-1, -1, 1)`` on both the origin and the direction columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

from ..model import LabelSpec
from ..errors import InputError
from ..model.terminology import CONTEXT_FILE_NAME, DEEPORGANSEG_CONTEXT, terminology_entry
from ..volume import Volume, grid_differences

__all__ = [
    "volume_from_node", "add_volume_node", "set_volume_node_geometry", "ijk_to_ras_matrix",
    "node_ijk_to_ras", "matrix_array", "check_same_grid", "segments_from_labelmap",
    "merge_segments", "find_segment_for_organ", "hand_drawn_matches", "place_next_to",
    "load_terminology_context", "set_show_3d", "in_scene", "parent_transform_id",
    "segment_tag", "ORGAN_TAG", "MODEL_TAG", "TASK_TAG",
]

#: RAS <-> LPS: flip the first two axes (its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

#: Segment tags that mark a segment as produced by DeepOrganSeg (and from which organ/model).
ORGAN_TAG = "DeepOrganSeg.Organ"
MODEL_TAG = "DeepOrganSeg.Model"
TASK_TAG = "DeepOrganSeg.Task"

#: The engine's labelmap must sit on the input grid to within these tolerances.
GRID_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------------
# Volumes: node <-> engine Volume.


def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of an engine (LPS) volume."""
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_FROM_RAS @ volume.direction @ np.diag(volume.spacing)
    matrix[:3, 3] = LPS_FROM_RAS @ np.asarray(volume.origin)
    return matrix


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def node_ijk_to_ras(node) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def volume_from_node(node) -> Volume:
    """The engine volume (LPS geometry, array copy) of a scalar volume node."""
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetNumberOfPoints() == 0:
        name = node.GetName() if node is not None else "(none)"
        raise InputError(f"volume '{name}' holds no image; load a volume first")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{node.GetName()}' has {image.GetNumberOfScalarComponents()} "
                         "components per voxel; choose a scalar (grey-level) volume")
    directions = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(directions)
    ras_direction = np.array([[directions.GetElement(r, c) for c in range(3)] for r in range(3)])
    return Volume(
        array=np.array(slicer.util.arrayFromVolume(node), copy=True),
        spacing=node.GetSpacing(),
        origin=tuple(LPS_FROM_RAS @ np.asarray(node.GetOrigin())),
        direction=LPS_FROM_RAS @ ras_direction,
    )


def set_volume_node_geometry(node, volume: Volume) -> None:
    """Give ``node`` the spacing, origin and direction of an engine (LPS) volume."""
    node.SetSpacing(*volume.spacing)
    node.SetOrigin(*(LPS_FROM_RAS @ np.asarray(volume.origin)))
    directions = np.eye(4)
    directions[:3, :3] = LPS_FROM_RAS @ volume.direction
    node.SetIJKToRASDirectionMatrix(_vtk_matrix(directions))


def add_volume_node(scene, volume: Volume, name: str,
                    class_name: str = "vtkMRMLScalarVolumeNode"):
    """A new volume node in ``scene`` holding ``volume`` with its full geometry."""
    node = scene.AddNewNodeByClass(class_name, name)
    set_volume_node_geometry(node, volume)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.CreateDefaultDisplayNodes()
    return node


def check_same_grid(result: Volume, reference: Volume) -> None:
    """Refuse an engine output that is not on the input's grid (it would be misplaced)."""
    problems = grid_differences(result, reference, spacing_mm=GRID_TOLERANCE_MM,
                                origin_mm=GRID_TOLERANCE_MM, direction=DIRECTION_TOLERANCE)
    if problems:
        raise RuntimeError("the engine's labelmap is not on the input grid ("
                           + "; ".join(problems) + ")")


# ---------------------------------------------------------------------------------------------
# Segments: labelmap -> vtkSegments, merged into a segmentation node.


def segment_tag(segment, name: str) -> str:
    """The value of a segment's tag, or '' when it has none."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else ""


def segments_from_labelmap(labels: np.ndarray, ijk_to_ras: vtk.vtkMatrix4x4,
                           specs: Sequence[LabelSpec], tags: dict[str, str] | None = None
                           ) -> list[tuple[str, slicer.vtkSegment]]:
    """One segment per label spec, all sharing one labelmap layer (as Slicer stores them).

    ``labels`` is the [k, j, i] array on the grid given by ``ijk_to_ras``. Each segment gets
    the spec's display name, colour, label value, a ``TerminologyEntry`` tag built from its
    SNOMED CT codes, the organ tag and ``tags``. Returns ``(organ name, segment)`` pairs; the
    segments belong to no segmentation yet."""
    layer = slicer.vtkOrientedImageData()
    depth, rows, columns = labels.shape
    layer.SetDimensions(columns, rows, depth)
    layer.SetImageToWorldMatrix(ijk_to_ras)
    scalars = numpy_support.numpy_to_vtk(
        np.ascontiguousarray(labels, dtype=np.uint8).ravel(), deep=True,
        array_type=vtk.VTK_UNSIGNED_CHAR)
    layer.GetPointData().SetScalars(scalars)
    representation = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    terminology_tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    segments = []
    for spec in specs:
        segment = slicer.vtkSegment()
        segment.SetName(spec.display_name)
        segment.SetColor(*(channel / 255.0 for channel in spec.color))
        # the model chose both: Slicer must not rename or recolour them from the terminology
        segment.SetNameAutoGenerated(False)
        segment.SetColorAutoGenerated(False)
        segment.AddRepresentation(representation, layer)
        segment.SetLabelValue(spec.value)
        segment.SetTag(terminology_tag, terminology_entry(spec))
        segment.SetTag(ORGAN_TAG, spec.name)
        for name, value in (tags or {}).items():
            segment.SetTag(name, value)
        segments.append((spec.name, segment))
    return segments


def load_terminology_context(logic, folder: Path) -> str:
    """Load DeepOrganSeg's terminology context (the structures Slicer's DICOM master list lacks,
    e.g. the myocardium) into Slicer's terminologies ``logic``, once; returns its name. Without
    it Slicer cannot resolve those segments' ``TerminologyEntry`` tags."""
    names = vtk.vtkStringArray()
    logic.GetLoadedTerminologyNames(names)
    if DEEPORGANSEG_CONTEXT in {names.GetValue(i) for i in range(names.GetNumberOfValues())}:
        return DEEPORGANSEG_CONTEXT
    return logic.LoadTerminologyFromFile(str(Path(folder) / CONTEXT_FILE_NAME))


def _hand_drawn_match(segmentation, organ: str, display_name: str) -> str:
    """The ID of a segment DeepOrganSeg did not make (no organ tag) that stands for ``organ``:
    its ID is the organ name or its name is the organ's (case-insensitive); '' if none."""
    ids = [segmentation.GetNthSegmentID(index)
           for index in range(segmentation.GetNumberOfSegments())]
    untagged = [i for i in ids if not segment_tag(segmentation.GetSegment(i), ORGAN_TAG)]
    if organ in untagged:
        return organ
    for segment_id in untagged:
        if segmentation.GetSegment(segment_id).GetName().casefold() == display_name.casefold():
            return segment_id
    return ""


def find_segment_for_organ(segmentation, organ: str, display_name: str,
                           replace_hand_drawn: bool = False) -> str:
    """The ID of the segment a run for ``organ`` replaces, or '' if there is none: the segment
    DeepOrganSeg made for that organ (organ tag); a segment the user made (named like the organ,
    or with the organ's ID) only when ``replace_hand_drawn`` (the user agreed). Everything else
    is kept."""
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        if segment_tag(segmentation.GetSegment(segment_id), ORGAN_TAG) == organ:
            return segment_id
    return _hand_drawn_match(segmentation, organ, display_name) if replace_hand_drawn else ""


def hand_drawn_matches(segmentation_node, specs: Sequence[LabelSpec]) -> list[str]:
    """Names of the user's own segments in ``segmentation_node`` that a run for ``specs``
    would replace if allowed (organs without a DeepOrganSeg segment of their own there): what
    to ask the user about before a run."""
    if segmentation_node is None:
        return []
    segmentation = segmentation_node.GetSegmentation()
    names = []
    for spec in specs:
        if find_segment_for_organ(segmentation, spec.name, spec.display_name):
            continue  # our own earlier segment is the one replaced
        match = _hand_drawn_match(segmentation, spec.name, spec.display_name)
        if match:
            names.append(segmentation.GetSegment(match).GetName())
    return names


def merge_segments(segmentation_node, segments: Sequence[tuple[str, slicer.vtkSegment]],
                   replace_hand_drawn: bool = False) -> list[str]:
    """Put ``segments`` into the node: each replaces the segment it matches
    (:func:`find_segment_for_organ`; keeping that segment's ID and place in the list) or is
    appended; all other segments stay untouched. Returns the segment IDs, in the order of
    ``segments``."""
    segmentation = segmentation_node.GetSegmentation()
    segment_ids = []
    was_modified = segmentation_node.StartModify()
    try:
        for organ, segment in segments:
            replaced = find_segment_for_organ(segmentation, organ, segment.GetName(),
                                              replace_hand_drawn)
            if replaced:
                index = segmentation.GetSegmentIndex(replaced)
                following = (segmentation.GetNthSegmentID(index + 1)
                             if index + 1 < segmentation.GetNumberOfSegments() else "")
                segmentation.RemoveSegment(replaced)
                segment_id = replaced
            else:
                following = ""
                segment_id = organ if segmentation.GetSegment(organ) is None else ""
            if not segmentation.AddSegment(segment, segment_id, following):
                raise RuntimeError(f"segment '{segment.GetName()}' could not be added")
            segment_ids.append(segmentation.GetSegmentIdBySegment(segment))
    finally:
        segmentation_node.EndModify(was_modified)
    return segment_ids


def place_next_to(node, reference) -> None:
    """Put ``node`` beside ``reference`` in the subject hierarchy (same parent item)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    reference_item = hierarchy.GetItemByDataNode(reference)
    parent = (hierarchy.GetItemParent(reference_item) if reference_item
              else hierarchy.GetSceneItemID())
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def set_show_3d(segmentation_node, show: bool) -> None:
    """Show the segments in 3D views (closed surfaces) or only in slice views."""
    if show:
        segmentation_node.CreateClosedSurfaceRepresentation()
    else:
        segmentation_node.RemoveClosedSurfaceRepresentation()


def parent_transform_id(node) -> str | None:
    # (GetParentTransformNode, not GetTransformNodeID: the latter marks the node modified)
    transform = node.GetParentTransformNode()
    return transform.GetID() if transform is not None else None


def matrix_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def in_scene(node) -> bool:
    """``node`` is (still) in a scene: not None, not removed, the scene not closed."""
    scene = node.GetScene() if node is not None else None
    return scene is not None and scene.GetNodeByID(node.GetID()) is node
