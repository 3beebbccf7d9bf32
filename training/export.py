"""Export a training checkpoint as the engine's model file (safetensors + metadata).

    python training/export.py runs/cascade-v5/best.pt Resources/Models/DeepOrganSeg-multitask-v5.safetensors \
        --metrics runs/eval/*/summary.json --command "python training/train.py ..."

The metadata is complete: architecture, patch size, per task its modality, spacing,
normalisation and labels (union values, display names, colours and SNOMED CT codes from
``DeepOrganSegLib.model.terminology``), default CRF parameters (when ``DeepOrganSegLib.crf`` exists)
and provenance (data, steps, validation metrics, command, date).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pickle
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

from DeepOrganSegLib.model import (LabelSpec, LoadedModel, ModelMetadata, StageSpec, TaskSpec,
                                    save_model)
from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.outputs import check_outputs_spare_inputs
from DeepOrganSegLib.model.network import DSN3D
from DeepOrganSegLib.model.terminology import term_for
from training.config import SourceConfig, TrainConfig
from training.entry import run_script
from training.prior import load_stage1, stage1_spacings
from training.store_crf import read_crf_file, split_crf_document

__all__ = ["build_metadata", "stage1_spec", "export_checkpoint", "main"]


def _finite(value):
    """``value`` with NaN/Inf floats replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _label_spec(name: str, value: int) -> LabelSpec:
    term = term_for(name).to_dict()
    return LabelSpec(value=value, name=name, display_name=term["display_name"],
                     color=tuple(term["color"]), snomed=term["snomed"])


def _describe_source(source: SourceConfig) -> str:
    if source.type == "phantom":
        options = f" {source.options}" if source.options else ""
        return (f"synthetic {source.kind} phantoms, seeds {source.train_seeds[0]}.."
                f"{source.train_seeds[1]}{options}")
    return f"{source.type} folder {source.path}"


def _license(config: TrainConfig) -> str:
    """What the weights may be used for, from what they were trained on."""
    if all(source.type == "phantom" for task in config.tasks for source in task.sources):
        return "trained on synthetic phantoms only; not for clinical use"
    return ("trained on the data sets named under 'data': their licences bind these weights; "
            "not for clinical use")


def default_crf_parameters() -> dict:
    """``CRFParameters().to_dict()`` when the engine has a CRF, else {} (no CRF)."""
    try:
        from DeepOrganSegLib.crf.parameters import CRFParameters
    except ImportError:
        return {}
    return CRFParameters().to_dict()


def stage1_spec(config: TrainConfig, stage1: LoadedModel) -> StageSpec:
    """The ``cascade`` metadata of a stage 2 trained with ``config`` over ``stage1`` (the model
    file ``config.prior.stage1_model``): its network, inputs and coarse spacing per task."""
    stage1_spacings(config)  # the same tasks, and labels of the same values
    return StageSpec(parameters=stage1.network.config.to_dict(),
                     patch_size=stage1.metadata.patch_size, inputs=stage1.metadata.inputs,
                     spacing_mm={task.name: stage1.metadata.task(task.name).spacing_mm
                                 for task in config.tasks},
                     margin_mm=config.prior.margin_mm)


def build_metadata(config: TrainConfig, provenance: dict, crf: dict | None = None,
                   task_crf: dict[str, dict] | None = None,
                   stage1: StageSpec | None = None) -> ModelMetadata:
    """The model file metadata of a network trained with ``config``; ``task_crf`` maps task
    names to their own CRF parameters (training/tune_crf.py's choice); ``stage1`` makes it a
    cascade."""
    task_crf = task_crf or {}
    unknown = sorted(set(task_crf) - {task.name for task in config.tasks})
    if unknown:
        raise InputError(f"CRF parameters for unknown task(s): {', '.join(unknown)}")
    tasks = tuple(
        TaskSpec(name=task.name, title=task.title, modality=task.modality,
                 spacing_mm=tuple(task.spacing_mm), normalization=task.normalization,
                 labels=tuple(_label_spec(name, config.label_value(name))
                              for name in task.labels),
                 crf=dict(task_crf.get(task.name, {})))
        for task in config.tasks)
    return ModelMetadata(
        architecture="DSN3D", parameters=config.dsn_config().to_dict(),
        patch_size=tuple(config.data.patch_size[::-1]), tasks=tasks,
        crf=default_crf_parameters() if crf is None else crf, provenance=provenance,
        inputs=tuple(config.inputs), stage1=stage1)


