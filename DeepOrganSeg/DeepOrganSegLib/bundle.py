"""The model file: safetensors weights plus self-describing JSON metadata.

A DeepOrganSeg model file is a plain ``.safetensors`` file whose header metadata holds one key,
``"deeporganseg"``, a JSON document (schema below). Opening one never executes code: the header
is parsed as JSON by hand with strict size limits before any tensor is touched, and tensors are
read by safetensors, which only copies bytes. Every field is validated; a bad file raises
:class:`~DeepOrganSegLib.errors.ModelFileError` with a one-line message naming the problem.

Metadata (``format_version`` 1; all spacings and sizes in SimpleITK (i, j, k) order)::

    {"format": "deeporganseg-model", "format_version": 1,
     "architecture": {"name": "DSN3D", "parameters": {... DSNConfig ...}},
     "patch_size": [96, 96, 96],                      # voxels, training/tiling patch
     "tasks": [{"name": "abdomen-ct", "title": "Abdominal organs (CT)", "modality": "CT",
                "spacing_mm": [2.0, 2.0, 2.0],
                "normalization": {"kind": "ct", "clip_hu": [-1000, 1000],
                                  "center_hu": 40, "scale_hu": 350}
                              | {"kind": "mr", "percentiles": [0.5, 99.5]},
                "labels": [{"value": 1, "name": "liver", "display_name": "Liver",
                            "color": [221, 130, 101],
                            "snomed": {"category": {...}, "type": {...},
                                       "type_modifier": null}}],
                "crf": {... optional: this task's CRF parameters over the model's ...}}],
     "crf": {... CRF parameters ...},
     "inputs": ["image", "position", "prior"],        # the network's input channels, in order
     "cascade": {... optional: stage 1, see StageSpec ...},
     "provenance": {... free-form: data, command, steps, metrics, date ...}}

A *cascade* model (Roth et al. 2018) holds two networks: stage 1 runs on the whole volume at a
coarse spacing per task; its probabilities, resampled to the task's spacing, are stage 2's
``prior`` input channels, and stage 2 runs only inside stage 1's organ region plus a margin.
Stage 1's tensors are stored under the ``stage1.`` prefix; ``prior`` is an input exactly when
the file has a ``cascade``.

The network has one output channel per label value over the union of all tasks (0 =
background); a task restricts the output to its own labels at inference.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, overload

from .errors import ModelFileError
from .volume import write_atomically

__all__ = [
    "FORMAT", "FORMAT_VERSION", "LabelSpec", "Normalization", "TaskSpec", "StageSpec",
    "ModelMetadata", "read_metadata", "load_model", "save_model", "LoadedModel", "check_format",
    "INPUT_CHANNELS", "input_channel_count", "STAGE1_PREFIX",
]

FORMAT = "deeporganseg-model"
FORMAT_VERSION = 1
ARCHITECTURES = ("DSN3D",)
#: What the network may take as input, and how many channels each adds: the normalised image,
#: the two position channels of ``preprocess.position_channels``, and (stage 2 of a cascade)
#: stage 1's probability of every label of the model (``None``: one per label, see
#: :func:`input_channel_count`).
INPUT_CHANNELS = {"image": 1, "position": 2, "prior": None}
#: Where a cascade file keeps stage 1's tensors.
STAGE1_PREFIX = "stage1."
_METADATA_KEY = "deeporganseg"
_MAX_HEADER_BYTES = 16 * 1024 * 1024
_MAX_LEVELS = 8


def input_channel_count(inputs: tuple[str, ...], num_classes: int) -> int:
    """Input channels of a network taking ``inputs`` with ``num_classes`` outputs (background
    included): ``prior`` adds one channel per label."""
    return sum(num_classes - 1 if name == "prior" else cast(int, INPUT_CHANNELS[name])
               for name in inputs)  # (only "prior" maps to None)


# ---------------------------------------------------------------------------------------------
# Validation helpers: each names the offending field.


def _require(condition: bool, where: str, what: str) -> None:
    if not condition:
        raise ModelFileError(f"metadata field '{where}' {what}")


def _get(mapping: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    _require(isinstance(mapping, dict), where, "must be an object")
    _require(key in mapping, f"{where}.{key}" if where else key, "is missing")
    value = mapping[key]
    path = f"{where}.{key}" if where else key
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in
                                           (kind if isinstance(kind, tuple) else (kind,)))
    _require(ok, path, f"must be of type {getattr(kind, '__name__', kind)}")
    return value


@overload
def _numbers(values: Any, count: Literal[2], where: str,
             positive: bool = False) -> tuple[float, float]: ...
@overload
def _numbers(values: Any, count: Literal[3], where: str,
             positive: bool = False) -> tuple[float, float, float]: ...
def _numbers(values: Any, count: int, where: str, positive: bool = False) -> tuple[float, ...]:
    ok = (isinstance(values, list) and len(values) == count
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive) for v in values))
    _require(ok, where, f"must be {count} finite {'positive ' if positive else ''}numbers")
    return tuple(float(v) for v in values)


def check_format(data: Any, expected_format: str, newest_version: int, what: str) -> int:
    """Check a metadata document's ``format`` and ``format_version``; return the version.

    A newer version than this code reads gets advice to update rather than a field error."""
    _require(isinstance(data, dict), "(root)", "must be a JSON object")
    _require(data.get("format") == expected_format, "format", f"must be {expected_format!r}")
    version = _get(data, "format_version", int, "")
    if version > newest_version:
        raise ModelFileError(f"{what} format version {version} is newer than this DeepOrganSeg "
                             f"reads ({newest_version}); update DeepOrganSeg")
    _require(version >= 1, "format_version", "must be >= 1")
    return version


# ---------------------------------------------------------------------------------------------
# Schema.


@dataclass(frozen=True)
class LabelSpec:
    """One output label: its value (= output channel), name, colour and SNOMED CT coding."""

    value: int
    name: str
    display_name: str
    color: tuple[int, int, int]
    snomed: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "name": self.name, "display_name": self.display_name,
                "color": list(self.color), "snomed": self.snomed}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "LabelSpec":
        value = _get(data, "value", int, where)
        _require(0 < value < 256, f"{where}.value", "must be in 1..255")
        color = data.get("color")
        _require(isinstance(color, list) and len(color) == 3
                 and all(isinstance(c, int) and 0 <= c <= 255 for c in color),
                 f"{where}.color", "must be 3 integers in 0..255")
        snomed = _get(data, "snomed", dict, where)
        for part in ("category", "type"):
            code = _get(snomed, part, dict, f"{where}.snomed")
            for key in ("scheme", "code", "meaning"):
                _get(code, key, str, f"{where}.snomed.{part}")
        modifier = snomed.get("type_modifier")
        _require(modifier is None or isinstance(modifier, dict), f"{where}.snomed.type_modifier",
                 "must be an object or null")
        _require(isinstance(snomed.get("context", ""), str), f"{where}.snomed.context",
                 "must be a terminology context name")
        return cls(value, _get(data, "name", str, where), _get(data, "display_name", str, where),
                   tuple(color), snomed)


@dataclass(frozen=True)
class Normalization:
    """Intensity normalisation.

    ``kind="ct"``: clip to ``clip_hu`` (HU), then ``(x - center_hu) / scale_hu``.
    ``kind="mr"``: clip to the ``percentiles`` of the non-zero voxels, then z-score them.
    """

    kind: str
    clip_hu: tuple[float, float] = (-1000.0, 1000.0)
    center_hu: float = 40.0
    scale_hu: float = 350.0
    percentiles: tuple[float, float] = (0.5, 99.5)

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "ct":
            return {"kind": "ct", "clip_hu": list(self.clip_hu), "center_hu": self.center_hu,
                    "scale_hu": self.scale_hu}
        return {"kind": "mr", "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "Normalization":
        kind = _get(data, "kind", str, where)
        if kind == "ct":
            clip = _numbers(data.get("clip_hu"), 2, f"{where}.clip_hu")
            _require(clip[0] < clip[1], f"{where}.clip_hu", "must be increasing")
            center = _get(data, "center_hu", (int, float), where)
            scale = _get(data, "scale_hu", (int, float), where)
            _require(scale > 0, f"{where}.scale_hu", "must be positive")
            return cls("ct", clip_hu=clip, center_hu=float(center), scale_hu=float(scale))
        if kind == "mr":
            low, high = _numbers(data.get("percentiles"), 2, f"{where}.percentiles")
            _require(0 <= low < high <= 100, f"{where}.percentiles", "must be 0 <= low < high <= 100")
            return cls("mr", percentiles=(low, high))
        raise ModelFileError(f"metadata field '{where}.kind' must be 'ct' or 'mr', not {kind!r}")


@dataclass(frozen=True)
class TaskSpec:
    """A segmentation task: modality, working voxel spacing (mm), normalisation and labels."""

    name: str
    title: str
    modality: str
    spacing_mm: tuple[float, float, float]
    normalization: Normalization
    labels: tuple[LabelSpec, ...]
    #: CRF parameters of this task that differ from the model's (tuned per task: the intensity
    #: width means HU/350 in CT and z-scores in MR). Both weights 0 turn the CRF off for it.
    crf: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "title": self.title, "modality": self.modality,
                "spacing_mm": list(self.spacing_mm), "normalization": self.normalization.to_dict(),
                "labels": [label.to_dict() for label in self.labels]}
        if self.crf:
            data["crf"] = self.crf
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "TaskSpec":
        modality = _get(data, "modality", str, where)
        _require(modality in ("CT", "MR"), f"{where}.modality", "must be 'CT' or 'MR'")
        labels = _get(data, "labels", list, where)
        _require(len(labels) > 0, f"{where}.labels", "must not be empty")
        _require(isinstance(data.get("crf") or {}, dict), f"{where}.crf", "must be an object")
        return cls(
            name=_get(data, "name", str, where),
            title=_get(data, "title", str, where),
            modality=modality,
            spacing_mm=_numbers(data.get("spacing_mm"), 3, f"{where}.spacing_mm", positive=True),
            normalization=Normalization.from_dict(_get(data, "normalization", dict, where),
                                                  f"{where}.normalization"),
            labels=tuple(LabelSpec.from_dict(label, f"{where}.labels[{i}]")
                         for i, label in enumerate(labels)),
            crf=data.get("crf") or {},
        )


def _inputs(data: Any, where: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    _require(isinstance(data, list) and data[:1] == ["image"]
             and all(isinstance(n, str) and n in allowed for n in data)
             and len(set(data)) == len(data), where,
             f"must list 'image' first, then any of {', '.join(allowed[1:])}")
    return tuple(data)


def _patch_size(data: Any, where: str) -> tuple[int, int, int]:
    _require(isinstance(data, list) and len(data) == 3
             and all(isinstance(p, int) and not isinstance(p, bool) and 0 < p <= 1024
                     for p in data), where, "must be 3 integers in 1..1024")
    return tuple(data)


@dataclass(frozen=True)
class StageSpec:
    """Stage 1 of a cascade: a network on the whole volume at a coarse ``spacing_mm`` per task
    (i, j, k mm), taking ``inputs`` (never ``prior``), tiled at ``patch_size`` (i, j, k voxels).
    Stage 2 runs only where stage 1 finds an organ, plus ``margin_mm`` on every side."""

    parameters: dict[str, Any]
    patch_size: tuple[int, int, int]
    inputs: tuple[str, ...]
    spacing_mm: dict[str, tuple[float, float, float]]
    margin_mm: float = 30.0
    architecture: str = "DSN3D"

    def spacing_for(self, task: str) -> tuple[float, float, float]:
        return self.spacing_mm[task]

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": {"name": self.architecture, "parameters": self.parameters},
                "patch_size": list(self.patch_size), "inputs": list(self.inputs),
                "spacing_mm": {task: list(mm) for task, mm in self.spacing_mm.items()},
                "margin_mm": self.margin_mm}

    @classmethod
    def from_dict(cls, data: Any, tasks: tuple[str, ...]) -> "StageSpec":
        where = "cascade"
        architecture = _get(data, "architecture", dict, where)
        name = _get(architecture, "name", str, f"{where}.architecture")
        _require(name in ARCHITECTURES, f"{where}.architecture.name",
                 f"must be one of {', '.join(ARCHITECTURES)}")
        spacing = _get(data, "spacing_mm", dict, where)
        _require(set(spacing) == set(tasks), f"{where}.spacing_mm",
                 f"must give a spacing for exactly the tasks {', '.join(tasks)}")
        margin = _get(data, "margin_mm", (int, float), where)
        _require(math.isfinite(margin) and 0 <= margin <= 500, f"{where}.margin_mm",
                 "must be 0..500 mm")
        return cls(
            parameters=_get(architecture, "parameters", dict, f"{where}.architecture"),
            patch_size=_patch_size(data.get("patch_size"), f"{where}.patch_size"),
            inputs=_inputs(data.get("inputs"), f"{where}.inputs", ("image", "position")),
            spacing_mm={task: _numbers(spacing[task], 3, f"{where}.spacing_mm.{task}",
                                       positive=True) for task in tasks},
            margin_mm=float(margin), architecture=name)


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a model file says about itself, validated."""

    architecture: str
    parameters: dict[str, Any]
    patch_size: tuple[int, int, int]
    tasks: tuple[TaskSpec, ...]
    crf: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    #: The network's inputs in channel order (:data:`INPUT_CHANNELS`); files before them: image.
    inputs: tuple[str, ...] = ("image",)
    #: Stage 1 of a cascade model; None for a single-stage model.
    stage1: StageSpec | None = None

    @property
    def input_channels(self) -> int:
        return input_channel_count(self.inputs, self.num_classes)

    @property
    def stage1_input_channels(self) -> int:
        return input_channel_count(self.stage1.inputs, self.num_classes) if self.stage1 else 0

    @property
    def num_classes(self) -> int:
        return max(label.value for task in self.tasks for label in task.labels) + 1

    def task(self, name: str) -> TaskSpec:
        for task in self.tasks:
            if task.name == name:
                return task
        known = ", ".join(task.name for task in self.tasks)
        raise ModelFileError(f"the model has no task {name!r}; choose one of: {known}")

    def crf_for(self, task: str) -> dict[str, Any]:
        """The CRF parameters of ``task``: the model's, updated by the task's own ({} when the
        model carries none)."""
        return {**self.crf, **self.task(task).crf} if self.crf else {}

    def to_dict(self) -> dict[str, Any]:
        document = {"format": FORMAT, "format_version": self.format_version,
                    "architecture": {"name": self.architecture, "parameters": self.parameters},
                    "patch_size": list(self.patch_size),
                    "inputs": list(self.inputs),
                    "tasks": [task.to_dict() for task in self.tasks],
                    "crf": self.crf, "provenance": self.provenance}
        if self.stage1 is not None:
            document["cascade"] = self.stage1.to_dict()
        return document

    @classmethod
    def from_dict(cls, data: Any) -> "ModelMetadata":
        version = check_format(data, FORMAT, FORMAT_VERSION, "model file")
        architecture = _get(data, "architecture", dict, "")
        name = _get(architecture, "name", str, "architecture")
        if name not in ARCHITECTURES:
            raise ModelFileError(f"unknown architecture {name!r}; this DeepOrganSeg knows "
                                 f"{', '.join(ARCHITECTURES)}")
        patch = _patch_size(data.get("patch_size"), "patch_size")
        tasks_data = _get(data, "tasks", list, "")
        _require(len(tasks_data) > 0, "tasks", "must not be empty")
        tasks = tuple(TaskSpec.from_dict(task, f"tasks[{i}]") for i, task in enumerate(tasks_data))
        names: dict[int, str] = {}
        for task in tasks:
            for label in task.labels:
                _require(names.setdefault(label.value, label.name) == label.name,
                         f"tasks[{task.name}].labels", f"gives value {label.value} two names")
        _require(len({task.name for task in tasks}) == len(tasks), "tasks", "has duplicate names")
        for optional in ("crf", "provenance"):
            _require(isinstance(data.get(optional) or {}, dict), optional, "must be an object")
        inputs = _inputs(data.get("inputs", ["image"]), "inputs", tuple(INPUT_CHANNELS))
        stage1 = None
        if data.get("cascade") is not None:
            stage1 = StageSpec.from_dict(data["cascade"], tuple(task.name for task in tasks))
        _require(("prior" in inputs) == (stage1 is not None), "inputs",
                 "must include 'prior' exactly when the file has a 'cascade' (stage 1)")
        return cls(
            architecture=name,
            parameters=_get(architecture, "parameters", dict, "architecture"),
            patch_size=patch,
            tasks=tasks,
            crf=data.get("crf") or {},
            provenance=data.get("provenance") or {},
            format_version=version,
            inputs=inputs,
            stage1=stage1,
        )


