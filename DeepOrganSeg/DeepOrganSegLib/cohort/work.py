"""One case of a batch, start to end: read its volume, segment it (the out-of-memory fallback
included), draw its QC picture, write its outputs (the statistics last); or, when anything
about the case fails, its one-line reason. A cancel is not a failure: it ends the batch."""

from __future__ import annotations

import importlib.util
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import Cancelled, Failure
from ..options import SegmentationOptions
from ..progress import CancelToken
from .cases import Case
from .folder import OutputFolder

__all__ = ["CaseJob", "Outcome", "CaseProgress", "CaseRunner"]

#: Progress of one case: (case id, stage, fraction of the case 0-1, message); stage
#: ``warning`` carries a warning about the case.
CaseProgress = Callable[[str, str, float, str], None]


@dataclass(frozen=True)
class CaseJob:
    """What every case of a batch is segmented with and written to (picklable: worker
    processes receive it)."""

    model_path: Path
    options: SegmentationOptions
    folder: OutputFolder
    settings: dict[str, Any]

    @property
    def thumbnails(self) -> bool:
        """Whether QC pictures can be drawn (they need matplotlib)."""
        return importlib.util.find_spec("matplotlib") is not None


@dataclass(frozen=True)
class Outcome:
    """How a case ended: ``done`` or not, its wall time (s), and a one-line ``message``: the
    task, time and device, or the reason it failed."""

    case: Case
    done: bool
    seconds: float
    message: str


class CaseRunner:
    """Segments cases one after another with one model, loaded once (per worker process)."""

    def __init__(self, job: CaseJob) -> None:
        from ..model import load_model

        self.job = job
        self.model = load_model(job.model_path)
        self.thumbnails = job.thumbnails

    def run(self, case: Case, progress: CaseProgress, cancel: CancelToken) -> Outcome:
        """Segment ``case`` and write its outputs; every failure but a cancel becomes the
        outcome's reason (its traceback too on stderr with ``DEEPORGANSEG_DEBUG``)."""
        started = time.perf_counter()
        try:
            message = self._segment(case, progress, cancel)
        except (Cancelled, KeyboardInterrupt):
            raise
        except Exception as error:
            failure = Failure.of(error)
            if failure.bug and os.environ.get("DEEPORGANSEG_DEBUG"):
                traceback.print_exc()
            return Outcome(case, False, time.perf_counter() - started, failure.message)
        return Outcome(case, True, time.perf_counter() - started, message)

    def _segment(self, case: Case, progress: CaseProgress, cancel: CancelToken) -> str:
        from ..cli.native_stderr import native_stderr_silenced
        from ..outputs import check_free_space
        from ..result_files import ResultFiles, write_result
        from ..segment import StagedProgress, segment_with_fallback
        from ..volume_io import read_volume
        from .thumbnail import save_thumbnail

        folder = self.job.folder
        staged = StagedProgress(lambda stage, fraction, message: progress(
            case.id, stage, fraction, message))
        staged("load", 0.0, f"reading {case.input}")
        with native_stderr_silenced():
            volume = read_volume(case.input)
        cancel.raise_if_cancelled()
        check_free_space(folder.labelmap(case.id), volume.array.size + 65536)
        staged("load", 1.0, f"{volume.size} voxels")
        result = segment_with_fallback(volume, self.model, self.job.options, staged, cancel)
        cancel.raise_if_cancelled()
        staged("write", 0.0, "writing")
        if self.thumbnails:
            save_thumbnail(volume, result, folder.thumbnail(case.id), case.id)
        write_result(result, volume, ResultFiles(folder.labelmap(case.id), *folder.extras(case.id),
                                                 folder.statistics(case.id)), cancel,
                     {"case": case.id, "input": os.path.abspath(case.input),
                      "settings": self.job.settings})
        staged("write", 1.0, "done")
        return f"{result.task.name} in {result.elapsed_s:.1f} s on {result.device}"
