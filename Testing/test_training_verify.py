"""Training data sets and configs verified before training (``training/verify.py``): each kind of
problem named with its case, every problem listed (the first 20, then a count), exit code 2 and
nothing written; and a config whose trained network the export would refuse, refused first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from DeepOrganSegLib.errors import ModelFileError
from DeepOrganSegLib.model import load_model, save_model
from DeepOrganSegLib.model.network import DSN3D
from training.config import load_config
from training.entry import run_script
from training.export import build_metadata
from training.train import main as train_main
from training.verify import config_problems, folder_problems

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "training" / "configs" / "tiny.yaml"


def _image(array: np.ndarray, origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    return image


#: The data sets' file ending (NIfTI's NaN is tested on its own: ITK reads it as 0).
ENDING = ".nrrd"


def _case(folder: Path, name: str, problem: str = "") -> None:
    """One nnU-Net case (``imagesTr/<name>_0000``, ``labelsTr/<name>``) of 8x16x16 voxels, a
    liver (1) in it, with ``problem`` when it names one of :data:`PROBLEMS`."""
    image = np.random.default_rng(0).normal(0, 100, (8, 16, 16)).astype(np.float32)
    labels = np.zeros((8, 16, 16), np.uint8)
    labels[2:6, 4:12, 4:12] = 1
    if problem == "nan":
        image[3, 3, 3] = np.nan
    if problem == "unnamed-value":
        labels[2, 4, 4] = 7
    if problem == "empty-labelmap":
        labels[:] = 0
    files = {folder / "imagesTr" / f"{name}_0000{ENDING}": _image(image),
             folder / "labelsTr" / f"{name}{ENDING}": _image(
                 labels, (0.0, 0.0, 4.0) if problem == "other-grid" else (0.0, 0.0, 0.0))}
    if problem == "fractional-labels":
        files[folder / "labelsTr" / f"{name}{ENDING}"] = _image(labels.astype(np.float32) * 0.5)
    if problem == "no-labelmap":
        del files[folder / "labelsTr" / f"{name}{ENDING}"]
    for path, item in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(item, str(path))


def _dataset(folder: Path, problems: dict[str, str], cases: int = 3, channels: int = 1) -> Path:
    """An nnU-Net folder of ``cases`` cases, ``problems`` giving some of them a problem."""
    for n in range(cases):
        _case(folder, f"c{n}", problems.get(f"c{n}", ""))
    if channels > 1:  # every case but those with a missing channel has all channel files
        for n in range(cases):
            if problems.get(f"c{n}") != "missing-channel":
                for channel in range(1, channels):
                    source = folder / "imagesTr" / f"c{n}_0000{ENDING}"
                    (folder / "imagesTr" / f"c{n}_{channel:04d}{ENDING}").write_bytes(
                        source.read_bytes())
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {str(n): "CT" for n in range(channels)},
        "labels": {"background": 0, "liver": 1}, "file_ending": ENDING}))
    return folder


#: Each problem a case can have, and what its one line says.
PROBLEMS = {
    "nan": "case c1: the image has 1 NaN or infinite voxel(s)",
    "unnamed-value": "case c1: the labelmap holds value(s) 7 that dataset.json does not name",
    "empty-labelmap": "case c1: the labelmap is empty (background only)",
    "fractional-labels": "case c1: the labelmap holds values that are not integers",
    "other-grid": "case c1: image and labelmap are on different grids (origin",
    "no-labelmap": "case c1: the image imagesTr/c1_0000.nrrd has no labelmap",
    "missing-channel": "the image of case c1 (",
}


@pytest.mark.parametrize("problem, line", PROBLEMS.items(), ids=PROBLEMS.keys())
def test_each_data_set_problem_is_one_line_naming_its_case(problem, line, tmp_path):
    folder = _dataset(tmp_path / "data", {"c1": problem},
                      channels=2 if problem == "missing-channel" else 1)
    problems = folder_problems(folder)
    assert len(problems) == 1 and line in problems[0], problems


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_a_nan_or_infinity_in_a_nifti_image_is_found_although_itk_reads_it_as_zero(ending,
                                                                                   tmp_path):
    folder = _dataset(tmp_path / "data", {})
    for path in sorted(folder.glob(f"*/*{ENDING}")):  # the data set as NIfTI
        image = sitk.ReadImage(str(path))
        if path.name == f"c1_0000{ENDING}":
            array = sitk.GetArrayFromImage(image)
            array[3, 3, 3], array[4, 4, 4] = np.nan, -np.inf
            image = _image(array)
        sitk.WriteImage(image, str(path.with_name(path.name[:-len(ENDING)] + ending)))
        path.unlink()
    description = json.loads((folder / "dataset.json").read_text())
    (folder / "dataset.json").write_text(json.dumps({**description, "file_ending": ending}))
    nifti = folder / "imagesTr" / f"c1_0000{ending}"
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(nifti)))[3, 3, 3] == 0  # what ITK shows
    problems = folder_problems(folder)
    assert len(problems) == 1 and "case c1: the image has 2 NaN or infinite voxel(s)" in \
        problems[0], problems


def test_a_multichannel_msd_image_must_have_the_channels_the_description_declares(tmp_path):
    folder = tmp_path / "msd"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    labels = np.zeros((8, 16, 16), np.uint8)
    labels[2:6, 4:12, 4:12] = 1
    for name in ("a", "b"):
        channels = [sitk.GetImageFromArray(np.ones((8, 16, 16), np.float32))] * 2
        sitk.WriteImage(sitk.JoinSeries(channels), str(folder / "imagesTr" / f"{name}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(folder / "labelsTr" / f"{name}.nii.gz"))
    (folder / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver"},
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                     for n in ("a", "b")]}))
    problems = folder_problems(folder)
    assert any("case a: the image has 2 channel(s) but dataset.json declares 1" in p
               for p in problems), problems


def test_every_problem_is_listed_first_20_then_a_count_and_nothing_is_written(tmp_path, capsys):
    folder = _dataset(tmp_path / "data", {f"c{n}": "empty-labelmap" for n in range(25)},
                      cases=25)
    out = tmp_path / "run"
    code = run_script(lambda: train_main(["--data", str(folder), "--init", "scratch",
                                          "--output-dir", str(out), "--no-progress"]))
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 21 and all(line.startswith("error: ") for line in lines)
    assert all("the labelmap is empty" in line for line in lines[:20])
    assert lines[20] == "error: ... and 5 more problem(s) of the same data and config"
    assert not out.exists()


def test_prepare_only_reads_every_case_and_refuses_before_the_cache_is_built(tmp_path, capsys):
    folder = _dataset(tmp_path / "data", {"c0": "unnamed-value", "c2": "nan"})
    document = load_config(TINY).to_dict()
    document["tasks"] = document["tasks"][:1]
    document["labels"] = document["tasks"][0]["labels"] = ["liver"]
    document["tasks"][0]["sources"] = [{"type": "nnunet", "path": str(folder)}]
    document["data"]["cache_dir"] = str(tmp_path / "cache")
    document["output_dir"] = str(tmp_path / "run")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(document))
    code = run_script(lambda: train_main(["--config", str(config), "--prepare-only",
                                          "--no-progress"]))
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 2, lines
    assert "case c0: the labelmap holds value(s) 7" in lines[0] and "case c2: the image" in lines[1]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def _abdomen_only(tmp_path: Path) -> Path:
    """tiny.yaml's labels (abdomen and brain) with the abdomen task alone, as a cascade
    fine-tune that lists every label of its start model but trains one task."""
    document = load_config(TINY).to_dict()
    document["tasks"] = document["tasks"][:1]
    document["data"]["cache_dir"] = str(tmp_path / "cache")
    document["output_dir"] = str(tmp_path / "run")
    config = tmp_path / "abdomen-only.json"
    config.write_text(json.dumps(document))
    return config


def test_a_config_whose_network_the_export_would_refuse_is_refused_before_training(
        tmp_path, capsys):
    path = _abdomen_only(tmp_path)
    code = run_script(lambda: train_main(["--config", str(path), "--no-progress"]))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "no task annotates csf, grey_matter, white_matter" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_the_refused_config_is_one_the_engine_could_not_load(tmp_path):
    config = load_config(_abdomen_only(tmp_path))
    assert config_problems(config) and not config_problems(load_config(TINY))
    network = DSN3D(config.dsn_config())
    path = save_model(tmp_path / "model.safetensors", network, build_metadata(config, {}))
    with pytest.raises(ModelFileError, match="input channels|outputs"):
        load_model(path)
