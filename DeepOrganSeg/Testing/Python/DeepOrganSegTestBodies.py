"""What the DeepOrganSeg module must do with real MRML, written once for two runners.

pytest (``Testing/test_slicer_logic.py``, against the PyPI ``slicer-core`` wheel) and the
module's self-test in Slicer (``DeepOrganSegTest``) call these same functions. They use only
what both provide: MRML core, the segmentations/terminologies logic classes, ``slicer.util``
array helpers, and the engine. Each ``test_*`` function takes a :class:`Context` (how to run the
Logic, on which case) and, for the checks of one finished run, the :class:`PhantomRun` that
:func:`segment_phantom` made; plain ``assert`` statements report failures in both runners.

:func:`run_checks` is the self-test's order: the checks that need only MRML and the model file's
metadata (:data:`TESTS_WITHOUT_ENGINE`) always run; those that run the engine are skipped, each
with the reason, when its Python packages are missing (a fresh Slicer without internet: a
self-test installs nothing, as Slicer's ``slicer.packaging.pip_ensure`` in testing mode).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import slicer.util
import vtk
from vtk.util import numpy_support

from DeepOrganSegLib.model import read_metadata
from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.metrics import dice  # Dice of two masks, 1.0 when both are empty
from DeepOrganSegLib.mrml.job import SegmentationFailed, SegmentationJob, SegmentationRequest
from DeepOrganSegLib.mrml.nodes import (ORGAN_TAG, add_volume_node, hand_drawn_matches,
                                        segment_tag, volume_from_node)
from DeepOrganSegLib.mrml.runner import RunState, engine_environment
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import read_volume, write_volume

__all__ = ["Case", "Context", "PhantomRun", "plain_case", "segment_phantom", "run_checks",
           "dice", "scene_snapshot", "process_group_is_gone",
           "TESTS_WITHOUT_ENGINE", "TESTS_ON_PHANTOM_RUN", "TESTS_ON_CONTEXT"]


@dataclass
class Case:
    """A test image with its truth: ``organs`` maps truth label values to organ names."""

    image: Volume
    truth: Volume
    organs: dict[int, str]
    model: Path
    task: str


@dataclass
class Context:
    """How a runner runs the Logic.

    ``run(request)`` runs to the end and returns the finished job (raising
    :class:`SegmentationFailed` otherwise), ``start(request)`` returns a started job without
    waiting. ``python`` runs the engine's CLI for the comparison run."""

    scene: object
    case: Case
    run: Callable[[SegmentationRequest], SegmentationJob]
    start: Callable[[SegmentationRequest], SegmentationJob]
    python: str
    workdir: Path
    min_dice: float = 0.8
    measurements: dict = field(default_factory=dict)


@dataclass
class PhantomRun:
    """The case loaded as a volume node and segmented by the Logic into a new segmentation."""

    volume_node: object
    job: SegmentationJob
    seconds: float


def plain_case(model: Path, task: str) -> Case:
    """A case made with NumPy alone, for the checks that need no engine package (the phantom
    generator needs SciPy): a bright box in an oblique, flipped, anisotropic volume, no truth."""
    angle = np.radians(20.0)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                          [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, -1.0]])
    array = np.full((24, 40, 48), -1000.0, np.float32)
    array[6:18, 10:30, 12:36] = 60.0
    image = Volume(array, spacing=(1.5, 1.2, 3.0), origin=(-30.0, 20.0, 40.0),
                   direction=direction)
    return Case(image=image, truth=image.with_array(np.zeros(array.shape, np.uint8)),
                organs={}, model=model, task=task)


# ---------------------------------------------------------------------------------------------
# Helpers.


def deserialize_terminology_entry(serialized: str, logic_class=None):
    """The ``vtkSlicerTerminologyEntry`` a ``TerminologyEntry`` tag describes, or None.

    Called on an instance: ``DeserializeTerminologyEntry`` is an instance method until Slicer
    5.8 and static from 5.10 on, and an instance serves both (a class call crashes on 5.6/5.8)."""
    logic_class = logic_class or slicer.vtkSlicerTerminologiesModuleLogic
    entry = slicer.vtkSlicerTerminologyEntry()
    return entry if logic_class().DeserializeTerminologyEntry(serialized, entry) else None


