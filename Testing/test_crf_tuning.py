"""Per-task CRF parameters: the model file's choice is honoured by ``segment`` and made by
``training/tune_crf.py`` on labelled validation data."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from helpers import ellipsoid_scene
from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.cascade import network_probabilities
from DeepOrganSegLib.crf.meanfield import dense_crf_roi, keep_found_organs
from DeepOrganSegLib.crf.parameters import CRFParameters
from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.options import InferenceSettings
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("monai")
from training.evaluate import EvaluationCase  # noqa: E402
from training.tune_crf import CaseOutputs, case_dice, network_outputs, tune  # noqa: E402


def _with_task_crf(model_path: Path, out: Path, task_crf: dict) -> Path:
    loaded = load_model(model_path)
    document = loaded.metadata.to_dict()
    document["crf"] = CRFParameters().to_dict()
    document["tasks"][0]["crf"] = task_crf
    tensors = {k: v.contiguous() for k, v in loaded.network.state_dict().items()}
    save_file(tensors, str(out), metadata={"deeporganseg": json.dumps(document)})
    return out


def test_a_task_whose_crf_weights_are_zero_is_segmented_without_the_crf(tiny_model_path,
                                                                         tmp_path):
    volume, _ = ellipsoid_scene(7)
    off = load_model(_with_task_crf(tiny_model_path, tmp_path / "off.safetensors",
                                    {"appearance_weight": 0.0, "smoothness_weight": 0.0}))
    notes = []
    result = segment_volume(volume, off, SegmentationOptions(task="abdomen-ct"),
                            progress=lambda stage, fraction, message="": notes.append(message))
    plain = segment_volume(volume, off, SegmentationOptions(task="abdomen-ct", crf=False))
    assert not result.crf_applied
    assert any("CRF off for task abdomen-ct" in note for note in notes)
    np.testing.assert_array_equal(result.labels.array, plain.labels.array)


def test_a_tasks_own_crf_parameters_change_the_result(tiny_model_path, tmp_path):
    volume, _ = ellipsoid_scene(7)
    model = load_model(_with_task_crf(tiny_model_path, tmp_path / "strong.safetensors",
                                      {"smoothness_weight": 20.0, "smoothness_spatial_mm": 9.0}))
    strong = segment_volume(volume, model, SegmentationOptions(task="abdomen-ct"))
    default = segment_volume(volume, model, SegmentationOptions(
        task="abdomen-ct", crf_overrides={"smoothness_weight": 1.0, "smoothness_spatial_mm": 2.0}))
    assert strong.crf_applied and default.crf_applied
    assert not np.array_equal(strong.labels.array, default.labels.array)


def test_a_case_is_scored_on_its_crop_with_the_reference_outside_it_counted_as_missed():
    truth = np.array([0, 1, 1, 2, 2, 2]).reshape(1, 2, 3)
    case = CaseOutputs("c", torch.zeros(1, 2, 3), torch.zeros(3, 1, 2, 3), [], truth.astype(np.uint8),
                       [1, 2], (1.0, 1.0, 1.0), truth_outside=np.array([0, 0, 0]))
    assert case_dice(case, truth) == 1.0
    predicted = np.array([0, 1, 0, 2, 2, 2]).reshape(1, 2, 3)
    assert case_dice(case, predicted) == pytest.approx((2 / 3 + 1) / 2)
    case.truth_outside = np.array([0, 0, 3])  # three voxels of organ 2 lie outside the crop
    assert case_dice(case, truth) == pytest.approx((1 + 6 / 9) / 2)


def _tiny_model_and_scene(tiny_model_path):
    """The tiny model, its abdomen task and an ellipsoid scene as an evaluation case."""
    model = load_model(tiny_model_path)
    image, labels = ellipsoid_scene(11)
    case = EvaluationCase("scene-11", image, labels, {1: "liver", 2: "spleen"}, "abdomen-ct")
    return model, model.metadata.task("abdomen-ct"), case


def test_the_crop_changes_no_score_of_the_whole_grid(tiny_model_path):
    """Tuning on the crop scores every setting as the whole working grid would."""
    model, task, case = _tiny_model_and_scene(tiny_model_path)
    image = case.image
    with torch.no_grad():
        cropped = network_outputs(model, case, task)
        params = CRFParameters(appearance_weight=3.0)
        crop_labels = keep_found_organs(cropped.probabilities, dense_crf_roi(
            cropped.probabilities, cropped.image, cropped.spacing_kji, params), 0.5)
        grid = working_grid(image, task.spacing_mm)
        whole = network_probabilities(image, model, task, grid, InferenceSettings(side_outputs=True))
        whole_labels = keep_found_organs(whole.prediction.main, dense_crf_roi(
            whole.prediction.main, torch.from_numpy(whole.image), cropped.spacing_kji, params), 0.5)
    assert cropped.probabilities.numel() < whole.prediction.main.numel()
    pasted = torch.zeros(whole_labels.shape[1:], dtype=torch.int64)
    pasted[cropped.box] = crop_labels.max(0).indices
    assert torch.equal(pasted, whole_labels.max(0).indices)


def test_tuner_keeps_the_best_set_only_when_it_beats_the_network(tiny_model_path):
    model, task, case = _tiny_model_and_scene(tiny_model_path)
    with torch.no_grad():
        outputs = network_outputs(model, case, task)
    assert outputs.probabilities.shape[1:] == outputs.truth.shape
    assert outputs.scored == [1, 2]
    grid = [CRFParameters(), CRFParameters(appearance_weight=3.0, smoothness_weight=0.0)]
    chosen = tune(model, [(task, outputs)], grid_for=lambda task: grid, show_progress=False)
    score = chosen["scores"]["abdomen-ct"]
    assert 0.0 < score["network"] <= 1.0 and 0.0 < score["crf"] <= 1.0
    params = {**chosen["crf"], **chosen["tasks"]["abdomen-ct"]}
    if score["crf_on"]:
        assert score["crf"] >= score["network"] + 0.002
        kernels = replace(CRFParameters.from_dict(params), side_output_weights=())
        assert kernels in grid  # the best kernel set, perhaps with the side outputs fused in
    else:
        assert params["appearance_weight"] == params["smoothness_weight"] == 0.0
    refuse = tune(model, [(task, outputs)], grid_for=lambda task: grid, min_gain=1.0,
                  show_progress=False)
    assert not refuse["scores"]["abdomen-ct"]["crf_on"]
    # a later step is taken only where it gains min_gain: no side outputs, no organ-keeping share
    assert refuse["scores"]["abdomen-ct"]["best"]["side_output_weights"] == []
    assert refuse["scores"]["abdomen-ct"]["best"]["min_organ_share"] == 0.0
    assert set(refuse["scores"]["abdomen-ct"]["min_organ_shares"]) == {"0.0", "0.25", "0.5", "0.75"}
    assert refuse["tasks"]["abdomen-ct"] == {"appearance_weight": 0.0, "smoothness_weight": 0.0}


def test_training_scripts_refuse_a_bad_model_file_in_one_line(tmp_path):
    import subprocess

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    result = subprocess.run([sys.executable, str(ROOT / "training" / "tune_crf.py"), str(bad),
                             "phantom:heart-mr:10000", "--out", str(tmp_path / "crf.json")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: file is truncated (4 bytes); re-copy the model"]
    assert not (tmp_path / "crf.json").exists()
