"""No command destroys a user's data: an output that is an input (the same path, a hard link,
a symlink, a file inside an input DICOM folder) or another output is refused before any work,
with exit code 2 and one line, and the input stays byte for byte as it was."""

import hashlib
import os
from pathlib import Path

import pytest

from helpers import ellipsoid_scene
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.volume_io import write_volume


@pytest.fixture()
def scan(tmp_path) -> Path:
    return write_volume(ellipsoid_scene(seed=7)[0], tmp_path / "ct.nii.gz")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(capsys, code: int, *kept: Path, before: dict) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    for path in kept:
        assert _digest(path) == before[path], f"{path} changed"
    return err


def test_segment_refuses_to_write_its_output_over_the_input(tiny_model_path, scan, capsys):
    before = {scan: _digest(scan)}
    code = main(["segment", str(scan), str(scan), "--model", str(tiny_model_path),
                 "--progress", "none"])
    assert "destroy the input" in _refused(capsys, code, scan, before=before)


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_segment_refuses_an_output_that_is_a_link_to_the_input(tiny_model_path, scan, capsys,
                                                               link):
    alias = scan.with_name("alias.nii.gz")
    (os.link if link == "hard" else os.symlink)(scan, alias)
    before = {scan: _digest(scan)}
    code = main(["segment", str(scan), str(alias), "--model", str(tiny_model_path),
                 "--progress", "none"])
    _refused(capsys, code, scan, before=before)


def test_segment_refuses_to_write_over_its_model_file(tiny_model_path, scan, tmp_path, capsys):
    model = tmp_path / "model.safetensors"
    model.write_bytes(tiny_model_path.read_bytes())
    before = {model: _digest(model)}
    code = main(["segment", str(scan), str(tmp_path / "out.nii.gz"), "--model", str(model),
                 "--stats", str(model), "--progress", "none"])
    _refused(capsys, code, model, before=before)


@pytest.mark.parametrize("side", ["--stats", "--probabilities", "--uncertainty"])
def test_segment_refuses_side_files_over_the_input_or_the_output(tiny_model_path, scan, tmp_path,
                                                                 capsys, side):
    before = {scan: _digest(scan)}
    code = main(["segment", str(scan), str(tmp_path / "labels.nii.gz"), "--model",
                 str(tiny_model_path), side, str(scan), "--progress", "none"])
    _refused(capsys, code, scan, before=before)
    code = main(["segment", str(scan), str(tmp_path / "labels.nrrd"), "--model",
                 str(tiny_model_path), "--probabilities", str(tmp_path / "labels.nrrd"),
                 "--progress", "none"])
    assert "two outputs" in _refused(capsys, code, scan, before=before)
    assert not (tmp_path / "labels.nrrd").exists()


def test_segment_refuses_an_output_inside_the_input_dicom_folder(tiny_model_path, tmp_path,
                                                                capsys):
    series = tmp_path / "series"
    series.mkdir()
    (series / "IM0001").write_bytes(b"not read: the check comes first")
    before = {series / "IM0001": _digest(series / "IM0001")}
    code = main(["segment", str(series), str(series / "labels.nii.gz"), "--model",
                 str(tiny_model_path), "--progress", "none"])
    assert "inside the input folder" in _refused(capsys, code, series / "IM0001", before=before)
    assert sorted(p.name for p in series.iterdir()) == ["IM0001"]


def test_segment_replaces_an_existing_output_that_is_not_an_input(tiny_model_path, scan,
                                                                  tmp_path, capsys):
    output = tmp_path / "labels.nii.gz"
    output.write_bytes(b"an older result")
    assert main(["segment", str(scan), str(output), "--model", str(tiny_model_path),
                 "--task", "abdomen-ct", "--progress", "none"]) == 0
    assert output.read_bytes() != b"an older result"


def test_segment_help_says_what_happens_to_an_existing_output(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert "replaced, atomically" in " ".join(capsys.readouterr().out.split())


def test_phantom_refuses_the_same_file_for_image_and_labels(tmp_path, capsys):
    target = tmp_path / "case.nii.gz"
    code = main(["phantom", "--kind", "abdomen-ct", "--seed", "1", "--out", str(target),
                 "--labels", str(target)])
    assert code == 2 and "two outputs" in capsys.readouterr().err
    assert not target.exists()


def test_training_scripts_refuse_to_overwrite_what_they_read(tiny_model_path, tmp_path, capsys):
    from training.evaluate import main as evaluate_main
    from training.export import main as export_main
    from training.tune_crf import main as tune_main
    from training.entry import run_script

    model = tmp_path / "model.safetensors"
    model.write_bytes(tiny_model_path.read_bytes())
    before = {model: _digest(model)}
    for command in (lambda: export_main([str(model), str(model)]),
                    lambda: tune_main([str(model), "phantom:abdomen-ct:1", "--out", str(model)])):
        assert run_script(command) == 2
        _refused(capsys, 2, model, before=before)
    data = tmp_path / "msd"
    data.mkdir()
    assert run_script(lambda: evaluate_main([str(model), str(data), "--out",
                                             str(data / "results")])) == 2
    assert "inside the input folder" in capsys.readouterr().err
