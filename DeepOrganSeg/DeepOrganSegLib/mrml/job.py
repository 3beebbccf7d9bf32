"""One segmentation run as a state machine the module polls: check, export the input, run
``deeporganseg segment`` in a child process (:mod:`.runner`), import the result (:mod:`.nodes`).

The Slicer module's Logic is a thin wrapper around :class:`SegmentationJob`, so that pytest
against real MRML (the PyPI ``slicer-core`` wheel) exercises the code Slicer runs.

A run never leaves the scene half-changed:

1. ``start()`` checks everything it can before any work (volume, model file, task, organs,
   output node), writes the input to a private temporary folder and launches the engine;
2. ``poll()`` follows the engine; nothing in the scene is touched while it runs;
3. when the engine succeeded, the result is built into free-standing segments first and only
   then committed: a new segmentation node is added, or the segments the run produced replace
   their namesakes in the chosen segmentation, whose other segments are kept as they are;
4. a cancelled or failed run commits nothing; the temporary folder is removed in every case.

The engine returns its labelmap on exactly the input's grid; that is checked before the
segments are built on the input node's own IJK-to-RAS matrix.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from ..model import LabelSpec, read_metadata
from ..devices import check_device_name
from ..errors import InputError
from ..options import SegmentationOptions
from ..volume import Volume
from ..volume_io import read_volume, write_volume
from .nodes import (MODEL_TAG, TASK_TAG, check_same_grid, in_scene, matrix_array,
                    merge_segments, node_ijk_to_ras, parent_transform_id, place_next_to,
                    segments_from_labelmap, set_show_3d, volume_from_node)
from .eta import StageProfile
from .server import ServerConnection
from .runner import EngineCommandJob, EngineFailure, RunState, segment_command
from .uncertainty import set_uncertainty_node

__all__ = ["SegmentationRequest", "OrganResult", "SegmentationOutcome", "KeptRun",
           "SegmentationJob", "SegmentationFailed", "check_request", "run_segmentation"]


# ---------------------------------------------------------------------------------------------
# One run: request -> engine subprocess -> segments in the scene.


@dataclass
class SegmentationRequest:
    """What the user asked for: the nodes, the engine's options (the very object the engine
    runs with, sent as its command line) and what to do in the scene.
    ``output_segmentation=None``: a new node on success."""

    input_volume: Any  # MRML nodes (Slicer ships no type stubs)
    model: Path
    output_segmentation: Any = None
    options: SegmentationOptions = SegmentationOptions()
    show_3d: bool = False
    #: Replace the user's own segments named like an organ (after asking, in the panel);
    #: otherwise they are kept and the new organ segment is added beside them.
    replace_hand_drawn: bool = False
    #: Keep the input and the network's probabilities for scribble refinement
    #: (:class:`KeptRun` in the outcome; ``refine.RefinementSession.of(job)``).
    keep_for_refinement: bool = False
    #: Also bring the voxelwise uncertainty into the scene (``SegmentationOutcome
    #: .uncertainty_node``; shown with ``uncertainty.show_uncertainty``).
    uncertainty: bool = False
    #: Run on this ``deeporganseg serve`` machine (its model and device; ``model`` above then
    #: only names the tasks and organs offered) instead of here.
    server: ServerConnection | None = None


@dataclass(frozen=True)
class OrganResult:
    """One organ of a finished run, as shown in the results table."""

    name: str
    display_name: str
    color: tuple[int, int, int]
    segment_id: str
    volume_ml: float
    mean_intensity: float | None
    #: The network's mean confidence inside the organ (0-1; None when it was not found).
    confidence: float | None = None
    #: Flagged by the engine for a look (confidence below its review threshold).
    review: bool = False


@dataclass(frozen=True)
class SegmentationOutcome:
    """A finished run: where its segments are and what the engine measured."""

    segmentation_node: object
    task: str
    device: str
    crf: bool
    engine_seconds: float
    organs: tuple[OrganResult, ...]
    #: What refinement needs, when the request kept it (remove with ``discard()``).
    kept: KeptRun | None = None
    #: The voxelwise uncertainty's volume node, when the request asked for it.
    uncertainty_node: object | None = None


@dataclass(frozen=True)
class KeptRun:
    """A finished run's input volume and class probabilities (on the input grid), kept in a
    private folder for refinement, and which segment holds which organ."""

    folder: Path
    model: Path
    task: str
    #: organ name -> (its label spec, the ID of its segment)
    organ_segments: dict[str, tuple[LabelSpec, str]]
    #: The server the run was made on: its refinements go there too.
    server: ServerConnection | None = None

    @property
    def input_path(self) -> Path:
        return self.folder / "input.nrrd"

    @property
    def probabilities_path(self) -> Path:
        return self.folder / "probabilities.nrrd"

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class SegmentationFailed(RuntimeError):
    """A run that was waited for did not succeed. ``failure`` says why (``message`` is one
    line, ``details`` holds the engine's stderr or the traceback); ``job`` is the run."""

    def __init__(self, job: SegmentationJob) -> None:
        self.job = job
        self.failure = job.failure or EngineFailure("the run was cancelled", 3)
        super().__init__(self.failure.message)


def _check_still_in_scene(request: SegmentationRequest) -> None:
    """The nodes a run writes to still exist: a scene closed or a node deleted while the engine
    ran ends the run as FAILED with nothing imported, never as DONE into an orphan node."""
    volume, output = request.input_volume, request.output_segmentation
    if not in_scene(volume):
        raise InputError("the input volume was removed (or the scene closed) during the run; "
                         "nothing was imported")
    if output is not None and not in_scene(output):
        raise InputError("the output segmentation was removed during the run; nothing was "
                         "imported")


def check_request(request: SegmentationRequest) -> None:
    """Check everything that can be checked before any work; raises InputError."""
    node = request.input_volume
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA(
            "vtkMRMLLabelMapVolumeNode"):
        raise InputError("choose a scalar input volume (not a labelmap)")
    if node.GetScene() is None:
        raise InputError(f"volume '{node.GetName()}' is not in the scene")
    options = request.options
    if request.server is not None:  # the server checks the task and organs against its model
        request.server.check()
        return _check_output(request)
    metadata = read_metadata(request.model)
    tasks = [task.name for task in metadata.tasks]
    if options.task != "auto" and options.task not in tasks:
        raise InputError(f"the model has no task '{options.task}'; choose one of: "
                         + ", ".join(["auto", *tasks]))
    if options.organs:
        if options.task == "auto":
            raise InputError("choose a task to segment a subset of its organs")
        metadata.selected_labels(options.task, options.organs)  # the engine's own check
    check_device_name(options.inference.device)
    _check_output(request)


def _check_output(request: SegmentationRequest) -> None:
    """The output segmentation, when one is chosen: a segmentation under the input's
    transform."""
    node = request.input_volume
    output = request.output_segmentation
    if output is not None:
        if not output.IsA("vtkMRMLSegmentationNode"):
            raise InputError("the output must be a segmentation node")
        if parent_transform_id(output) != parent_transform_id(node):
            raise InputError(
                f"segmentation '{output.GetName()}' is under another transform than volume "
                f"'{node.GetName()}'; choose a new segmentation or harden the transforms")


class SegmentationJob(EngineCommandJob):
    """One click on Segment, followed by polling (the states of :class:`.runner.EngineCommandJob`:
    IDLE -> STARTING -> RUNNING -> IMPORTING -> DONE, or -> CANCEL_REQUESTED -> CANCELLED, or
    -> FAILED).

    The scene is only touched by the import after a successful run (the one step done on the
    caller's thread; a fraction of a second); the temporary folder is removed when the job
    finishes, whatever the outcome."""

    def __init__(self, request: SegmentationRequest, python: str, *,
                 environment: dict[str, str] | None = None,
                 temporary_root: str | Path | None = None,
                 earlier: StageProfile | None = None) -> None:
        super().__init__(python, environment=environment, earlier=earlier)
        self.request = request
        self.temporary_root = temporary_root
        self.outcome: SegmentationOutcome | None = None
        self._input: Volume | None = None

    def _command(self) -> list[str]:
        """Check the request, write the input into a new temporary folder; the engine's
        command line."""
        check_request(self.request)
        self._input = volume_from_node(self.request.input_volume)
        self._ijk_to_ras = matrix_array(node_ijk_to_ras(self.request.input_volume))
        self.temporary_folder = Path(tempfile.mkdtemp(prefix="DeepOrganSeg-",
                                                      dir=self.temporary_root))
        input_path = write_volume(self._input, self._input_path, compress=False)
        request = self.request
        server = request.server
        options = request.options if server is None else replace(
            request.options, inference=replace(request.options.inference, device="auto"))
        return segment_command(
            input_path, self._labelmap_path, self._stats_path,
            model=request.model if server is None else None, options=options,
            probabilities=self._probabilities_path if request.keep_for_refinement else None,
            uncertainty=self._uncertainty_path if request.uncertainty else None,
            server=[] if server is None else server.engine_flags(self.temporary_folder),
            python=self.python)

    @property
    def _input_path(self) -> Path:
        return self._temporary_path("input.nrrd")

    @property
    def _labelmap_path(self) -> Path:
        return self._temporary_path("labels.nrrd")

    @property
    def _probabilities_path(self) -> Path:
        return self._temporary_path("probabilities.nrrd")

    @property
    def _uncertainty_path(self) -> Path:
        return self._temporary_path("uncertainty.nrrd")

    @property
    def _stats_path(self) -> Path:
        return self._temporary_path("stats.json")

    def _apply(self) -> None:
        self.outcome = self._commit(*self._build())

    def _build(self) -> tuple[list[tuple[str, object]], dict, Volume | None]:
        """Read the engine's outputs and build the segments, touching nothing in the scene."""
        statistics = json.loads(self._stats_path.read_text(encoding="utf-8"))
        labels = read_volume(self._labelmap_path)
        assert self._input is not None  # _command read it
        check_same_grid(labels, self._input)
        uncertainty = read_volume(self._uncertainty_path) if self.request.uncertainty else None
        if uncertainty is not None:
            check_same_grid(uncertainty, self._input)
        _check_still_in_scene(self.request)
        if not np.allclose(matrix_array(node_ijk_to_ras(self.request.input_volume)),
                           self._ijk_to_ras, atol=1e-6):
            raise InputError("the input volume moved during the run (a transform was hardened "
                             "or its geometry edited); nothing was imported: segment again")
        specs = [LabelSpec.from_dict(entry, f"labels[{index}]")
                 for index, entry in enumerate(statistics["labels"])]
        model = (Path(self.request.model).name if self.request.server is None
                 else f"the model of {self.request.server.url}")
        tags = {MODEL_TAG: model, TASK_TAG: str(statistics["task"])}
        segments = segments_from_labelmap(labels.array, node_ijk_to_ras(self.request.input_volume),
                                          specs, tags)
        return segments, statistics, uncertainty

    def _commit(self, segments: list[tuple[str, object]], statistics: dict,
                uncertainty: Volume | None) -> SegmentationOutcome:
        """Put the built segments into the scene (the only step that changes it)."""
        _check_still_in_scene(self.request)
        volume = self.request.input_volume
        scene = volume.GetScene()
        node = self.request.output_segmentation
        created = node is None
        if created:
            node = scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode",
                scene.GenerateUniqueName(f"{volume.GetName()} segmentation"))
        try:
            if created:
                node.CreateDefaultDisplayNodes()
                node.SetAndObserveTransformNodeID(parent_transform_id(volume))
                place_next_to(node, volume)
            if created or not node.GetSegmentation().GetConversionParameter(
                    slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()):
                node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
            segment_ids = merge_segments(node, segments, self.request.replace_hand_drawn)
            if self.request.show_3d:
                set_show_3d(node, True)
            uncertainty_node = (None if uncertainty is None
                                else set_uncertainty_node(volume, uncertainty))
        except Exception:
            if created:
                scene.RemoveNode(node)
            raise
        organs = tuple(
            OrganResult(name=entry["name"], display_name=entry["display_name"],
                        color=tuple(entry["color"]), segment_id=segment_id,
                        volume_ml=float(entry["volume_ml"]),
                        mean_intensity=_finite(entry.get("mean_intensity")),
                        confidence=_finite(entry.get("confidence")),
                        review=bool(entry.get("review", False)))
            for entry, segment_id in zip(statistics["labels"], segment_ids))
        kept = None
        if self.request.keep_for_refinement:
            specs = [LabelSpec.from_dict(entry, "labels") for entry in statistics["labels"]]
            kept = KeptRun(Path(tempfile.mkdtemp(prefix="DeepOrganSeg-refine-",
                                                 dir=self.temporary_root)),
                           Path(self.request.model), str(statistics["task"]),
                           {spec.name: (spec, segment_id)
                            for spec, segment_id in zip(specs, segment_ids)},
                           self.request.server)
            shutil.move(str(self._input_path), kept.input_path)
            shutil.move(str(self._probabilities_path), kept.probabilities_path)
        return SegmentationOutcome(
            segmentation_node=node, task=str(statistics["task"]),
            device=str(statistics.get("device", "")), crf=bool(statistics.get("crf", False)),
            engine_seconds=float(statistics.get("elapsed_s", 0.0)), organs=organs, kept=kept,
            uncertainty_node=uncertainty_node)

    def _done_message(self) -> str:
        assert self.outcome is not None  # _apply sets it before the job finishes DONE
        return f"{len(self.outcome.organs)} organs in {self.elapsed_s:.1f} s"


def _finite(value: Any) -> float | None:
    """A statistic as a float, or None when the engine had none (not found: null or NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def run_segmentation(request: SegmentationRequest, python: str, *,
                     environment: dict[str, str] | None = None,
                     temporary_root: str | Path | None = None) -> SegmentationJob:
    """Run one segmentation to the end; raises :class:`SegmentationFailed` unless it is DONE.

    What scripts and tests call (and the module's Logic with ``waitForCompletion=True``)."""
    job = SegmentationJob(request, python, environment=environment,
                          temporary_root=temporary_root)
    job.start()
    job.wait()
    if job.state is not RunState.DONE:
        raise SegmentationFailed(job)
    return job
