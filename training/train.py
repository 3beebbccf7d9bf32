"""Train a (multi-task) 3D DSN.

    python training/train.py --data MSD_OR_NNUNET_FOLDER [--init bundled|MODEL|scratch]
    python training/train.py --config training/configs/bundled.yaml [--steps N] [--resume]
    torchrun --nproc_per_node 2 training/train.py --config ...        # DistributedDataParallel

``--data`` plans the run from the data set (``training/plan.py``), writes the plan as
``plan.yaml`` in the run folder (re-run it with ``--config``), trains and exports
``model.safetensors`` there: a model file the Slicer module and ``deeporganseg`` load.

Nothing is written before the run is checked (``training/verify.py``): ``--data`` and
``--prepare-only`` read every case of the data set in full (as nnU-Net's
``--verify_dataset_integrity`` does), a training run its headers, and a config whose trained
network the export would refuse is refused; every problem is one ``error:`` line (the first 20,
then a count), with exit code 2.

Writes to the config's ``output_dir``: ``last.pt`` (every ``checkpoint_every`` steps) and
``best.pt`` (best mean validation Dice), ``log.csv``, ``validation.csv``, TensorBoard events,
``config.yaml`` and ``training_curves.png``. ``--resume`` continues from ``last.pt`` exactly:
weights, optimiser, scheduler, step, RNG states and data order (batches are a function of the
step, see ``training/data.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import math
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from DeepOrganSegLib.devices import TRAINING_DEVICES
from DeepOrganSegLib.errors import InputError, printable
from DeepOrganSegLib.inference import predict
from DeepOrganSegLib.options import InferenceSettings
from DeepOrganSegLib.outputs import check_outputs_spare_inputs
from DeepOrganSegLib.model.network import DSN3D
from training.config import TrainConfig, apply_overrides, load_config
from training.curves import plot_training_curves
from training.data import (CaseCache, PatchBatchDataset, assemble_inputs, cached_sample,
                           list_cases, stage1_case_prior, task_prior)
from training.distributed import DistributedContext, init_distributed, shutdown_distributed
from training.entry import run_script
from training.losses import DeepSupervisionLoss, MarginalDiceCELoss, side_output_weights
from training.metrics import organ_metrics
from training.prior import load_stage1, stage1_spacings
from training.verify import DataSetProblems, check_data_folder, check_training_run

__all__ = ["main", "build_parser", "train", "TrainResult", "build_optimizer", "lr_factor",
           "validate", "Checkpoint"]


# ---------------------------------------------------------------------------------------------
# Command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", help="YAML or JSON training config")
    what.add_argument("--data", metavar="FOLDER",
                      help="Medical Segmentation Decathlon or nnU-Net raw data set folder: plan "
                           "the run from it, train, export OUTPUT_DIR/model.safetensors")
    parser.add_argument("--task", help="with --data: the task's name (default: from the data "
                                       "set's name and modality)")
    parser.add_argument("--memory-gb", type=float, default=2.0,
                        help="with --data: training memory budget that sets the patch size "
                             "(default 2 GB)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("I", "J", "K"),
                        help="with --data: working spacing in mm instead of the planned one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config entry, e.g. --set optimizer.lr=0.001")
    parser.add_argument("--steps", type=int, help="= --set schedule.steps=N")
    parser.add_argument("--output-dir", help="= --set output_dir=DIR")
    parser.add_argument("--num-workers", type=int, help="= --set data.num_workers=N")
    parser.add_argument("--seed", type=int, help="= --set seed=N")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    parser.add_argument("--init", metavar="bundled|MODEL|scratch",
                        help="start from a model file's weights (fine-tuning): 'bundled' (the "
                             "default with --data), a .safetensors path, or 'scratch'. Labels "
                             "are matched by name; new labels start fresh")
    parser.add_argument("--device", default="auto", choices=TRAINING_DEVICES)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cache-workers", type=int, default=1,
                        help="processes that pre-process cases into the cache")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of this invocation (a time-boxed slice of the "
                             "schedule; continue with --resume)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build the case cache and exit")
    parser.add_argument("--prune-cache", action="store_true",
                        help="delete the cache folder's case files this run does not use")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    flags = {"schedule.steps": args.steps, "output_dir": args.output_dir,
             "data.num_workers": args.num_workers, "seed": args.seed,
             "init_from": None if args.init is None else _start_model(args.init)}
    return [f"{key}={value}" for key, value in flags.items() if value is not None] + args.set


def _start_model(choice: str) -> str:
    """``--init``'s model file: the bundled model, a path, or "" for ``scratch``."""
    if choice == "scratch":
        return ""
    if choice == "bundled":
        from DeepOrganSegLib.resources import default_model_path

        return str(default_model_path())
    if not Path(choice).is_file():
        raise InputError(f"--init {choice}: no such model file; give bundled, scratch or a "
                         f".safetensors path")
    return choice


