"""Tier 2: refining a run's organs with strokes in Slicer, against the real MRML of the PyPI
``slicer-core`` wheel: stroke segments, the engine's ``refine`` in a subprocess, only the
changed organs rewritten, undo, and nothing left behind.

Strokes are painted as the Segment Editor's Paint effect applies them: through
``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap`` (the code the effect calls from Slicer
5.10 on; Slicer 5.8's ``qSlicerSegmentEditorAbstractEffect`` does the same in C++), with the
stroke editor's own parameter node, overwrite mode included."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (MRML)")
vtk = pytest.importorskip("vtk")

from helpers import ellipsoid_scene, fresh_mrml_scene, paint_stroke  # noqa: E402
from served import Served  # noqa: E402
from DeepOrganSegLib.metrics import dice  # noqa: E402
from DeepOrganSegLib.options import SegmentationOptions  # noqa: E402
from DeepOrganSegLib.mrml.job import SegmentationRequest, run_segmentation  # noqa: E402
from DeepOrganSegLib.mrml.nodes import add_volume_node, node_ijk_to_ras  # noqa: E402
from DeepOrganSegLib.mrml.refine import (RefineJob, RefinementSession,  # noqa: E402
                                         segment_mask_on_grid)
from DeepOrganSegLib.mrml.refine import _set_segment_mask  # noqa: E402
from DeepOrganSegLib.mrml.runner import RunState  # noqa: E402
from DeepOrganSegLib.mrml.server import ServerConnection  # noqa: E402


@pytest.fixture
def mrml_scene():
    yield from fresh_mrml_scene()


@pytest.fixture
def refinable(mrml_scene, tiny_model_path, tmp_path):
    """A run of the tiny model on an ellipsoid abdomen that kept what refinement needs."""
    image, truth = ellipsoid_scene(seed=5)
    volume = add_volume_node(mrml_scene, image, "CT")
    job = run_segmentation(SegmentationRequest(volume, tiny_model_path,
                                               options=SegmentationOptions(task="abdomen-ct"),
                                               keep_for_refinement=True), sys.executable,
                           temporary_root=tmp_path)
    session = RefinementSession.of(job)
    yield session, truth.array
    session.close()


def _replace_segment(session, segment_id: str, mask: np.ndarray) -> None:
    """Set a segment's voxels outright (to make an organ the network "missed")."""
    _set_segment_mask(session.segmentation_node, segment_id, mask,
                      node_ijk_to_ras(session.input_volume))


def _mask(session, segment_id: str) -> np.ndarray:
    return segment_mask_on_grid(session.segmentation_node, segment_id,
                                session.labelmap().shape, node_ijk_to_ras(session.input_volume))


def _refine(session, organ: str) -> RefineJob:
    job = RefineJob(session, organ, sys.executable)
    job.start()
    assert job.wait(timeout=120) is RunState.DONE, job.failure
    return job


def test_a_kept_run_holds_its_input_and_probabilities_until_closed(refinable):
    session, _ = refinable
    assert session.kept.input_path.is_file() and session.kept.probabilities_path.is_file()
    session.scribble_segments("liver")
    session.close()
    assert not session.folder.exists()
    segmentation = session.segmentation_node.GetSegmentation()
    names = [segmentation.GetNthSegment(n).GetName()
             for n in range(segmentation.GetNumberOfSegments())]
    assert not any("strokes" in name for name in names)  # the stroke segments are gone too


