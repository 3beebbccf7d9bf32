"""Scribble refinement (DeepOrganSegLib.refine and ``deeporganseg refine``): strokes grow a
missed organ and cut a false one, only that organ changes, stroked voxels keep their label."""

import numpy as np
import pytest

from helpers import CT_NORMALIZATION, ellipsoid_scene
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.metrics import dice
from DeepOrganSegLib.refine import refine
from DeepOrganSegLib.strokes import REMOVE_OFFSET, Scribbles
from DeepOrganSegLib.volume_io import write_volume

CHANNELS = [0, 1, 2]  # background, liver, spleen (the scene's values)


@pytest.fixture(scope="module")
def missed_spleen():
    """The scene with a network that found the liver and missed the spleen entirely."""
    image, truth = ellipsoid_scene(seed=13)
    labels = np.where(truth.array == 1, 1, 0).astype(np.uint8)
    probabilities = np.zeros((*labels.shape, 3), np.float32)
    probabilities[..., 0] = np.where(labels == 1, 0.05, 0.97)
    probabilities[..., 1] = np.where(labels == 1, 0.94, 0.02)
    probabilities[..., 2] = 0.01
    return image, truth, labels, probabilities


def _disc_strokes(truth: np.ndarray, value: int, slices: int = 3) -> np.ndarray:
    """A few small strokes inside the organ, on axial slices through it."""
    strokes = np.zeros(truth.shape, bool)
    inside = np.argwhere(truth == value)
    for k in np.linspace(inside[:, 0].min() + 2, inside[:, 0].max() - 2, slices).astype(int):
        j, i = np.argwhere(truth[k] == value).mean(axis=0).astype(int)
        strokes[k, j - 1:j + 2, i - 1:i + 2] = True
    return strokes & (truth == value)


def _refine(image, labels, probabilities, add, remove, organ=2):
    return refine(image.array, labels, probabilities, CHANNELS, organ, Scribbles(add, remove),
                  tuple(image.spacing[::-1]), CT_NORMALIZATION)


def test_a_missed_organ_grows_from_a_few_strokes(missed_spleen):
    image, truth, labels, probabilities = missed_spleen
    add = _disc_strokes(truth.array, 2)
    result = _refine(image, labels, probabilities, add, np.zeros_like(add))
    assert dice(labels, truth.array, 2) == 0.0
    assert dice(result.labels, truth.array, 2) > 0.8


def test_refinement_changes_only_the_scribbled_organ(missed_spleen):
    image, truth, labels, probabilities = missed_spleen
    add = _disc_strokes(truth.array, 2)
    result = _refine(image, labels, probabilities, add, np.zeros_like(add)).labels
    untouched = (labels != 2) & (result != 2)
    np.testing.assert_array_equal(result[untouched], labels[untouched])
    assert (result == 1).sum() == (labels == 1).sum()  # the liver stays as it was


def test_stroked_voxels_keep_the_label_they_were_given(missed_spleen):
    image, truth, labels, probabilities = missed_spleen
    add = _disc_strokes(truth.array, 2)
    grown = _refine(image, labels, probabilities, add, np.zeros_like(add)).labels
    remove = _disc_strokes(truth.array, 2, slices=1)
    cut = _refine(image, grown, probabilities, add & ~remove, remove).labels
    assert (grown[add] == 2).all()
    assert (cut[remove] != 2).all() and (cut[add & ~remove] == 2).all()


def test_refining_without_strokes_is_a_one_line_input_error(missed_spleen):
    from DeepOrganSegLib.errors import InputError

    image, _, labels, probabilities = missed_spleen
    none = np.zeros(labels.shape, bool)
    with pytest.raises(InputError, match="no strokes"):
        _refine(image, labels, probabilities, none, none)


@pytest.fixture()
def segment_run(tiny_model_path, tmp_path):
    image, truth = ellipsoid_scene(seed=17)
    source = write_volume(image, tmp_path / "ct.nrrd")
    segmentation, probabilities = tmp_path / "seg.nrrd", tmp_path / "prob.nrrd"
    assert main(["segment", str(source), str(segmentation), "--model", str(tiny_model_path),
                 "--probabilities", str(probabilities), "--progress", "none"]) == 0
    return image, truth, source, segmentation, probabilities


def _spleen_strokes(image, truth, tmp_path):
    """'This is the spleen' strokes inside the true spleen, and their labelmap file."""
    strokes = np.where(_disc_strokes(truth.array, 2), 2, 0).astype(np.uint8)
    return strokes, write_volume(image.with_array(strokes), tmp_path / "scribbles.nrrd")


def test_the_refine_command_writes_the_corrected_labelmap(segment_run, tiny_model_path,
                                                          tmp_path):
    from DeepOrganSegLib.volume_io import read_volume

    image, truth, source, segmentation, probabilities = segment_run
    strokes, scribbles = _spleen_strokes(image, truth, tmp_path)
    output = tmp_path / "refined.seg.nrrd"
    assert main(["refine", str(source), str(segmentation), str(scribbles), str(output),
                 "--probabilities", str(probabilities), "--model", str(tiny_model_path)]) == 0
    refined = read_volume(output)
    assert refined.array.shape == image.array.shape
    assert (refined.array[strokes > 0] == 2).all()