def _matrix(vtk_matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_ijk_to_ras(node) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix


def _ijk_to_ras(node) -> np.ndarray:
    return _matrix(_vtk_ijk_to_ras(node))


def segment_mask(segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    """The segment as a boolean [k, j, i] mask on ``reference_volume``'s grid (through
    Slicer's own export, the path Slicer's tools take)."""
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "dice export")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume)
        return slicer.util.arrayFromVolume(labelmap) > 0
    finally:
        scene.RemoveNode(labelmap)


def segment_fingerprint(segmentation_node, segment_id: str) -> tuple:
    """Everything that identifies a segment's content: name, colour, tags, voxels."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
    scalars = image.GetPointData().GetScalars()
    voxels = (hashlib.sha1(numpy_support.vtk_to_numpy(scalars).tobytes()).hexdigest()
              if scalars is not None else "")
    return (segment_id, segment.GetName(), tuple(round(c, 6) for c in segment.GetColor()),
            segment_tag(segment, slicer.vtkSegment.GetTerminologyEntryTagName()),
            segment_tag(segment, ORGAN_TAG), tuple(image.GetExtent()), voxels)


def scene_snapshot(scene) -> list[tuple]:
    """Every node (ID, class, name), the modification time of every data node (volumes,
    segmentations, models...: in Slicer, view and interaction nodes change on their own) and
    every segment's fingerprint."""
    rows = []
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        row: tuple = (node.GetID(), node.GetClassName(), node.GetName())
        if node.IsA("vtkMRMLDisplayableNode"):
            row += (node.GetMTime(),)
        if node.IsA("vtkMRMLSegmentationNode"):
            segmentation = node.GetSegmentation()
            row += tuple(segment_fingerprint(node, segmentation.GetNthSegmentID(i))
                         for i in range(segmentation.GetNumberOfSegments()))
        rows.append(row)
    return rows


def _task_labels(case: Case):
    metadata = read_metadata(case.model)
    task = metadata.task(case.task) if case.task != "auto" else metadata.tasks[0]
    return task.labels


def _add_case_volume(context: Context, name: str):
    return add_volume_node(context.scene, context.case.image, name)


def _box_segment(segmentation_node, volume_node, name: str, box: tuple[slice, ...]) -> str:
    """A segment drawn by hand: a box of voxels of ``volume_node``'s grid, written the way
    Segment Editor effects write (SetBinaryLabelmapToSegment)."""
    mask = np.zeros(slicer.util.arrayFromVolume(volume_node).shape, dtype=np.uint8)
    mask[box] = 1
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(*mask.shape[::-1])
    image.SetImageToWorldMatrix(_vtk_ijk_to_ras(volume_node))
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask.ravel(), deep=True))
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", name, [0.9, 0.8, 0.1])
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segment_id,
        slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    return segment_id