def test_refine_grows_a_missed_organ_from_add_strokes_and_leaves_the_others(refinable):
    session, truth = refinable
    _, spleen_id = session.organ_segments["spleen"]
    _, liver_id = session.organ_segments["liver"]
    empty = np.zeros(truth.shape, bool)
    _replace_segment(session, spleen_id, empty)  # the network "missed" the spleen
    liver_before = _mask(session, liver_id)
    add, _ = session.scribble_segments("spleen")
    strokes = np.zeros(truth.shape, bool)
    centre = np.argwhere(truth == 2).mean(axis=0).round().astype(int)
    strokes[centre[0] - 1: centre[0] + 2, centre[1], centre[2] - 2: centre[2] + 3] = True
    paint_stroke(session, add, strokes)

    job = _refine(session, "spleen")
    spleen = _mask(session, spleen_id)
    assert dice(spleen.astype(np.uint8), (truth == 2).astype(np.uint8), 1) > 0.8
    assert spleen[strokes].all()  # clamped strokes keep their organ
    assert job.changed == ["spleen"]
    assert np.array_equal(_mask(session, liver_id), liver_before)  # not scribbled: untouched
    assert not _mask(session, add).any()  # the strokes were used up


def test_a_run_made_on_a_server_is_refined_on_that_server(mrml_scene, tiny_model_path,
                                                          tmp_path):
    """Issue 33: the panel's "Server…" device refines where it segmented (the server's warm
    model); with the server gone, a refinement fails in one line and changes nothing."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    served = Served(tiny_model_path, tmp_path / "server")
    try:
        image, truth_volume = ellipsoid_scene(seed=5)
        truth = truth_volume.array
        volume = add_volume_node(mrml_scene, image, "CT on a server")
        job = run_segmentation(SegmentationRequest(
            volume, tiny_model_path, options=SegmentationOptions(task="abdomen-ct"),
            keep_for_refinement=True, server=ServerConnection(served.url)), sys.executable,
            temporary_root=tmp_path)
        session = RefinementSession.of(job)
        assert session.kept.server == ServerConnection(served.url)
        _, spleen_id = session.organ_segments["spleen"]
        _replace_segment(session, spleen_id, np.zeros(truth.shape, bool))
        add, _ = session.scribble_segments("spleen")
        strokes = np.zeros(truth.shape, bool)
        centre = np.argwhere(truth == 2).mean(axis=0).round().astype(int)
        strokes[centre[0] - 1: centre[0] + 2, centre[1], centre[2] - 2: centre[2] + 3] = True
        paint_stroke(session, add, strokes)
        assert _refine(session, "spleen").changed == ["spleen"]
        assert dice(_mask(session, spleen_id).astype(np.uint8),
                    (truth == 2).astype(np.uint8), 1) > 0.8
    finally:
        assert served.stop() == 0
    before = _mask(session, spleen_id)
    paint_stroke(session, add, strokes)
    gone = RefineJob(session, "spleen", sys.executable)
    gone.start()
    assert gone.wait(timeout=120) is RunState.FAILED
    assert "\n" not in gone.failure.message and served.url in gone.failure.message
    assert np.array_equal(_mask(session, spleen_id), before)
    session.close()


def _warm(session) -> None:
    """Start the session's warm engine and wait until it is ready."""
    session.warm_up(sys.executable)
    deadline = time.monotonic() + 120
    while session.warm_engine() is None:
        assert session.warm is not None, "the warm engine ended"
        assert time.monotonic() < deadline, "the warm engine never got ready"
        time.sleep(0.05)


def _spleen_strokes(session, truth) -> None:
    add, _ = session.scribble_segments("spleen")
    strokes = np.zeros(truth.shape, bool)
    centre = np.argwhere(truth == 2).mean(axis=0).round().astype(int)
    strokes[centre[0] - 1: centre[0] + 2, centre[1], centre[2] - 2: centre[2] + 3] = True
    paint_stroke(session, add, strokes)


def test_the_warm_engine_refines_as_a_cold_refine_does(refinable):
    """Issue 31: with the session's warm engine (``refine-session``) ready, Refine sends it the
    request instead of starting ``deeporganseg refine``; the segments come out the same."""
    session, truth = refinable
    _, spleen_id = session.organ_segments["spleen"]
    _replace_segment(session, spleen_id, np.zeros(truth.shape, bool))
    _spleen_strokes(session, truth)
    assert not _refine(session, "spleen").warm
    cold = _mask(session, spleen_id)
    session.undo()
    _warm(session)
    _spleen_strokes(session, truth)
    job = _refine(session, "spleen")
    assert job.warm and job.changed == ["spleen"]
    assert np.array_equal(_mask(session, spleen_id), cold)
    warm = session.warm
    session.close()
    assert warm.process.wait(timeout=30) is not None, "closing the session ends the engine"


