"""The model file: round trip, metadata validation, and refusal of unsafe or broken files."""

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import TINY_CONFIG, tiny_metadata
from DeepOrganSegLib.model import FORMAT_VERSION, load_model, read_metadata, save_model
from DeepOrganSegLib.errors import ModelFileError
from DeepOrganSegLib.model.network import DSN3D


@pytest.fixture()
def model_file(tmp_path) -> Path:
    torch.manual_seed(1)
    network = DSN3D(TINY_CONFIG)
    network.train()
    with torch.no_grad():  # give the BatchNorm running statistics non-default values
        network(torch.randn(2, 1, 16, 16, 16))
    network.eval()
    return save_model(tmp_path / "model.safetensors", network, tiny_metadata())


def _rewrite_metadata(path: Path, change) -> Path:
    loaded = load_model(path)
    document = loaded.metadata.to_dict()
    change(document)
    tensors = {k: v.contiguous() for k, v in loaded.network.state_dict().items()}
    out = path.with_name("changed.safetensors")
    save_file(tensors, str(out), metadata={"deeporganseg": json.dumps(document)})
    return out


def test_save_then_load_gives_identical_outputs(model_file):
    torch.manual_seed(1)
    original = DSN3D(TINY_CONFIG).train()
    with torch.no_grad():
        original(torch.randn(2, 1, 16, 16, 16))
    original.eval()
    loaded = load_model(model_file)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), original(x), rtol=0, atol=0)


def test_metadata_describes_tasks_labels_codes_and_geometry(model_file):
    metadata = read_metadata(model_file)
    task = metadata.task("abdomen-ct")
    assert task.modality == "CT" and task.spacing_mm == (3.0, 3.0, 3.0)
    assert [label.name for label in task.labels] == ["liver", "spleen"]
    assert task.labels[0].snomed["type"]["code"] == "10200004"
    assert task.normalization.kind == "ct"
    assert metadata.num_classes == 3


def test_half_precision_file_is_smaller_and_loads(tmp_path, model_file):
    network = load_model(model_file).network
    half = save_model(tmp_path / "half.safetensors", network, tiny_metadata(), half_precision=True)
    assert half.stat().st_size < 0.6 * model_file.stat().st_size
    assert load_model(half).network.classifier.weight.dtype == torch.float32


def test_newer_format_version_is_refused_with_update_advice(model_file):
    changed = _rewrite_metadata(model_file, lambda d: d.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="newer.*update DeepOrganSeg"):
        read_metadata(changed)


def test_unknown_architecture_is_refused(model_file):
    changed = _rewrite_metadata(model_file, lambda d: d["architecture"].update(name="UNet9000"))
    with pytest.raises(ModelFileError, match="unknown architecture 'UNet9000'"):
        load_model(changed)


@pytest.mark.parametrize("field, value, message", [
    ("spacing_mm", [1.0, -2.0, 1.0], "tasks\\[0\\].spacing_mm"),
    ("modality", "PET", "tasks\\[0\\].modality"),
    ("labels", [], "tasks\\[0\\].labels"),
])
def test_wrong_metadata_fields_are_named_in_the_error(model_file, field, value, message):
    changed = _rewrite_metadata(model_file, lambda d: d["tasks"][0].update({field: value}))
    with pytest.raises(ModelFileError, match=message):
        read_metadata(changed)


def test_a_task_may_carry_its_own_crf_parameters_over_the_models(model_file):
    def tune(document):
        document["crf"] = {"iterations": 5, "appearance_intensity": 0.05}
        document["tasks"][0]["crf"] = {"appearance_intensity": 0.3}
    metadata = load_model(_rewrite_metadata(model_file, tune)).metadata
    assert metadata.crf_for("abdomen-ct") == {"iterations": 5, "appearance_intensity": 0.3}
    assert metadata.to_dict()["tasks"][0]["crf"] == {"appearance_intensity": 0.3}


def test_invalid_task_crf_parameters_are_named(model_file):
    def break_it(document):
        document["crf"] = {"iterations": 5}
        document["tasks"][0]["crf"] = {"appearance_intensity": -1}
    with pytest.raises(ModelFileError, match=r"tasks\[abdomen-ct\]\.crf.*appearance_intensity"):
        load_model(_rewrite_metadata(model_file, break_it))


def test_a_model_file_with_invalid_task_crf_parameters_is_never_written(tmp_path):
    from dataclasses import replace

    metadata = tiny_metadata(crf={"iterations": 5})
    task = replace(metadata.tasks[0], crf={"appearance_intensity": -1})
    with pytest.raises(ModelFileError, match=r"tasks\[abdomen-ct\]\.crf"):
        save_model(tmp_path / "bad.safetensors", DSN3D(TINY_CONFIG),
                   replace(metadata, tasks=(task,)))
    assert list(tmp_path.iterdir()) == []


def test_missing_metadata_field_is_named(model_file):
    changed = _rewrite_metadata(model_file, lambda d: d.pop("patch_size"))
    with pytest.raises(ModelFileError, match="patch_size"):
        read_metadata(changed)


def test_weights_with_wrong_shapes_are_refused(model_file):
    def widen(document):
        document["architecture"]["parameters"]["widths"] = [8, 16, 64]
    with pytest.raises(ModelFileError, match="shape|missing|unexpected"):
        load_model(_rewrite_metadata(model_file, widen))


def test_truncated_file_is_refused(model_file, tmp_path):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="corrupt|truncated"):
        load_model(truncated)


def test_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ModelFileError, match="not a DeepOrganSeg model file|not a safetensors"):
        load_model(evil)
    assert not marker.exists()


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="without DeepOrganSeg metadata"):
        read_metadata(plain)


def test_absurd_header_length_is_refused(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(ModelFileError, match="not a DeepOrganSeg model file"):
        read_metadata(bogus)