def _segmentation_with_hand_drawn_segments(context: Context, volume_node) -> tuple:
    """An existing segmentation holding a 'Tumor' box and a hand-drawn 'Liver' box."""
    node = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "hand-made")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    shape = slicer.util.arrayFromVolume(volume_node).shape
    tumor = _box_segment(node, volume_node, "Tumor",
                         tuple(slice(n // 4, n // 4 + max(2, n // 8)) for n in shape))
    first_organ = _task_labels(context.case)[0].display_name
    liver = _box_segment(node, volume_node, first_organ,
                         tuple(slice(n // 2, n // 2 + 2) for n in shape))
    return node, tumor, liver


def _wait_until_running(job: SegmentationJob, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while job.poll() is not RunState.RUNNING and time.monotonic() < deadline:
        assert not job.state.finished, f"run ended before it could be cancelled: {job.failure}"
        time.sleep(0.02)


def process_group_is_gone(group: int) -> bool:
    """True when no live process is left in process group ``group`` (zombies count as gone:
    a container's init may be slow to reap re-parented children)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, _parent, process_group = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if int(process_group) == group and state != "Z":
            return False
    return True


# ---------------------------------------------------------------------------------------------
# One run of the case, checked by several tests.


def segment_phantom(context: Context) -> PhantomRun:
    """Load the case as a volume node under a patient/study and segment it into a new node."""
    volume_node = _add_case_volume(context, "Phantom CT")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(context.scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(
        hierarchy.GetSceneItemID(), "Phantom patient"), "Phantom study")
    if hierarchy.GetItemByDataNode(volume_node):
        hierarchy.SetItemParent(hierarchy.GetItemByDataNode(volume_node), study)
    else:
        hierarchy.CreateItem(study, volume_node)
    started = time.monotonic()
    job = context.run(SegmentationRequest(volume_node, context.case.model,
                                          options=SegmentationOptions(task=context.case.task)))
    return PhantomRun(volume_node, job, time.monotonic() - started)


def test_volume_node_keeps_oblique_geometry(context: Context) -> None:
    """Engine volume (LPS) -> volume node (RAS) -> engine volume is exact, and voxel centres
    land on the same patient points in both conventions."""
    image = context.case.image
    assert not np.allclose(np.abs(image.direction), np.round(np.abs(image.direction))), \
        "the case must have an oblique direction"
    node = _add_case_volume(context, "geometry check")
    try:
        back = volume_from_node(node)
        np.testing.assert_array_equal(back.array, image.array)
        np.testing.assert_allclose(back.spacing, image.spacing, atol=1e-9)
        np.testing.assert_allclose(back.origin, image.origin, atol=1e-9)
        np.testing.assert_allclose(back.direction, image.direction, atol=1e-12)
        corner = np.array(image.size) - 1
        lps = image.index_to_physical(corner)
        ras = _ijk_to_ras(node) @ np.append(corner, 1.0)
        np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]], atol=1e-6)
    finally:
        context.scene.RemoveNode(node)


def test_output_geometry_matches_oblique_input(context: Context, run: PhantomRun) -> None:
    """The segmentation's reference geometry and every segment's labelmap are the input's
    grid exactly: no resampling, whatever the orientation."""
    node = run.job.outcome.segmentation_node
    input_matrix = _ijk_to_ras(run.volume_node)
    input_extent = run.volume_node.GetImageData().GetExtent()
    reference = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        node.GetSegmentation().GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()), reference)
    reference_matrix = vtk.vtkMatrix4x4()
    reference.GetImageToWorldMatrix(reference_matrix)
    np.testing.assert_allclose(_matrix(reference_matrix), input_matrix, atol=1e-6)
    assert reference.GetExtent() == input_extent
    for organ in run.job.outcome.organs:
        layer = node.GetSegmentation().GetSegment(organ.segment_id).GetRepresentation(
            slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
        layer_matrix = vtk.vtkMatrix4x4()
        layer.GetImageToWorldMatrix(layer_matrix)
        np.testing.assert_allclose(_matrix(layer_matrix), input_matrix, atol=1e-6)
        assert layer.GetExtent() == input_extent


def test_segments_carry_model_names_colours_and_terminology(context: Context,
                                                           run: PhantomRun) -> None:
    """One segment per organ, named and coloured as the model says, coded with its SNOMED CT
    terms in Slicer's TerminologyEntry format, and tagged as ours."""
    labels = _task_labels(context.case)
    segmentation = run.job.outcome.segmentation_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(labels)
    terminology_tag = slicer.vtkSegment.GetTerminologyEntryTagName()
    for index, label in enumerate(labels):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetName() == label.display_name
        np.testing.assert_allclose(segment.GetColor(), np.array(label.color) / 255.0, atol=1e-6)
        assert segment_tag(segment, ORGAN_TAG) == label.name
        entry = deserialize_terminology_entry(segment_tag(segment, terminology_tag))
        assert entry is not None
        assert not segment.GetNameAutoGenerated() and not segment.GetColorAutoGenerated()
        for coded, expected in ((entry.GetCategoryObject(), label.snomed["category"]),
                                (entry.GetTypeObject(), label.snomed["type"])):
            assert coded.GetCodingSchemeDesignator() == expected["scheme"]
            assert coded.GetCodeValue() == expected["code"]
            assert coded.GetCodeMeaning() == expected["meaning"]
        modifier = label.snomed.get("type_modifier")
        assert (entry.GetTypeModifierObject().GetCodeValue() or "") == (
            modifier["code"] if modifier else "")
    for organ in run.job.outcome.organs:
        assert organ.volume_ml > 0, f"{organ.display_name} is empty"


def test_segmentation_is_placed_next_to_the_input(context: Context, run: PhantomRun) -> None:
    """A new segmentation named '<volume> segmentation', beside the volume in the subject
    hierarchy, under the same transform."""
    node = run.job.outcome.segmentation_node
    assert node.GetName() == f"{run.volume_node.GetName()} segmentation"
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(context.scene)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == \
        hierarchy.GetItemParent(hierarchy.GetItemByDataNode(run.volume_node))
    assert node.GetParentTransformNode() is run.volume_node.GetParentTransformNode()
    assert node.GetDisplayNode() is not None


def test_dice_against_truth_is_at_least_the_cli(context: Context, run: PhantomRun) -> None:
    """The organs in the scene overlap the truth at least as well as the CLI's labelmap does
    on the same image: importing loses nothing. Records the numbers in
    ``context.measurements``."""
    case = context.case
    folder = Path(tempfile.mkdtemp(prefix="cli-", dir=context.workdir))
    try:
        image_path = write_volume(case.image, folder / "image.nrrd")
        output_path = folder / "labels.nrrd"
        started = time.monotonic()
        subprocess.run([context.python, "-m", "DeepOrganSegLib.cli", "segment", str(image_path),
                        str(output_path), "--model", str(case.model), "--task", case.task,
                        "--progress", "none"], check=True, capture_output=True,
                       env=engine_environment())
        cli_seconds = time.monotonic() - started
        cli_labels = read_volume(output_path).array
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    labels = {label.name: label.value for label in _task_labels(case)}
    segment_ids = {organ.name: organ.segment_id for organ in run.job.outcome.organs}
    node = run.job.outcome.segmentation_node
    for value, organ in case.organs.items():
        truth = case.truth.array == value
        logic_dice = dice(segment_mask(node, segment_ids[organ], run.volume_node), truth)
        cli_dice = dice(cli_labels == labels[organ], truth)
        context.measurements[organ] = {"logic_dice": round(logic_dice, 4),
                                       "cli_dice": round(cli_dice, 4)}
        assert logic_dice >= cli_dice - 1e-9, \
            f"{organ}: Logic {logic_dice:.4f} < CLI {cli_dice:.4f}"
        assert logic_dice >= context.min_dice, f"{organ}: Dice {logic_dice:.4f} too low"
    context.measurements["logic_seconds"] = round(run.seconds, 2)
    context.measurements["cli_seconds"] = round(cli_seconds, 2)


# ---------------------------------------------------------------------------------------------
# Runs of their own.


def test_existing_segmentation_keeps_other_segments(context: Context) -> None:
    """Running into an existing segmentation keeps every segment the user made — a hand-drawn
    one named like an organ included: it is listed for the panel to ask about, and replaced
    (in place, keeping its ID) only when the user agreed. Our own segments are replaced on a
    re-run; running again for a subset of organs replaces only those."""
    volume_node = _add_case_volume(context, "Existing segmentation CT")
    node, tumor, liver = _segmentation_with_hand_drawn_segments(context, volume_node)
    tumor_before = segment_fingerprint(node, tumor)
    liver_before = segment_fingerprint(node, liver)
    labels = _task_labels(context.case)
    assert hand_drawn_matches(node, labels) == [labels[0].display_name]

    context.run(SegmentationRequest(volume_node, context.case.model, output_segmentation=node,
                                    options=SegmentationOptions(task=context.case.task)))
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2 + len(labels), "hand-drawn segments stay"
    assert segment_fingerprint(node, tumor) == tumor_before
    assert segment_fingerprint(node, liver) == liver_before
    assert not segment_tag(segmentation.GetSegment(liver), ORGAN_TAG)

    node, tumor, liver = _segmentation_with_hand_drawn_segments(context, volume_node)
    tumor_before = segment_fingerprint(node, tumor)
    liver_before = segment_fingerprint(node, liver)
    context.run(SegmentationRequest(volume_node, context.case.model, output_segmentation=node,
                                    options=SegmentationOptions(task=context.case.task),
                                    replace_hand_drawn=True))
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1 + len(labels)
    assert segment_fingerprint(node, tumor) == tumor_before
    assert segmentation.GetSegmentIndex(tumor) == 0
    assert segmentation.GetSegmentIndex(liver) == 1, "a replaced segment keeps its ID and place"
    assert segment_fingerprint(node, liver) != liver_before
    assert segment_tag(segmentation.GetSegment(liver), ORGAN_TAG) == labels[0].name

    after_first_run = {segmentation.GetNthSegmentID(i): segment_fingerprint(
        node, segmentation.GetNthSegmentID(i)) for i in range(segmentation.GetNumberOfSegments())}
    last = labels[-1]
    context.run(SegmentationRequest(volume_node, context.case.model, output_segmentation=node,
                                    options=SegmentationOptions(task=context.case.task,
                                                                organs=(last.name,))))
    assert segmentation.GetNumberOfSegments() == 1 + len(labels), "no duplicates on a re-run"
    for segment_id, fingerprint in after_first_run.items():
        if segment_tag(segmentation.GetSegment(segment_id), ORGAN_TAG) != last.name:
            assert segment_fingerprint(node, segment_id) == fingerprint, segment_id


def test_cancelled_run_leaves_scene_unchanged(context: Context) -> None:
    """Cancel while the engine runs: the engine's whole process group is gone, the scene (node
    count, every node's modification time, every segment's voxels) is as before, and the
    temporary files are removed."""
    volume_node = _add_case_volume(context, "Cancelled CT")
    node, _, _ = _segmentation_with_hand_drawn_segments(context, volume_node)
    before = scene_snapshot(context.scene)
    job = context.start(SegmentationRequest(volume_node, context.case.model,
                                            output_segmentation=node,
                                            options=SegmentationOptions(task=context.case.task)))
    _wait_until_running(job)
    engine_pid = job.engine_pid
    cancelled_at = time.monotonic()
    job.cancel()
    assert job.wait(timeout=60) is RunState.CANCELLED
    assert time.monotonic() - cancelled_at < 10, "cancel must take effect promptly"
    assert os.name != "posix" or process_group_is_gone(engine_pid)
    assert not job.temporary_folder.exists()
    assert scene_snapshot(context.scene) == before


def test_failing_run_leaves_scene_unchanged(context: Context) -> None:
    """A model whose weights are damaged passes the up-front checks but makes the engine
    fail: the run ends FAILED with the engine's one-line message, nothing in the scene
    changed, and the temporary files are removed."""
    volume_node = _add_case_volume(context, "Failing CT")
    node, _, _ = _segmentation_with_hand_drawn_segments(context, volume_node)
    damaged = Path(tempfile.mkdtemp(prefix="damaged-", dir=context.workdir)) / "damaged.safetensors"
    data = context.case.model.read_bytes()
    damaged.write_bytes(data[: len(data) - 4096])
    before = scene_snapshot(context.scene)
    try:
        context.run(SegmentationRequest(volume_node, damaged, output_segmentation=node,
                                        options=SegmentationOptions(task=context.case.task)))
    except SegmentationFailed as error:
        failure, job = error.failure, error.job
    else:
        raise AssertionError("a run with damaged weights succeeded")
    finally:
        shutil.rmtree(damaged.parent, ignore_errors=True)
    assert failure.exit_code == 2, failure  # bad input, reported as such
    assert damaged.name in failure.message and "\n" not in failure.message
    assert scene_snapshot(context.scene) == before
    assert not job.temporary_folder.exists()


def test_bad_requests_are_refused_before_any_work(context: Context) -> None:
    """Requests that cannot run are refused with a one-line reason before anything starts."""
    volume_node = _add_case_volume(context, "Refused CT")
    labelmap = context.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "a labelmap")
    transform = context.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "a transform")
    elsewhere = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "elsewhere")
    elsewhere.SetAndObserveTransformNodeID(transform.GetID())
    model = context.case.model
    refused = {
        "labelmap input": SegmentationRequest(labelmap, model),
        "unknown task": SegmentationRequest(
            volume_node, model, options=SegmentationOptions(task="no-such-task")),
        "subset with auto": SegmentationRequest(
            volume_node, model, options=SegmentationOptions(organs=("liver",))),
        "unknown organ": SegmentationRequest(volume_node, model, options=SegmentationOptions(
            task=context.case.task, organs=("no_such_organ",))),
        "other transform": SegmentationRequest(volume_node, model, output_segmentation=elsewhere),
        "missing model": SegmentationRequest(volume_node, context.workdir / "missing.safetensors"),
    }
    before = scene_snapshot(context.scene)
    for what, request in refused.items():
        try:
            context.run(request)
        except InputError as error:
            assert "\n" not in str(error), what
        else:
            raise AssertionError(f"{what}: the request was not refused")
        after = scene_snapshot(context.scene)
        assert after == before, (what, [(a, b) for a, b in zip(before, after) if a != b])


def test_input_deleted_during_a_run_fails_and_imports_nothing(context: Context) -> None:
    """The input volume is removed (as a scene close does) while the engine runs: the run ends
    FAILED, saying so, and no segmentation appears in an orphan node."""
    volume_node = _add_case_volume(context, "Deleted CT")
    job = context.start(SegmentationRequest(volume_node, context.case.model,
                                            options=SegmentationOptions(task=context.case.task)))
    _wait_until_running(job)
    context.scene.RemoveNode(volume_node)
    before = scene_snapshot(context.scene)
    assert job.wait(timeout=120) is RunState.FAILED
    assert "removed" in job.failure.message
    assert scene_snapshot(context.scene) == before


def test_input_moved_during_a_run_fails_and_imports_nothing(context: Context) -> None:
    """The input's geometry changes while the engine runs (a transform hardened): segments
    placed with the new matrix would not lie on the voxels that were segmented, so the run
    fails with the reason and the scene keeps what it had."""
    volume_node = _add_case_volume(context, "Moved CT")
    job = context.start(SegmentationRequest(volume_node, context.case.model,
                                            options=SegmentationOptions(task=context.case.task)))
    _wait_until_running(job)
    origin = volume_node.GetOrigin()
    volume_node.SetOrigin(origin[0] + 25.0, origin[1], origin[2])
    before = scene_snapshot(context.scene)
    assert job.wait(timeout=120) is RunState.FAILED
    assert "moved" in job.failure.message
    assert scene_snapshot(context.scene) == before


def run_checks(context: Context, missing: Sequence[str], report: Callable[[str], None]
               ) -> dict[str, str]:
    """The self-test: every check on ``context``, each announced through ``report``. The
    checks without the engine always run; with packages ``missing`` the others are skipped, each
    reported with the reason. Returns the skipped checks' names and why."""
    for check in TESTS_WITHOUT_ENGINE:
        report(check.__name__)
        check(context)
    engine_checks: list[Callable] = [*TESTS_ON_CONTEXT, segment_phantom, *TESTS_ON_PHANTOM_RUN]
    if missing:
        reason = (f"needs {', '.join(missing)}, not installed (a self-test installs nothing; "
                  f"click Segment once, online, to install them)")
        for check in engine_checks:
            report(f"skipped {check.__name__}: {reason}")
        return {check.__name__: reason for check in engine_checks}
    for check in TESTS_ON_CONTEXT:
        report(check.__name__)
        check(context)
    report(segment_phantom.__name__)
    run = segment_phantom(context)
    for check in TESTS_ON_PHANTOM_RUN:
        report(check.__name__)
        check(context, run)
    return {}


#: Checks that need only MRML and the model file's metadata, called as ``test(context)``.
TESTS_WITHOUT_ENGINE = (
    test_volume_node_keeps_oblique_geometry,
    test_bad_requests_are_refused_before_any_work,
)

#: Checks of the one :func:`segment_phantom` run, called as ``test(context, run)``.
TESTS_ON_PHANTOM_RUN = (
    test_output_geometry_matches_oblique_input,
    test_segments_carry_model_names_colours_and_terminology,
    test_segmentation_is_placed_next_to_the_input,
    test_dice_against_truth_is_at_least_the_cli,
)

#: Checks that make their own engine runs, called as ``test(context)``.
TESTS_ON_CONTEXT = (
    test_existing_segmentation_keeps_other_segments,
    test_cancelled_run_leaves_scene_unchanged,
    test_failing_run_leaves_scene_unchanged,
    test_input_deleted_during_a_run_fails_and_imports_nothing,
    test_input_moved_during_a_run_fails_and_imports_nothing,
)
