"""Training configuration: one YAML/JSON file names data, label space, network, optimiser and
schedule; command-line ``--set a.b=value`` pairs (and a few shortcut flags) override it.

The label space is the *union by name* of all tasks' labels: ``labels`` lists every name once,
in the order that gives them their values 1..N (= output channels; 0 is background). Each task
lists the subset it annotates. See ``training/configs/bundled.yaml`` for a complete example.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from DeepOrganSegLib.model import INPUT_CHANNELS, Normalization, input_channel_count
from DeepOrganSegLib.errors import DeepOrganSegError, InputError
from DeepOrganSegLib.model.network import DSNConfig

__all__ = ["ConfigError", "SourceConfig", "TaskConfig", "OptimizerConfig", "ScheduleConfig",
           "DataConfig", "PriorConfig", "TrainConfig", "load_config", "apply_overrides"]


class ConfigError(InputError):
    """A training config that cannot run: one line naming the key (dotted path), what is wrong
    and what would be right. Raised before any data is read."""


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
            raise ConfigError(f"data source type {self.type!r}: use phantom, msd or nnunet")
        if self.type == "phantom" and not self.kind:
            raise ConfigError("a phantom data source needs a 'kind'")
        if self.type != "phantom" and not self.path:
            raise ConfigError(f"a {self.type} data source needs a 'path'")


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
    step), ``exponential`` (η_d · 0.01^(t/T)) or ``fixed``. ``amp``: mixed precision of the
    forward pass on CUDA (``bf16``, ``fp16`` or ``none``); ``cpu_amp``: also autocast to bf16 on
    CPU (1.65x faster on CPUs with AVX-512 BF16 at equal validation Dice, docs/model-card.md;
    slower on CPUs without it). ``ema_decay``: keep an exponential moving average of the
    weights and BatchNorm statistics (0: off; 0.998 averages over about the last 500 steps),
    which validation, ``best.pt``'s choice and the exported model use: one checkpoint of a
    short CPU run can sit on a swing of the loss surface (docs/model-card.md, "v16")."""

    steps: int = 1000
    val_every: int = 100
    checkpoint_every: int = 50
    side_weights: tuple[float, ...] = (0.4, 0.2)
    side_decay: str = "linear"
    amp: str = "bf16"
    cpu_amp: bool = False
    ema_decay: float = 0.0


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
    #: SD of a random intensity offset drawn for each labelled organ of a patch, in units of the
    #: normalised image (CT: times ``scale_hu``, so 0.07 is about 25 HU), on
    #: ``label_shift_probability`` of the patches. Patients differ beyond one HU table per phase
    #: (contrast timing, fatty or iron-loaded organs, calibration: the real CT's spleen is
    #: darker than its liver), so organs must be told apart by shape and context, not by one HU
    #: ordering: a mild form of SynthSeg's random intensity per label (Billot et al. 2023).
    label_shift_sd: float = 0.0
    label_shift_probability: float = 0.5


