"""Training data: readers, the pre-processed case cache, and the reproducible patch sampler.

A training sample is built exactly as inference sees its input: case -> ``working_grid`` at the
task's spacing -> ``resample_to_grid`` (linear image, nearest labels) -> ``normalize_intensities``
-> random patch (a share centred on labelled voxels) -> MONAI augmentation. Labels are stored in
the *union* label space (values = output channels of the multi-task network).

Every batch is a pure function of ``(seed, step, rank)``: the dataset is indexed by the global
step, and each sample seeds its own generator from those numbers. Data order therefore does not
depend on the number of worker processes and a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from DeepOrganSegLib.model import INPUT_CHANNELS, input_channel_count
from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.grid import resample_to_grid, working_grid
from DeepOrganSegLib.preprocess import prepare_image
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import read_volume

from .config import SourceConfig, TaskConfig, TrainConfig
from .prior import CoarsePrior, coarse_factors, perturbed_prior, stage1_spacings

__all__ = ["CaseRef", "dataset_description", "read_msd_folder", "read_nnunet_folder",
           "source_cases", "list_cases", "read_header", "load_case",
           "working_arrays", "CaseCache", "map_npz", "sample_patch", "build_augmentation", "cached_sample",
           "task_prior", "assemble_inputs", "stage1_case_prior",
           "PatchBatchDataset", "sample_seed"]


# ---------------------------------------------------------------------------------------------
# Case references and readers.


@dataclass(frozen=True)
class CaseRef:
    """One case of a task: a phantom (``kind`` + ``seed``) or an image/label file pair."""

    task: str
    case_id: str
    phantom_kind: str = ""
    seed: int = 0
    options: dict = field(default_factory=dict, hash=False)
    image_path: str = ""
    label_path: str = ""
    label_names: dict = field(default_factory=dict, hash=False)  # {value: name}
    rename: dict = field(default_factory=dict, hash=False)


def dataset_description(folder: Path) -> dict:
    """``folder/dataset.json`` (an MSD or nnU-Net data set's description) as a dictionary, or
    an InputError that names the file."""
    path = folder / "dataset.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read the dataset description ({error})") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: the dataset description must be a JSON object")
    return document


def read_msd_folder(folder: str | Path) -> tuple[list[tuple[str, Path, Path]], dict[int, str]]:
    """A Medical Segmentation Decathlon folder: ``(case_id, image, label)`` triples of
    ``dataset.json``'s ``training`` list and its ``labels`` ({"1": "liver"} -> {1: "liver"})."""
    folder = Path(folder)
    document = dataset_description(folder)
    try:
        names = {int(value): name for value, name in document["labels"].items()
                 if int(value) != 0}
        cases = []
        for entry in document["training"]:
            image = folder / entry["image"]
            case_id = image.name.split(".")[0]
            cases.append((case_id, image, folder / entry["label"]))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{folder / 'dataset.json'}: not an MSD dataset description "
                         f"({type(error).__name__}: {error})") from None
    return cases, names


def read_nnunet_folder(folder: str | Path) -> tuple[list[tuple[str, Path, Path]], dict[int, str]]:
    """An nnU-Net (v2) raw folder: ``imagesTr/<case>_0000<ending>`` with ``labelsTr/<case>
    <ending>``; ``dataset.json`` ``labels`` ({"liver": 1} -> {1: "liver"}). Only the first
    channel (``_0000``) is read: the network takes one input channel."""
    folder = Path(folder)
    document = dataset_description(folder)
    try:
        ending = str(document.get("file_ending", ".nii.gz"))
        names = {int(value): name for name, value in document["labels"].items()
                 if not isinstance(value, list) and int(value) != 0}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise InputError(f"{folder / 'dataset.json'}: not an nnU-Net dataset description "
                         f"({type(error).__name__}: {error})") from None
    cases = []
    for label in sorted((folder / "labelsTr").glob(f"*{ending}")):
        case_id = label.name[: -len(ending)]
        cases.append((case_id, folder / "imagesTr" / f"{case_id}_0000{ending}", label))
    return cases, names


def _seed_range(bounds: tuple[int, int]) -> range:
    return range(bounds[0], bounds[1] + 1)


