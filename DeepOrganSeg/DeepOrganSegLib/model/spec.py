"""What a segmentation model file describes: its tasks, labels, normalisation, inputs and
cascade stage, as validated dataclasses (the JSON schema below).

Every field is validated when a file is read (:mod:`.file`); a bad file raises
:class:`~DeepOrganSegLib.errors.ModelFileError` with a one-line message naming the field.

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

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, cast

from ..crf.parameters import CRFParameters
from ..errors import InputError, ModelFileError
from ..schema import check_format, get_field, numbers, require

__all__ = [
    "FORMAT", "FORMAT_VERSION", "ARCHITECTURES", "LabelSpec", "Normalization", "TaskSpec",
    "StageSpec", "ModelMetadata", "INPUT_CHANNELS", "input_channel_count", "STAGE1_PREFIX",
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


def input_channel_count(inputs: tuple[str, ...], num_classes: int) -> int:
    """Input channels of a network taking ``inputs`` with ``num_classes`` outputs (background
    included): ``prior`` adds one channel per label."""
    return sum(num_classes - 1 if name == "prior" else cast(int, INPUT_CHANNELS[name])
               for name in inputs)  # (only "prior" maps to None)


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
        value = get_field(data, "value", int, where)
        require(0 < value < 256, f"{where}.value", "must be in 1..255")
        color = data.get("color")
        require(isinstance(color, list) and len(color) == 3
                 and all(isinstance(c, int) and 0 <= c <= 255 for c in color),
                 f"{where}.color", "must be 3 integers in 0..255")
        snomed = get_field(data, "snomed", dict, where)
        for part in ("category", "type"):
            code = get_field(snomed, part, dict, f"{where}.snomed")
            for key in ("scheme", "code", "meaning"):
                get_field(code, key, str, f"{where}.snomed.{part}")
        modifier = snomed.get("type_modifier")
        require(modifier is None or isinstance(modifier, dict), f"{where}.snomed.type_modifier",
                 "must be an object or null")
        require(isinstance(snomed.get("context", ""), str), f"{where}.snomed.context",
                 "must be a terminology context name")
        return cls(value, get_field(data, "name", str, where), get_field(data, "display_name", str, where),
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
        kind = get_field(data, "kind", str, where)
        if kind == "ct":
            clip = numbers(data.get("clip_hu"), 2, f"{where}.clip_hu")
            require(clip[0] < clip[1], f"{where}.clip_hu", "must be increasing")
            center = get_field(data, "center_hu", (int, float), where)
            scale = get_field(data, "scale_hu", (int, float), where)
            require(scale > 0, f"{where}.scale_hu", "must be positive")
            return cls("ct", clip_hu=clip, center_hu=float(center), scale_hu=float(scale))
        if kind == "mr":
            low, high = numbers(data.get("percentiles"), 2, f"{where}.percentiles")
            require(0 <= low < high <= 100, f"{where}.percentiles", "must be 0 <= low < high <= 100")
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
        modality = get_field(data, "modality", str, where)
        require(modality in ("CT", "MR"), f"{where}.modality", "must be 'CT' or 'MR'")
        labels = get_field(data, "labels", list, where)
        require(len(labels) > 0, f"{where}.labels", "must not be empty")
        require(isinstance(data.get("crf") or {}, dict), f"{where}.crf", "must be an object")
        return cls(
            name=get_field(data, "name", str, where),
            title=get_field(data, "title", str, where),
            modality=modality,
            spacing_mm=numbers(data.get("spacing_mm"), 3, f"{where}.spacing_mm", positive=True),
            normalization=Normalization.from_dict(get_field(data, "normalization", dict, where),
                                                  f"{where}.normalization"),
            labels=tuple(LabelSpec.from_dict(label, f"{where}.labels[{i}]")
                         for i, label in enumerate(labels)),
            crf=data.get("crf") or {},
        )


def _inputs(data: Any, where: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    require(isinstance(data, list) and data[:1] == ["image"]
             and all(isinstance(n, str) and n in allowed for n in data)
             and len(set(data)) == len(data), where,
             f"must list 'image' first, then any of {', '.join(allowed[1:])}")
    return tuple(data)


def _patch_size(data: Any, where: str) -> tuple[int, int, int]:
    require(isinstance(data, list) and len(data) == 3
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

    @property
    def patch_size_kji(self) -> tuple[int, int, int]:
        """``patch_size`` in array (k, j, i) order, as tensors are indexed."""
        return (self.patch_size[2], self.patch_size[1], self.patch_size[0])

    def to_dict(self) -> dict[str, Any]:
        return {"architecture": {"name": self.architecture, "parameters": self.parameters},
                "patch_size": list(self.patch_size), "inputs": list(self.inputs),
                "spacing_mm": {task: list(mm) for task, mm in self.spacing_mm.items()},
                "margin_mm": self.margin_mm}

    @classmethod
    def from_dict(cls, data: Any, tasks: tuple[str, ...]) -> "StageSpec":
        where = "cascade"
        architecture = get_field(data, "architecture", dict, where)
        name = get_field(architecture, "name", str, f"{where}.architecture")
        require(name in ARCHITECTURES, f"{where}.architecture.name",
                 f"must be one of {', '.join(ARCHITECTURES)}")
        spacing = get_field(data, "spacing_mm", dict, where)
        require(set(spacing) == set(tasks), f"{where}.spacing_mm",
                 f"must give a spacing for exactly the tasks {', '.join(tasks)}")
        margin = get_field(data, "margin_mm", (int, float), where)
        require(math.isfinite(margin) and 0 <= margin <= 500, f"{where}.margin_mm",
                 "must be 0..500 mm")
        return cls(
            parameters=get_field(architecture, "parameters", dict, f"{where}.architecture"),
            patch_size=_patch_size(data.get("patch_size"), f"{where}.patch_size"),
            inputs=_inputs(data.get("inputs"), f"{where}.inputs", ("image", "position")),
            spacing_mm={task: numbers(spacing[task], 3, f"{where}.spacing_mm.{task}",
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
    def patch_size_kji(self) -> tuple[int, int, int]:
        """``patch_size`` in array (k, j, i) order, as tensors are indexed."""
        return (self.patch_size[2], self.patch_size[1], self.patch_size[0])

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

    def selected_labels(self, task: str, organs: Sequence[str] | None) -> tuple[LabelSpec, ...]:
        """The labels of ``task`` to keep: all of them (``organs`` None), or those named, in
        the order given. Raises :class:`ModelFileError` for an unknown task and
        :class:`~..errors.InputError` naming the first unknown organ and the choices."""
        spec = self.task(task)
        if organs is None:
            return spec.labels
        known = {label.name: label for label in spec.labels}
        unknown = [name for name in organs if name not in known]
        if unknown:
            raise InputError(f"task {spec.name} has no organ {unknown[0]!r}; choose from: "
                             f"{', '.join(known)}")
        return tuple(known[name] for name in organs)

    def crf_for(self, task: str) -> dict[str, Any]:
        """The CRF parameters of ``task`` as stored: the model's, updated by the task's own ({}
        when the model carries none)."""
        return {**self.crf, **self.task(task).crf} if self.crf else {}

    def crf_parameters(self, task: str | None, overrides: Mapping[str, Any] | None = None
                       ) -> CRFParameters | None:
        """The CRF to run for ``task`` (None: the model-wide parameters, what task Auto starts
        from): the model's parameters, updated by the task's own, then by ``overrides`` (a
        user's: the command line's ``--crf-param``, the Slicer panel); None when the model
        carries no CRF. The one place where the three meet. Raises
        :class:`~..errors.InputError` with one line for an unknown or out-of-range override."""
        if not self.crf:
            return None
        stored = self.crf_for(task) if task is not None else self.crf
        return CRFParameters.from_dict({**stored, **(overrides or {})})

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
        architecture = get_field(data, "architecture", dict, "")
        name = get_field(architecture, "name", str, "architecture")
        if name not in ARCHITECTURES:
            raise ModelFileError(f"unknown architecture {name!r}; this DeepOrganSeg knows "
                                 f"{', '.join(ARCHITECTURES)}")
        patch = _patch_size(data.get("patch_size"), "patch_size")
        tasks_data = get_field(data, "tasks", list, "")
        require(len(tasks_data) > 0, "tasks", "must not be empty")
        tasks = tuple(TaskSpec.from_dict(task, f"tasks[{i}]") for i, task in enumerate(tasks_data))
        names: dict[int, str] = {}
        for task in tasks:
            for label in task.labels:
                require(names.setdefault(label.value, label.name) == label.name,
                         f"tasks[{task.name}].labels", f"gives value {label.value} two names")
        require(len({task.name for task in tasks}) == len(tasks), "tasks", "has duplicate names")
        for optional in ("crf", "provenance"):
            require(isinstance(data.get(optional) or {}, dict), optional, "must be an object")
        inputs = _inputs(data.get("inputs", ["image"]), "inputs", tuple(INPUT_CHANNELS))
        stage1 = None
        if data.get("cascade") is not None:
            stage1 = StageSpec.from_dict(data["cascade"], tuple(task.name for task in tasks))
        require(("prior" in inputs) == (stage1 is not None), "inputs",
                 "must include 'prior' exactly when the file has a 'cascade' (stage 1)")
        return cls(
            architecture=name,
            parameters=get_field(architecture, "parameters", dict, "architecture"),
            patch_size=patch,
            tasks=tasks,
            crf=data.get("crf") or {},
            provenance=data.get("provenance") or {},
            format_version=version,
            inputs=inputs,
            stage1=stage1,
        )