@dataclass(frozen=True)
class PriorConfig:
    """Stage 2 of a cascade (``inputs`` lists ``prior``): the stage-1 model file whose coarse
    spacings the prior is made at, and how its training stand-in is perturbed.

    By default training does not run stage 1: each patch's prior is its *perturbed truth*, the reference
    labels averaged down to stage 1's spacing (as coarse as stage 1's output), organs dropped
    (``organ_dropout``: stage 1 missed them), shifted by up to ``shift_mm`` and scaled in
    confidence (``confidence`` range), then interpolated back. Stage 2 so learns to use the
    prior without trusting it blindly, and stage 1's own errors on its training cases (fewer
    than on new patients) never leak into stage 2's training."""

    stage1_model: str = ""
    organ_dropout: float = 0.15
    shift_mm: float = 12.0
    confidence: tuple[float, float] = (0.5, 1.0)
    #: Stage 2 runs inside stage 1's organ box widened by this much (mm) on every side.
    margin_mm: float = 30.0
    #: Share of the patches whose prior is stage 1's own prediction of the training case
    #: (computed once before training) instead of the perturbed truth.
    stage1_share: float = 0.0


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
    #: Cascade stage 2 only (``inputs`` lists ``prior``).
    prior: PriorConfig = PriorConfig()

    def __post_init__(self) -> None:
        if self.inputs[:1] != ("image",) or not set(self.inputs) <= set(INPUT_CHANNELS) or len(
                set(self.inputs)) != len(self.inputs):
            raise ConfigError(f"'inputs' must be image, optionally followed by "
                              f"{', '.join(list(INPUT_CHANNELS)[1:])}")
        if ("prior" in self.inputs) != bool(self.prior.stage1_model):
            raise ConfigError("a cascade stage 2 lists 'prior' in 'inputs' and names its stage-1 "
                              "model file in 'prior.stage1_model'; give both or neither")
        if not 0 <= self.prior.stage1_share <= 1:
            raise ConfigError("'prior.stage1_share' must be in [0, 1]")
        for key, share in (("data.thin_slab_probability", self.data.thin_slab_probability),
                           ("data.label_shift_probability", self.data.label_shift_probability)):
            if not 0 <= share <= 1:
                raise ConfigError(f"'{key}' must be in [0, 1], got {share}")
        if self.data.label_shift_sd < 0:
            raise ConfigError(f"'data.label_shift_sd' must be >= 0 (an SD in normalised "
                              f"units), got {self.data.label_shift_sd}")
        if not 0 <= self.prior.organ_dropout < 1 or self.prior.shift_mm < 0 or not (
                0 < self.prior.confidence[0] <= self.prior.confidence[1] <= 1):
            raise ConfigError("'prior': organ_dropout must be in [0, 1), shift_mm >= 0 and "
                              "confidence a range within (0, 1]")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError("'labels' lists a name twice")
        for task in self.tasks:
            unknown = [name for name in task.labels if name not in self.labels]
            if unknown:
                raise ConfigError(f"task {task.name}: label {unknown[0]!r} is not in 'labels'; "
                                  f"add it there")
            if len(task.spacing_mm) != 3 or min(task.spacing_mm) <= 0:
                raise ConfigError(f"task {task.name}: 'spacing_mm' must be 3 positive "
                                  f"millimetre values (i, j, k), got {list(task.spacing_mm)}")
        if len({task.name for task in self.tasks}) != len(self.tasks):
            raise ConfigError("two tasks have the same name")
        if any(self.samples_of(task) < 0 for task in self.tasks) or self.batch_size < 1:
            raise ConfigError("'samples' per task must be >= 0 and give a batch of at least 1")
        try:
            network = self.dsn_config()
        except (ValueError, TypeError) as error:
            raise ConfigError(f"'network': {error}") from None
        sides = len(network.side_output_levels)
        if len(self.schedule.side_weights) != sides:
            raise ConfigError(
                f"'schedule.side_weights' has {len(self.schedule.side_weights)} value(s) but "
                f"'network.side_output_levels' makes {sides} side output(s); give one weight "
                f"per side output")
        if not 0 <= self.schedule.ema_decay < 1:
            raise ConfigError(f"'schedule.ema_decay' must be in [0, 1) (0: no weight average), "
                              f"got {self.schedule.ema_decay}")
        divisor = network.size_divisor
        sizes = {"data.patch_size": self.data.patch_size}
        if self.data.thin_slab_probability > 0:
            sizes["data.thin_slab_depths"] = self.data.thin_slab_depths
        for key, values in sizes.items():
            if any(v < divisor or v % divisor for v in values):
                raise ConfigError(f"'{key}' {list(values)} must be multiples of {divisor} "
                                  f"voxels: the network halves its input "
                                  f"{len(network.widths) - 1} times")
        if len(self.data.patch_size) != 3:
            raise ConfigError(f"'data.patch_size' must be 3 voxel counts (k, j, i), got "
                              f"{list(self.data.patch_size)}")

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

    @property
    def cached_inputs(self) -> tuple[str, ...]:
        """The inputs the case cache holds: all but ``prior``, which is made per patch."""
        return tuple(name for name in self.inputs if name != "prior")

    def dsn_config(self) -> DSNConfig:
        channels = input_channel_count(self.inputs, self.num_classes)
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
        """A config from its document; every problem is a ConfigError naming the key."""
        raw = _section(copy.deepcopy(raw), cls, "")
        tasks = []
        task_list = raw.pop("tasks")
        if not task_list:
            raise ConfigError("'tasks' must be a non-empty list of tasks")
        for index, task in enumerate(task_list):
            where = f"tasks[{index}]"
            task = _section(task, TaskConfig, where)
            source_list = task.pop("sources")
            if not source_list:
                raise ConfigError(f"'{where}.sources' must be a non-empty list of data sources")
            sources = tuple(SourceConfig(**_section(s, SourceConfig, f"{where}.sources[{n}]"))
                            for n, s in enumerate(source_list))
            try:
                normalization = Normalization.from_dict(task.pop("normalization"),
                                                        f"{where}.normalization")
            except DeepOrganSegError as error:
                raise ConfigError(str(error).replace("metadata field", "config key")) from None
            tasks.append(TaskConfig(sources=sources, normalization=normalization, **task))
        sections = {"optimizer": OptimizerConfig, "schedule": ScheduleConfig, "data": DataConfig,
                    "prior": PriorConfig}
        built = {key: kind(**_section(raw.pop(key, {}), kind, key))
                 for key, kind in sections.items()}
        return cls(tasks=tuple(tasks), **built, **raw)


