"""The ``deeporganseg`` command end to end: outputs, progress protocol, exit codes, no debris."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ellipsoid_scene
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.metrics import dice
from DeepOrganSegLib.volume_io import read_volume, write_volume


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory):
    image, labels = ellipsoid_scene(seed=31)
    folder = tmp_path_factory.mktemp("scene")
    return write_volume(image, folder / "ct.nrrd"), labels


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "DeepOrganSegLib", *args], capture_output=True,
                          text=True, timeout=300)


def test_segment_writes_labelmap_on_input_grid_with_stats(tiny_model_path, scene_file, tmp_path):
    path, truth = scene_file
    output, stats = tmp_path / "labels.nii.gz", tmp_path / "stats.json"
    code = main(["segment", str(path), str(output), "--model", str(tiny_model_path),
                 "--task", "abdomen-ct", "--stats", str(stats), "--progress", "none"])
    assert code == 0
    labels, image = read_volume(output), read_volume(path)
    assert labels.size == image.size
    np.testing.assert_allclose(labels.spacing, image.spacing, rtol=1e-6)
    np.testing.assert_allclose(labels.origin, image.origin, atol=1e-4)
    assert dice(labels.array, truth.array, 1) > 0.85
    document = json.loads(stats.read_text(encoding="utf-8"))
    liver = next(entry for entry in document["labels"] if entry["name"] == "liver")
    expected_ml = (truth.array == 1).sum() * np.prod(truth.spacing) / 1000
    assert liver["volume_ml"] == pytest.approx(expected_ml, rel=0.15)
    assert liver["snomed"]["type"]["code"] == "10200004"


def test_progress_json_is_one_object_per_line_ending_in_done(tiny_model_path, scene_file, tmp_path):
    path, _ = scene_file
    result = _run("segment", str(path), str(tmp_path / "out.nrrd"), "--model",
                  str(tiny_model_path), "--progress", "json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    fractions = [event["fraction"] for event in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"load", "preprocess", "inference", "postprocess", "write"} <= {e["stage"] for e in events}
    assert events[-1]["stage"] == "done"


def test_seg_nrrd_carries_segment_names_colours_and_terminology(tiny_model_path, scene_file, tmp_path):
    path, _ = scene_file
    output = tmp_path / "labels.seg.nrrd"
    assert main(["segment", str(path), str(output), "--model", str(tiny_model_path),
                 "--progress", "none"]) == 0
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(output))
    reader.ReadImageInformation()
    assert reader.GetMetaData("Segment0_Name") == "Liver"
    assert reader.GetMetaData("Segment1_LabelValue") == "2"
    assert "SCT^78961009^Spleen" in reader.GetMetaData("Segment1_Tags")


def test_organ_subset_keeps_only_the_chosen_organs(tiny_model_path, scene_file, tmp_path):
    path, _ = scene_file
    output = tmp_path / "spleen.nii.gz"
    assert main(["segment", str(path), str(output), "--model", str(tiny_model_path),
                 "--organs", "spleen", "--progress", "none"]) == 0
    assert set(np.unique(read_volume(output).array)) == {0, 2}


@pytest.mark.parametrize("arguments, message", [
    (["missing.nii.gz", "OUT"], "no such file"),
    (["INPUT", "OUT", "--task", "brain-mr"], "no task 'brain-mr'"),
    (["INPUT", "nowhere/out.nii.gz"], "does not exist"),
    (["INPUT", "out.png"], "unsupported output format"),
    (["INPUT", "OUT", "--organs", "heart"], "no organ 'heart'"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(tiny_model_path, scene_file, tmp_path,
                                                       capsys, arguments, message):
    path, _ = scene_file
    output = tmp_path / "out.nii.gz"
    replaced = [str(path) if a == "INPUT" else str(output) if a == "OUT" else
                str(tmp_path / a) if a.endswith((".gz", ".png")) else a for a in arguments]
    code = main(["segment", *replaced, "--model", str(tiny_model_path), "--progress", "none"])
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert list(tmp_path.iterdir()) == []


def test_bad_model_file_exits_2(scene_file, tmp_path, capsys):
    path, _ = scene_file
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x00" * 64)
    assert main(["segment", str(path), str(tmp_path / "o.nrrd"), "--model", str(model)]) == 2
    assert "error:" in capsys.readouterr().err


def test_info_describes_the_model(tiny_model_path, capsys):
    assert main(["info", str(tiny_model_path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["tasks"][0]["labels"][0]["name"] == "liver"


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_cancels_with_exit_code_3_and_leaves_no_file(tiny_model_path, tmp_path):
    big = ellipsoid_scene(seed=5, shape=(120, 160, 160), spacing=(0.8, 0.8, 1.0))[0]
    source = write_volume(big, tmp_path / "big.nrrd")
    output = tmp_path / "labels.nii.gz"
    process = subprocess.Popen([sys.executable, "-m", "DeepOrganSegLib", "segment", str(source),
                                str(output), "--model", str(tiny_model_path), "--progress", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if json.loads(line)["stage"] in ("preprocess", "inference"):
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    assert process.returncode == 3
    assert time.monotonic() - sent < 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nrrd"]


def test_a_missing_python_package_is_an_install_problem_not_an_internal_error(
        tiny_model_path, scene_file, tmp_path, capsys, monkeypatch):
    """A clean Slicer (or a bare venv) lacks safetensors: the user is told what to install,
    with exit code 2, instead of 'internal error ... report it'."""
    import builtins

    real_import = builtins.__import__

    def without_safetensors(name, *args, **kwargs):
        if name.startswith("safetensors"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_safetensors)
    code = main(["segment", str(scene_file[0]), str(tmp_path / "out.nii.gz"), "--model",
                 str(tiny_model_path), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "'safetensors' is missing" in err and "internal error" not in err, err


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    """`deeporganseg info | head -1`: no 'internal error', no traceback on stderr."""
    process = subprocess.Popen([sys.executable, "-m", "DeepOrganSegLib", "info"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader goes away before the command writes
    err = process.stderr.read().decode()
    process.wait(timeout=60)
    assert "internal error" not in err and "Traceback" not in err, err
