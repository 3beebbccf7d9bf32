"""Plan a training run from a data set folder, as nnU-Net plans from its data fingerprint.

    python training/train.py --data FOLDER [--task NAME] [--init bundled|MODEL|scratch]

reads an MSD or nnU-Net (v2) raw folder, measures it (spacings, sizes, modality, label names,
foreground intensities) and writes a complete, commented training config (``plan.yaml`` in the
run folder) that ``train.py --config`` can re-run after editing. The rules, each written into
the plan as the reason for its value:

* **working spacing** (mm, i/j/k): the median spacing of the training cases; when the coarsest
  axis is more than 3x the finest (thick slices), that axis takes the 10th percentile of its
  spacings instead (nnU-Net's anisotropy rule: fewer interpolated slices). A fine-tuned model
  keeps the spacing its start model learned at (its features are tuned to that scale).
* **normalisation**: CT: clip to the 0.5-99.5th percentile of the intensities inside the labels
  (HU), centre on their mean, scale by their standard deviation; MR (anything not CT): the
  engine's percentile clip and z-score per image. A fine-tuned CT model keeps its start
  model's CT normalisation.
* **patch and batch**: the largest patch up to the median case size (multiples of the
  network's size divisor) whose training memory, estimated per voxel from the architecture,
  fits the memory budget with a batch of 2 (shrinking the longest axis first).
* **labels**: the data set's names, lower-case with underscores, known synonyms mapped to the
  engine's names (``terminology.canonical_name``) so that fine-tuning matches them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import yaml

from DeepOrganSegLib.model import Normalization
from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.model.network import DSNConfig
from DeepOrganSegLib.model.terminology import canonical_name

from .data import read_header, read_msd_folder, read_nnunet_folder

__all__ = ["DatasetFingerprint", "detect_format", "fingerprint", "working_spacing",
           "ct_normalization", "patch_and_batch", "plan_config", "write_plan", "SCRATCH_NETWORK"]

#: The architecture of a run from scratch: the bundled model's, so that a scratch run and a
#: fine-tuned one differ only in where they start.
SCRATCH_NETWORK = {"widths": [16, 32, 64, 128], "convs_per_level": [1, 2, 2, 2],
                   "side_output_levels": [1, 2], "normalization": "batch", "skip": "add"}

#: Spacing ratio above which a data set counts as anisotropic (nnU-Net's value).
ANISOTROPY_RATIO = 3.0

#: Voxels sampled from inside the labels of each case for the CT intensity statistics.
FOREGROUND_SAMPLES_PER_CASE = 10_000

#: Cases read in full for the intensity statistics (evenly spread over the data set).
MAX_CASES_FOR_INTENSITIES = 20


@dataclass(frozen=True)
class DatasetFingerprint:
    """What planning needs to know about a data set folder."""

    folder: Path
    format: str                   # "msd" or "nnunet"
    name: str                     # the data set's name (dataset.json "name", else the folder's)
    modality: str                 # "CT" or "MR"
    channels: int                 # input channels the data set has (only the first is used)
    label_names: dict[int, str]   # {value: name as the data set writes it}
    cases: int
    spacings_mm: np.ndarray       # [cases, 3] (i, j, k)
    sizes: np.ndarray             # [cases, 3] voxels (i, j, k)
    foreground: np.ndarray        # intensities sampled inside the labels (CT: HU)


def detect_format(folder: str | Path) -> str:
    """``"msd"`` (``dataset.json`` with a ``training`` list) or ``"nnunet"`` (``imagesTr``
    files named ``<case>_0000<ending>``); InputError for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such data set folder")
    description = folder / "dataset.json"
    if not description.is_file():
        raise InputError(f"{folder}: no dataset.json; give a Medical Segmentation Decathlon or "
                         f"nnU-Net raw data set folder")
    try:
        document = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{description}: cannot read the dataset description ({error})") from None
    if isinstance(document, dict) and isinstance(document.get("training"), list):
        return "msd"
    if isinstance(document, dict) and "channel_names" in document:
        return "nnunet"
    raise InputError(f"{description}: neither an MSD description (a 'training' list) nor an "
                     f"nnU-Net one ('channel_names'); fix the file")