def source_cases(task_name: str, source: SourceConfig, split: str) -> list[CaseRef]:
    """The cases of one data source of task ``task_name`` for ``split`` (``train`` or ``val``:
    an MSD or nnU-Net source holds its last ``val_cases`` cases out)."""
    if source.type == "phantom":
        seeds = _seed_range(source.train_seeds if split == "train" else source.val_seeds)
        return [CaseRef(task_name, f"{source.kind}-{seed}", phantom_kind=source.kind, seed=seed,
                        options=dict(source.options)) for seed in seeds]
    reader = read_msd_folder if source.type == "msd" else read_nnunet_folder
    cases, names = reader(source.path)
    held_out = max(0, min(source.val_cases, len(cases) - 1))
    chosen = cases[len(cases) - held_out:] if split == "val" else cases[: len(cases) - held_out]
    return [CaseRef(task_name, case_id, image_path=str(image), label_path=str(label),
                    label_names=names, rename=dict(source.rename))
            for case_id, image, label in chosen]


def list_cases(task: TaskConfig, split: str) -> list[CaseRef]:
    """All cases of ``task`` for ``split`` (``train`` or ``val``), sources in config order."""
    if split not in ("train", "val"):
        raise ValueError(f"split {split!r}: use train or val")
    return [case for source in task.sources for case in source_cases(task.name, source, split)]


def read_header(path: str) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray]:
    """Size, spacing (mm), origin (mm) and direction of an image file, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise InputError(f"{path}: cannot read the image header ({message})") from None
    return (reader.GetSize(), np.asarray(reader.GetSpacing()), np.asarray(reader.GetOrigin()),
            np.asarray(reader.GetDirection()))


def load_case(case: CaseRef) -> tuple[Volume, Volume, dict[int, str]]:
    """Image, labelmap and ``{value: name}`` of a case (phantoms are generated here)."""
    if case.phantom_kind:
        from DeepOrganSegLib.phantoms import make_phantom

        phantom = make_phantom(case.phantom_kind, case.seed, **case.options)
        return phantom.image, phantom.labels, dict(phantom.label_names)
    image, labels = read_volume(case.image_path), read_volume(case.label_path)
    names = {value: case.rename.get(name, name) for value, name in case.label_names.items()}
    return image, labels, names


# ---------------------------------------------------------------------------------------------
# Pre-processing (the inference pipeline's, step for step) and the cache.


def working_arrays(image: Volume, labels: Volume, names: dict[int, str], task: TaskConfig,
                   config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The case on the task's working grid, as inference prepares it: float32 network input
    [C, k, j, i] (``config.inputs``) and uint8 labels [k, j, i] in the union label space.
    Labels the task does not list become background."""
    grid = working_grid(image, task.spacing_mm)
    x = prepare_image(image, task, grid, config.cached_inputs)
    source = resample_to_grid(labels, grid, interpolator=sitk.sitkNearestNeighbor,
                              default_value=0).astype(np.int64)
    lookup = np.zeros(max(int(source.max()), max(names, default=0)) + 1, dtype=np.uint8)
    for value, name in names.items():
        if name in task.labels:
            lookup[value] = config.label_value(name)
    return x.astype(np.float32), lookup[source]


def _phantom_generator_fingerprint() -> str:
    """Digest of the phantom generator's source, every module of the package in sorted order:
    a change to any of them must not reuse old cases."""
    import importlib.util

    package = Path(importlib.util.find_spec("DeepOrganSegLib.phantoms").origin).parent
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _cache_key(case: CaseRef, task: TaskConfig, config: TrainConfig) -> str:
    generator = _phantom_generator_fingerprint() if case.phantom_kind else ""
    recipe = json.dumps({"case": [case.phantom_kind, case.seed, case.options, case.image_path,
                                  case.label_path, case.rename], "generator": generator,
                         "spacing": task.spacing_mm, "norm": task.normalization.to_dict(),
                         "labels": config.labels, "task_labels": task.labels,
                         "layout": "channels-first", "inputs": config.cached_inputs},
                        sort_keys=True, default=str)
    return f"{task.name}-{case.case_id}-{hashlib.sha1(recipe.encode()).hexdigest()[:10]}"


class CaseCache:
    """Pre-processed cases as ``.npz`` files (``image`` float32, ``labels`` uint8) under
    ``folder``, keyed by everything that shapes them (source, spacing, normalisation, labels)."""

    def __init__(self, folder: str | Path, config: TrainConfig):
        self.folder = Path(folder)
        self.config = config

    def path(self, case: CaseRef) -> Path:
        task = self.config.task(case.task)
        return self.folder / f"{_cache_key(case, task, self.config)}.npz"

    def ensure(self, case: CaseRef) -> Path:
        """Build the case's cache file unless it exists; returns its path."""
        path = self.path(case)
        if not path.exists():
            task = self.config.task(case.task)
            x, y = working_arrays(*load_case(case), task, self.config)
            self.folder.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp.npz")
            np.savez(temporary, image=x, labels=y)
            temporary.replace(path)
        return path

    def unused(self, cases: list[CaseRef]) -> list[Path]:
        """Files of the cache folder that none of ``cases`` uses: cases of an older phantom
        generator or other options (each generator change writes every phantom anew, about
        20 GB for v13's cases), and the leftovers of a build that was stopped."""
        wanted = {self.path(case) for case in cases}
        return sorted(path for path in self.folder.glob("*.npz") if path not in wanted)

    def load(self, case: CaseRef) -> tuple[np.ndarray, np.ndarray]:
        """The case's ``image`` and ``labels`` as read-only memory maps of its cache file."""
        stored = map_npz(self.ensure(case))
        return stored["image"], stored["labels"]


