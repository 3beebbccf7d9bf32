"""A training run checked before it starts, as nnU-Net's ``--verify_dataset_integrity`` checks
a data set: every problem found, one line each, and nothing written.

The data (:func:`data_problems`): phantom kinds that exist; per MSD or nnU-Net source, its
description readable and listing cases, label names the task lists (or renames to
``background``), no nnU-Net image without its labelmap; per case its files there (every
channel of an nnU-Net case), image and labelmap on one grid (size, spacing, origin and
direction within :data:`GRID_TOLERANCE`), as many channels as the description declares; and,
read in full (``train.py --data`` and ``--prepare-only``), readable volumes, no NaN or
infinite voxel (a NIfTI file's counted from its raw bytes by :mod:`.nifti_floats`, since ITK
reads them as 0), integer label values
that the description names, and no labelmap without an organ.

The config (:func:`config_problems`): what would make the export of the trained network fail.
A model file's class count comes from its tasks' labels, so a config whose ``labels`` list
names that no task annotates (a cascade fine-tune listing the 18 labels of the bundled model
with the abdomen task alone) trains to the end and then cannot be exported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from DeepOrganSegLib.errors import DeepOrganSegError, InputError, printable
from DeepOrganSegLib.volume_io import read_volume

from .config import SourceConfig, TrainConfig
from .data import CaseRef, dataset_description, read_header, source_cases
from .nifti_floats import is_nifti, nifti_nonfinite_count

__all__ = ["SHOWN_PROBLEMS", "BACKGROUND", "GRID_TOLERANCE", "DataSetProblems",
           "data_problems", "folder_problems", "config_problems", "check_training_run",
           "check_data_folder"]

#: Problems listed one per line; the rest are counted.
SHOWN_PROBLEMS = 20

#: The label name that ``rename`` maps a data set's label to when the task should not learn it.
BACKGROUND = "background"

#: How far an image and its labelmap may disagree in grid (mm for spacing and origin, unitless
#: for the direction cosines) and still be one case: beyond it the labels would be shifted.
GRID_TOLERANCE = {"spacing_mm": 1e-3, "origin_mm": 1e-2, "direction": 1e-4}


class DataSetProblems(InputError):
    """Everything wrong with a run's data or config (printable lines). Its message is the
    first problem (and how many there are): :meth:`lines` lists them for the command line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = [printable(problem) for problem in problems]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(self.problems[0] + more)

    def lines(self) -> list[str]:
        """The first :data:`SHOWN_PROBLEMS` problems, then a count of the others."""
        rest = len(self.problems) - SHOWN_PROBLEMS
        return self.problems[:SHOWN_PROBLEMS] + (
            [f"... and {rest} more problem(s) of the same data and config"] if rest > 0 else [])


def _grid_problem(case: CaseRef, where: str) -> str | None:
    """The headers of a case's image and labelmap disagree on the grid: what differs."""
    size, spacing, origin, direction = read_header(case.image_path)
    label_size, label_spacing, label_origin, label_direction = read_header(case.label_path)
    size, label_size = size[:3], label_size[:3]  # a 4D image: its channels along the 4th
    tolerance = GRID_TOLERANCE
    differences = [what for what, same in (
        (f"size {size} vs {label_size}", size == label_size),
        (f"spacing {tuple(spacing[:3].round(4))} vs {tuple(label_spacing[:3].round(4))} mm",
         np.allclose(spacing[:3], label_spacing[:3], atol=tolerance["spacing_mm"], rtol=0)),
        (f"origin {tuple(origin[:3].round(3))} vs {tuple(label_origin[:3].round(3))} mm",
         np.allclose(origin[:3], label_origin[:3], atol=tolerance["origin_mm"], rtol=0)),
        ("direction", direction.size == label_direction.size and np.allclose(
            direction, label_direction, atol=tolerance["direction"], rtol=0))) if not same]
    if not differences:
        return None
    return (f"{where}case {case.case_id}: image and labelmap are on different grids "
            f"({'; '.join(differences)}); resample the labelmap onto the image")


def _channel_files(case: CaseRef, channels: int) -> list[Path]:
    """The image files of an nnU-Net case's ``channels`` channels (``_0000``, ``_0001``...)."""
    first = Path(case.image_path)
    head, _, tail = first.name.rpartition("_0000")
    return [first.with_name(f"{head}_{n:04d}{tail}") for n in range(channels)]


def _image_channels(path: str) -> int:
    """Channels of an image file, from its header: a 4D image's fourth size, else 1."""
    size = read_header(path)[0]
    return int(size[3]) if len(size) == 4 else 1