# ---------------------------------------------------------------------------------------------
# Reading and writing.


def _read_header(path: Path) -> tuple[dict, int]:
    """Parse a safetensors header without trusting it: (header dict, header byte length)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise ModelFileError(f"{path}: file is truncated ({size} bytes); re-copy the model")
            (length,) = struct.unpack("<Q", prefix)
            if length == 0 or length > _MAX_HEADER_BYTES or length > size - 8:
                raise ModelFileError(
                    f"{path}: not a DeepOrganSeg model file (expected .safetensors with "
                    f"DeepOrganSeg metadata; pickle/.pt files are refused because opening them "
                    f"can run code)")
            raw = stream.read(length)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read model file ({error.strerror})") from None
    if not raw.lstrip().startswith(b"{"):
        raise ModelFileError(f"{path}: not a safetensors file; give a DeepOrganSeg .safetensors "
                             f"model file")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path}: model file header is corrupt; re-copy the model") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: model file header is corrupt; re-copy the model")
    return header, length


def read_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Read and validate a model file's metadata (cheap: no weights, no torch)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    header, _ = _read_header(path)
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


def _check_header_shapes(path: Path, header: dict, expected: dict) -> None:
    """Compare the tensors a file's header announces with the architecture's, by name and
    shape, before any weight is read."""
    announced = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool)
                                                and n >= 0 for n in shape)):
            raise ModelFileError(f"{path}: model file header is corrupt (tensor {name!r}); "
                                 f"re-copy the model")
        announced[name] = tuple(shape)
    missing = sorted(set(expected) - set(announced))
    unexpected = sorted(set(announced) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise ModelFileError(f"{path}: weights do not match the architecture ({detail}; "
                             f"{len(missing)} missing, {len(unexpected)} unexpected)")
    for name, shape in announced.items():
        if shape != tuple(expected[name].shape):
            raise ModelFileError(f"{path}: weight {name} has shape {shape}, the architecture "
                                 f"needs {tuple(expected[name].shape)}")


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
        _require(len(config.widths) <= _MAX_LEVELS, f"{where}.widths",
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
    header, _ = _read_header(path)
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
    _check_header_shapes(path, header, expected)
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
    from .crf.parameters import CRFParameters

    for where, parameters in [("crf", metadata.crf)] + [
            (f"tasks[{task.name}].crf", metadata.crf_for(task.name))
            for task in metadata.tasks if task.crf]:
        try:
            CRFParameters.from_dict(parameters)
        except (TypeError, ValueError) as error:
            raise ModelFileError(f"metadata field '{where}' is invalid ({error})") from None


def save_model(path: str | os.PathLike, network: "Any", metadata: ModelMetadata,
               half_precision: bool = False, stage1: "Any" = None) -> Path:
    """Write ``network``'s weights (and a cascade's ``stage1`` network's) and ``metadata`` as a
    model file, atomically.

    ``half_precision`` stores floating-point weights as float16 (half the size; the loader
    casts them back to float32).
    """
    import torch
    from safetensors.torch import save_file

    document = metadata.to_dict()
    _check_crf(ModelMetadata.from_dict(json.loads(json.dumps(document))))  # refuse invalid files
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