def map_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed ``.npz`` (what ``np.savez`` writes) as read-only memory
    maps, by name.

    Why: a training holds every cached case (v10's 245 cases: 21 GB as arrays); mapped, the
    pages live once in the operating system's file cache, shared by the data workers, by runs
    that train side by side from one cache and by DDP ranks, and reclaimable under pressure,
    instead of a private copy per process (two such runs did not fit in 24 GB). A member that
    is compressed is read into memory as ``np.load`` would."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as stream:
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as member:
                    arrays[name] = np.lib.format.read_array(member)
                continue
            stream.seek(info.header_offset)
            local_header = stream.read(30)  # the zip local file header, then name and extra
            name_length, extra_length = struct.unpack("<HH", local_header[26:30])
            stream.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(stream)
            shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(stream)
                                           if version == (1, 0) else
                                           np.lib.format.read_array_header_2_0(stream))
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape,
                                     order="F" if fortran_order else "C", offset=stream.tell())
    return arrays


# ---------------------------------------------------------------------------------------------
# Patches and augmentation.


def sample_seed(seed: int, step: int, rank: int, slot: int) -> int:
    """A 32-bit seed for one sample, a pure function of its coordinates."""
    return int(np.random.SeedSequence([seed, step, rank, slot]).generate_state(1)[0])