def _planned_config(args: argparse.Namespace) -> TrainConfig:
    """``--data``: verify the whole data set (every case read), plan the run from it, write
    ``plan.yaml``, return its config; nothing is written when the data set has problems."""
    from training.plan import plan_config, write_plan

    start = _start_model(args.init or "bundled") or "scratch"
    check_data_folder(args.data, progress=not args.no_progress)
    document, notes = plan_config(args.data, task_name=args.task, start=start,
                                  memory_gb=args.memory_gb, steps=args.steps or 1000,
                                  output_dir=args.output_dir,
                                  spacing_mm=tuple(args.spacing) if args.spacing else None)
    flags = {"data.num_workers": args.num_workers, "seed": args.seed}
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    document = apply_overrides(document, overrides + args.set)
    config = TrainConfig.from_dict(document)
    output = Path(config.output_dir)
    check_outputs_spare_inputs([output, output / "model.safetensors"],
                               [args.data, None if start == "scratch" else start])
    check_training_run(config)  # the planned config itself, before its plan is written
    path = write_plan(config.to_dict(), notes, output / "plan.yaml")
    print(f"plan written to {path}:", *notes, sep="\n  ", flush=True)
    return config


# ---------------------------------------------------------------------------------------------
# Optimisation.


def lr_factor(step: int, warmup_steps: int, total_steps: int, power: float) -> float:
    """Learning-rate multiplier: linear warm-up, then poly decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    return max(0.0, 1 - (step - warmup_steps) / span) ** power


def build_optimizer(network: torch.nn.Module, config: TrainConfig
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    settings = config.optimizer
    if settings.name == "adamw":
        optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr,
                                      weight_decay=settings.weight_decay)
    elif settings.name == "sgd":
        optimizer = torch.optim.SGD(network.parameters(), lr=settings.lr,
                                    momentum=settings.momentum, nesterov=True,
                                    weight_decay=settings.weight_decay)
    else:
        raise ValueError(f"optimizer {settings.name!r}: use adamw or sgd")
    total = config.schedule.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, settings.warmup_steps, total,
                                          settings.poly_power))
    return optimizer, scheduler


# ---------------------------------------------------------------------------------------------
# Checkpoints (our own resume files; the product's model file comes from training/export.py).


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": [torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
            "python": list(random.getstate()[1]) + [random.getstate()[2]]}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate((3, tuple(state["python"][:-1]), state["python"][-1]))


class Checkpoint:
    """Save/restore everything a run needs to continue bit for bit."""

    @staticmethod
    def save(path: Path, network: DSN3D, optimizer, scheduler, step: int, best: float,
             config: TrainConfig, metrics: dict, average: AveragedModel | None = None) -> None:
        """``average``: the weight average, when the run keeps one: saved as ``ema`` (the
        weights export writes) with its update count."""
        state = {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "step": step, "best": best,
                 "rng": _rng_state(), "config": config.to_dict(), "metrics": metrics}
        if average is not None:
            state["ema"] = average.module.state_dict()
            state["ema_updates"] = int(average.n_averaged)
        temporary = path.with_suffix(".tmp")
        torch.save(state, temporary)
        temporary.replace(path)

    @staticmethod
    def load(path: Path) -> dict:
        return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# Data.


def _tidy_cache(cache: CaseCache, cases: list, prune: bool) -> None:
    """Say how much of the cache folder this run does not use, or with ``prune`` delete it: a
    folder that only grows filled this machine's disk (56 GB) and stopped a run."""
    unused = cache.unused(cases)
    if not unused:
        return
    size_gb = sum(path.stat().st_size for path in unused) / 1e9
    if prune:
        for path in unused:
            path.unlink(missing_ok=True)
        print(f"deleted {len(unused)} unused case files ({size_gb:.1f} GB) from "
              f"{printable(str(cache.folder))}")
    else:
        print(f"warning: {printable(str(cache.folder))} holds {len(unused)} case files "
              f"({size_gb:.1f} GB) this run does not use (an older phantom generator or other "
              f"options); --prune-cache deletes them, unless another run still needs them")


