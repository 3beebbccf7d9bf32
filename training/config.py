"""Training configuration: one YAML/JSON file names data, label space, network, optimiser and
schedule; command-line ``--set a.b=value`` pairs (and a few shortcut flags) override it.

The label space is the *union by name* of all tasks' labels: ``labels`` lists every name once,
in the order that gives them their values 1..N (= output channels; 0 is background). Each task
lists the subset it annotates. See ``training/configs/bundled.yaml`` for a complete example.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from DeepOrganSegLib.bundle import INPUT_CHANNELS, Normalization
from DeepOrganSegLib.network import DSNConfig

__all__ = ["SourceConfig", "TaskConfig", "OptimizerConfig", "ScheduleConfig", "DataConfig",
           "TrainConfig", "load_config", "apply_overrides"]


@dataclass(frozen=True)
class SourceConfig:
    """One data source of a task.

    ``type="phantom"``: ``kind`` (``make_phantom`` kind), ``train_seeds`` and ``val_seeds`` as
    ``[first, last]`` inclusive ranges, ``options`` passed to ``make_phantom`` (e.g.
    ``synthseg: true``). ``type="msd"`` / ``"nnunet"``: ``path`` to the data set folder; the
    last ``val_cases`` training cases are held out. ``rename`` maps the source's label names to
    the task's (names the task does not list become background).
    """

    type: str
    kind: str = ""
    train_seeds: tuple[int, int] = (0, -1)
    val_seeds: tuple[int, int] = (0, -1)
    options: dict = field(default_factory=dict)
    path: str = ""
    val_cases: int = 1
    rename: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in ("phantom", "msd", "nnunet"):
            raise ValueError(f"data source type {self.type!r}: use phantom, msd or nnunet")
        if self.type == "phantom" and not self.kind:
            raise ValueError("a phantom data source needs a 'kind'")
        if self.type != "phantom" and not self.path:
            raise ValueError(f"a {self.type} data source needs a 'path'")


@dataclass(frozen=True)
class TaskConfig:
    """A task: its modality, working spacing (mm, i/j/k), normalisation and labelled names."""

    name: str
    title: str
    modality: str
    spacing_mm: tuple[float, float, float]
    normalization: Normalization
    labels: tuple[str, ...]
    sources: tuple[SourceConfig, ...]
    #: Array axes (0=k, 1=j, 2=i) that random flips may mirror. Never 2 (left-right) for a task
    #: with lateralised labels: a flip would turn a left kidney into a right one.
    flip_axes: tuple[int, ...] = ()
    #: Patches of this task in every batch; ``None``: ``data.samples_per_task``. Give a hard
    #: task (many small organs) more of each step than an easy one.
    samples: int | None = None


@dataclass(frozen=True)
class OptimizerConfig:
    """``name``: ``adamw`` or ``sgd`` (momentum, Nesterov). Learning rate: linear warm-up over
    ``warmup_steps``, then poly decay ``(1 - t/T) ** poly_power``. ``grad_clip``: max L2 norm."""

    name: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_steps: int = 50
    poly_power: float = 0.9
    grad_clip: float = 12.0


@dataclass(frozen=True)
class ScheduleConfig:
    """Steps, validation/checkpoint cadence and deep-supervision weights.

    ``side_weights``: initial η_d per side output; ``side_decay``: ``linear`` (to 0 at the last
    step), ``exponential`` (η_d · 0.01^(t/T)) or ``fixed``."""

    steps: int = 1000
    val_every: int = 100
    checkpoint_every: int = 50
    side_weights: tuple[float, ...] = (0.4, 0.2)
    side_decay: str = "linear"
    amp: str = "bf16"


@dataclass(frozen=True)
class DataConfig:
    """Patch sampling and loading. ``patch_size`` is (k, j, i) voxels; ``samples_per_task``
    samples of every task (unless the task sets its own ``samples``) make one batch;
    ``foreground_ratio`` of the patches are centred on a labelled voxel; ``cache_dir`` holds
    pre-processed cases (``.npz``)."""

    patch_size: tuple[int, int, int] = (64, 64, 64)
    samples_per_task: int = 1
    foreground_ratio: float = 1 / 3
    num_workers: int = 1
    cache_dir: str = "runs/cache"
    augment: bool = True
    val_cases_per_task: int = 2
    #: Share of batches cut to a thin axial slab (depth in voxels, one of ``thin_slab_depths``):
    #: real scans are often a 40-100 mm slab, where the network meets the volume's end within
    #: its receptive field, as it never does in a patch of a long phantom.
    thin_slab_probability: float = 0.0
    thin_slab_depths: tuple[int, ...] = (16, 24, 32)


@dataclass(frozen=True)
class TrainConfig:
    labels: tuple[str, ...]
    tasks: tuple[TaskConfig, ...]
    network: dict
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    data: DataConfig = DataConfig()
    seed: int = 0
    output_dir: str = "runs/train"
    #: The network's inputs in channel order: ``image``, optionally ``position`` (two channels
    #: of left-right and antero-posterior offset from the body's centre; see
    #: ``DeepOrganSegLib.preprocess.position_channels``).
    inputs: tuple[str, ...] = ("image",)
    #: The model file the weights started from (``train.py --init``); "" from scratch.
    init_from: str = ""

    def __post_init__(self) -> None:
        if self.inputs[:1] != ("image",) or not set(self.inputs) <= set(INPUT_CHANNELS) or len(
                set(self.inputs)) != len(self.inputs):
            raise ValueError(f"'inputs' must be image, optionally followed by "
                             f"{', '.join(list(INPUT_CHANNELS)[1:])}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("'labels' lists a name twice")
        for task in self.tasks:
            unknown = [name for name in task.labels if name not in self.labels]
            if unknown:
                raise ValueError(f"task {task.name}: label {unknown[0]!r} is not in 'labels'")
        if len({task.name for task in self.tasks}) != len(self.tasks):
            raise ValueError("two tasks have the same name")
        if any(self.samples_of(task) < 0 for task in self.tasks) or self.batch_size < 1:
            raise ValueError("'samples' per task must be >= 0 and give a batch of at least 1")

    @property
    def num_classes(self) -> int:
        return len(self.labels) + 1

    def label_value(self, name: str) -> int:
        """The union label value (= output channel) of ``name``."""
        return self.labels.index(name) + 1

    def task_channels(self, task: TaskConfig) -> list[int]:
        """Output channels of ``task``: background first, then its labels' values."""
        return [0] + [self.label_value(name) for name in task.labels]

    def samples_of(self, task: TaskConfig) -> int:
        """Patches of ``task`` in one batch."""
        return self.data.samples_per_task if task.samples is None else task.samples

    @property
    def batch_size(self) -> int:
        return sum(self.samples_of(task) for task in self.tasks)

    def dsn_config(self) -> DSNConfig:
        channels = sum(INPUT_CHANNELS[name] for name in self.inputs)
        return DSNConfig.from_dict({**self.network, "num_classes": self.num_classes,
                                    "in_channels": channels})

    def task(self, name: str) -> TaskConfig:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(f"no task {name!r}")

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        for task, raw in zip(self.tasks, document["tasks"]):
            raw["normalization"] = task.normalization.to_dict()
        return json.loads(json.dumps(document))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        raw = copy.deepcopy(raw)
        tasks = []
        for task in raw.pop("tasks"):
            sources = tuple(SourceConfig(**_tuples(s, ("train_seeds", "val_seeds")))
                            for s in task.pop("sources"))
            normalization = Normalization.from_dict(task.pop("normalization"), "normalization")
            tasks.append(TaskConfig(sources=sources, normalization=normalization,
                                    **_tuples(task, ("spacing_mm", "labels", "flip_axes"))))
        return cls(
            labels=tuple(raw.pop("labels")), tasks=tuple(tasks), network=raw.pop("network"),
            optimizer=OptimizerConfig(**raw.pop("optimizer", {})),
            schedule=ScheduleConfig(**_tuples(raw.pop("schedule", {}), ("side_weights",))),
            data=DataConfig(**_tuples(raw.pop("data", {}), ("patch_size", "thin_slab_depths"))),
            **_tuples(raw, ("inputs",)))


def _tuples(raw: dict, keys: tuple[str, ...]) -> dict:
    return {k: tuple(v) if k in keys and isinstance(v, list) else v for k, v in raw.items()}


def apply_overrides(raw: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict."""
    raw = copy.deepcopy(raw)
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise ValueError(f"override {pair!r}: expected KEY=VALUE")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML or JSON config file and apply ``overrides``."""
    text = Path(path).read_text()
    raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    return TrainConfig.from_dict(apply_overrides(raw, list(overrides)))