def _modality(document: dict, description: Path) -> tuple[str, int]:
    channels = document.get("modality") or document.get("channel_names")
    if not isinstance(channels, dict) or not channels:
        raise InputError(f"{description}: says no modality; add \"modality\" (MSD) or "
                         f"\"channel_names\" (nnU-Net), e.g. {{\"0\": \"CT\"}}")
    first = str(channels.get("0", next(iter(channels.values()))))
    return ("CT" if first.strip().upper() == "CT" else "MR"), len(channels)


def _foreground_sample(image_path: Path, label_path: Path, rng: np.random.Generator
                       ) -> np.ndarray:
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(image_path), sitk.sitkFloat32))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    if image.shape[-labels.ndim:] != labels.shape:
        raise InputError(f"{image_path}: image and labelmap have different sizes")
    if image.ndim == 4:  # several channels in one file: the first
        image = image[0]
    inside = image[labels > 0]
    if inside.size > FOREGROUND_SAMPLES_PER_CASE:
        inside = rng.choice(inside, FOREGROUND_SAMPLES_PER_CASE, replace=False)
    return np.asarray(inside, np.float32)


def fingerprint(folder: str | Path) -> DatasetFingerprint:
    """Read a data set folder's description and headers (and, for CT, a sample of the
    intensities inside the labels of up to ``MAX_CASES_FOR_INTENSITIES`` cases)."""
    folder = Path(folder)
    kind = detect_format(folder)
    description = folder / "dataset.json"
    document = json.loads(description.read_text(encoding="utf-8"))
    modality, channels = _modality(document, description)
    cases, names = (read_msd_folder if kind == "msd" else read_nnunet_folder)(folder)
    if len(cases) < 2:
        raise InputError(f"{folder}: {len(cases)} training case(s); at least 2 are needed "
                         f"(one is held out for validation)")
    if not names:
        raise InputError(f"{description}: lists no labels besides background")
    spacings, sizes = [], []
    for case_id, image, label in cases:
        for path in (image, label):
            if not path.is_file():
                raise InputError(f"{description}: case {case_id}: {path} does not exist; fix "
                                 f"the file list or the file names")
        size, spacing, _, _ = read_header(str(image))
        spacings.append(tuple(spacing[:3]))
        sizes.append(size[:3])
    foreground = np.zeros(0, np.float32)
    if modality == "CT":
        rng = np.random.default_rng(0)
        chosen = np.unique(np.linspace(0, len(cases) - 1, min(len(cases),
                                                              MAX_CASES_FOR_INTENSITIES)).round())
        foreground = np.concatenate([_foreground_sample(cases[int(n)][1], cases[int(n)][2], rng)
                                     for n in chosen])
        if foreground.size == 0:
            raise InputError(f"{folder}: the labelmaps are empty; nothing to learn")
    return DatasetFingerprint(folder, kind, str(document.get("name") or folder.name), modality,
                              channels, names, len(cases), np.asarray(spacings, float),
                              np.asarray(sizes, int), foreground)


def working_spacing(spacings_mm: np.ndarray) -> tuple[tuple[float, float, float], str]:
    """The working spacing (mm, i/j/k) for cases of ``spacings_mm`` [cases, 3], and why."""
    median = np.median(spacings_mm, axis=0)
    coarsest = int(np.argmax(median))
    if median[coarsest] > ANISOTROPY_RATIO * median.min():
        spacing = median.copy()
        spacing[coarsest] = np.percentile(spacings_mm[:, coarsest], 10)
        reason = (f"median spacing {_mm(median)}, anisotropic (axis {'ijk'[coarsest]} "
                  f"{median[coarsest] / median.min():.1f}x the finest): that axis at its 10th "
                  f"percentile")
    else:
        spacing, reason = median, f"median spacing of the training cases {_mm(median)}"
    return tuple(round(float(s), 3) for s in spacing), reason  # type: ignore[return-value]