def _voxel_problems(case: CaseRef, prefix: str) -> list[str]:
    """What reading a case in full shows: unreadable volumes, NaN or infinite voxels, label
    values the data set does not name (or not integers), a labelmap without an organ."""
    where = f"{prefix}case {case.case_id}"
    problems = []
    try:
        image = read_volume(case.image_path)
        count = _nonfinite_voxels(case.image_path, image.array)
        if count:
            problems.append(f"{where}: the image has {count} NaN or infinite voxel(s); fix or "
                            f"re-export it")
    except DeepOrganSegError as error:
        problems.append(f"{where}: {error}")
    try:
        labels = read_volume(case.label_path).array
    except DeepOrganSegError as error:
        return problems + [f"{where}: {error}"]
    values = np.unique(labels)
    if labels.dtype.kind == "f" and not np.all(values == np.round(values)):
        return problems + [f"{where}: the labelmap holds values that are not integers; a "
                           f"labelmap holds one integer value per structure"]
    unnamed = sorted(int(value) for value in values
                     if value != 0 and int(value) not in case.label_names)
    if unnamed:
        problems.append(f"{where}: the labelmap holds value(s) {', '.join(map(str, unnamed))} "
                        f"that dataset.json does not name (it names "
                        f"{', '.join(map(str, sorted(case.label_names)))}); name them in its "
                        f"'labels' or relabel the case")
    if not np.any(values != 0):
        problems.append(f"{where}: the labelmap is empty (background only); label the case's "
                        f"organs or leave it out of the data set")
    return problems


def _nonfinite_voxels(path: str, array: np.ndarray) -> int:
    """NaN and infinite voxels of the image file ``path`` read as ``array``: a NIfTI file's
    from its raw bytes (ITK reads them as 0), any other's from the array."""
    if is_nifti(path):
        counted = nifti_nonfinite_count(path)
        if counted is not None:
            return counted
    return int(np.count_nonzero(~np.isfinite(array))) if array.dtype.kind == "f" else 0


def _case_problems(case: CaseRef, prefix: str, source: SourceConfig, channels: int | None,
                   full: bool) -> list[str]:
    """One file case's problems (``prefix``: where it is, e.g. its task; ``channels``: as
    many as the description declares): missing files first (nothing more to check then)."""
    where = f"{prefix}case {case.case_id}"
    nnunet_channels = channels if source.type == "nnunet" else None
    images = _channel_files(case, nnunet_channels) if nnunet_channels else [Path(case.image_path)]
    for kind, path in [*(("image", image) for image in images), ("labelmap", case.label_path)]:
        if not Path(path).is_file():
            return [f"{prefix}the {kind} of case {case.case_id} ({path}) does not exist; fix "
                    f"the data set's dataset.json or file names"]
    try:
        grid = _grid_problem(case, prefix)
        problems = [grid] if grid else []
        if source.type == "msd" and channels and _image_channels(case.image_path) != channels:
            problems.append(f"{where}: the image has {_image_channels(case.image_path)} "
                            f"channel(s) but dataset.json declares {channels} (modality)")
    except DeepOrganSegError as error:
        return [f"{where}: {error}"]
    return problems + (_voxel_problems(case, prefix) if full else [])


def _orphan_images(source: SourceConfig, listed: set[str], prefix: str) -> list[str]:
    """An nnU-Net folder's images without a labelmap: its cases are its labelmaps, so such an
    image would be left out of training without a word."""
    folder = Path(source.path)
    ending = str(dataset_description(folder).get("file_ending", ".nii.gz"))
    problems = []
    for image in sorted((folder / "imagesTr").glob(f"*_0000{ending}")):
        case_id = image.name[: -len(f"_0000{ending}")]
        if case_id not in listed:
            problems.append(f"{prefix}case {case_id}: the image imagesTr/{image.name} has no "
                            f"labelmap (labelsTr/{case_id}{ending}); add it, or remove the "
                            f"image")
    return problems


def _declared_channels(source: SourceConfig) -> int | None:
    """Channels the description declares (MSD ``modality``, nnU-Net ``channel_names``)."""
    document = dataset_description(Path(source.path))
    declared = document.get("modality" if source.type == "msd" else "channel_names")
    return len(declared) if isinstance(declared, dict) and declared else None


