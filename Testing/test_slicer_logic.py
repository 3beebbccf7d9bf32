"""Tier 2: the Slicer module's Logic against the real MRML of the PyPI ``slicer-core`` wheel.

The checks themselves live in ``DeepOrganSeg/Testing/Python/DeepOrganSegTestBodies.py``, which
the module's self-test in Slicer runs too; here they get a scene, an oblique test case and the
tiny model. The engine runs as a subprocess exactly as in Slicer, with this interpreter.
Below them, the process runner's own behaviour (progress parsing, failures, killing the process
tree) is checked with small stand-in engines.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (MRML)")

from Testing.Python import DeepOrganSegTestBodies as bodies  # noqa: E402
from helpers import ellipsoid_scene, fresh_mrml_scene  # noqa: E402
from served import Served  # noqa: E402
from DeepOrganSegLib.mrml import runner  # noqa: E402
from DeepOrganSegLib.metrics import dice  # noqa: E402
from DeepOrganSegLib.mrml.job import (SegmentationFailed, SegmentationJob,  # noqa: E402
                                      SegmentationRequest, run_segmentation)
from DeepOrganSegLib.mrml.logic import EngineLogic  # noqa: E402
from DeepOrganSegLib.mrml.nodes import add_volume_node  # noqa: E402
from DeepOrganSegLib.errors import InputError  # noqa: E402
from DeepOrganSegLib.options import InferenceSettings, SegmentationOptions  # noqa: E402
from DeepOrganSegLib.progress import (AutoTaskNote, JsonProgress, ProgressEvent,  # noqa: E402
                                      parse_progress_line)
from DeepOrganSegLib.mrml.runner import RunState  # noqa: E402
from DeepOrganSegLib.mrml.server import ServerConnection  # noqa: E402
from DeepOrganSegLib.volume import Volume  # noqa: E402

MODULE_RESOURCES = Path(__file__).resolve().parents[1] / "DeepOrganSeg" / "Resources"


def rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    x, y, z = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_copy(image: Volume, truth: Volume, direction: np.ndarray,
                 spacing: tuple[float, float, float]) -> tuple[Volume, Volume]:
    """The same patient resampled onto a grid with ``direction`` and ``spacing`` that covers
    it whole (image: linear, air outside; truth: nearest neighbour)."""
    corners = image.index_to_physical(
        np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        * (np.array(image.size) - 1))
    in_frame = corners @ direction  # coordinates along the new axes
    low, high = in_frame.min(axis=0), in_frame.max(axis=0)
    size = [int(n) for n in np.ceil((high - low) / spacing) + 1]
    origin = tuple(direction @ low)

    def resample(volume: Volume, interpolator: int, default: float) -> np.ndarray:
        resampled = sitk.Resample(volume.to_sitk(), size, sitk.Transform(), interpolator, origin,
                                  spacing, direction.flatten().tolist(), default)
        return sitk.GetArrayFromImage(resampled)

    geometry = dict(spacing=spacing, origin=origin, direction=direction)
    return (Volume(resample(image, sitk.sitkLinear, -1000.0).astype(np.float32), **geometry),
            Volume(resample(truth, sitk.sitkNearestNeighbor, 0).astype(np.uint8), **geometry))


@pytest.fixture(scope="module")
def mrml_scene():
    yield from fresh_mrml_scene()


@pytest.fixture(scope="module")
def context(mrml_scene, tiny_model_path, tmp_path_factory) -> bodies.Context:
    """An ellipsoid abdomen, resampled onto an oblique, flipped, anisotropic grid."""
    image, truth = ellipsoid_scene(seed=11)
    direction = rotation((18.0, -12.0, 25.0)) @ np.diag([1.0, -1.0, 1.0])
    image, truth = oblique_copy(image, truth, direction, spacing=(2.3, 2.6, 3.1))
    case = bodies.Case(image=image, truth=truth, organs={1: "liver", 2: "spleen"},
                       model=tiny_model_path, task="abdomen-ct")

    def start(request) -> SegmentationJob:
        job = SegmentationJob(request, sys.executable)
        job.start()
        return job

    return bodies.Context(scene=mrml_scene, case=case,
                          run=lambda request: run_segmentation(request, sys.executable),
                          start=start, python=sys.executable,
                          workdir=tmp_path_factory.mktemp("slicer-logic"))


@pytest.fixture(scope="module")
def phantom_run(context) -> bodies.PhantomRun:
    return bodies.segment_phantom(context)


# ---------------------------------------------------------------------------------------------
# The shared bodies (the module's self-test in Slicer calls the same ones).


def test_volume_node_keeps_oblique_geometry(context):
    bodies.test_volume_node_keeps_oblique_geometry(context)


def test_output_geometry_matches_oblique_input(context, phantom_run):
    bodies.test_output_geometry_matches_oblique_input(context, phantom_run)


def test_segments_carry_model_names_colours_and_terminology(context, phantom_run):
    bodies.test_segments_carry_model_names_colours_and_terminology(context, phantom_run)


def test_segmentation_is_placed_next_to_the_input(context, phantom_run):
    bodies.test_segmentation_is_placed_next_to_the_input(context, phantom_run)


def test_dice_against_truth_is_at_least_the_cli(context, phantom_run, capsys):
    bodies.test_dice_against_truth_is_at_least_the_cli(context, phantom_run)
    with capsys.disabled():
        print(f"\n    Logic vs CLI on the oblique case: {context.measurements}")


def test_existing_segmentation_keeps_other_segments(context):
    bodies.test_existing_segmentation_keeps_other_segments(context)


def test_cancelled_run_leaves_scene_unchanged(context):
    bodies.test_cancelled_run_leaves_scene_unchanged(context)


def test_failing_run_leaves_scene_unchanged(context):
    bodies.test_failing_run_leaves_scene_unchanged(context)


def test_bad_requests_are_refused_before_any_work(context):
    bodies.test_bad_requests_are_refused_before_any_work(context)


def test_input_deleted_during_a_run_fails_and_imports_nothing(context):
    bodies.test_input_deleted_during_a_run_fails_and_imports_nothing(context)


def test_input_moved_during_a_run_fails_and_imports_nothing(context):
    bodies.test_input_moved_during_a_run_fails_and_imports_nothing(context)


def test_the_self_test_with_its_packages_runs_every_check_in_order(context):
    """The self-test's own sequence (``bodies.run_checks``, what ``DeepOrganSegTest`` calls),
    with the engine's packages there: nothing skipped. In a scene of its own, as the self-test
    clears Slicer's."""
    previous, scenes = slicer.mrmlScene, fresh_mrml_scene()
    shown: list[str] = []
    try:
        own = dataclasses.replace(context, scene=next(scenes), measurements={})
        assert bodies.run_checks(own, [], shown.append) == {}
    finally:
        next(scenes, None)
        slicer.mrmlScene = previous
    assert shown == [check.__name__ for check in (
        *bodies.TESTS_WITHOUT_ENGINE, *bodies.TESTS_ON_CONTEXT, bodies.segment_phantom,
        *bodies.TESTS_ON_PHANTOM_RUN)]


