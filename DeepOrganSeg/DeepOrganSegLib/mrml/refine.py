"""Scribble refinement in Slicer: strokes painted into two scribble segments per organ ->
``deeporganseg refine`` in the engine process -> the organs' segments corrected, with undo.

A run with ``SegmentationRequest.keep_for_refinement`` keeps the input volume and the network's
class probabilities (on the input grid) in a private folder (``SegmentationOutcome.kept``);
:meth:`RefinementSession.of` (the finished job) opens them with the run's segmentation.
Then, for an organ:

1. :meth:`RefinementSession.scribble_segments` adds (once) an "add" and a "remove" segment
   (green and red, tagged :data:`SCRIBBLE_TAG`) that the user paints with the Segment Editor;
2. :class:`RefineJob` (the same state machine as a segmentation run,
   :class:`.runner.EngineCommandJob`: ``start()``, ``poll()``, ``cancel()``) writes the current
   organ segments and the strokes (encoded by :mod:`DeepOrganSegLib.strokes`, the stroke
   protocol) on the input grid, runs the engine's ``refine`` in a subprocess, and on success
   replaces the masks of the organs whose voxels changed (every other segment is untouched),
   remembers their previous masks for :meth:`RefinementSession.undo`, and empties the organ's
   scribble segments;
3. :meth:`RefinementSession.close` removes the scribble segments and the private folder (the
   module calls it when the scene closes, a new run starts or the module is left).

:meth:`RefinementSession.warm_up` starts a warm engine (:class:`.warm.WarmRefiner`, the
engine's ``refine-session``) that keeps the model, image and probabilities loaded; once it is
ready, each :class:`RefineJob` sends it a request instead of starting ``deeporganseg refine``
(same files, same result, without starting Python and loading torch and the model each time).
A run made on a server refines on the server instead.

Only MRML and the segmentations logic classes are used (as in :mod:`.job`): pytest runs this
against the ``slicer-core`` wheel.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..model import LabelSpec
from ..errors import InputError
from ..progress import ProgressEvent
from ..strokes import Scribbles, encode_strokes, labelmap_codes
from ..volume import Volume
from ..volume_io import read_volume, write_volume
from .job import KeptRun, SegmentationJob
from .nodes import (check_same_grid, in_scene, matrix_array, node_ijk_to_ras, segment_tag,
                    volume_from_node)
from .runner import EngineCommandJob, EngineFailure, RunState, refine_command
from .warm import WarmRefiner

__all__ = ["SCRIBBLE_TAG", "STROKE_EDITOR_TAG", "RefinementSession", "RefineJob",
           "segment_mask_on_grid", "stroke_editor_node"]

#: Tag of the scribble segments: ``add:<organ>`` or ``remove:<organ>``.
SCRIBBLE_TAG = "DeepOrganSeg.Scribble"
#: Singleton tag of the stroke editor's parameter node (the Segment Editor module keeps its own).
STROKE_EDITOR_TAG = "DeepOrganSegStrokes"
#: Colours of the stroke segments (RGB 0-1): green adds, red removes.
ADD_COLOR = (0.15, 0.85, 0.25)
REMOVE_COLOR = (0.95, 0.2, 0.2)

_LOGIC = slicer.vtkSlicerSegmentationsModuleLogic


def _reference_image(shape_kji: tuple[int, int, int], ijk_to_ras: vtk.vtkMatrix4x4
                     ) -> slicer.vtkOrientedImageData:
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(shape_kji[2], shape_kji[1], shape_kji[0])
    image.SetImageToWorldMatrix(ijk_to_ras)
    return image


def segment_mask_on_grid(segmentation_node, segment_id: str, shape_kji: tuple[int, int, int],
                         ijk_to_ras: vtk.vtkMatrix4x4) -> np.ndarray:
    """The segment's voxels as a boolean [k, j, i] mask on the grid ``ijk_to_ras`` (nearest
    neighbour; the segment's own label value within its shared layer)."""
    layer = slicer.vtkOrientedImageData()
    if not _LOGIC.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, layer,
                                                         False):
        return np.zeros(shape_kji, bool)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        layer, _reference_image(shape_kji, ijk_to_ras), resampled)
    scalars = resampled.GetPointData().GetScalars()
    if scalars is None:
        return np.zeros(shape_kji, bool)
    value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    return numpy_support.vtk_to_numpy(scalars).reshape(shape_kji) == value