def _source_problems(task_name: str, source: SourceConfig, full: bool,
                     listed: tuple[str, ...] | None, progress: bool) -> list[str]:
    """One data source's problems (``listed``: the label names its task lists; None: any)."""
    from DeepOrganSegLib.phantoms import KINDS

    prefix = f"task {task_name}: " if task_name else ""
    if source.type == "phantom":
        return [] if source.kind in KINDS else [
            f"{prefix}phantom kind {source.kind!r} does not exist; choose one of "
            f"{', '.join(KINDS)}"]
    try:
        cases = source_cases(task_name, source, "train") + source_cases(task_name, source, "val")
        channels = _declared_channels(source)
    except DeepOrganSegError as error:
        return [f"{prefix}{error}"]
    if not cases:
        return [f"{prefix}{source.path} lists no training cases"]
    problems = []
    names = {value: source.rename.get(name, name) for value, name in cases[0].label_names.items()}
    unlisted = sorted({name for name in names.values()
                       if listed is not None and name not in listed and name != BACKGROUND})
    if unlisted:
        problems.append(
            f"{prefix}{source.path} has label(s) {', '.join(unlisted)} that the task does not "
            f"list; add them to the task's labels, or drop them with rename: "
            f"{{{unlisted[0]}: {BACKGROUND}}}")
    if source.type == "nnunet":
        problems += _orphan_images(source, {case.case_id for case in cases}, prefix)
    from tqdm import tqdm

    for case in tqdm(cases, desc=f"verifying {source.path}", unit="case", leave=False,
                     disable=not progress or not full, file=sys.stderr):
        problems += _case_problems(case, prefix, source, channels, full)
    return problems


def data_problems(config: TrainConfig, full: bool = False, progress: bool = False) -> list[str]:
    """Every problem of ``config``'s data: from the descriptions and headers, and with
    ``full`` from every case read in full (``progress``: a bar while reading)."""
    problems = []
    if "prior" in config.inputs:
        from .prior import stage1_spacings

        try:
            stage1_spacings(config)
        except DeepOrganSegError as error:
            problems.append(str(error))
    for task in config.tasks:
        for source in task.sources:
            problems += _source_problems(task.name, source, full, task.labels, progress)
    return problems


def folder_problems(folder: str | Path, progress: bool = False) -> list[str]:
    """Every problem of an MSD or nnU-Net folder about to be planned from
    (``train.py --data``), every case read in full."""
    from .plan import detect_format

    source = SourceConfig(type=detect_format(folder), path=str(folder), val_cases=0)
    return _source_problems("", source, True, None, progress)


def config_problems(config: TrainConfig) -> list[str]:
    """What would make the export of a network trained with ``config`` fail: the model file
    it would write is built (metadata only) and read back as the engine reads it."""
    from DeepOrganSegLib.model import ModelMetadata, read_metadata

    from .export import build_metadata, stage1_spec
    from .prior import load_stage1

    try:
        # a stage 2 is exported with its stage 1 (config.prior.stage1_model) as the cascade;
        # a missing or unreadable stage-1 file is data_problems' to name
        stage1 = (stage1_spec(config, load_stage1(config.prior.stage1_model))
                  if config.prior.stage1_model and Path(config.prior.stage1_model).is_file()
                  else None)
        if "prior" in config.inputs and stage1 is None:
            return []
        metadata = ModelMetadata.from_dict(build_metadata(config, {}, stage1=stage1).to_dict())
    except DeepOrganSegError as error:
        return [f"the trained network could not be exported: {error}"]
    problems = []
    network = config.dsn_config()
    if metadata.num_classes != network.num_classes:
        annotated = {name for task in config.tasks for name in task.labels}
        unused = [name for name in config.labels if name not in annotated]
        problems.append(
            f"'labels' lists {len(config.labels)} labels but no task annotates "
            f"{', '.join(unused)}: a model file's classes come from its tasks' labels, so the "
            f"export would refuse the trained network (its {network.in_channels} input "
            f"channels and {network.num_classes} outputs; the file's inputs "
            f"({', '.join(config.inputs)}) would make {metadata.input_channels} and "
            f"{metadata.num_classes}); list in 'labels' only what the tasks annotate, or add "
            f"the tasks that annotate the others")
    if config.prior.stage1_model and Path(config.prior.stage1_model).is_file():
        try:
            stage1 = read_metadata(config.prior.stage1_model)
        except DeepOrganSegError:
            return problems  # data_problems names the stage-1 file's own problem
        if stage1.num_classes != metadata.num_classes:
            problems.append(
                f"prior.stage1_model {config.prior.stage1_model}: its network has "
                f"{stage1.num_classes} outputs but this stage 2's tasks make "
                f"{metadata.num_classes}; the cascade would not load: train stage 1 on the same "
                f"tasks and labels")
    return problems


def check_training_run(config: TrainConfig, full: bool = False, progress: bool = False) -> None:
    """Raise :class:`DataSetProblems` listing every problem of ``config``'s data
    (:func:`data_problems`, ``full`` or from headers) and of the config itself
    (:func:`config_problems`); return when there is none."""
    problems = config_problems(config) + data_problems(config, full, progress)
    if problems:
        raise DataSetProblems(problems)


def check_data_folder(folder: str | Path, progress: bool = False) -> None:
    """Raise :class:`DataSetProblems` listing every problem of a data set folder
    (:func:`folder_problems`)."""
    problems = folder_problems(folder, progress)
    if problems:
        raise DataSetProblems(problems)


