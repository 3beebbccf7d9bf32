"""training/record_metrics.py: re-measured accuracy goes into a model file's provenance, the
weights stay byte for byte, and a bad summary changes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from DeepOrganSegLib.model import read_metadata
from training.entry import run_script
from training.record_metrics import main as record_main

SUMMARY = {"brain-mr": {"no_crf": {"organs": {"grey_matter": {"dice": 0.79}}, "mean_dice": 0.79,
                                   "cases": 1},
                        "crf": {"organs": {"grey_matter": {"dice": 0.86}}, "mean_dice": 0.86,
                                "cases": 1}}}


def _copy_model(tiny_model_path: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(tiny_model_path, tmp_path / "model.safetensors"))


def test_recorded_metrics_replace_their_entry_and_keep_the_weights_byte_for_byte(
        tiny_model_path, tmp_path):
    model = _copy_model(tiny_model_path, tmp_path)
    before = read_metadata(model)
    (tmp_path / "icbm152").mkdir()
    (tmp_path / "icbm152" / "summary.json").write_text(json.dumps(SUMMARY))
    assert record_main([str(model), str(tmp_path / "icbm152" / "summary.json"),
                        "--why", "engine change"]) == 0
    after = read_metadata(model)
    assert after.provenance["metrics"]["icbm152"] == SUMMARY
    assert after.provenance["metrics_remeasured"]["icbm152"]["why"] == "engine change"
    unchanged = {key: value for key, value in after.provenance.items()
                 if key not in ("metrics", "metrics_remeasured")}
    assert unchanged == {key: value for key, value in before.provenance.items()
                         if key not in ("metrics", "metrics_remeasured")}
    assert after.tasks == before.tasks and after.crf == before.crf
    old, new = load_file(str(tiny_model_path)), load_file(str(model))
    assert old.keys() == new.keys()
    assert all(old[name].dtype == new[name].dtype and torch.equal(old[name], new[name])
               for name in old)


def test_a_file_that_is_not_a_summary_is_refused_and_the_model_is_untouched(
        tiny_model_path, tmp_path, capsys):
    model = _copy_model(tiny_model_path, tmp_path)
    original = model.read_bytes()
    bad = tmp_path / "eval" / "summary.json"
    bad.parent.mkdir()
    bad.write_text('{"brain-mr": [1, 2]}')
    assert run_script(lambda: record_main([str(model), str(bad), "--why", "x"])) == 2
    assert "not a training/evaluate.py summary.json" in capsys.readouterr().err
    assert model.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "model.safetensors"]
