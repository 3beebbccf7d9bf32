"""The segmentation model file: safetensors weights plus self-describing JSON metadata
(:mod:`.spec`), read and written.

A DeepOrganSeg model file is a plain ``.safetensors`` file whose header metadata holds one key,
``"deeporganseg"``, a JSON document. Opening one never executes code: the header is parsed as
JSON by hand with strict size limits before any tensor is touched (:mod:`.container`), and
tensors are read by safetensors, which only copies bytes. Every field is validated; a bad file
raises :class:`~DeepOrganSegLib.errors.ModelFileError` with a one-line message naming the
problem. Reading the metadata needs no torch; loading the weights does.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from ..volume_io import write_atomically
from ..container import check_header_shapes, read_header
from ..schema import require
from .spec import STAGE1_PREFIX, ModelMetadata

__all__ = ["read_metadata", "load_model", "save_model", "replace_metadata", "LoadedModel"]

_METADATA_KEY = "deeporganseg"
#: Most levels a network in a model file may have (an untrusted file could ask for more).
_MAX_LEVELS = 8


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Read and validate a model file's metadata (cheap: no weights, no torch)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    header, _ = read_header(path)
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or not isinstance(metadata.get(_METADATA_KEY), str):
        raise ModelFileError(f"{path}: safetensors file without DeepOrganSeg metadata; export it "
                             f"with training/export.py")
    try:
        document = json.loads(metadata[_METADATA_KEY])
    except (json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path}: DeepOrganSeg metadata is not valid JSON") from None
    try:
        return ModelMetadata.from_dict(document)
    except ModelFileError as error:
        raise ModelFileError(f"{path}: {error}") from None


@dataclass
class LoadedModel:
    """A network in eval mode with the metadata of the file it came from (and, for a cascade,
    its stage-1 network)."""

    network: "Any"  # DSN3D; typed loosely so that importing this module needs no torch
    metadata: ModelMetadata
    path: Path
    stage1: "Any" = None


def _architecture(parameters: dict, where: str, in_channels: int, inputs: tuple[str, ...],
                  num_classes: int) -> tuple["Any", dict]:
    """The DSN config of ``parameters`` and its state dict on the meta device (shapes only:
    untrusted sizes allocate nothing), checked against the file's inputs and labels."""
    import torch

    from .network import DSN3D, DSNConfig

    try:
        config = DSNConfig.from_dict(parameters)
        require(len(config.widths) <= _MAX_LEVELS, f"{where}.widths",
                 f"must have at most {_MAX_LEVELS} levels")
        with torch.device("meta"):
            expected = DSN3D(config).state_dict()
    except ModelFileError:
        raise
    except Exception as error:  # untrusted hyper-parameters may fail anywhere in construction
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelFileError(f"{where} are invalid ({reason})") from None
    if config.in_channels != in_channels:
        raise ModelFileError(f"{where}: the network takes {config.in_channels} input channels "
                             f"but the file's inputs ({', '.join(inputs)}) make {in_channels}")
    if config.num_classes != num_classes:
        raise ModelFileError(f"{where}: the network has {config.num_classes} outputs but the "
                             f"tasks name labels up to {num_classes - 1}")
    return config, expected


def load_model(path: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Load a model file: validate metadata, build the architecture(s), load the weights."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    from .network import DSN3D

    path = Path(path)
    metadata = read_metadata(path)
    header, _ = read_header(path)
    try:
        config, expected = _architecture(metadata.parameters, "architecture parameters",
                                         metadata.input_channels, metadata.inputs,
                                         metadata.num_classes)
        stage1_config = None
        if metadata.stage1 is not None:
            stage1_config, stage1_expected = _architecture(
                metadata.stage1.parameters, "cascade stage-1 parameters",
                metadata.stage1_input_channels, metadata.stage1.inputs, metadata.num_classes)
            expected.update({STAGE1_PREFIX + name: tensor
                             for name, tensor in stage1_expected.items()})
        _check_crf(metadata)
    except ModelFileError as error:
        raise ModelFileError(f"{path}: {error}") from None
    check_header_shapes(path, header, expected)
    try:
        tensors = load_tensors(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        raise ModelFileError(f"{path}: weights are corrupt ({str(error).splitlines()[0]}); "
                             f"re-copy the model") from None
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ModelFileError(f"{path}: weight {name} has shape {tuple(tensor.shape)}, the "
                                 f"architecture needs {tuple(expected[name].shape)}")
        if not torch.isfinite(tensor.float()).all():
            raise ModelFileError(f"{path}: weight {name} holds NaN or Inf values")

    def build(network_config, prefix: str) -> DSN3D:
        network = DSN3D(network_config)
        network.load_state_dict({name[len(prefix):]: tensor.to(expected[name].dtype)
                                 for name, tensor in tensors.items()
                                 if name.startswith(STAGE1_PREFIX) == bool(prefix)})
        return network.eval().to(device)

    stage1 = build(stage1_config, STAGE1_PREFIX) if stage1_config is not None else None
    return LoadedModel(build(config, ""), metadata, path, stage1)


def _check_crf(metadata: ModelMetadata) -> None:
    """The model's CRF parameters, and each task's merged with them, are valid
    (:class:`~.crf.CRFParameters`); else :class:`ModelFileError` naming the field."""
    if not metadata.crf:
        return
    from ..crf.parameters import CRFParameters

    for where, parameters in [("crf", metadata.crf)] + [
            (f"tasks[{task.name}].crf", metadata.crf_for(task.name))
            for task in metadata.tasks if task.crf]:
        try:
            CRFParameters.from_dict(parameters)
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"metadata field '{where}' is invalid ({error})") from None


def _checked_document(metadata: ModelMetadata) -> dict:
    """``metadata`` as the file's JSON document, refused (ModelFileError) if a reader would
    refuse it: what every writer of a model file checks before it writes."""
    document = metadata.to_dict()
    _check_crf(ModelMetadata.from_dict(json.loads(json.dumps(document))))
    return document


def save_model(path: str | os.PathLike, network: "Any", metadata: ModelMetadata,
               half_precision: bool = False, stage1: "Any" = None) -> Path:
    """Write ``network``'s weights (and a cascade's ``stage1`` network's) and ``metadata`` as a
    model file, atomically.

    ``half_precision`` stores floating-point weights as float16 (half the size; the loader
    casts them back to float32).
    """
    import torch
    from safetensors.torch import save_file

    document = _checked_document(metadata)
    if (stage1 is None) != (metadata.stage1 is None):
        raise ValueError("a cascade model file needs both its stage-1 network and metadata")
    state = dict(network.state_dict())
    if stage1 is not None:
        state.update({STAGE1_PREFIX + name: tensor for name, tensor in stage1.state_dict().items()})
    tensors = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        if half_precision and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        tensors[name] = tensor
    return write_atomically(
        path, lambda tmp: save_file(tensors, str(tmp),
                                    metadata={_METADATA_KEY: json.dumps(document)}))


def replace_metadata(path: str | os.PathLike, metadata: ModelMetadata) -> Path:
    """Give the model file at ``path`` new ``metadata``, its tensors copied byte for byte, the
    file replaced atomically (e.g. provenance re-measured after an engine change). The metadata
    must still describe the tensors: the result is loaded before it replaces ``path``."""
    from safetensors.torch import load_file, save_file

    document = _checked_document(metadata)
    read_metadata(path)  # the file being replaced is a model file
    tensors = load_file(str(path))

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(document)})
        load_model(tmp)  # refuse metadata that no longer fits the weights

    return write_atomically(path, write)