def export_checkpoint(checkpoint: str | Path, output: str | Path, *, metrics: dict | None = None,
                      command: str = "", half_precision: bool = False,
                      crf: dict | None = None, task_crf: dict[str, dict] | None = None,
                      stage1_model: str | Path | None = None) -> Path:
    """Write ``checkpoint``'s network as a model file at ``output``; returns its path.
    ``metrics`` (e.g. training/evaluate.py's summary) replace the checkpoint's own validation
    metrics in the provenance. A cascade's stage 1 is ``stage1_model`` if given (a stage 1
    retrained after its stage 2, whose prior it will feed), else the one the stage 2 trained
    over (``config.prior.stage1_model``)."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        config = TrainConfig.from_dict(state["config"])
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as error:
        raise InputError(f"{checkpoint}: not a training checkpoint ({type(error).__name__}); "
                         f"give best.pt or last.pt of a train.py run") from None
    network = DSN3D(config.dsn_config())
    network.load_state_dict(state.get("ema", state["network"]))  # the weight average if kept
    network.eval()
    provenance = {
        "data": "; ".join(f"{task.name}: " + ", ".join(_describe_source(s) for s in task.sources)
                          for task in config.tasks),
        "training": (f"{state['step']} steps, {config.optimizer.name} lr {config.optimizer.lr}, "
                     f"patch {list(config.data.patch_size)}, batch {config.batch_size} ("
                     + ", ".join(f"{config.samples_of(task)} {task.name}"
                                 for task in config.tasks) + ")"
                     + (f", weight average (EMA decay {config.schedule.ema_decay})"
                        if "ema" in state else "")),
        "steps": int(state["step"]),
        "initialised_from": (Path(config.init_from).name if config.init_from
                             else "random (trained from scratch)"),
        "inputs": list(config.inputs),
        "metrics": _finite(metrics if metrics is not None else state.get("metrics", {})),
        "command": command,
        "date": datetime.date.today().isoformat(),
        "license": _license(config),
    }
    stage1 = spec = None
    if stage1_model is not None and not config.prior.stage1_model:
        raise InputError(f"{checkpoint} is not a cascade's stage 2 (its config has no "
                         f"prior.stage1_model): --stage1 joins a stage 1 to a stage 2 only")
    stage1_model = stage1_model or config.prior.stage1_model
    if stage1_model:  # an input too: never write the cascade over it
        check_outputs_spare_inputs([Path(output)], [Path(stage1_model)])
        stage1 = load_stage1(str(stage1_model))
        spec = stage1_spec(config, stage1)
        theirs = stage1.metadata.provenance
        provenance["stage1"] = {"file": Path(stage1_model).name,
                                **{key: theirs[key] for key in ("data", "training", "steps",
                                                                "initialised_from", "command")
                                   if key in theirs}}
    return save_model(output, network, build_metadata(config, provenance, crf, task_crf, spec),
                      half_precision=half_precision,
                      stage1=stage1.network if stage1 is not None else None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a checkpoint as a model file.")
    parser.add_argument("checkpoint", help="training checkpoint (.pt: best.pt or last.pt)")
    parser.add_argument("output", help="model file to write (.safetensors)")
    parser.add_argument("--metrics", nargs="+", default=[], metavar="SUMMARY.json",
                        help="training/evaluate.py summaries for the provenance, each stored "
                             "under its folder's name (e.g. runs/eval/abdomen-ct/summary.json)")
    parser.add_argument("--command", default="", help="the training command, for provenance")
    parser.add_argument("--crf", help="JSON file of CRF parameters (default: the engine's), "
                                      "or training/tune_crf.py's {\"crf\": ..., \"tasks\": ...}")
    parser.add_argument("--half", action="store_true", help="store weights as float16")
    parser.add_argument("--stage1", metavar="MODEL", help="a cascade's stage 1 (model file) in "
                        "place of the one the stage 2 trained over: a retrained stage 1")
    args = parser.parse_args(argv)
    check_outputs_spare_inputs([args.output], [args.checkpoint, args.crf, *(args.metrics or [])])
    metrics = ({Path(path).parent.name: json.loads(Path(path).read_text())
                for path in args.metrics} if args.metrics else None)
    crf, task_crf = split_crf_document(read_crf_file(Path(args.crf))) if args.crf else (None, None)
    path = export_checkpoint(args.checkpoint, args.output, metrics=metrics, command=args.command,
                             half_precision=args.half, crf=crf, task_crf=task_crf,
                             stage1_model=args.stage1)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
