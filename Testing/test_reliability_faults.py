"""Faults during a run: cancel in every stage, a kill during the write, CUDA out of memory, and
output locations that cannot take the result (read-only, full) reported before inference.

A cancelled or failed run ends with its documented exit code and leaves nothing behind; a
killed one never leaves a partial file under an output's name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import ellipsoid_scene
from DeepOrganSegLib import cli, labelmap_io, outputs, segment
from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.crf.parameters import CRFParameters
from DeepOrganSegLib.errors import Cancelled
from DeepOrganSegLib.progress import CancelToken
from DeepOrganSegLib.options import InferenceSettings
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume_io import read_volume, write_volume

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


@pytest.fixture(scope="module")
def crf_model_path(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny model with CRF parameters in its metadata, so that runs have a ``crf`` stage."""
    from safetensors.torch import save_file

    loaded = load_model(tiny_model_path)
    document = loaded.metadata.to_dict()
    document["crf"] = CRFParameters(iterations=5, side_output_weights=(0.2,)).to_dict()
    path = tmp_path_factory.mktemp("crf-model") / "tiny-crf.safetensors"
    tensors = {k: v.contiguous() for k, v in loaded.network.state_dict().items()}
    save_file(tensors, str(path), metadata={"deeporganseg": json.dumps(document)})
    return path


@pytest.fixture(scope="module")
def large_input(tmp_path_factory) -> Path:
    """A 3 M-voxel CT: each stage lasts long enough to be interrupted, the write (labelmap and
    class probabilities, ~40 MB compressed) the longest."""
    image = ellipsoid_scene(seed=5, shape=(120, 160, 160), spacing=(0.8, 0.8, 1.0))[0]
    return write_volume(image, tmp_path_factory.mktemp("large") / "ct.nrrd", compress=False)