@pytest.mark.parametrize("problem", ["unknown organ", "other grid", "output is input"])
def test_the_refine_command_refuses_bad_input_in_one_line(segment_run, tiny_model_path,
                                                          tmp_path, capsys, problem):
    image, truth, source, segmentation, probabilities = segment_run
    value = 9 if problem == "unknown organ" else REMOVE_OFFSET + 2
    strokes = np.where(truth.array == 2, value, 0).astype(np.uint8)
    scribble_volume = image.with_array(strokes)
    if problem == "other grid":
        scribble_volume = scribble_volume.__class__(strokes, (1.0, 1.0, 1.0), image.origin,
                                                    image.direction)
    scribbles = write_volume(scribble_volume, tmp_path / "scribbles.nrrd")
    output = segmentation if problem == "output is input" else tmp_path / "out.nrrd"
    before = segmentation.read_bytes()
    code = main(["refine", str(source), str(segmentation), str(scribbles), str(output),
                 "--probabilities", str(probabilities), "--model", str(tiny_model_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert segmentation.read_bytes() == before
    assert problem == "output is input" or not output.exists()


def test_a_refine_session_answers_each_request_as_the_refine_command_would(segment_run,
                                                                            tiny_model_path,
                                                                            tmp_path):
    """The warm engine of the panel's Refine section: files read once, then one JSON request
    per line; its outputs equal ``deeporganseg refine``'s, a bad request is answered in one line
    and the session goes on, and the end of stdin ends it."""
    import json
    import os
    import subprocess
    import sys

    from DeepOrganSegLib.volume_io import read_volume

    image, truth, source, segmentation, probabilities = segment_run
    _, scribbles = _spleen_strokes(image, truth, tmp_path)
    by_command = tmp_path / "by-command.nrrd"
    assert main(["refine", str(source), str(segmentation), str(scribbles), str(by_command),
                 "--probabilities", str(probabilities), "--model", str(tiny_model_path)]) == 0
    requests = [
        {"segmentation": str(segmentation), "scribbles": str(scribbles),
         "output": str(tmp_path / "first.nrrd")},
        {"segmentation": str(segmentation), "scribbles": str(tmp_path / "missing.nrrd"),
         "output": str(tmp_path / "never.nrrd")},
        {"segmentation": str(segmentation), "scribbles": str(scribbles)},
        {"segmentation": str(segmentation), "scribbles": str(scribbles),
         "output": str(segmentation)},
        {"segmentation": str(segmentation), "scribbles": str(scribbles),
         "output": str(tmp_path / "second.nrrd")},  # nothing of the first request stays
    ]
    before = segmentation.read_bytes()
    session = subprocess.run(
        [sys.executable, "-m", "DeepOrganSegLib", "refine-session", str(source),
         "--probabilities", str(probabilities), "--model", str(tiny_model_path)],
        input="".join(json.dumps(request) + "\n" for request in requests) + "not json\n",
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert session.returncode == 0, session.stderr
    ready, *answers = [json.loads(line) for line in session.stdout.splitlines()]
    assert ready["ready"] is True
    assert [sorted(answer) for answer in answers] == [
        ["output", "seconds"], ["error", "exit_code"], ["error", "exit_code"],
        ["error", "exit_code"], ["output", "seconds"], ["error", "exit_code"]]
    assert all(answer["exit_code"] == 2 and "\n" not in answer["error"]
               for answer in answers if "error" in answer)
    expected = read_volume(by_command).array
    np.testing.assert_array_equal(read_volume(tmp_path / "first.nrrd").array, expected)
    np.testing.assert_array_equal(read_volume(tmp_path / "second.nrrd").array, expected)
    assert not (tmp_path / "never.nrrd").exists()
    assert segmentation.read_bytes() == before


def test_an_idle_refine_session_ends_on_sigterm_with_exit_code_3(segment_run, tiny_model_path):
    """The panel closes its warm engine with SIGTERM while it waits for a request (stdin still
    open): it must end at once, saying so in one line, not wait for the end of stdin."""
    import json
    import os
    import signal
    import subprocess
    import sys

    _, _, source, _, probabilities = segment_run
    session = subprocess.Popen(
        [sys.executable, "-m", "DeepOrganSegLib", "refine-session", str(source),
         "--probabilities", str(probabilities), "--model", str(tiny_model_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert json.loads(session.stdout.readline())["ready"] is True
        session.send_signal(signal.SIGTERM)
        assert session.wait(timeout=30) == 3
        assert session.stderr.read().strip() == "error: cancelled by the user"
    finally:
        session.kill()
        session.communicate()
