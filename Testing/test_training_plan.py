"""Researchers' path: from an MSD or nnU-Net folder to a model file in one command. Planning
from the data, fine-tuning with labels matched by name, and one-line refusals of bad configs
and bad data before any work starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepOrganSegLib.model import load_model, save_model
from DeepOrganSegLib.model.network import DSN3D, DSNConfig
from DeepOrganSegLib.resources import default_model_path
from training.config import ConfigError, TrainConfig, load_config
from training.entry import run_script
from training.export import build_metadata
from training.plan import (fingerprint, patch_and_batch, plan_config,
                           training_bytes_per_voxel, working_spacing)
from training.train import initial_weights, main as train_main

pytest.importorskip("DeepOrganSegLib.phantoms")
from training.phantom_dataset import write_phantom_dataset

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def ct_folder(tmp_path_factory) -> Path:
    """Four small abdominal CT phantoms as an MSD folder with anisotropic voxels (three of
    5 mm slices, one of 2.5 mm) and two labels under other names (Spleen, IVC)."""
    folder = write_phantom_dataset(tmp_path_factory.mktemp("msd"), "abdomen-ct", range(4),
                                   rename={"spleen": "Spleen", "inferior_vena_cava": "IVC"},
                                   shape=(24, 48, 48), spacing=(1.5, 1.5, 5.0))
    entries = json.loads((folder / "dataset.json").read_text())["training"]
    for entry, spacing in zip(entries[1:], ((1.6, 1.6, 5.0), (1.4, 1.4, 5.0), (1.5, 1.5, 2.5))):
        for path in (folder / entry["image"], folder / entry["label"]):
            image = sitk.ReadImage(str(path))
            image.SetSpacing(spacing)
            sitk.WriteImage(image, str(path))
    return folder


@pytest.fixture(scope="module")
def mr_folder(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("nnunet"), "brain-mr", range(3),
                                 layout="nnunet", shape=(24, 32, 32), spacing=(2.0, 2.0, 2.0))


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = run_script(lambda: train_main(argv))
    return code, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Planning.


def test_planning_a_ct_msd_folder_picks_the_anisotropy_rule_and_a_window_from_the_labels(
        ct_folder):
    document, notes = plan_config(ct_folder, memory_gb=0.5, steps=10)
    task = document["tasks"][0]
    # Median (1.5, 1.5, 5.0) is anisotropic (5.0 / 1.5 > 3): k takes its 10th percentile.
    assert task["spacing_mm"] == pytest.approx([1.5, 1.5, np.percentile([5, 5, 5, 2.5], 10)])
    assert task["modality"] == "CT"
    normalization = task["normalization"]
    assert normalization["kind"] == "ct"
    low, high = normalization["clip_hu"]
    # Organs, not air or bone: the window sits around soft tissue.
    assert -400 < low < normalization["center_hu"] < high < 600
    assert 20 < normalization["scale_hu"] < 250
    assert task["sources"][0]["rename"] == {"Spleen": "spleen", "IVC": "inferior_vena_cava"}
    assert "spleen" in document["labels"] and "inferior_vena_cava" in document["labels"]
    assert any(note.startswith("spacing: ") and "anisotropic" in note for note in notes)


def test_planning_an_mr_nnunet_folder_picks_the_median_spacing_and_z_score(mr_folder):
    data = fingerprint(mr_folder)
    assert (data.format, data.modality, data.cases) == ("nnunet", "MR", 3)
    document, _ = plan_config(mr_folder, memory_gb=0.5, steps=10)
    task = document["tasks"][0]
    assert task["spacing_mm"] == pytest.approx([2.0, 2.0, 2.0])
    assert task["normalization"] == {"kind": "mr", "percentiles": [0.5, 99.5]}
    assert document["labels"] == ["csf", "grey_matter", "white_matter"]


def test_isotropic_spacings_take_the_median():
    spacing, reason = working_spacing(np.array([[1.0, 1.0, 1.2], [0.8, 0.8, 1.0],
                                                [0.9, 0.9, 2.0]]))
    assert spacing == pytest.approx((0.9, 0.9, 1.2)) and "median" in reason


def test_patch_shrinks_its_longest_axis_to_fit_the_memory_budget():
    network = DSNConfig(num_classes=4, widths=(16, 32, 64, 128))
    patch, batch, _ = patch_and_batch(np.array([40, 300, 200]), network, memory_gb=0.5)
    assert all(size % network.size_divisor == 0 for size in patch)
    assert batch * np.prod(patch) * training_bytes_per_voxel(network) <= 0.5e9
    assert patch[0] == 40  # the short axis keeps the whole median extent
    roomy, _, _ = patch_and_batch(np.array([40, 300, 200]), network, memory_gb=50)
    assert roomy == (40, 304, 200)  # the whole median case, rounded up to multiples of 8


def test_fine_tuning_plan_keeps_the_start_models_architecture_scale_and_ct_window(ct_folder):
    bundled = load_model(default_model_path())
    document, notes = plan_config(ct_folder, start=str(default_model_path()), memory_gb=0.5,
                                  steps=10)
    task = document["tasks"][0]
    abdomen = next(t for t in bundled.metadata.tasks if t.name == "abdomen-ct")
    assert task["spacing_mm"] == list(abdomen.spacing_mm)
    assert task["normalization"] == abdomen.normalization.to_dict()
    # a cascade's stage 2 is fine-tuned without its prior (stage 1 knows only its own tasks)
    assert document["inputs"] == [n for n in bundled.metadata.inputs if n != "prior"]
    assert document["network"]["widths"] == list(bundled.network.config.widths)
    assert document["init_from"] == str(default_model_path())


# ---------------------------------------------------------------------------------------------
# Fine-tuning: output channels matched by name.


def test_init_keeps_the_weights_of_labels_matched_by_name_and_starts_new_ones_fresh(tmp_path):
    source_config = load_config(TINY, [f"output_dir={tmp_path}"])
    torch.manual_seed(0)
    source = DSN3D(source_config.dsn_config())
    path = save_model(tmp_path / "start.safetensors", source.eval(),
                      build_metadata(source_config, {}))
    # The new data set: spleen and grey matter (known, at other channels), a tumour (new).
    raw = source_config.to_dict()
    raw["labels"] = ["tumour", "grey_matter", "spleen"]
    raw["tasks"] = [{**raw["tasks"][0], "labels": ["tumour", "spleen"]},
                    {**raw["tasks"][1], "labels": ["grey_matter"]}]
    target = TrainConfig.from_dict(raw)
    torch.manual_seed(1)
    network = DSN3D(target.dsn_config())
    fresh = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    new = initial_weights(network, target, str(path))
    assert new == ["tumour"]
    theirs, ours = source.state_dict(), network.state_dict()
    for layer in network.class_layers():
        for kind in ("weight", "bias"):
            name = f"{layer}.{kind}"
            for label in ("spleen", "grey_matter"):
                torch.testing.assert_close(ours[name][target.label_value(label)],
                                           theirs[name][source_config.label_value(label)])
            torch.testing.assert_close(ours[name][0], theirs[name][0])  # background
            torch.testing.assert_close(ours[name][target.label_value("tumour")],
                                       fresh[name][target.label_value("tumour")])
    class_tensors = {f"{layer}.{kind}" for layer in network.class_layers()
                     for kind in ("weight", "bias")}
    for name, tensor in theirs.items():  # every other weight is the start model's
        if name not in class_tensors:
            torch.testing.assert_close(ours[name], tensor)


def test_init_bundled_on_a_renamed_data_set_keeps_the_bundled_spleen_channel(ct_folder,
                                                                               tmp_path):
    document, _ = plan_config(ct_folder, start=str(default_model_path()), memory_gb=0.5,
                              steps=10, output_dir=str(tmp_path))
    config = TrainConfig.from_dict(document)
    network = DSN3D(config.dsn_config())
    initial_weights(network, config, str(default_model_path()))
    bundled = load_model(default_model_path())
    value = {label.name: label.value for task in bundled.metadata.tasks for label in task.labels}
    torch.testing.assert_close(network.state_dict()["classifier.weight"][
        config.label_value("spleen")], bundled.network.state_dict()["classifier.weight"][
        value["spleen"]])


# ---------------------------------------------------------------------------------------------
# One command, end to end.


def test_train_data_folder_plans_trains_and_exports_a_model_the_engine_loads(mr_folder,
                                                                             tmp_path, capsys):
    out = tmp_path / "run"
    code, err = _run(["--data", str(mr_folder), "--init", "scratch", "--steps", "2",
                      "--output-dir", str(out), "--memory-gb", "0.2", "--no-progress",
                      "--num-workers", "0"], capsys)
    assert code == 0, err
    assert (out / "plan.yaml").read_text().startswith("# Planned by training/train.py --data")
    model = load_model(out / "model.safetensors")
    assert [label.name for label in model.metadata.tasks[0].labels] == [
        "csf", "grey_matter", "white_matter"]
    assert model.metadata.provenance["initialised_from"] == "random (trained from scratch)"
    assert "--data" in model.metadata.provenance["command"]
    replay = load_config(out / "plan.yaml")  # the plan re-runs as a config
    assert replay.tasks[0].spacing_mm == (2.0, 2.0, 2.0)


def test_user_model_folder_lists_dropped_model_files(tmp_path, monkeypatch, tiny_model_path):
    from DeepOrganSegLib.resources import USER_MODELS_VARIABLE, user_models

    monkeypatch.setenv(USER_MODELS_VARIABLE, str(tmp_path))
    assert user_models() == []
    (tmp_path / "mine.safetensors").write_bytes(tiny_model_path.read_bytes())
    assert user_models() == [tmp_path / "mine.safetensors"]


# ---------------------------------------------------------------------------------------------
# Bad configs and bad data: one line, exit 2, before the cache is built.


BAD_CONFIGS = {
    "unknown-key-with-nearest": (["schedule.stpes=3"],
                                 "unknown key 'schedule.stpes' (did you mean 'schedule.steps'?)"),
    "wrong-type": (["optimizer.lr=fast"], "'optimizer.lr' must be a number, got 'fast'"),
    "side-weights-vs-side-outputs": (["schedule.side_weights=[0.3, 0.1]"],
                                     "'schedule.side_weights' has 2 value(s) but "
                                     "'network.side_output_levels' makes 1 side output(s)"),
    "task-label-not-in-labels": (["labels=[liver]"], "label 'spleen' is not in 'labels'"),
    "patch-not-a-multiple": (["data.patch_size=[18, 16, 16]"], "must be multiples of 4"),
    "unknown-network-parameter": (["network.dropout=0.1"], "unknown DSN hyper-parameters"),
    "negative-label-shift": (["data.label_shift_sd=-0.1"], "'data.label_shift_sd' must be >= 0"),
    "share-above-one": (["data.label_shift_probability=2"],
                        "'data.label_shift_probability' must be in [0, 1], got 2"),
}


@pytest.mark.parametrize("overrides, message", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_one_line_and_exit_2_before_the_cache_is_built(overrides, message,
                                                                     tmp_path, capsys):
    cache = tmp_path / "cache"
    argv = ["--config", str(TINY), "--set", f"data.cache_dir={cache}",
            "--output-dir", str(tmp_path / "run"), "--no-progress"]
    code, err = _run(argv + [item for pair in overrides for item in ("--set", pair)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err and "Traceback" not in err
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_config_file_that_is_not_yaml_is_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("labels: [liver\ntasks: {")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


def _nnunet_case(folder: Path, name: str, shift_origin: bool = False) -> None:
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 100, (8, 16, 16))
                                   .astype(np.float32))
    labels = sitk.GetImageFromArray(np.pad(np.ones((4, 8, 8), np.uint8), 4)[:8])
    if shift_origin:
        labels.SetOrigin((5.0, 0.0, 0.0))
    for path, item in ((folder / "imagesTr" / f"{name}_0000.nii.gz", image),
                       (folder / "labelsTr" / f"{name}.nii.gz", labels)):
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(item, str(path))


def _data_config(tmp_path: Path, source: dict) -> Path:
    document = load_config(TINY).to_dict()
    document["tasks"][0]["sources"] = [source]
    document["data"]["cache_dir"] = str(tmp_path / "cache")
    document["output_dir"] = str(tmp_path / "run")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def _bad_data(tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "data"
    labels = {"background": 0, "liver": 1}
    if case == "label-no-task-lists":
        labels = {"background": 0, "liver": 1, "tumour": 2}
    for n in range(3):
        _nnunet_case(folder, f"c{n}", shift_origin=case == "image-and-labels-on-other-grids"
                     and n == 1)
    if case == "missing-image":
        (folder / "imagesTr" / "c2_0000.nii.gz").unlink()
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},
                                                     "labels": labels,
                                                     "file_ending": ".nii.gz"}))
    source = {"type": "nnunet", "path": str(folder)}
    if case == "dataset-json-points-nowhere":
        (folder / "dataset.json").unlink()
        source = {"type": "msd", "path": str(folder)}
        (folder / "dataset.json").write_text(json.dumps({
            "labels": {"0": "background", "1": "liver"}, "modality": {"0": "CT"},
            "training": [{"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"},
                         {"image": "./imagesTr/c0_0000.nii.gz", "label": "./labelsTr/c0.nii.gz"}
                         ]}))
    if case == "unknown-phantom-kind":
        source = {"type": "phantom", "kind": "lung-ct", "train_seeds": [0, 1]}
    return _data_config(tmp_path, source)


BAD_DATA = {
    "label-no-task-lists": "has label(s) tumour that the task does not list",
    "image-and-labels-on-other-grids": "image and labelmap are on different grids (origin",
    "missing-image": "c2_0000.nii.gz) does not exist",
    "dataset-json-points-nowhere": "gone.nii.gz) does not exist",
    "unknown-phantom-kind": "phantom kind 'lung-ct' does not exist",
}


@pytest.mark.parametrize("case, message", BAD_DATA.items(), ids=BAD_DATA.keys())
def test_bad_data_is_one_line_and_exit_2_before_the_cache_is_built(case, message, tmp_path,
                                                                   capsys):
    config = _bad_data(tmp_path, case)
    code, err = _run(["--config", str(config), "--no-progress", "--prepare-only"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()


def test_data_folder_that_is_no_data_set_is_one_line(tmp_path, capsys):
    code, err = _run(["--data", str(tmp_path), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "no dataset.json" in err, err


def test_output_folder_inside_the_data_set_is_refused_before_any_work(mr_folder, capsys):
    before = sorted(path.name for path in mr_folder.iterdir())
    code, err = _run(["--data", str(mr_folder), "--init", "scratch", "--output-dir",
                      str(mr_folder / "run"), "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "lies inside the input folder" in err, err
    assert sorted(path.name for path in mr_folder.iterdir()) == before