def ct_normalization(foreground_hu: np.ndarray) -> tuple[Normalization, str]:
    """nnU-Net's CT normalisation from intensities inside the labels (HU), and why."""
    low, high = np.percentile(foreground_hu, [0.5, 99.5])
    inside = np.clip(foreground_hu, low, high)
    center, scale = float(inside.mean()), max(float(inside.std()), 1.0)
    normalization = Normalization("ct", clip_hu=(round(float(low), 1), round(float(high), 1)),
                                  center_hu=round(center, 1), scale_hu=round(scale, 1))
    return normalization, (f"CT: clip to the labels' 0.5-99.5th percentiles ({low:.0f} to "
                           f"{high:.0f} HU), centre {center:.0f} HU, scale {scale:.0f} HU "
                           f"(their mean and standard deviation)")


def training_bytes_per_voxel(network: DSNConfig) -> float:
    """Estimated training memory per voxel of one patch (bytes, float32): every convolution of
    every level keeps its output, its normalised output and its activation for the backward
    pass, and as much again for their gradients; level ``l`` has ``8**l`` times fewer voxels.
    Decoder blocks are counted like the encoder's; class maps are added at full resolution."""
    per_voxel = 0.0
    for level, (width, convs) in enumerate(zip(network.widths, network.convs_per_level)):
        decoder = 1 if level < len(network.widths) - 1 else 0
        per_voxel += width * (convs + decoder) * 3 / 8 ** level
    per_voxel += network.num_classes * (1 + len(network.side_output_levels)) * 2
    return per_voxel * 4 * 2


def patch_and_batch(median_size_kji: np.ndarray, network: DSNConfig, memory_gb: float,
                    batch: int = 2) -> tuple[tuple[int, int, int], int, str]:
    """The largest patch (k, j, i voxels) up to the median case size whose training memory at
    ``batch`` fits ``memory_gb``; the longest axis shrinks first. Returns patch, batch, why."""
    divisor = network.size_divisor
    patch = [max(divisor, int(np.ceil(s / divisor)) * divisor) for s in median_size_kji]
    per_voxel = training_bytes_per_voxel(network)
    budget = memory_gb * 1e9
    while batch * float(np.prod(patch)) * per_voxel > budget and max(patch) > divisor:
        longest = int(np.argmax(patch))
        patch[longest] -= divisor
    need = batch * float(np.prod(patch)) * per_voxel / 1e9
    return tuple(patch), batch, (f"largest patch up to the median case "  # type: ignore
                                 f"{[int(s) for s in median_size_kji]} voxels that fits "
                                 f"{memory_gb:g} GB at batch {batch} (estimated {need:.1f} GB)")


def _mm(values) -> str:
    return " x ".join(f"{v:.2f}" for v in values) + " mm"