def _start(model: Path, source: Path, outputs: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "DeepOrganSegLib", "segment", str(source),
         str(outputs / "labels.nii.gz"), "--model", str(model), "--progress", "json",
         "--probabilities", str(outputs / "probabilities.nrrd"),
         "--stats", str(outputs / "stats.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_stage(process: subprocess.Popen, stage: str) -> list[str]:
    """Read progress events until ``stage`` appears; the stages seen on the way."""
    seen = []
    for line in process.stdout:
        event = json.loads(line)
        seen.append(event["stage"])
        if event["stage"] == stage:
            return seen
    pytest.fail(f"the run ended before stage {stage!r} (saw {seen}): {process.stderr.read()}")


STAGES = ["load", "preprocess", "inference", "crf", "postprocess", "write"]


@posix_only
@pytest.mark.parametrize("stage", STAGES)
def test_cancel_in_each_stage_exits_3_within_2_s_and_leaves_nothing(crf_model_path, large_input,
                                                                     tmp_path, stage):
    outputs = tmp_path / "out"
    outputs.mkdir()
    process = _start(crf_model_path, large_input, outputs)
    _wait_for_stage(process, stage)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    elapsed = time.monotonic() - sent
    err = process.stderr.read().strip()
    assert process.returncode == 3, err
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s"
    assert err.splitlines()[-1].startswith("error: cancelled"), err
    assert "Traceback" not in err
    assert list(outputs.iterdir()) == [], "outputs or temporaries were left behind"


@posix_only
@pytest.mark.parametrize("delay_s", [0.0, 0.5])
def test_kill_during_write_never_leaves_a_partial_output(crf_model_path, large_input, tmp_path,
                                                         delay_s):
    """SIGKILL cannot be handled: a hidden temporary (``.labels.nii.gz.*``) may stay, but a
    file under an output's own name is always complete (written aside, renamed atomically)."""
    outputs = tmp_path / "out"
    outputs.mkdir()
    process = _start(crf_model_path, large_input, outputs)
    _wait_for_stage(process, "write")
    time.sleep(delay_s)
    process.kill()
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    visible = [path for path in outputs.iterdir() if not path.name.startswith(".")]
    assert not (outputs / "stats.json").exists(), "the run was not killed during the write"
    for path in visible:  # complete: readable, on the input's grid
        assert read_volume(path).size == (160, 160, 120), path


def test_engine_cancel_takes_effect_within_the_stage(crf_model_path):
    """In-process (the Slicer Logic and scripts call the engine directly): a cancel made when a
    stage starts raises Cancelled before any later stage reports."""
    image = ellipsoid_scene(seed=3)[0]
    model = load_model(crf_model_path)
    for stage in ("preprocess", "inference", "crf", "postprocess"):
        token, seen = CancelToken(), []

        def progress(name: str, fraction: float, message: str = "") -> None:
            seen.append(name)
            if name == stage:
                token.cancel()

        with pytest.raises(Cancelled):
            segment_volume(image, model, SegmentationOptions(task="abdomen-ct"),
                           progress=progress, cancel=token)
        later = STAGES[STAGES.index(stage) + 1:]
        assert stage in seen and not set(seen) & set(later), (stage, seen)


# ---------------------------------------------------------------------------------------------
# CUDA out of memory: smaller tiles twice, then the CPU.


@pytest.mark.parametrize("failures, budgets, device", [
    (1, [1_000_000_000, 500_000_000], "cuda"),
    (2, [1_000_000_000, 500_000_000, 250_000_000], "cuda"),
    (3, [1_000_000_000, 500_000_000, 250_000_000, 250_000_000], "cpu"),
])
def test_cuda_out_of_memory_falls_back_to_smaller_tiles_then_cpu(monkeypatch, failures, budgets,
                                                                  device):
    attempts = []

    def fake_segment_volume(volume, model, options, progress, cancel):
        attempts.append((options.inference.memory_budget_bytes, options.inference.device))
        if len(attempts) <= failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return SimpleNamespace(device=options.inference.device)

    monkeypatch.setattr(segment, "segment_volume", fake_segment_volume)
    events = []
    model = SimpleNamespace(network=torch.nn.Linear(1, 1))
    options = SegmentationOptions(inference=InferenceSettings(
        device="cuda", memory_budget_bytes=1_000_000_000))
    result = segment.segment_with_fallback(None, model, options,
                                           lambda *event: events.append(event), CancelToken())
    assert [budget for budget, _ in attempts] == budgets
    assert attempts[-1][1] == result.device == device
    warnings = [message for stage, _, message in events if stage == "warning"]
    assert len(warnings) == failures
    assert all("GPU out of memory" in message for message in warnings)
    if device == "cpu":
        assert "falling back to the CPU" in warnings[-1]


# ---------------------------------------------------------------------------------------------
# Output locations that cannot take the result: refused before inference.


@pytest.fixture(scope="module")
def small_input(tmp_path_factory) -> Path:
    return write_volume(ellipsoid_scene(seed=7)[0], tmp_path_factory.mktemp("small") / "ct.nrrd")


def _run_json(capsys, argv: list[str]) -> tuple[int, list[dict], str]:
    code = cli.main([*argv, "--progress", "json"])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err.strip()


def _assert_refused_before_inference(code, events, err, pattern):
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and pattern in err, err
    assert events[-1]["stage"] == "error" and events[-1]["exit_code"] == 2
    assert not {"inference", "crf", "postprocess", "write"} & {e["stage"] for e in events}


def test_unwritable_location_is_reported_before_inference(tiny_model_path, small_input, capsys):
    """``/proc`` refuses new files even to root (tests here run as root, who ignores file
    permissions, so a chmod'ed folder would prove nothing)."""
    code, events, err = _run_json(capsys, ["segment", str(small_input), "/proc/labels.nii.gz",
                                           "--model", str(tiny_model_path)])
    _assert_refused_before_inference(code, events, err, "is not writable")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores folder permissions; see the /proc case")
def test_read_only_folder_is_reported_before_inference(tiny_model_path, small_input, tmp_path,
                                                       capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, events, err = _run_json(capsys, ["segment", str(small_input),
                                               str(folder / "labels.nii.gz"),
                                               "--model", str(tiny_model_path)])
    finally:
        folder.chmod(0o755)
    _assert_refused_before_inference(code, events, err, "is not writable")
    assert list(folder.iterdir()) == []


def test_file_in_place_of_output_folder_is_reported(tiny_model_path, small_input, tmp_path,
                                                    capsys):
    (tmp_path / "results").write_text("a file, not a folder")
    code, events, err = _run_json(capsys, ["segment", str(small_input),
                                           str(tmp_path / "results" / "labels.nii.gz"),
                                           "--model", str(tiny_model_path)])
    _assert_refused_before_inference(code, events, err, "does not exist")


@pytest.mark.parametrize("argument", ["output", "--stats", "--probabilities", "--uncertainty"])
def test_output_that_is_a_folder_is_reported(tiny_model_path, small_input, tmp_path, capsys,
                                             argument):
    """``segment ct.nrrd results/``: the folder is named as such, not as an unknown format."""
    folder = tmp_path / "results"
    folder.mkdir()
    output = f"{folder}{os.sep}" if argument == "output" else str(tmp_path / "labels.nii.gz")
    side = [argument, str(folder)] if argument != "output" else []
    code, events, err = _run_json(capsys, ["segment", str(small_input), output,
                                           "--model", str(tiny_model_path), *side])
    _assert_refused_before_inference(code, events, err, "results: is a folder; give a file name")
    assert [p.name for p in tmp_path.iterdir()] == ["results"] and not any(folder.iterdir())


@pytest.mark.parametrize("option, name", [("--stats", "stats.json"),
                                          ("--probabilities", "probabilities.nrrd"),
                                          ("--uncertainty", "uncertainty.nrrd")])
def test_missing_folder_of_a_side_file_is_reported_before_anything_is_written(
        tiny_model_path, small_input, tmp_path, capsys, option, name):
    code, events, err = _run_json(capsys, ["segment", str(small_input),
                                           str(tmp_path / "labels.nii.gz"),
                                           "--model", str(tiny_model_path),
                                           option, str(tmp_path / "missing" / name)])
    _assert_refused_before_inference(code, events, err, "output folder")
    assert "missing does not exist; create it first" in err
    assert list(tmp_path.iterdir()) == [], "the main output (or a temporary file) was written"


def test_full_disk_is_reported_before_inference(tiny_model_path, small_input, tmp_path, capsys,
                                                monkeypatch):
    real = os.statvfs(tmp_path)
    full = SimpleNamespace(f_bavail=1, f_frsize=real.f_frsize)
    monkeypatch.setattr(outputs.os, "statvfs", lambda folder: full)
    code, events, err = _run_json(capsys, ["segment", str(small_input),
                                           str(tmp_path / "labels.nii.gz"),
                                           "--model", str(tiny_model_path)])
    _assert_refused_before_inference(code, events, err, "MB free")
    assert list(tmp_path.iterdir()) == []


def test_disk_filling_up_during_the_write_is_one_line_and_no_file(tiny_model_path, small_input,
                                                                  tmp_path, capsys, monkeypatch):
    """The free-space check passed but the disk filled up meanwhile: the writer's failure is
    reported in one line (exit 2), the temporary file removed."""
    def no_space(image, path, *args):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: itkNiftiImageIO"
                           ".cxx:2187:\nITK ERROR: NiftiImageIO(0x55d0c0ffee00): No space left on "
                           "device")

    monkeypatch.setattr(labelmap_io.sitk, "WriteImage", no_space)
    output = tmp_path / "out" / "labels.nii.gz"
    output.parent.mkdir()
    code, events, err = _run_json(capsys, ["segment", str(small_input), str(output),
                                           "--model", str(tiny_model_path)])
    assert code == 2 and "cannot write (No space left on device)" in err and "\n" not in err
    assert list(output.parent.iterdir()) == []