def sample_patch(image: np.ndarray, labels: np.ndarray, patch: tuple[int, int, int],
                 rng: np.random.Generator, foreground_ratio: float,
                 extra: np.ndarray | CoarsePrior | None = None) -> tuple[np.ndarray, ...]:
    """A ``patch``-sized crop (k, j, i) of ``image`` [C, k, j, i] and ``labels`` [k, j, i]
    (and of ``extra`` [C', k, j, i] or a stage-1 :class:`CoarsePrior`, when given: returned
    third); with probability ``foreground_ratio`` it is centred on a voxel of a random present
    label (rare organs as often as large ones). Volumes smaller than the patch are padded (the
    image channel with its minimum, position channels with their edge values as inference
    pads, labels and ``extra`` with zeros)."""
    pad = [(max(0, (p - s + 1) // 2), max(0, p - s - (p - s + 1) // 2))
           for s, p in zip(labels.shape, patch)]
    coarse = extra if isinstance(extra, CoarsePrior) else None
    if coarse is not None:
        extra = None
    if any(sum(width) for width in pad):
        floor = float(image[0].min())
        image = np.concatenate([np.pad(image[:1], [(0, 0)] + pad, constant_values=floor),
                                np.pad(image[1:], [(0, 0)] + pad, mode="edge")])
        labels = np.pad(labels, pad, constant_values=0)
        if extra is not None:
            extra = np.pad(extra, [(0, 0)] + pad, constant_values=0)
    present = np.unique(labels[::2, ::2, ::2])
    present = present[present > 0]
    if present.size and rng.random() < foreground_ratio:
        voxels = np.argwhere(labels == rng.choice(present))
        centre = voxels[rng.integers(len(voxels))]
        start = [int(np.clip(c - p // 2, 0, s - p)) for c, p, s in zip(centre, patch,
                                                                           labels.shape)]
    else:
        start = [int(rng.integers(0, s - p + 1)) for s, p in zip(labels.shape, patch)]
    region = tuple(slice(b, b + p) for b, p in zip(start, patch))
    crops = (image[(slice(None), *region)], labels[region])
    if coarse is not None:
        return (*crops, coarse.crop(tuple(b - before for b, (before, _) in zip(start, pad)),
                                    patch))
    return crops if extra is None else (*crops, extra[(slice(None), *region)])


def build_augmentation(task: TaskConfig):
    """MONAI dictionary transforms (keys ``image``, ``label``, channel-first arrays): rotations
    ±15°, scaling 0.85-1.15, elastic deformation, flips on ``task.flip_axes`` only, gamma,
    intensity scaling, Gaussian noise, and a bias field for MR."""
    from monai.transforms import (Compose, Rand3DElasticd, RandAdjustContrastd, RandAffined,
                                  RandBiasFieldd, RandFlipd, RandGaussianNoised,
                                  RandScaleIntensityd)

    # position channels and the cascade prior move with the anatomy
    keys = ("image", "label", "position", "prior")
    angle = np.deg2rad(15)
    transforms = [
        RandAffined(keys, prob=0.5, rotate_range=(angle, angle, angle),
                    scale_range=(0.15, 0.15, 0.15),
                    mode=("bilinear", "nearest", "bilinear", "bilinear"),
                    padding_mode="border", allow_missing_keys=True),
        Rand3DElasticd(keys, sigma_range=(6, 8), magnitude_range=(20, 60), prob=0.15,
                       mode=("bilinear", "nearest", "bilinear", "bilinear"),
                       padding_mode="border", allow_missing_keys=True),
    ]
    # a flipped case is another patient: its position channels keep pointing the same way, its
    # prior (stage 1's view of this patient) flips with it
    transforms += [RandFlipd(("image", "label", "prior"), prob=0.5, spatial_axis=axis,
                             allow_missing_keys=True) for axis in task.flip_axes]
    if task.modality == "MR":
        transforms.append(RandBiasFieldd("image", coeff_range=(0.0, 0.3), prob=0.3))
    transforms += [
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3, retain_stats=True),
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        RandGaussianNoised("image", std=0.05, prob=0.3),
    ]
    return Compose(transforms)


def shift_label_intensities(image: np.ndarray, labels: np.ndarray, sd: float,
                            rng: np.random.Generator) -> np.ndarray:
    """``image`` [C, k, j, i] plus an independent N(0, ``sd``) offset inside each label of
    ``labels`` [k, j, i] (background unchanged), on every channel. The offset map is smoothed
    by a one-voxel Gaussian so that an organ's edge keeps a partial-volume ramp rather than a
    step no scanner makes."""
    from scipy import ndimage

    values = np.unique(labels)
    values = values[values > 0]
    if not len(values):
        return image
    table = np.zeros(int(values.max()) + 1, np.float32)
    table[values] = rng.normal(0.0, sd, len(values))
    offset = ndimage.gaussian_filter(table[labels.astype(np.intp)], 1.0)
    return (image + offset[None]).astype(np.float32)


def cached_sample(image: np.ndarray, config: TrainConfig) -> dict[str, np.ndarray]:
    """A cached case or patch [C, k, j, i] split by input name (``image``, ``position``)."""
    sample, used = {}, 0
    for name in config.cached_inputs:
        count = INPUT_CHANNELS[name]
        sample[name] = image[used:used + count]
        used += count
    return sample


def task_prior(config: TrainConfig, task: TaskConfig, labels: np.ndarray,
               stage1_spacing_mm: tuple[float, float, float], rng: np.random.Generator | None
               ) -> np.ndarray:
    """The prior rows of ``task``'s labels for ``labels`` [k, j, i]: perturbed with ``rng``,
    the coarse truth without (:func:`.prior.perturbed_prior`)."""
    values = [config.label_value(name) for name in task.labels]
    factors = coarse_factors(stage1_spacing_mm, task.spacing_mm)
    return perturbed_prior(labels, values, factors, task.spacing_mm, config.prior, rng)


def stage1_case_prior(image: np.ndarray, task: TaskConfig, config: TrainConfig, stage1,
                      stage1_spacing_mm: tuple[float, float, float]) -> CoarsePrior:
    """Stage 1's prediction of one cached case (``image`` [C, k, j, i] on the task's working
    grid) as the prior rows of the task's labels: held on stage 1's grid, read on the working
    grid (:class:`.prior.CoarsePrior`; uint8, probability x 255).

    The coarse input is the cached input averaged down to stage 1's spacing (not re-read from
    the source: the same anatomy, within the interpolation), so stage 2 meets the errors stage
    1 really makes, blocky edges and missed small organs included."""
    import torch.nn.functional as F

    from DeepOrganSegLib.inference import predict
    from DeepOrganSegLib.options import InferenceSettings

    factors = coarse_factors(stage1_spacing_mm, task.spacing_mm)
    coarse = tuple(max(1, round(n / f)) for n, f in zip(image.shape[1:], factors))
    source = torch.from_numpy(np.array(image[:input_channel_count(  # a copy: the cache is
        stage1.metadata.inputs, 2)]))                                 # mapped read-only
    coarse_input = F.interpolate(source[None], size=coarse, mode="area")[0]
    channels = config.task_channels(task)
    probabilities = predict(stage1.network, coarse_input, channels,
                            stage1.metadata.patch_size_kji,
                            InferenceSettings(device="cpu")).main
    coarse_prior = (probabilities[1:].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return CoarsePrior(coarse_prior, tuple(image.shape[1:]))


def assemble_inputs(config: TrainConfig, task: TaskConfig, sample: dict) -> np.ndarray:
    """The network input [C, k, j, i] in ``config.inputs`` order from ``sample``'s arrays;
    the task's prior rows go to their labels' channels (value - 1), the other labels' stay
    zero, as ``DeepOrganSegLib.cascade.prior_channels`` lays them out."""
    parts = []
    for name in config.inputs:
        if name != "prior":
            parts.append(np.asarray(sample[name], np.float32))
            continue
        prior = np.zeros((config.num_classes - 1, *sample["image"].shape[1:]), np.float32)
        for row, label in enumerate(task.labels):
            prior[config.label_value(label) - 1] = sample["prior"][row]
        parts.append(prior)
    return np.concatenate(parts)


class PatchBatchDataset(Dataset):
    """Item ``step`` is the batch of training step ``step`` for this ``rank``:
    ``config.samples_of(task)`` patches of every task, ``{"image": [B, 1, k, j, i] float32,
    "label": [B, k, j, i] int64, "task": [names]}``. Cases are sharded by rank."""

    def __init__(self, config: TrainConfig, cases: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                 rank: int = 0, world_size: int = 1,
                 stage1_priors: dict[str, list[CoarsePrior]] | None = None):
        self.config = config
        self.rank = rank
        self.cases = {name: items[rank::world_size] or items for name, items in cases.items()}
        #: Stage 1's own prediction of each training case (the task's labels, held on stage
        #: 1's grid and cropped on the case's working grid), used for ``prior.stage1_share`` of
        #: the patches instead of the perturbed truth.
        self.stage1_priors = {name: items[rank::world_size] or items
                              for name, items in (stage1_priors or {}).items()}
        self.augment = ({task.name: build_augmentation(task) for task in config.tasks}
                        if config.data.augment else {})
        self.stage1_spacings = stage1_spacings(config) if "prior" in config.inputs else {}

    def __len__(self) -> int:
        return self.config.schedule.steps

    def _patch_size(self, step: int) -> tuple[int, int, int]:
        """The step's patch (k, j, i): the configured one, or a thin slab of it."""
        data = self.config.data
        patch = tuple(data.patch_size)
        if data.thin_slab_probability <= 0:
            return patch
        rng = np.random.default_rng(sample_seed(self.config.seed, step, self.rank, -1 % 2**31))
        if rng.random() >= data.thin_slab_probability:
            return patch
        return (min(patch[0], int(rng.choice(data.thin_slab_depths))), *patch[1:])

    def _sample(self, task: TaskConfig, seed: int, patch: tuple[int, int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        items = self.cases[task.name]
        index = int(rng.integers(len(items)))
        image, labels = items[index]
        predicted = self.stage1_priors.get(task.name)
        if predicted is not None:
            x, y, stage1 = sample_patch(image, labels, patch, rng,
                                        self.config.data.foreground_ratio, predicted[index])
        else:
            x, y = sample_patch(image, labels, patch, rng, self.config.data.foreground_ratio)
        sample = {**cached_sample(x.astype(np.float32), self.config),
                  "label": y[None].astype(np.float32)}
        data = self.config.data
        if data.label_shift_sd > 0 and rng.random() < data.label_shift_probability:
            sample["image"] = shift_label_intensities(sample["image"], y, data.label_shift_sd, rng)
        if self.stage1_spacings:
            if predicted is not None and rng.random() < self.config.prior.stage1_share:
                sample["prior"] = stage1.astype(np.float32) / 255.0
            else:
                sample["prior"] = task_prior(self.config, task, y,
                                             self.stage1_spacings[task.name], rng)
        if task.name in self.augment:
            augment = self.augment[task.name]
            augment.set_random_state(seed=int(rng.integers(2**31)))
            sample = {key: np.asarray(value) for key, value in augment(sample).items()}
        return assemble_inputs(self.config, task, sample), sample["label"][0]

    def __getitem__(self, step: int) -> dict:
        images, labels, tasks = [], [], []
        slot = 0
        patch = self._patch_size(step)
        for task in self.config.tasks:
            for _ in range(self.config.samples_of(task)):
                x, y = self._sample(task, sample_seed(self.config.seed, step, self.rank, slot),
                                    patch)
                images.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
                labels.append(torch.from_numpy(np.rint(y).astype(np.int64)))
                tasks.append(task.name)
                slot += 1
        return {"image": torch.stack(images), "label": torch.stack(labels), "task": tasks}