def test_the_self_test_without_its_packages_runs_the_mrml_checks_and_skips_the_others(
        mrml_scene, tiny_model_path, tmp_path):
    """A Slicer without the engine's packages: the checks without the engine run on a
    NumPy-made case; every other is skipped with the reason, and no engine is ever started."""
    def no_engine(request):
        raise AssertionError("an engine run was started without the packages")

    case = bodies.plain_case(tiny_model_path, "abdomen-ct")
    context = bodies.Context(scene=mrml_scene, case=case,
                             run=lambda request: run_segmentation(request, "no-python"),
                             start=no_engine, python="no-python", workdir=tmp_path)
    shown: list[str] = []
    skipped = bodies.run_checks(context, ["torch>=2.2"], shown.append)
    assert shown[:2] == [check.__name__ for check in bodies.TESTS_WITHOUT_ENGINE]
    assert set(skipped) == {check.__name__ for check in (
        *bodies.TESTS_ON_CONTEXT, bodies.segment_phantom, *bodies.TESTS_ON_PHANTOM_RUN)}
    assert all(reason.startswith("needs torch>=2.2, not installed") for reason in
               skipped.values())
    assert shown[2:] == [f"skipped {name}: {reason}" for name, reason in skipped.items()]


def test_the_logic_follows_one_job_by_polling_and_times_the_next_run_by_this_ones_stages(
        context, tmp_path):
    """``EngineLogic`` (the module's Logic without Qt): a started run is advanced by ``poll``
    with the callbacks, a second job is refused while it runs, and the finished run's stages
    are what the next run's time left is estimated from."""
    requirements = MODULE_RESOURCES / "requirements.txt"
    logic = EngineLogic(lambda: sys.executable, requirements,
                        temporary_root=lambda: str(tmp_path), scene=lambda: context.scene)
    volume = add_volume_node(context.scene, context.case.image, "followed CT")
    request = SegmentationRequest(volume, context.case.model,
                                  options=SegmentationOptions(task=context.case.task))
    polled, completed = [], []
    job = logic.process(request, progressCallback=polled.append,
                        completedCallback=completed.append)
    assert logic.isRunning and not logic.isInstalling
    with pytest.raises(RuntimeError, match="another DeepOrganSeg job is running"):
        logic.process(request)
    while not logic.poll().finished:
        time.sleep(0.05)
    assert job.state is RunState.DONE and completed == [job] and set(polled) == {job}
    assert not logic.isRunning
    stages = [stage for stage, _share, _seconds in logic.stageProfile.stages]
    assert stages[0] == "load" and "inference" in stages
    second = logic.process(request)
    assert second.remaining.earlier is logic.stageProfile
    logic.cancel(wait=True)
    assert second.state is RunState.CANCELLED