def _set_segment_mask(segmentation_node, segment_id: str, mask: np.ndarray,
                      ijk_to_ras: vtk.vtkMatrix4x4) -> None:
    """Replace the segment's voxels by ``mask`` (as the Segment Editor's effects write)."""
    image = _reference_image(mask.shape, ijk_to_ras)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(
        np.ascontiguousarray(mask, np.uint8).ravel(), deep=True,
        array_type=vtk.VTK_UNSIGNED_CHAR))
    if not _LOGIC.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id,
                                             _LOGIC.MODE_REPLACE):
        raise RuntimeError(f"could not update segment {segment_id}")


def stroke_editor_node(scene):
    """The parameter node of the panel's stroke editor (an embedded Segment Editor): a singleton
    of its own, so that the Segment Editor module's choices stay as they were.

    A stroke must never change an organ: the node overwrites no other segment (Slicer's default,
    ``OverwriteAllSegments``, makes Paint remove the painted voxels from every other segment, so
    a stroke that strays onto the kidney would cut it before Refine, and the copy Undo restores
    would already lack it) and masks nothing. Set at every call: a saved scene brings the node
    back as it was saved, and a new one starts from the scene's default node, which follows the
    user's "default overwrite mode" setting."""
    node = scene.GetSingletonNode(STROKE_EDITOR_TAG, "vtkMRMLSegmentEditorNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
        node.UnRegister(None)  # CreateNodeByClass hands over a reference the scene now holds
        node.SetSingletonTag(STROKE_EDITOR_TAG)
        node = scene.AddNode(node)
    node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
    node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    node.SetSourceVolumeIntensityMask(False)
    return node


@dataclass
class RefinementSession:
    """Refinement of one run's organs; see the module's docstring."""

    segmentation_node: Any  # MRML nodes (Slicer ships no type stubs)
    input_volume: Any
    kept: KeptRun
    ijk_to_ras: np.ndarray  # the input's IJK-to-RAS when the run ended (4x4)
    #: previous masks of the segments each refinement changed, newest last
    history: list[dict[str, np.ndarray]] = field(default_factory=list)
    #: the warm engine (:meth:`warm_up`), while it lives
    warm: WarmRefiner | None = None

    @classmethod
    def of(cls, job: SegmentationJob) -> "RefinementSession | None":
        """The session of a finished (DONE) run, or None when the run kept nothing."""
        outcome = job.outcome
        if outcome is None or outcome.kept is None:
            return None
        volume = job.request.input_volume
        return cls(outcome.segmentation_node, volume, outcome.kept,
                   matrix_array(node_ijk_to_ras(volume)))

    @property
    def folder(self) -> Path:
        return self.kept.folder

    def warm_up(self, python: str, environment: dict[str, str] | None = None) -> None:
        """Start the warm engine for this run (in the background: it is used once ready).
        Nothing for a run made on a server, or when one is already running."""
        if self.kept.server is not None or not self.is_open or (
                self.warm is not None and self.warm.alive):
            return
        self.warm = WarmRefiner(self.kept.input_path, self.kept.probabilities_path,
                                self.kept.model, self.kept.task, python,
                                environment=environment, cwd=self.kept.folder)

    def warm_engine(self) -> WarmRefiner | None:
        """The warm engine if it is ready for a request, else None (a refinement then starts
        ``deeporganseg refine``); one that ended is dropped."""
        if self.warm is not None and not self.warm.alive:
            self.warm = None
        return self.warm if self.warm is not None and self.warm.ready else None

    def cool_down(self) -> None:
        """End the warm engine, if any (a refinement is cancelled, or the session closes)."""
        if self.warm is not None:
            self.warm.close()
            self.warm = None

    @property
    def organ_segments(self) -> dict[str, tuple[LabelSpec, str]]:
        return self.kept.organ_segments

    @property
    def is_open(self) -> bool:
        return self.kept.folder.is_dir()

    @property
    def can_undo(self) -> bool:
        return bool(self.history)

    def spec(self, organ: str) -> LabelSpec:
        if organ not in self.organ_segments:
            raise InputError(f"'{organ}' is not an organ of this run; choose one of "
                             + ", ".join(self.organ_segments))
        return self.organ_segments[organ][0]

    def _segmentation(self):
        return self.segmentation_node.GetSegmentation()

    def scribble_segments(self, organ: str) -> tuple[str, str]:
        """The IDs of the organ's "add" and "remove" stroke segments, created empty the first
        time (named "<Organ>: add strokes" / "...: remove strokes")."""
        spec = self.spec(organ)
        ids = []
        for kind, color in (("add", ADD_COLOR), ("remove", REMOVE_COLOR)):
            tag = f"{kind}:{organ}"
            found = self._find_scribble(tag)
            if not found:
                found = self._segmentation().AddEmptySegment(
                    "", f"{spec.display_name}: {kind} strokes", list(color))
                self._segmentation().GetSegment(found).SetTag(SCRIBBLE_TAG, tag)
            ids.append(found)
        return ids[0], ids[1]

    def _find_scribble(self, tag: str) -> str:
        segmentation = self._segmentation()
        for index in range(segmentation.GetNumberOfSegments()):
            segment_id = segmentation.GetNthSegmentID(index)
            if segment_tag(segmentation.GetSegment(segment_id), SCRIBBLE_TAG) == tag:
                return segment_id
        return ""

    def _shape(self) -> tuple[int, int, int]:
        dimensions = self.input_volume.GetImageData().GetDimensions()
        return dimensions[2], dimensions[1], dimensions[0]

    def _mask(self, segment_id: str) -> np.ndarray:
        return segment_mask_on_grid(self.segmentation_node, segment_id, self._shape(),
                                    node_ijk_to_ras(self.input_volume))

    def labelmap(self) -> np.ndarray:
        """The organ segments as they are now, as one labelmap on the input grid."""
        labels = np.zeros(self._shape(), np.uint8)
        for spec, segment_id in self.organ_segments.values():
            if self._segmentation().GetSegment(segment_id) is not None:
                labels[self._mask(segment_id)] = spec.value
        return labels

    def strokes(self, organ: str) -> np.ndarray:
        """The organ's strokes as a scribble labelmap (``deeporganseg refine``'s input:
        :func:`DeepOrganSegLib.strokes.encode_strokes`)."""
        value = self.spec(organ).value
        scribbles = Scribbles(add=self._stroke_mask(f"add:{organ}"),
                              remove=self._stroke_mask(f"remove:{organ}"))
        return encode_strokes(scribbles, value)

    def _stroke_mask(self, tag: str) -> np.ndarray:
        """The voxels of the stroke segment tagged ``tag`` (none when it does not exist)."""
        segment_id = self._find_scribble(tag)
        return self._mask(segment_id) if segment_id else np.zeros(self._shape(), bool)

    def apply(self, old: np.ndarray, new: np.ndarray, organ: str) -> list[str]:
        """Write the organs whose voxels differ between the labelmaps ``old`` and ``new`` into
        their segments, remember their previous masks, empty ``organ``'s strokes; returns the
        organs changed."""
        matrix = node_ijk_to_ras(self.input_volume)
        changed, previous = [], {}
        was_modified = self.segmentation_node.StartModify()
        try:
            for name, (spec, segment_id) in self.organ_segments.items():
                if self._segmentation().GetSegment(segment_id) is None:
                    continue
                before, after = old == spec.value, new == spec.value
                if np.array_equal(before, after):
                    continue
                previous[segment_id] = before
                _set_segment_mask(self.segmentation_node, segment_id, after, matrix)
                changed.append(name)
            for kind in ("add", "remove"):
                segment_id = self._find_scribble(f"{kind}:{organ}")
                if segment_id:
                    _LOGIC.ClearSegment(self.segmentation_node, segment_id)
        finally:
            self.segmentation_node.EndModify(was_modified)
        if previous:
            self.history.append(previous)
        return changed

    def undo(self) -> list[str]:
        """Restore the segments the last refinement changed; returns their IDs."""
        if not self.history:
            return []
        previous = self.history.pop()
        matrix = node_ijk_to_ras(self.input_volume)
        was_modified = self.segmentation_node.StartModify()
        try:
            for segment_id, mask in previous.items():
                if self._segmentation().GetSegment(segment_id) is not None:
                    _set_segment_mask(self.segmentation_node, segment_id, mask, matrix)
        finally:
            self.segmentation_node.EndModify(was_modified)
        return list(previous)

    def close(self) -> None:
        """Remove the scribble segments (if the node is still there) and the private folder."""
        if in_scene(self.segmentation_node):
            for organ in self.organ_segments:
                for kind in ("add", "remove"):
                    segment_id = self._find_scribble(f"{kind}:{organ}")
                    if segment_id:
                        self._segmentation().RemoveSegment(segment_id)
        self.history.clear()
        self.cool_down()
        self.kept.discard()


class RefineJob(EngineCommandJob):
    """One click on Refine for one organ, followed by polling (the states of
    :class:`.runner.EngineCommandJob`, as a segmentation run). The scene is only touched when
    the engine's result is applied. With the session's warm engine ready, the request goes to
    it (``warm`` is True) and its answer is applied in the poll that sees it; Cancel then ends
    the warm engine (the next refinement starts a cold one)."""

    def __init__(self, session: RefinementSession, organ: str, python: str, *,
                 environment: dict[str, str] | None = None) -> None:
        super().__init__(python, environment=environment)
        self.session = session
        self.organ = organ
        #: The organs whose segments the refinement rewrote (once DONE).
        self.changed: list[str] = []
        self._sent: np.ndarray | None = None
        self._geometry: Volume | None = None
        self._warm: WarmRefiner | None = None
        #: The warm engine's own seconds for the refinement (its answer's), once DONE; None on
        #: the cold path. The rest of a round trip is the panel's files and segments.
        self.engine_seconds: float | None = None

    @property
    def warm(self) -> bool:
        """Whether the warm engine does this refinement."""
        return self._warm is not None

    def _launch(self, command: list[str]) -> None:
        warm = self.session.warm_engine()
        if warm is not None and warm.request(self._segmentation_path, self._strokes_path,
                                             self._output_path):
            self._warm = warm
            self.state = RunState.RUNNING
            self.progress = ProgressEvent("crf", 0.0, "refining")
            return
        super()._launch(command)

    def poll(self) -> RunState:
        if self._warm is None:
            return super().poll()
        if self.state in (RunState.RUNNING, RunState.CANCEL_REQUESTED):
            self._follow_warm(self._warm)
        elif self.state is RunState.IMPORTING:
            self._import()
        return self.state

    def cancel(self) -> None:
        if self._warm is None or self.state not in (RunState.STARTING, RunState.RUNNING):
            super().cancel()
            return
        self.state = RunState.CANCEL_REQUESTED
        self.progress = ProgressEvent("cancel", self.progress.fraction, "cancelling")
        self.session.cool_down()

    def _follow_warm(self, warm: WarmRefiner) -> None:
        """The warm engine's answer, applied at once; its end (a cancel, or a crash)."""
        if self.state is RunState.CANCEL_REQUESTED:
            if not warm.alive:
                self._finish(RunState.CANCELLED)
            return
        answer = warm.answer()
        if answer is None:
            if not warm.alive:  # it died mid-request: say why; the next refinement runs cold
                self.session.warm = None
                self._finish(RunState.FAILED, warm.process.failure() or EngineFailure(
                    "the refinement engine stopped; refine again", None))
            return
        if "output" not in answer:
            self._finish(RunState.FAILED, EngineFailure(str(answer.get("error", answer)),
                                                        answer.get("exit_code")))
            return
        seconds = answer.get("seconds")
        self.engine_seconds = float(seconds) if isinstance(seconds, (int, float)) else None
        self._succeeded()
        self._import()

    def _command(self) -> list[str]:
        session = self.session
        if not session.is_open:
            raise InputError("the run's refinement data is gone; segment again")
        if not in_scene(session.segmentation_node):
            raise InputError("the segmentation was removed; segment again")
        if not np.allclose(matrix_array(node_ijk_to_ras(session.input_volume)),
                           session.ijk_to_ras, atol=1e-6):
            raise InputError("the input volume moved since the run; segment again")
        strokes = session.strokes(self.organ)
        if not strokes.any():
            raise InputError(f"paint at least one stroke into the "
                             f"{session.spec(self.organ).display_name} stroke segments")
        self._sent = session.labelmap()
        self.temporary_folder = Path(tempfile.mkdtemp(prefix="job-", dir=session.folder))
        self._geometry = volume_from_node(session.input_volume)
        write_volume(self._geometry.with_array(self._sent), self._segmentation_path,
                     compress=False)
        write_volume(self._geometry.with_array(strokes), self._strokes_path, compress=False)
        kept = session.kept
        return refine_command(kept.input_path, self._segmentation_path, self._strokes_path,
                              self._output_path, probabilities=kept.probabilities_path,
                              model=kept.model if kept.server is None else None, task=kept.task,
                              server=[] if kept.server is None
                              else kept.server.engine_flags(self.temporary_folder),
                              python=self.python)

    @property
    def _segmentation_path(self) -> Path:
        return self._temporary_path("segmentation.nrrd")

    @property
    def _strokes_path(self) -> Path:
        return self._temporary_path("strokes.nrrd")

    @property
    def _output_path(self) -> Path:
        return self._temporary_path("labels.nrrd")

    def _apply(self) -> None:
        """Check the engine's labelmap against the input grid, then rewrite the changed organs."""
        labels = read_volume(self._output_path)
        assert self._geometry is not None and self._sent is not None  # _command set them
        check_same_grid(labels, self._geometry)
        if not in_scene(self.session.segmentation_node):
            raise InputError("the segmentation was removed during the refinement")
        returned = labelmap_codes(labels.array).astype(np.uint8, copy=False)
        self.changed = self.session.apply(self._sent, returned, self.organ)

    def _done_message(self) -> str:
        changed = ", ".join(self.session.spec(name).display_name for name in self.changed)
        return (f"refined in {self.elapsed_s:.1f} s: {changed or 'nothing changed'}")