def test_cancelling_a_warm_refinement_ends_the_engine_and_changes_nothing(refinable):
    session, truth = refinable
    _, spleen_id = session.organ_segments["spleen"]
    before = _mask(session, spleen_id)
    _warm(session)
    _spleen_strokes(session, truth)
    job = RefineJob(session, "spleen", sys.executable)
    job.start()
    assert job.warm
    job.cancel()
    assert job.wait(timeout=60) is RunState.CANCELLED
    assert np.array_equal(_mask(session, spleen_id), before) and session.warm is None
    again = _refine(session, "spleen")  # the next one runs cold
    assert not again.warm and again.changed == ["spleen"]


def test_undo_restores_the_segments_a_refinement_changed(refinable):
    session, truth = refinable
    _, liver_id = session.organ_segments["liver"]
    liver = _mask(session, liver_id)
    _, remove = session.scribble_segments("liver")
    strokes = np.zeros(truth.shape, bool)
    top = np.argwhere(liver)[:, 0].max()
    strokes[top - 1: top + 1] = liver[top - 1: top + 1]  # "not liver" on its top slices
    paint_stroke(session, remove, strokes)

    _refine(session, "liver")
    after = _mask(session, liver_id)
    assert not after[strokes].any() and not np.array_equal(after, liver)
    assert session.can_undo
    session.undo()
    assert np.array_equal(_mask(session, liver_id), liver)
    assert not session.can_undo


def test_refine_without_strokes_is_refused_before_any_work(refinable):
    session, _ = refinable
    job = RefineJob(session, "liver", sys.executable)
    with pytest.raises(Exception, match="paint at least one stroke"):
        job.start()
    assert job.state is RunState.FAILED


def test_cancelled_refinement_leaves_the_segments_as_they_were(refinable):
    session, truth = refinable
    _, liver_id = session.organ_segments["liver"]
    before = _mask(session, liver_id)
    _, remove = session.scribble_segments("liver")
    strokes = np.zeros(truth.shape, bool)
    top = np.argwhere(before)[:, 0].max()
    strokes[top] = before[top]
    paint_stroke(session, remove, strokes)
    job = RefineJob(session, "liver", sys.executable)
    job.start()
    job.cancel()
    assert job.wait(timeout=60) is RunState.CANCELLED
    assert np.array_equal(_mask(session, liver_id), before)
    assert _mask(session, remove).any()  # the strokes are kept for another try
    assert not session.can_undo


def test_a_stroke_that_strays_onto_other_organs_leaves_them_whole(refinable):
    """Issue 32, defect 1: an "add liver" stroke that crosses the spleen (and runs over liver
    voxels) changes neither organ before Refine is clicked: the labelmap sent to the engine, and
    the copy Undo restores, hold both organs whole; the stroke keeps every voxel painted."""
    session, truth = refinable
    _, liver_id = session.organ_segments["liver"]
    _, spleen_id = session.organ_segments["spleen"]
    liver, spleen = _mask(session, liver_id), _mask(session, spleen_id)
    labels_before = session.labelmap()
    add, _ = session.scribble_segments("liver")
    stroke = np.zeros(truth.shape, bool)
    k = int(np.argwhere(spleen)[:, 0].mean())
    j = int(np.argwhere(spleen[k])[:, 0].mean())
    stroke[k, j, :] = True  # across the slice: liver, body, spleen
    assert (stroke & liver).any() and (stroke & spleen).any()

    paint_stroke(session, add, stroke)
    assert np.array_equal(_mask(session, spleen_id), spleen)
    assert np.array_equal(_mask(session, liver_id), liver)
    assert np.array_equal(session.labelmap(), labels_before)
    assert np.array_equal(_mask(session, add), stroke)