#: Annotations the config checks and converts (``from __future__ import annotations`` keeps
#: them as strings): what the value must be, in words, and its converter.
_SCALARS = {"int": ("an integer", int), "float": ("a number", float), "str": ("a string", str),
            "bool": ("true or false", bool), "dict": ("a mapping", dict)}


def _convert(value: Any, annotation: str, where: str) -> Any:
    """``value`` checked against a field annotation and converted (lists to tuples, ints to
    floats); a ConfigError that names ``where`` otherwise."""
    if annotation.endswith(" | None"):
        return None if value is None else _convert(value, annotation[:-len(" | None")], where)
    if annotation.startswith("tuple["):
        items = [part.strip() for part in annotation[len("tuple["):-1].split(",")]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {value!r}")
        if items[-1] != "..." and len(value) != len(items):
            raise ConfigError(f"'{where}' must have {len(items)} values, got {len(value)}")
        return tuple(_convert(item, items[0], f"{where}[{n}]") for n, item in enumerate(value))
    if annotation not in _SCALARS:
        return value  # checked by the class itself (e.g. Normalization, sources)
    words, kind = _SCALARS[annotation]
    accepted = (int, float) if kind is float else kind
    if isinstance(value, bool) and kind is not bool or not isinstance(value, accepted):
        raise ConfigError(f"'{where}' must be {words}, got {value!r}")
    return kind(value)


def _section(raw: Any, kind: type, where: str) -> dict[str, Any]:
    """``raw`` as keyword arguments of the dataclass ``kind``: unknown keys (with the nearest
    valid one), missing required keys and wrong types are ConfigErrors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where or 'config'}' must be a mapping of keys to values, "
                          f"got {raw!r}")
    known = {f.name: f for f in fields(kind)}
    prefix = f"{where}." if where else ""
    for key in raw:
        if key not in known:
            nearest = difflib.get_close_matches(str(key), list(known), n=1)
            hint = (f"did you mean '{prefix}{nearest[0]}'?" if nearest
                    else f"valid keys: {', '.join(known)}")
            raise ConfigError(f"unknown key '{prefix}{key}' ({hint})")
    for name, spec in known.items():
        if name not in raw and spec.default is MISSING and spec.default_factory is MISSING:
            raise ConfigError(f"'{prefix}{name}' is missing")
    return {key: _convert(value, known[key].type, f"{prefix}{key}") for key, value in raw.items()}


def apply_overrides(raw: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict."""
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {raw!r:.60}")
    raw = copy.deepcopy(raw)
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise ConfigError(f"override {pair!r}: expected KEY=VALUE")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r}: '{part}' is not a section")
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {pair!r}: value is not valid YAML "
                              f"({' '.join(str(error).split())})") from None
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML or JSON config file and apply ``overrides``; a ConfigError prefixed with
    the file's name for anything wrong with it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"{path}: cannot read the config ({reason})") from None
    try:
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        detail = " ".join(str(error).split())
        raise ConfigError(f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'}"
                          f" ({detail})") from None
    try:
        return TrainConfig.from_dict(apply_overrides(raw, list(overrides)))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
