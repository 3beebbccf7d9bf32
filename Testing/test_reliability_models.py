"""Hostile model files: each is refused with one clear line (exit code 2 from the CLI) and
nothing in it is ever executed. ``Testing/test_bundle.py`` covers the first cases (newer format,
unknown architecture, a missing field, mismatched shapes, a file cut in half, a pickled ``.pt``,
an absurd header length, a plain safetensors file); these are the rest.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.errors import ModelFileError


def _split(data: bytes) -> tuple[dict, bytes]:
    """A safetensors file as (header dict, tensor bytes)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8: 8 + length]), data[8 + length:]


def _join(header: dict | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _edit_metadata(change: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    """A file whose DeepOrganSeg metadata document went through ``change``."""
    def make(data: bytes) -> bytes:
        header, body = _split(data)
        document = json.loads(header["__metadata__"]["deeporganseg"])
        change(document)
        header["__metadata__"]["deeporganseg"] = json.dumps(document)
        return _join(header, body)
    return make


def _edit_header(change: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def make(data: bytes) -> bytes:
        header, body = _split(data)
        change(header)
        return _join(header, body)
    return make


def _set(path: str, value) -> Callable[[dict], None]:
    """Set ``document[a][b]...`` for ``path`` 'a.b...' (list indices as numbers)."""
    def change(document: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = document
        for key in parents:
            target = target[key]
        target[last] = value
    return change


def _drop(path: str) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        *parents, last = path.split(".")
        target = document
        for key in parents:
            target = target[int(key) if key.isdigit() else key]
        del target[last]
    return change


def _nan_weight(data: bytes) -> bytes:
    header, body = _split(data)
    name, entry = next((n, e) for n, e in header.items()
                       if n != "__metadata__" and e["dtype"] == "F32")
    start = entry["data_offsets"][0]
    body = body[:start] + struct.pack("<f", float("nan")) + body[start + 4:]
    return _join(header, body)


def _renamed_weight(header: dict) -> None:
    name = next(n for n in header if n != "__metadata__")
    header["surprise." + name] = header.pop(name)


def _offsets_past_the_end(header: dict) -> None:
    entry = next(e for n, e in header.items() if n != "__metadata__")
    entry["data_offsets"] = [entry["data_offsets"][0], entry["data_offsets"][1] + 10**9]


def _reshaped_weight(data: bytes) -> bytes:
    """The metadata intact, one tensor saved with another shape (weights of another run)."""
    from safetensors.torch import load, save

    header, _ = _split(data)
    tensors = load(data)
    tensors["classifier.weight"] = torch.zeros(3, 4, 1, 1, 1)
    return save(tensors, metadata=header["__metadata__"])


def _without_metadata(data: bytes) -> bytes:
    """The weights alone, as ``safetensors.torch.save_file`` writes them without metadata."""
    from safetensors.torch import load, save

    return save(load(data))


def _torch_zip_with_payload(marker: Path) -> bytes:
    """What ``torch.save`` writes (a zip holding a pickle) with a code-running payload."""
    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"state_dict": Payload()}))
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def _pickle_payload(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))
    return pickle.dumps(Payload(), protocol=2)


NOT_OURS = "not a DeepOrganSeg model file|not a safetensors"