def _prepare(config: TrainConfig, ctx: DistributedContext, cache_workers: int,
             prune_cache: bool = False) -> tuple[dict, dict]:
    """Build the case cache (work shared by rank; the unused files said or, with
    ``prune_cache``, deleted) and load training and validation arrays:
    ``{task: [(image, labels), ...]}`` and ``{task: [(case_id, image, labels), ...]}``."""
    cache = CaseCache(config.data.cache_dir, config)
    train = {task.name: list_cases(task, "train") for task in config.tasks}
    val = {task.name: list_cases(task, "val")[: config.data.val_cases_per_task]
           for task in config.tasks}
    everything = [case for cases in (*train.values(), *val.values()) for case in cases]
    if ctx.is_main:
        _tidy_cache(cache, everything, prune_cache)
    mine = everything[ctx.rank::ctx.world_size]
    if cache_workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(cache_workers) as pool:
            list(pool.map(cache.ensure, mine))
    else:
        for case in mine:
            cache.ensure(case)
    ctx.barrier()
    train_arrays = {name: [cache.load(case) for case in cases] for name, cases in train.items()}
    val_arrays = {name: [(case.case_id, *cache.load(case)) for case in cases]
                  for name, cases in val.items()} if ctx.is_main else {}
    return train_arrays, val_arrays


def _stage1_priors(config: TrainConfig, train_arrays: dict) -> dict | None:
    """Stage 1's prediction of every training case, when ``prior.stage1_share`` asks for it."""
    if "prior" not in config.inputs or config.prior.stage1_share <= 0:
        return None
    stage1 = load_stage1(config.prior.stage1_model)
    spacings = stage1_spacings(config)
    return {task.name: [stage1_case_prior(image, task, config, stage1, spacings[task.name])
                        for image, _ in train_arrays[task.name]] for task in config.tasks}


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# Validation with the engine's inference.


def validate(network: DSN3D, config: TrainConfig, cases: dict, device: torch.device,
             surface: bool = True) -> dict:
    """Per task and label: mean Dice (and HD95, mm) over the validation cases, predicted with
    ``DeepOrganSegLib.inference.predict`` restricted to each task's channels."""
    results: dict = {}
    settings = InferenceSettings(device=device.type)
    spacings = stage1_spacings(config) if "prior" in config.inputs else {}
    for task in config.tasks:
        channels = config.task_channels(task)
        per_label: dict[str, list[dict]] = {name: [] for name in task.labels}
        for _, image, labels in cases.get(task.name, []):
            if spacings:  # stage 2 of a cascade: the coarse truth stands in for stage 1
                image = assemble_inputs(config, task, {
                    **cached_sample(image, config),
                    "prior": task_prior(config, task, labels, spacings[task.name], None)})
            writable = np.require(image, requirements="W")  # the cache is mapped read-only
            prediction = predict(network, torch.from_numpy(writable), channels,
                                 config.data.patch_size, settings)
            predicted = np.asarray(channels, np.uint8)[prediction.main.argmax(0).numpy()]
            spacing = task.spacing_mm[::-1]
            scores = organ_metrics(predicted, labels, channels[1:], spacing, surface=surface)
            for name, value in zip(task.labels, channels[1:]):
                per_label[name].append(scores[value])
        results[task.name] = {name: {key: _nanmean([s[key] for s in scores])
                                     for key in (scores[0] if scores else {})}
                              for name, scores in per_label.items() if scores}
    network.train()
    return results


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _mean_dice(metrics: dict) -> float:
    per_task = [np.mean([m["dice"] for m in labels.values()])
                for labels in metrics.values() if labels]
    return float(np.mean(per_task)) if per_task else math.nan