# ---------------------------------------------------------------------------------------------
# The panel's "Server…" device: the same Logic, the engine command with --server.

SERVER_TOKEN = "slicer-logic-test-token"


@pytest.fixture(scope="module")
def served(tiny_model_path, tmp_path_factory):
    """A ``deeporganseg serve`` with a token, on localhost (the tiny model)."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    folder = tmp_path_factory.mktemp("served")
    token = folder / "token"
    token.write_text(SERVER_TOKEN)
    token.chmod(0o600)
    server = Served(tiny_model_path, folder, "--token-file", str(token))
    yield server
    assert server.stop() == 0


def _scene_xml(scene) -> str:
    """The scene as it would be saved (.mrml)."""
    scene.SetSaveToXMLString(1)
    scene.Commit()
    return scene.GetSceneXMLString()


def test_a_run_on_a_server_imports_what_the_local_run_imports_and_keeps_no_secret(
        context, phantom_run, served, tmp_path):
    """The Logic with ``server=``: the same segments voxel for voxel as the local run of the same
    volume; the token never reaches the scene, and the job's folder (its token file) is gone."""
    request = SegmentationRequest(
        phantom_run.volume_node, context.case.model,
        options=SegmentationOptions(task=context.case.task),
        server=ServerConnection(served.url, SERVER_TOKEN))
    job = SegmentationJob(request, sys.executable, temporary_root=tmp_path)
    job.start()
    assert job.wait(timeout=120) is RunState.DONE, job.failure
    local, remote = phantom_run.job.outcome, job.outcome
    try:
        assert [o.name for o in remote.organs] == [o.name for o in local.organs]
        for mine, theirs in zip(local.organs, remote.organs):
            np.testing.assert_array_equal(
                bodies.segment_mask(remote.segmentation_node, theirs.segment_id,
                                    phantom_run.volume_node),
                bodies.segment_mask(local.segmentation_node, mine.segment_id,
                                    phantom_run.volume_node))
        assert SERVER_TOKEN not in _scene_xml(context.scene)
        assert not list(tmp_path.iterdir()), "the job's folder and token file are removed"
    finally:
        context.scene.RemoveNode(remote.segmentation_node)