#: (id, maker(valid bytes) -> bad bytes, expected fragment of the message).
BAD_MODELS: list[tuple[str, Callable[[bytes], bytes], str]] = [
    ("zero-byte-file", lambda data: b"", "truncated \\(0 bytes\\)"),
    ("cut-inside-header", lambda data: data[:100], NOT_OURS),
    ("cut-inside-weights", lambda data: data[:-4096], "weights are corrupt"),
    ("png-image-instead", lambda data: b"\x89PNG\r\n\x1a\n" + bytes(64), NOT_OURS),
    ("header-not-json", lambda data: _join(b"{not json at all", b""), "header is corrupt"),
    ("header-is-a-list", lambda data: _join(b"[1, 2, 3]", b""), "not a safetensors"),
    ("header-nested-100k-deep", lambda data: _join(b"{\"a\":" + b"[" * 100_000, b""),
     "header is corrupt"),
    ("metadata-not-json", _edit_header(_set("__metadata__.deeporganseg", "{oops")),
     "not valid JSON"),
    ("metadata-wrong-format-name", _edit_metadata(_set("format", "onnx")), "'format'"),
    ("metadata-missing-tasks", _edit_metadata(_drop("tasks")), "'tasks' is missing"),
    ("format-version-as-string", _edit_metadata(_set("format_version", "1")),
     "'format_version' must be of type int"),
    ("format-version-zero", _edit_metadata(_set("format_version", 0)), "must be >= 1"),
    ("patch-size-wrong-type", _edit_metadata(_set("patch_size", "96")), "'patch_size'"),
    ("label-value-boolean", _edit_metadata(_set("tasks.0.labels.0.value", True)),
     "labels\\[0\\].value' must be of type int"),
    ("label-colour-out-of-range", _edit_metadata(_set("tasks.0.labels.0.color", [0, 300, 0])),
     "color' must be 3 integers"),
    ("label-snomed-missing", _edit_metadata(_drop("tasks.0.labels.0.snomed")),
     "snomed' is missing"),
    ("normalization-unknown-kind", _edit_metadata(_set("tasks.0.normalization.kind", "pet")),
     "must be 'ct' or 'mr'"),
    ("crf-not-an-object", _edit_metadata(_set("crf", [1, 2])), "'crf' must be an object"),
    ("crf-parameters-invalid", _edit_metadata(_set("crf", {"iterations": 0})),
     "'crf' is invalid"),
    ("architecture-parameters-wrong-type",
     _edit_metadata(_set("architecture.parameters.widths", "wide")),
     "architecture parameters are invalid"),
    ("architecture-unknown-parameter",
     _edit_metadata(_set("architecture.parameters.dropout", 0.5)),
     "architecture parameters are invalid"),
    ("architecture-billion-channels",
     _edit_metadata(_set("architecture.parameters.widths", [10**9, 16, 32])),
     "weight .* has shape"),
    ("architecture-too-many-levels",
     _edit_metadata(lambda d: d["architecture"]["parameters"].update(
         widths=[8] * 12, convs_per_level=[1] * 12)), "at most 8 levels"),
    ("outputs-do-not-match-labels",
     _edit_metadata(_set("architecture.parameters.num_classes", 7)), "network has 7 outputs"),
    ("weight-renamed", _edit_header(_renamed_weight), "do not match the architecture"),
    ("weight-offsets-past-the-end", _edit_header(_offsets_past_the_end), "weights are corrupt"),
    ("weights-hold-nan", _nan_weight, "holds NaN or Inf"),
    ("weight-wrong-shape", _reshaped_weight,
     "classifier.weight has shape \\(3, 4, 1, 1, 1\\), the architecture needs \\(3, 8,"),
    ("no-metadata-at-all", _without_metadata, "without DeepOrganSeg metadata"),
]


@pytest.fixture(scope="module")
def valid_bytes(tiny_model_path) -> bytes:
    return tiny_model_path.read_bytes()


@pytest.mark.parametrize("case, make, pattern", BAD_MODELS, ids=[c[0] for c in BAD_MODELS])
def test_bad_model_file_is_refused_by_the_loader_and_the_cli(valid_bytes, tmp_path, capsys,
                                                            case, make, pattern):
    model = tmp_path / "model.safetensors"
    model.write_bytes(make(valid_bytes))
    with pytest.raises(ModelFileError, match=pattern) as refused:
        load_model(model)
    assert "\n" not in str(refused.value)

    output = tmp_path / "out" / "labels.nii.gz"
    output.parent.mkdir()
    code = main(["segment", str(tmp_path / "never-read.nrrd"), str(output), "--model",
                 str(model), "--progress", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert re.search(pattern, err) and "Traceback" not in err
    assert list(output.parent.iterdir()) == []


@pytest.mark.parametrize("payload", ["torch-zip", "pickle"])
@pytest.mark.parametrize("command", ["segment", "info"])
def test_code_carrying_model_file_is_refused_and_its_payload_never_runs(tmp_path, capsys,
                                                                       payload, command):
    marker = tmp_path / "payload-ran"
    make = _torch_zip_with_payload if payload == "torch-zip" else _pickle_payload
    for name in ("model.safetensors", "model.pt"):
        model = tmp_path / name
        model.write_bytes(make(marker))
        arguments = (["segment", str(tmp_path / "in.nrrd"), str(tmp_path / "out.nrrd"),
                      "--model", str(model)] if command == "segment" else ["info", str(model)])
        assert main([*arguments]) == 2
        err = capsys.readouterr().err.strip()
        assert re.search(NOT_OURS, err) and "pickle" in err, err
        assert not marker.exists(), "the payload ran"
    assert not (tmp_path / "out.nrrd").exists()


def test_model_path_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path)