# ---------------------------------------------------------------------------------------------
# Logging (rank 0 only).


MAX_NON_FINITE_STEPS_IN_A_ROW = 20
"""Steps in a row with non-finite gradients after which training stops (it has diverged)."""


def weight_average(network: DSN3D, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``network``'s weights and BatchNorm statistics
    (``schedule.ema_decay``; None when 0), updated after every optimizer step."""
    if not decay:
        return None
    return AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class TrainingDiverged(InputError):
    """Training gave non-finite gradients step after step."""


class _BufferSnapshot:
    """A copy of a network's buffers (BatchNorm running statistics): a step whose gradients
    are non-finite is skipped, and its forward pass must not leave NaN statistics behind."""

    def __init__(self, network: torch.nn.Module) -> None:
        self._buffers = [b for b in network.buffers() if b.is_floating_point()]
        self._saved = [b.detach().clone() for b in self._buffers]

    def save(self) -> None:
        for saved, buffer in zip(self._saved, self._buffers):
            saved.copy_(buffer)

    def restore(self) -> None:
        for saved, buffer in zip(self._saved, self._buffers):
            buffer.copy_(saved)


class RunLog:
    """``log.csv`` (one row per step), ``validation.csv`` and TensorBoard events."""

    def __init__(self, folder: Path, side_count: int, resume_step: int | None):
        """``resume_step``: continue the logs of a resumed run, dropping rows logged after
        its checkpoint (they will be redone); None starts fresh logs."""
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.writer = SummaryWriter(str(folder / "tensorboard"))
        self.step_fields = (["step", "loss", "main"] + [f"side_{d + 1}" for d in
                                                       range(side_count)]
                            + ["lr"] + [f"eta_{d + 1}" for d in range(side_count)]
                            + ["skipped", "seconds"])
        self.steps = self._open("log.csv", self.step_fields, resume_step)
        self.validation = self._open("validation.csv", ["step", "task", "label", "dice",
                                                        "hd95_mm"], resume_step)

    def _open(self, name: str, fields: list[str], resume_step: int | None):
        path = self.folder / name
        kept = []
        if resume_step is not None and path.exists():
            with open(path, newline="") as stream:
                kept = [row for row in csv.DictReader(stream) if int(row["step"]) < resume_step]
        stream = open(path, "w", newline="")
        writer = csv.DictWriter(stream, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        return stream, writer

    def step(self, row: dict) -> None:
        stream, writer = self.steps
        writer.writerow(row)
        stream.flush()
        for key in ("loss", "main", "lr"):
            self.writer.add_scalar(f"train/{key}", row[key], row["step"])

    def validated(self, step: int, metrics: dict) -> None:
        stream, writer = self.validation
        for task, labels in metrics.items():
            for name, values in labels.items():
                writer.writerow({"step": step, "task": task, "label": name, **values})
                self.writer.add_scalar(f"dice/{task}/{name}", values["dice"], step)
            self.writer.add_scalar(f"dice/{task}/mean",
                                   float(np.mean([v["dice"] for v in labels.values()])), step)
        stream.flush()

    def close(self) -> None:
        self.steps[0].close()
        self.validation[0].close()
        self.writer.close()


# ---------------------------------------------------------------------------------------------
# The run.


@dataclass
class TrainResult:
    network: DSN3D   # this rank's replica, unwrapped
    step: int        # steps done so far
    metrics: dict    # latest validation metrics (rank 0; {} elsewhere)


def initial_weights(network: DSN3D, config: TrainConfig, model_path: str) -> list[str]:
    """Load a model file's weights into ``network`` (warm start, fine-tuning); returns the
    config's labels that the model file did not have.

    The architecture must be the model file's, except that the config may have other inputs
    and other labels. Input channels are matched by input name: an input of both keeps the
    model file's first-layer weights, a new one (position, a cascade's prior) starts at zero,
    one only the model file has is dropped (fine-tuning a cascade's stage 2 as a single-stage
    model). Output channels are matched by label name: a label of both keeps the model
    file's weights for its channel (wherever the config puts it), a new label keeps
    ``network``'s fresh initialisation, a label only the model file has is dropped. With the
    same inputs and labels the warm-started network computes exactly what the model file
    did. Anything else is an InputError."""
    from DeepOrganSegLib.model import input_channel_count, load_model

    model = load_model(model_path)
    names = {label.value: label.name for task in model.metadata.tasks for label in task.labels}
    ours, source = network.config, model.network.config
    if replace(source, in_channels=ours.in_channels, num_classes=ours.num_classes) != ours:
        raise InputError(f"--init {model_path}: its architecture differs from the config's; "
                         f"use the model's architecture or train from scratch")
    # Output channel of ours -> output channel of theirs (background is 0 in both).
    their_channel = {name: value for value, name in names.items()}
    rows = {0: 0, **{config.label_value(name): their_channel[name] for name in config.labels
                     if name in their_channel}}
    # Input channels of ours -> theirs, by input name (a prior's channels by label name).
    def layout(inputs: tuple[str, ...], num_classes: int) -> dict[str, int]:
        starts, used = {}, 0
        for name in inputs:
            starts[name] = used
            used += input_channel_count((name,), num_classes)
        return starts
    mine_at = layout(tuple(config.inputs), config.num_classes)
    theirs_at = layout(model.metadata.inputs, model.metadata.num_classes)
    columns = {}
    for name in set(mine_at) & set(theirs_at):
        if name == "prior":  # channel value - 1 of each label both know
            columns.update({mine_at[name] + mine - 1: theirs_at[name] + theirs - 1
                            for mine, theirs in rows.items() if mine})
        else:
            columns.update({mine_at[name] + n: theirs_at[name] + n
                            for n in range(input_channel_count((name,), 2))})
    class_tensors = {f"{layer}.{kind}" for layer in network.class_layers()
                     for kind in ("weight", "bias")}
    first = network.first_layer_weight()
    state = network.state_dict()
    with torch.no_grad():
        for name, tensor in model.network.state_dict().items():
            if name in class_tensors:
                for mine, theirs in rows.items():
                    state[name][mine].copy_(tensor[theirs])
            elif name == first:  # [out, in, 3, 3, 3]: input channels matched by name
                state[name].zero_()
                for mine, theirs in columns.items():
                    state[name][:, mine].copy_(tensor[:, theirs])
            else:
                state[name].copy_(tensor)
    network.load_state_dict(state)
    return [name for name in config.labels if name not in their_channel]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX tiles). Without it,
    bf16 autocast is emulated: 41-44 s per step against 1.8 s in float32 on an AVX2 EPYC, for the
    cascade's stage 2 (docs/model-card.md, speed table)."""
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def _cpu_bf16_is_native(say: bool) -> bool:
    """``schedule.cpu_amp`` asked for bf16 autocast on the CPU: whether to honour it (no:
    the CPU has no native bf16, and the run goes on in float32, saying so when ``say``)."""
    if cpu_has_native_bf16():
        return True
    if say:
        print("warning: schedule.cpu_amp asks for bf16 autocast, but this CPU has no native bf16 "
              "(AVX-512 BF16 or AMX), where it is many times slower; training in float32",
              file=sys.stderr)
    return False