def plan_config(folder: str | Path, *, task_name: str | None = None, start: str = "scratch",
                memory_gb: float = 2.0, steps: int = 1000, output_dir: str | None = None,
                spacing_mm: tuple[float, float, float] | None = None
                ) -> tuple[dict, list[str]]:
    """A training config document for the data set in ``folder`` and the reasons for its
    values (one line each). ``start``: ``"scratch"`` or the path of a model file to fine-tune
    (its architecture, inputs and, for the same modality, spacing and normalisation are
    kept). ``spacing_mm`` overrides the planned working spacing."""
    from DeepOrganSegLib.model import load_model

    data = fingerprint(folder)
    notes = [f"data set {data.name}: {data.format} folder {data.folder}, {data.cases} cases, "
             f"{data.modality}"]
    if data.channels > 1:
        notes.append(f"{data.channels} input channels in the data set: only the first is used "
                     f"(the network takes one image)")
    rename = {name: canonical_name(name) for name in data.label_names.values()}
    labels = list(dict.fromkeys(rename.values()))
    renamed = {old: new for old, new in rename.items() if old != new}
    if renamed:
        notes.append("labels renamed to the engine's names: "
                     + ", ".join(f"{old} -> {new}" for old, new in renamed.items()))

    spacing, spacing_reason = working_spacing(data.spacings_mm)
    normalization, normalization_reason = (
        ct_normalization(data.foreground) if data.modality == "CT"
        else (Normalization("mr"), "MR: clip each image to its 0.5-99.5th percentiles, then "
                                   "z-score (the engine's MR normalisation)"))
    network, inputs = dict(SCRATCH_NETWORK), ["image"]
    if start != "scratch":
        model = load_model(start)
        parameters = model.network.config.to_dict()
        network = {key: list(parameters[key]) if isinstance(parameters[key], tuple)
                   else parameters[key] for key in SCRATCH_NETWORK}
        # a cascade's stage 2 is fine-tuned as a single-stage model: its stage 1 knows only
        # its own tasks, so the new task gets no prior (initial_weights drops those channels)
        inputs = [name for name in model.metadata.inputs if name != "prior"]
        if model.metadata.stage1 is not None:
            notes.append("the start model is a cascade: its stage 2 is fine-tuned as a "
                         "single-stage model (stage 1 knows only its own tasks)")
        same = [task for task in model.metadata.tasks if task.modality == data.modality]
        overlap = sorted(same, key=lambda task: -len({spec.name for spec in task.labels}
                                                    & set(labels)))
        if overlap:
            like = overlap[0]
            spacing = tuple(like.spacing_mm)
            spacing_reason = (f"the start model's task {like.name} works at {_mm(spacing)} "
                              f"(its features are tuned to that scale; the data's median is "
                              f"{_mm(np.median(data.spacings_mm, axis=0))})")
            if data.modality == "CT":
                normalization = like.normalization
                normalization_reason = f"the start model's CT normalisation (task {like.name})"
        notes.append(f"fine-tuned from {Path(start).name}: its architecture and inputs "
                     f"({', '.join(inputs)})")
    if spacing_mm is not None:
        spacing, spacing_reason = tuple(spacing_mm), "given with --spacing"
    notes += [f"spacing: {spacing_reason}", f"normalisation: {normalization_reason}"]

    dsn = DSNConfig.from_dict({**network, "num_classes": len(labels) + 1})
    physical = np.median(data.sizes * data.spacings_mm, axis=0)  # mm, i/j/k
    median_kji = (physical / np.asarray(spacing))[::-1]
    patch, batch, patch_reason = patch_and_batch(median_kji, dsn, memory_gb)
    notes.append(f"patch {list(patch)}, batch {batch}: {patch_reason}")

    name = task_name or _task_name(data)
    validation_cases = max(1, round(0.2 * data.cases)) if data.cases >= 5 else 1
    notes.append(f"validation: the last {validation_cases} case(s) of the data set are held out")
    source = {"type": data.format, "path": str(data.folder.resolve()),
              "val_cases": validation_cases}
    if renamed:
        source["rename"] = renamed
    document = {
        "labels": labels,
        "tasks": [{"name": name, "title": data.name, "modality": data.modality,
                   "spacing_mm": list(spacing), "normalization": normalization.to_dict(),
                   "labels": labels, "samples": batch, "sources": [source]}],
        "network": network,
        "optimizer": {"name": "adamw", "lr": 1e-3 if start != "scratch" else 2e-3,
                      "weight_decay": 1e-4, "warmup_steps": min(100, steps // 10),
                      "poly_power": 0.9, "grad_clip": 12.0},
        "schedule": {"steps": steps, "val_every": max(1, steps // 5),
                     "checkpoint_every": max(1, min(250, steps // 4)),
                     "side_weights": [0.4 / (d + 1) for d in range(len(dsn.side_output_levels))],
                     "side_decay": "linear", "amp": "bf16"},
        "data": {"patch_size": list(patch), "samples_per_task": batch, "foreground_ratio": 0.5,
                 "num_workers": 1, "cache_dir": f"{output_dir or 'runs/' + name}/cache",
                 "augment": True, "val_cases_per_task": validation_cases},
        "inputs": inputs,
        "seed": 0,
        "output_dir": output_dir or f"runs/{name}",
    }
    if start != "scratch":
        document["init_from"] = str(start)
    return document, notes


def _task_name(data: DatasetFingerprint) -> str:
    base = "".join(c if c.isalnum() else "-" for c in data.name.lower()).strip("-") or "task"
    suffix = f"-{data.modality.lower()}"
    return base if base.endswith(suffix) else base + suffix


def write_plan(document: dict, notes: list[str], path: str | Path) -> Path:
    """The plan as a YAML config with its reasons as a comment block on top."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["# Planned by training/train.py --data from the data set (edit and re-run with",
              "# python training/train.py --config THIS_FILE). Why each value:"]
    header += [f"#   {note}" for note in notes]
    path.write_text("\n".join(header) + "\n" + yaml.safe_dump(document, sort_keys=False))
    return path
