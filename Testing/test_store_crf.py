"""training/store_crf.py: a CRF retuned after training goes into the model file, the weights
stay byte for byte, tasks the tuning left out keep the CRF they ran with, and a bad document
changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from DeepOrganSegLib.model import load_model, read_metadata
from training.entry import run_script
from training.store_crf import main as store_main

TUNED = {"crf": {"appearance_intensity": 0.1}, "tasks": {"abdomen-ct": {"min_organ_share": 0.5}},
         "scores": {"abdomen-ct": {"network": 0.79, "crf": 0.83}}}


def _copy_model(tiny_model_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(tiny_model_path, tmp_path / "model.safetensors"))


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "crf.json"
    path.write_text(json.dumps(document))
    return path


def test_a_tuned_task_gets_its_crf_and_the_weights_stay_byte_for_byte(tiny_model_path, tmp_path):
    model = _copy_model(tiny_model_path, tmp_path)
    before = read_metadata(model)
    assert store_main([str(model), str(_write(tmp_path, TUNED)), "--why", "share on phantoms"]) == 0
    after = load_model(model).metadata
    tuned = after.crf_parameters("abdomen-ct")
    assert tuned.min_organ_share == 0.5 and tuned.appearance_intensity == 0.1
    retuned = after.provenance["crf_retuned"]
    assert retuned["why"] == "share on phantoms" and retuned["scores"] == TUNED["scores"]
    assert retuned["before"]["abdomen-ct"] == before.crf_for("abdomen-ct")
    old, new = load_file(str(tiny_model_path)), load_file(str(model))
    assert old.keys() == new.keys()
    assert all(torch.equal(old[name], new[name]) for name in old)


def test_a_task_the_tuning_left_out_keeps_the_crf_it_ran_with(tiny_model_path, tmp_path):
    model = _copy_model(tiny_model_path, tmp_path)
    assert read_metadata(model).crf_parameters("abdomen-ct") is None  # the tiny model has none
    store_main([str(model), str(_write(tmp_path, {"tasks": {}})), "--why", "x"])
    assert not read_metadata(model).crf_parameters("abdomen-ct").has_weight  # still off
    first = {"crf": {"iterations": 3}, "tasks": {"abdomen-ct": {"appearance_weight": 3.0}}}
    store_main([str(model), str(_write(tmp_path, first)), "--why", "x"])
    before = read_metadata(model)
    store_main([str(model), str(_write(tmp_path, {"crf": {"iterations": 7}, "tasks": {}})),
                "--why", "x"])
    after = read_metadata(model)
    assert after.crf == {"iterations": 7}
    assert after.crf_parameters("abdomen-ct") == before.crf_parameters("abdomen-ct")
    assert after.crf_parameters("abdomen-ct").iterations == 3


@pytest.mark.parametrize("document, message", [
    ({"tasks": {"no-such-task": {}}}, "does not have"),
    ({"tasks": {"abdomen-ct": {"min_organ_share": 2}}}, "min_organ_share must be at most 1"),
    ({"tasks": ["abdomen-ct"]}, "must map task names to parameters"),
])
def test_a_bad_document_is_refused_in_one_line_and_the_model_is_untouched(
        tiny_model_path, tmp_path, capsys, document, message):
    model = _copy_model(tiny_model_path, tmp_path)
    original = model.read_bytes()
    path = _write(tmp_path, document)
    assert run_script(lambda: store_main([str(model), str(path), "--why", "x"])) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
    assert model.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crf.json", "model.safetensors"]