def train(config: TrainConfig, ctx: DistributedContext, resume: bool = False,
          cache_workers: int = 1, show_progress: bool = True,
          stop_after: int | None = None, prune_cache: bool = False) -> TrainResult:
    """Train as ``config`` says (from ``last.pt`` when ``resume``, else from the weights of the
    model file ``config.init_from`` when set), for the whole schedule or ``stop_after`` steps
    of it. The data (from the headers) and the config are checked (``check_training_run``)
    before anything is written."""
    check_training_run(config)
    output = Path(config.output_dir)
    if ctx.is_main:
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    torch.manual_seed(config.seed)
    network = DSN3D(config.dsn_config()).to(ctx.device)
    optimizer, scheduler = build_optimizer(network, config)
    start, best, metrics = 0, -math.inf, {}
    if resume:
        state = Checkpoint.load(output / "last.pt")
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, metrics = state["step"], state["best"], state["metrics"]
        _set_rng_state(state["rng"])
        # the run's first weights stay its provenance: a resume itself starts from last.pt
        config = replace(config, init_from=config.init_from
                         or state["config"].get("init_from") or "")
    elif config.init_from:
        initial_weights(network, config, config.init_from)
    # the average starts from the weights the run starts from; a resumed run continues its own
    # (one that kept none starts one where it stands)
    average = weight_average(network, config.schedule.ema_decay)
    if resume and average is not None and "ema" in state:
        average.module.load_state_dict(state["ema"])
        average.n_averaged.fill_(state["ema_updates"])
    model = (DistributedDataParallel(network, device_ids=[ctx.local_rank]
                                     if ctx.device.type == "cuda" else None)
             if ctx.distributed else network)

    train_arrays, val_arrays = _prepare(config, ctx, cache_workers, prune_cache)
    dataset = PatchBatchDataset(config, train_arrays, ctx.rank, ctx.world_size,
                                _stage1_priors(config, train_arrays))
    workers = config.data.num_workers
    end = config.schedule.steps if stop_after is None else min(config.schedule.steps,
                                                               start + stop_after)
    loader = DataLoader(dataset, batch_size=None, sampler=range(start, end),
                        num_workers=workers, worker_init_fn=_worker_init,
                        prefetch_factor=2 if workers else None)
    criterion = DeepSupervisionLoss(MarginalDiceCELoss(
        {task.name: config.task_channels(task) for task in config.tasks}))
    schedule = config.schedule
    cuda = ctx.device.type == "cuda"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(schedule.amp)
    cpu_amp = not cuda and schedule.cpu_amp and _cpu_bf16_is_native(ctx.is_main)
    autocast = (functools.partial(torch.autocast, "cuda", dtype=amp_dtype) if cuda and amp_dtype
                else functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
                if cpu_amp else contextlib.nullcontext)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and amp_dtype == torch.float16)
    log = (RunLog(output, len(network.config.side_output_levels), start if resume else None)
           if ctx.is_main else None)

    progress = None
    if ctx.is_main and show_progress:
        from tqdm import tqdm

        progress = tqdm(total=schedule.steps, initial=start, unit="step", mininterval=10,
                        dynamic_ncols=True)
    network.train()
    done = start
    statistics = _BufferSnapshot(network)
    skipped = skipped_in_a_row = 0
    for step, batch in zip(range(start, end), loader):
        began = time.perf_counter()
        etas = side_output_weights(schedule.side_weights, step, schedule.steps,
                                   schedule.side_decay)
        images = batch["image"].to(ctx.device, non_blocking=True)
        labels = batch["label"].to(ctx.device, non_blocking=True)
        with autocast():
            main_logits, sides = model(images)
        loss, terms = criterion(main_logits, sides, labels, batch["task"], etas)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(network.parameters(), config.optimizer.grad_clip)
        if torch.isfinite(norm) or scaler.is_enabled():  # the fp16 scaler skips such steps itself
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update_parameters(network)
            skipped_in_a_row = 0
        else:  # one non-finite step would make every weight NaN: skip it (the same on every rank:
            # the norm is of the all-reduced gradients), restore BatchNorm's running statistics
            optimizer.zero_grad(set_to_none=True)
            statistics.restore()
            skipped += 1
            skipped_in_a_row += 1
            if skipped_in_a_row >= MAX_NON_FINITE_STEPS_IN_A_ROW:
                raise TrainingDiverged(f"{skipped_in_a_row} training steps in a row (to step "
                                       f"{step}) had non-finite gradients; lower optimizer.lr or "
                                       f"turn off schedule.cpu_amp, and resume from last.pt")
        statistics.save()
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        done = step + 1
        if log is not None:
            row = {"step": step, "loss": float(loss.detach()), "main": terms[0], "lr": lr,
                   "skipped": skipped, "seconds": round(time.perf_counter() - began, 3)}
            row.update({f"side_{d + 1}": t for d, t in enumerate(terms[1:])})
            row.update({f"eta_{d + 1}": e for d, e in enumerate(etas)})
            log.step(row)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        last = done == schedule.steps
        if ctx.is_main and (done % schedule.val_every == 0 or last) and val_arrays:
            metrics = validate(network if average is None else average.module, config,
                               val_arrays, ctx.device, surface=False)
            log.validated(step, metrics)
            score = _mean_dice(metrics)
            if score > best:
                best = score
                Checkpoint.save(output / "best.pt", network, optimizer, scheduler, done, best,
                                config, metrics, average)
            print(f"step {done}: validation mean Dice {score:.4f} (best {best:.4f})", flush=True)
        if ctx.is_main and (done % schedule.checkpoint_every == 0 or done == end):
            Checkpoint.save(output / "last.pt", network, optimizer, scheduler, done, best,
                            config, metrics, average)
    if progress is not None:
        progress.close()
    if log is not None:
        log.close()
    if ctx.distributed:  # BatchNorm running statistics drift per rank after the last step
        for buffer in [*network.buffers(), *(average.module.buffers() if average else [])]:
            torch.distributed.broadcast(buffer, src=0)
    if ctx.is_main and done == schedule.steps:
        plot_training_curves(output / "log.csv", output / "validation.csv",
                             output / "training_curves.png")
        (output / "summary.json").write_text(json.dumps(
            {"steps": schedule.steps, "best_mean_dice": best, "metrics": metrics}, indent=2))
    ctx.barrier()
    return TrainResult(network, done, metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Train (or with ``--prepare-only`` build the case cache); every problem of the data set
    and the config is listed, one ``error:`` line each (the first 20, then a count), with exit
    code 2 and nothing written."""
    args = build_parser().parse_args(argv)
    try:
        return _main(args, argv)
    except DataSetProblems as problems:
        for line in problems.lines():
            print(f"error: {printable(line)}", file=sys.stderr)
        return problems.exit_code


def _main(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = _planned_config(args) if args.data else load_config(args.config, _overrides(args))
    if args.prepare_only and not args.data:  # --data has read every case already
        check_training_run(config, full=True, progress=not args.no_progress)
    ctx = init_distributed(args.device)
    try:
        if args.prepare_only:
            _prepare(config, ctx, args.cache_workers, args.prune_cache)
            return 0
        result = train(config, ctx, resume=args.resume, cache_workers=args.cache_workers,
                       show_progress=not args.no_progress, stop_after=args.stop_after,
                       prune_cache=args.prune_cache)
        if args.data and ctx.is_main and result.step == config.schedule.steps:
            _export_run(config, argv)
    finally:
        shutdown_distributed()
    return 0


def _export_run(config: TrainConfig, argv: Sequence[str] | None) -> None:
    """``--data``: the run's best checkpoint (the last without validation) as
    ``OUTPUT_DIR/model.safetensors``."""
    from training.export import export_checkpoint

    output = Path(config.output_dir)
    checkpoint = output / "best.pt" if (output / "best.pt").exists() else output / "last.pt"
    command = " ".join(["python training/train.py", *(sys.argv[1:] if argv is None else argv)])
    path = export_checkpoint(checkpoint, output / "model.safetensors", command=command)
    print(f"wrote {path}: load it with deeporganseg segment --model {path}, or in Slicer with "
          f"\"Add model file...\"", flush=True)


if __name__ == "__main__":
    sys.exit(run_script(main))
