"""What the module's panel shows and asks for, without Qt: the Widget copies between its widgets
and these objects, and pytest calls them directly.

* the model list: :func:`model_entries` (bundled models, the user's model folder, the files the
  user added) and :func:`added_models` (what the remembered setting still names);
* the organ choice: :class:`OrganChoice` (the task chosen, the organs to segment and their label
  specs, the unchecked organs after a checkbox changes);
* the CRF fields: :data:`CRF_FIELDS` and :meth:`OrganChoice.crf_changes` (only what the user
  changed from the model's tuned values is passed on);
* the engine options of a click on Segment: :meth:`OrganChoice.options`;
* which volume the chosen output segmentation belongs to: :class:`OutputFollowsInput`;
* whether Segment can run, and if not why: :func:`readiness`;
* the numbers of the results table: :func:`result_cells`.

No MRML, no Qt, no torch: this loads into Slicer's own process like the rest of ``mrml``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import LabelSpec, ModelMetadata, TaskSpec
from ..options import InferenceSettings, SegmentationOptions
from ..resources import bundled_models, user_models

__all__ = ["CRF_FIELDS", "ModelEntry", "model_entries", "added_models", "OrganChoice",
           "OutputFollowsInput", "Readiness", "readiness", "result_cells"]

#: Parameter-node fields of the panel's CRF section -> the engine's CRF parameter names.
CRF_FIELDS = {
    "crfIterations": "iterations",
    "crfAppearanceWeight": "appearance_weight",
    "crfAppearanceSpatialMm": "appearance_spatial_mm",
    "crfAppearanceIntensity": "appearance_intensity",
    "crfSmoothnessWeight": "smoothness_weight",
    "crfSmoothnessSpatialMm": "smoothness_spatial_mm",
}


@dataclass(frozen=True)
class ModelEntry:
    """One entry of the model list: the file, and where it comes from (``"bundled"``,
    ``"folder"``: the user's model folder, ``"added"``: chosen with *Add model file...*), which
    the panel turns into the entry's tooltip."""

    path: str
    origin: str

    @property
    def title(self) -> str:
        return Path(self.path).stem


def added_models(setting: Any) -> list[str]:
    """The model files a remembered setting names that still exist. ``setting`` is what
    ``QSettings.value`` gives back: None, one path, or a list of paths."""
    paths = [] if not setting else [setting] if isinstance(setting, str) else list(setting)
    return [str(path) for path in paths if Path(path).is_file()]


def model_entries(added: Iterable[str | os.PathLike]) -> list[ModelEntry]:
    """The model list: bundled models, then the user's model folder, then the ``added`` files;
    each file once (the first place it is found wins)."""
    entries: list[ModelEntry] = []
    for origin, paths in (("bundled", bundled_models()), ("folder", user_models()),
                          ("added", added)):
        for path in paths:
            if all(Path(entry.path) != Path(path) for entry in entries):
                entries.append(ModelEntry(str(path), origin))
    return entries


@dataclass(frozen=True)
class OrganChoice:
    """The model, task and organs chosen in the panel. ``task`` is a task name of the model or
    ``"auto"`` (the engine picks; a subset of organs needs a task); ``excluded`` are the organs
    of the task the user unchecked."""

    metadata: ModelMetadata | None
    task: str = "auto"
    excluded: Sequence[str] = field(default_factory=tuple)

    @property
    def chosen_task(self) -> TaskSpec | None:
        """The chosen task's spec; None for Auto, without a model, or for a task it lacks."""
        if self.metadata is None or self.task == "auto":
            return None
        return next((task for task in self.metadata.tasks if task.name == self.task), None)

    @property
    def organs(self) -> tuple[str, ...]:
        """The organs to segment, in the task's order; empty for Auto (all of the task the
        engine picks)."""
        task = self.chosen_task
        return () if task is None else tuple(
            label.name for label in task.labels if label.name not in self.excluded)

    @property
    def organ_subset(self) -> tuple[str, ...] | None:
        """What the engine's ``--organs`` gets: the checked organs when some are unchecked,
        else None (all)."""
        task = self.chosen_task
        return self.organs if task is not None and len(self.organs) < len(task.labels) else None

    @property
    def label_specs(self) -> list[LabelSpec]:
        """The labels a run can produce: the checked organs of the chosen task, or with Auto
        those of every task of the model."""
        if self.metadata is None:
            return []
        task = self.chosen_task
        if task is not None:
            return [label for label in task.labels if label.name in self.organs]
        return [label for each in self.metadata.tasks for label in each.labels]

    def toggled(self, organ: str, checked: bool) -> list[str]:
        """The unchecked organs after ``organ``'s checkbox became ``checked``."""
        excluded = [name for name in self.excluded if name != organ]
        return excluded if checked else [*excluded, organ]

    def crf_defaults(self) -> dict[str, float]:
        """The CRF parameters the model runs the chosen task with (the model-wide ones for
        Auto), by engine name, as the panel shows them; {} without a model or a CRF."""
        if self.metadata is None:
            return {}
        task = self.chosen_task
        crf = self.metadata.crf_parameters(task.name if task else None)
        return {} if crf is None else {name: getattr(crf, name) for name in CRF_FIELDS.values()}

    def crf_changes(self, fields: Mapping[str, float]) -> dict[str, float]:
        """The CRF values (``fields``: parameter-node field -> value) that differ from the
        model's: only those are passed on, so that with Auto the engine still uses the tuned
        values of the task it picks."""
        defaults = self.crf_defaults()
        values = {name: fields[field] for field, name in CRF_FIELDS.items()}
        return {name: value for name, value in values.items()
                if name not in defaults or abs(float(defaults[name]) - float(value)) > 1e-9}

    def options(self, device: str, use_crf: bool, crf_fields: Mapping[str, float]
                ) -> SegmentationOptions:
        """The engine options of a run with these choices (``device``: the engine's
        ``--device``)."""
        return SegmentationOptions(task=self.task, inference=InferenceSettings(device=device),
                                   crf=use_crf, crf_overrides=self.crf_changes(crf_fields),
                                   organs=self.organ_subset)


class OutputFollowsInput:
    """A new input volume gets a new segmentation: remembers the input the output selection
    belongs to, and says when the selection must be cleared. :meth:`forget` it when the scene
    closes, so that a scene loaded next keeps the output it was saved with."""

    def __init__(self) -> None:
        self._input: object | None = None

    def input_changed(self, volume: object | None) -> bool:
        """Note ``volume`` as the input; True when it replaces another input (the output
        selection then belongs to the other one)."""
        changed = volume is not self._input and self._input is not None
        self._input = volume
        return changed

    def forget(self) -> None:
        """The scene closed: its input is gone."""
        self._input = None


class Readiness(enum.Enum):
    """What the Segment button does now: cancel the work under way, wait for a missing choice
    (the panel says which), or segment."""

    INSTALLING = "installing"  # the button cancels the install
    RUNNING = "running"  # the button cancels the run
    NO_INPUT = "no input"
    NO_MODEL = "no model"
    NO_ORGANS = "no organs"  # a task with every organ unchecked
    READY = "ready"

    @property
    def clickable(self) -> bool:
        """True when a click does something (cancels or segments)."""
        return self in (Readiness.INSTALLING, Readiness.RUNNING, Readiness.READY)


def readiness(running: bool, installing: bool, has_input: bool, model: str,
              choice: OrganChoice) -> Readiness:
    """The Segment button's state: work under way first, then the first missing choice (an
    input volume, a model, at least one organ of a chosen task)."""
    if running:
        return Readiness.INSTALLING if installing else Readiness.RUNNING
    if not has_input:
        return Readiness.NO_INPUT
    if not model:
        return Readiness.NO_MODEL
    if choice.chosen_task is not None and not choice.organs:
        return Readiness.NO_ORGANS
    return Readiness.READY


def result_cells(volume_ml: float, mean_intensity: float | None, confidence: float | None
                 ) -> tuple[str, str, str]:
    """The results table's numbers for one organ: volume (mL, one decimal), mean intensity
    (the input's unit, one decimal) and the network's confidence (0-1, two decimals); an
    empty cell where the engine gave no value."""
    return (f"{volume_ml:.1f}", "" if mean_intensity is None else f"{mean_intensity:.1f}",
            "" if confidence is None else f"{confidence:.2f}")
