"""What a server job runs: the local command's work on the job's files, with the warm model.

:class:`Engine` loads the operator's model once and keeps it (a copy per GPU when there are
several, each worker thread pinned to one); :meth:`Engine.run_job` segments or refines the
files of one job as ``deeporganseg segment/refine`` would, writing the same outputs with the
same code.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..model import LoadedModel, load_model
from ..progress import CancelToken, ProgressFunction
from ..remote.protocol import INPUT_ROLES
from .request import command_args

if TYPE_CHECKING:
    from .jobs import Job

__all__ = ["Engine", "check_self_contained"]

#: The most header bytes read to find where a NRRD or MetaImage file keeps its voxels.
_HEADER_BYTES = 65536


class Engine:
    """The operator's model, loaded once, on the operator's device, for ``workers`` worker
    threads (default: one per CUDA GPU, else one). With several GPUs, worker ``w`` runs on GPU
    ``w % count`` with its own copy of the network; otherwise every worker shares one."""

    def __init__(self, model_path: Path, device: str, workers: int | None = None) -> None:
        import torch

        from ..inference import resolve_device

        self.device = device
        self.resolved = resolve_device(device)  # an absent CUDA fails here, at start-up
        self.model = load_model(model_path)
        self.metadata = self.model.metadata
        gpus = torch.cuda.device_count() if self.resolved.type == "cuda" else 0
        #: one worker per GPU unless told otherwise
        self.workers = workers or max(gpus, 1)
        self.gpus = min(gpus, self.workers)
        self._copies = [self.model] + [copy.deepcopy(self.model) for _ in range(1, self.gpus)]

    def model_for(self, worker: int) -> LoadedModel:
        """The model worker ``worker`` runs (on several GPUs, pinning the worker's thread to
        its own GPU first: ``cuda`` then means that one)."""
        if self.gpus > 1:
            import torch

            torch.cuda.set_device(worker % self.gpus)
            return self._copies[worker % self.gpus]
        return self.model

    def run_job(self, job: Job, worker: int) -> str:
        """Run ``job`` as its local command would run on the job's files, on worker
        ``worker``'s model; returns what the local command prints (segment: the organ
        table)."""
        command = job.spec.command
        args = command_args(command, job.spec.options, job.paths, self.device)
        for role in INPUT_ROLES[command]:
            check_self_contained(Path(job.paths[role]))
        model = self.model_for(worker)
        if command == "segment":
            return _segment(args, model, job.progress, job.cancel)
        return _refine(args, model, job.progress, job.cancel)


def _segment(args: argparse.Namespace, model: LoadedModel, progress: ProgressFunction,
             cancel: CancelToken) -> str:
    """``deeporganseg segment``'s work after its model is loaded: read, segment (with the
    out-of-memory fallback), write the outputs all or nothing; the organ table."""
    from ..cli.native_stderr import native_stderr_silenced
    from ..cli.segment import statistics_table
    from ..options import SegmentationOptions
    from ..result_files import ResultFiles, write_result
    from ..segment import StagedProgress, segment_with_fallback
    from ..volume_io import read_volume

    staged = StagedProgress(progress)
    staged("load", 0.5, f"reading {args.input}")
    with native_stderr_silenced():
        volume = read_volume(args.input)
    cancel.raise_if_cancelled()
    result = segment_with_fallback(volume, model, SegmentationOptions.from_args(args), staged,
                                   cancel)
    staged("write", 0.0, f"writing {args.output}")
    write_result(result, volume, ResultFiles(Path(args.output), *(
        Path(path) if path else None for path in (args.probabilities, args.uncertainty,
                                                  args.stats))), cancel)
    staged("write", 1.0, "done")
    progress("done", 1.0, f"{result.task.name} in {result.elapsed_s:.1f} s on {result.device}")
    return statistics_table(result)


def _refine(args: argparse.Namespace, model: LoadedModel, progress: ProgressFunction,
            cancel: CancelToken) -> str:
    """``deeporganseg refine``'s work after its model is loaded."""
    from ..cli.refine import refine_files

    refine_files(args, Path(args.output), model.metadata, progress, cancel)
    return ""


def check_self_contained(path: Path) -> None:
    """Refuse a NRRD or MetaImage upload whose header sends the reader to another file (NRRD's
    ``data file``, MetaImage's ``ElementDataFile`` other than ``LOCAL``): on a server that would
    read a file of the server's choosing by the client's."""
    name = path.name.lower()
    if not name.endswith((".nrrd", ".mha")):
        return
    with path.open("rb") as file:
        head = file.read(_HEADER_BYTES)
    for raw in head.split(b"\n"):
        line = raw.strip().lower()
        if name.endswith(".nrrd"):
            if not line:
                return  # the end of the NRRD header
            if line.startswith((b"data file:", b"datafile:")):
                raise InputError(f"{path}: its header names a separate data file; send a NRRD "
                                 f"that holds its voxels (save it as one .nrrd file)")
        elif line.startswith(b"elementdatafile"):
            if line.partition(b"=")[2].strip() != b"local":
                raise InputError(f"{path}: its header names a separate data file; send an .mha "
                                 f"that holds its voxels")
            return