def test_a_wrong_server_token_fails_in_one_line_and_leaves_the_scene_as_it_was(
        context, phantom_run, served, tmp_path):
    before = bodies.scene_snapshot(context.scene)
    request = SegmentationRequest(
        phantom_run.volume_node, context.case.model,
        options=SegmentationOptions(task=context.case.task),
        server=ServerConnection(served.url, "not-the-token"))
    with pytest.raises(SegmentationFailed) as failed:
        run_segmentation(request, sys.executable, temporary_root=tmp_path)
    message = failed.value.failure.message
    assert "\n" not in message and "token" in message, message
    assert bodies.scene_snapshot(context.scene) == before
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("url, token, reason", [
    ("gpu.example:8765", "", "is not http(s)://host:port"),
    ("ftp://gpu.example", "", "is not http(s)://host:port"),
    ("https://gpu.example:8765", "two words", "holds a space or a line break")])
def test_a_server_that_cannot_work_is_refused_before_any_work(context, phantom_run, url, token,
                                                             reason, tmp_path):
    request = SegmentationRequest(phantom_run.volume_node, context.case.model,
                                  server=ServerConnection(url, token))
    with pytest.raises(InputError, match=re.escape(reason)):
        run_segmentation(request, sys.executable, temporary_root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_oblique_case_is_faithful_to_its_source():
    """The oblique resampling used above keeps the organs (else the Dice test means little)."""
    image, truth = ellipsoid_scene(seed=11)
    direction = rotation((18.0, -12.0, 25.0)) @ np.diag([1.0, -1.0, 1.0])
    oblique_image, oblique_truth = oblique_copy(image, truth, direction, (2.3, 2.6, 3.1))
    for value in (1, 2):
        source_ml = (truth.array == value).sum() * truth.voxel_volume_ml
        oblique_ml = (oblique_truth.array == value).sum() * oblique_truth.voxel_volume_ml
        assert oblique_ml == pytest.approx(source_ml, rel=0.1)
    assert dice(oblique_truth.array, oblique_truth.array, 1) == 1.0
    assert oblique_image.array.max() > 80  # organs kept their intensity


# ---------------------------------------------------------------------------------------------
# The process runner, with stand-in engines.


def fake_engine(script: str) -> list[str]:
    """A command that runs ``script`` in this interpreter, like the engine would be run."""
    return [sys.executable, "-c", textwrap.dedent(script)]


def test_progress_lines_are_parsed_and_chatter_ignored():
    parse = parse_progress_line
    assert parse('{"stage": "inference", "fraction": 0.5, "message": "tile 2/4"}') == \
        ProgressEvent("inference", 0.5, "tile 2/4")
    assert parse('{"stage": "error", "message": "bad volume", "exit_code": 2}') == \
        ProgressEvent("error", 0.0, "bad volume", exit_code=2)
    assert parse('{"stage": "crf", "fraction": 7}').fraction == 1.0
    assert parse('{"stage": "preprocess", "message": "auto: CT", "auto_task": "abdomen-ct"}') == \
        ProgressEvent("preprocess", 0.0, "auto: CT", auto_task="abdomen-ct")
    for chatter in ("UserWarning: something", "", "{not json", '{"no": "stage"}', "[1, 2]"):
        assert parse(chatter) is None


def test_the_auto_choice_travels_as_its_own_field_of_the_progress_line(capsys):
    """The task Auto chose is written only on the line that reports it (an AutoTaskNote) and
    read back from that field, never from the message's text."""
    progress = JsonProgress()
    progress("preprocess", 0.1, AutoTaskNote("auto: CT, regions chest..abdomen, task abdomen-ct",
                                             "abdomen-ct"))
    progress("preprocess", 0.2, "auto: a message that only looks like the choice")
    first, second = (parse_progress_line(line) for line in capsys.readouterr().out.splitlines())
    assert first == ProgressEvent("preprocess", 0.1,
                                  "auto: CT, regions chest..abdomen, task abdomen-ct",
                                  auto_task="abdomen-ct")
    assert second.auto_task is None


def test_a_job_keeps_the_auto_choice_and_the_warnings_as_notes(tmp_path):
    class StandIn(runner.EngineCommandJob):
        def _command(self) -> list[str]:
            self.temporary_folder = tmp_path / "job"
            self.temporary_folder.mkdir()
            return fake_engine("""
                import json
                for line in ({"stage": "preprocess", "message": "auto: CT, task abdomen-ct",
                              "auto_task": "abdomen-ct"},
                             {"stage": "warning", "message": "unusual spacing"},
                             {"stage": "inference", "message": "auto: not the choice"}):
                    print(json.dumps(line), flush=True)
            """)

        def _apply(self) -> None:
            pass

        def _done_message(self) -> str:
            return "done"

    job = StandIn(sys.executable)
    job.start()
    assert job.wait(timeout=60) is runner.RunState.DONE, job.failure
    assert job.notes == ["auto: CT, task abdomen-ct", "unusual spacing"]
    assert not job.temporary_folder.exists()


def test_segment_command_passes_every_choice():
    command = runner.segment_command(
        "in.nrrd", "out.nrrd", "stats.json", model="m.safetensors", options=SegmentationOptions(
            task="abdomen-ct", inference=InferenceSettings(device="cpu"), crf=True,
            crf_overrides={"iterations": 3, "theta_alpha_mm": 12.5}, organs=("liver", "spleen")),
        python="PythonSlicer")
    assert command[:4] == ["PythonSlicer", "-m", "DeepOrganSegLib.cli", "segment"]
    assert command[command.index("--progress") + 1] == "json"
    assert command[command.index("--stats") + 1] == "stats.json"
    assert "--no-crf" not in command
    assert "iterations=3" in command and "theta_alpha_mm=12.5" in command
    assert command[command.index("--organs") + 1:][:2] == ["liver", "spleen"]
    no_crf = runner.segment_command("in.nrrd", "out.nrrd", "s.json", model="m",
                                    options=SegmentationOptions(crf=False,
                                                                crf_overrides={"iterations": 3}))
    assert "--no-crf" in no_crf and "--crf-param" not in no_crf and "--organs" not in no_crf


def test_engine_environment_puts_the_lib_first_on_the_path():
    environment = runner.engine_environment({"PYTHONPATH": "/elsewhere"})
    assert environment["PYTHONPATH"].split(os.pathsep) == [str(runner.LIB_PARENT), "/elsewhere"]
    assert (runner.LIB_PARENT / "DeepOrganSegLib" / "cli" / "__main__.py").is_file()


def test_progress_reaches_the_poller_while_the_engine_runs():
    process = runner.EngineProcess(fake_engine("""
        import json, time
        for stage, fraction in (("load", 0.1), ("inference", 0.6), ("done", 1.0)):
            print(json.dumps({"stage": stage, "fraction": fraction, "message": stage}), flush=True)
            time.sleep(0.2)
    """))
    process.start()
    seen = []
    while not process.finished:
        started = time.monotonic()
        seen += [event.stage for event in process.poll()]
        assert time.monotonic() - started < 0.1, "poll() must not block"
        time.sleep(0.02)
    assert seen == ["load", "inference", "done"]
    assert process.returncode == 0 and process.failure() is None


def test_engine_failure_gives_its_one_line_message_and_details():
    process = runner.EngineProcess(fake_engine("""
        import json, sys
        print("a warning the engine printed", file=sys.stderr)
        print(json.dumps({"stage": "error", "message": "volume is 2D; give a 3D volume",
                          "exit_code": 2}), flush=True)
        print("error: volume is 2D; give a 3D volume", file=sys.stderr)
        sys.exit(2)
    """))
    process.start()
    assert process.wait(timeout=30) == 2
    failure = process.failure()
    assert failure.message == "volume is 2D; give a 3D volume"
    assert failure.exit_code == 2
    assert "a warning the engine printed" in failure.details


def test_a_crash_without_progress_is_reported_from_stderr():
    process = runner.EngineProcess(fake_engine("""
        import sys
        print("error: internal error (ZeroDivisionError); report it", file=sys.stderr)
        sys.exit(1)
    """))
    process.start()
    process.wait(timeout=30)
    assert process.failure().message == "internal error (ZeroDivisionError); report it"


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_a_killed_engine_is_reported_as_such():
    """An engine killed from outside (say by the out-of-memory killer) leaves no message of its
    own; the failure says what happened and what to try."""
    process = runner.EngineProcess(fake_engine("""
        import json, os, signal
        print(json.dumps({"stage": "inference", "fraction": 0.4}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    process.start()
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert "killed (signal 9)" in process.failure().message


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_cancel_kills_the_whole_process_tree(tmp_path, monkeypatch):
    """An engine that ignores SIGTERM and has a child of its own: cancel ends both (the
    polite signal first, the kill after the grace period)."""
    monkeypatch.setattr(runner, "TERMINATE_GRACE_S", 0.5)
    pid_file = tmp_path / "grandchild.pid"
    process = runner.EngineProcess(fake_engine(f"""
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print(json.dumps({{"stage": "inference", "fraction": 0.2}}), flush=True)
        time.sleep(120)
    """))
    process.start()
    while not pid_file.exists() or not pid_file.read_text(encoding="utf-8"):
        process.poll()
        time.sleep(0.02)
    assert not bodies.process_group_is_gone(process.pid)
    started = time.monotonic()
    process.cancel()
    assert process.wait(timeout=30) == -signal.SIGKILL
    assert time.monotonic() - started < 10
    assert bodies.process_group_is_gone(process.pid), "the engine's own child survived"


# ---------------------------------------------------------------------------------------------
# Slicer's interpreter and Windows process handling (issue: the module as real Slicer runs it).


def test_engine_runs_in_pythonslicer_beside_the_application_never_in_slicer_itself(tmp_path):
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / name).write_text("")
    assert runner.slicer_python(tmp_path, which=lambda _: None) == str(tmp_path / "bin" / name)
    assert runner.slicer_python(tmp_path / "bin", which=lambda _: None) == str(tmp_path / "bin" / name)
    assert runner.slicer_python(None, which=lambda _: "/opt/Slicer/bin/PythonSlicer") == \
        "/opt/Slicer/bin/PythonSlicer"


def test_a_missing_pythonslicer_is_an_install_problem_not_slicer_relaunched(tmp_path):
    from DeepOrganSegLib.errors import DeepOrganSegError

    with pytest.raises(DeepOrganSegError, match="reinstall 3D Slicer"):
        runner.slicer_python(tmp_path, which=lambda _: None)


def test_windows_cancel_kills_the_tree_without_a_console_window(monkeypatch):
    calls = []
    monkeypatch.setattr(runner.os, "name", "nt")
    monkeypatch.setitem(sys.modules, "psutil", None)  # no psutil: taskkill is the fallback
    monkeypatch.setattr(runner.subprocess, "CREATE_NO_WINDOW", 0x08000000, raising=False)
    monkeypatch.setattr(runner.subprocess, "run", lambda *a, **k: calls.append((a, k)))

    class Child:
        pid = 4321

    runner.kill_process_tree(Child())
    (arguments,), options = calls[0]
    assert arguments[0] == "taskkill" and options["creationflags"] == 0x08000000


def test_importing_the_engine_leaves_the_host_process_environment_alone(monkeypatch):
    import importlib

    import DeepOrganSegLib

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    importlib.reload(DeepOrganSegLib)
    assert "OMP_WAIT_POLICY" not in os.environ  # Slicer's own process keeps its settings
    assert runner.engine_environment({})["OMP_WAIT_POLICY"] == "PASSIVE"  # the engine's child


def test_the_gpu_probe_asks_a_child_interpreter_and_never_imports_torch_here(tmp_path):
    answer = runner.probe_cuda(sys.executable)
    import torch

    assert answer == {"available": torch.cuda.is_available(), "torch": torch.__version__,
                      "device": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                      else ""}
    assert runner.probe_cuda(tmp_path / "no-such-python") is None
