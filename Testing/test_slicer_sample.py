"""Tier 2: "Load sample", against the real MRML of the PyPI ``slicer-core`` wheel: a phantom of
the chosen task made by the engine in its own process (``deeporganseg phantom``) and added as
one volume node; a task the generator does not know fails in one line, the scene unchanged."""

from __future__ import annotations

import sys

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (MRML)")

from helpers import fresh_mrml_scene  # noqa: E402
from DeepOrganSegLib.mrml.nodes import volume_from_node  # noqa: E402
from DeepOrganSegLib.mrml.runner import RunState  # noqa: E402
from DeepOrganSegLib.mrml.sample import SAMPLE_TAG, SampleJob  # noqa: E402
from DeepOrganSegLib.phantoms import make_phantom  # noqa: E402


@pytest.fixture
def mrml_scene():
    yield from fresh_mrml_scene()


def test_a_sample_is_the_tasks_phantom_made_in_the_engine_process(mrml_scene, tmp_path):
    job = SampleJob(mrml_scene, "abdomen-ct", sys.executable, seed=2, temporary_root=tmp_path)
    job.start()
    assert job.wait(timeout=300) is RunState.DONE, job.failure
    node = job.volume_node
    assert node.GetScene() is mrml_scene and node.GetName() == "Sample abdomen-ct"
    assert node.GetAttribute(SAMPLE_TAG) == "abdomen-ct seed 2"
    expected = make_phantom("abdomen-ct", 2).image
    loaded = volume_from_node(node)
    assert loaded.size == expected.size and loaded.spacing == pytest.approx(expected.spacing)
    assert abs(float(loaded.array.mean()) - float(expected.array.mean())) < 1.0
    assert not job.temporary_folder.exists()


def test_a_task_without_a_phantom_fails_in_one_line_and_adds_nothing(mrml_scene, tmp_path):
    before = mrml_scene.GetNumberOfNodes()
    job = SampleJob(mrml_scene, "knee-mr", sys.executable, temporary_root=tmp_path)
    job.start()
    assert job.wait(timeout=120) is RunState.FAILED
    assert "invalid choice: 'knee-mr'" in job.failure.message
    assert "\n" not in job.failure.message
    assert mrml_scene.GetNumberOfNodes() == before
