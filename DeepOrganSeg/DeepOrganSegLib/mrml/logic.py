"""The module's Logic without Qt: the model list, the engine's packages, and the jobs it runs
one at a time (a segmentation, a stroke refinement, a sample, a package install), started and
then advanced by :meth:`EngineLogic.poll`.

What differs between Slicer and a test is handed in: the engine's interpreter (Slicer's
``PythonSlicer``), the children's environment (Slicer's startup environment), the temporary
folder, the scene, whether another pip run of Slicer's is under way, and how a started job is
polled (``_start_polling``/``_stop_polling``: the module's ``QTimer``; a test calls ``poll``
itself). The module's ``DeepOrganSegLogic`` is this class with Slicer's values and a timer;
pytest runs this class as it is.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..model import ModelMetadata, read_metadata
from ..resources import bundled_models
from .eta import StageProfile
from .install import (TORCH_REQUIREMENT, InstallJob, install_steps, missing_requirements,
                      read_requirements)
from .job import SegmentationJob, SegmentationRequest, run_segmentation
from .refine import RefinementSession, RefineJob
from .runner import TERMINATE_GRACE_S, EngineJob, RunState
from .sample import SampleJob

__all__ = ["EngineLogic"]

#: A job the Logic follows: handed back to its callbacks as it is.
JobT = TypeVar("JobT", bound=EngineJob)


class EngineLogic:
    """Runs the module's jobs, one at a time, for scripts (``waitForCompletion=True``) and for
    the panel (started, then advanced by :meth:`poll`, which calls ``progressCallback(job)`` at
    each poll and ``completedCallback(job)`` once the job is DONE, FAILED or CANCELLED).

    ``python()``: the interpreter that runs the engine; ``environment()``: the children's
    environment (None: this process's); ``temporary_root()``: where temporary folders go
    (None: the system's); ``scene()``: the MRML scene samples go into; ``busy()``: whether
    another pip run is under way; ``requirements``: the engine's ``requirements.txt``."""

    def __init__(self, python: Callable[[], str], requirements: Path, *,
                 environment: Callable[[], dict[str, str] | None] = lambda: None,
                 temporary_root: Callable[[], str | None] = lambda: None,
                 scene: Callable[[], Any] = lambda: None,
                 busy: Callable[[], bool] = lambda: False) -> None:
        self._python, self._requirements = python, requirements
        self._environment, self._temporary_root = environment, temporary_root
        self._scene, self._busy = scene, busy
        self._job: EngineJob | None = None
        # called with the followed job, as its own type (segmentation, refinement, install...)
        self._progressCallback: Callable[[Any], None] | None = None
        self._completedCallback: Callable[[Any], None] | None = None
        #: The stages of the last finished segmentation: the next one's time left uses them.
        self.stageProfile: StageProfile | None = None

    # -- models and packages -------------------------------------------------------------------

    @staticmethod
    def bundledModels() -> list[Path]:
        """The model files shipped with the module, for scripts (``docs/slicer.md``)."""
        return bundled_models()

    @staticmethod
    def readModel(path: str | os.PathLike) -> ModelMetadata:
        """A model file's metadata; raises ``ModelFileError`` with a one-line reason. Reading
        never executes anything from the file."""
        return read_metadata(path)

    def pythonExecutable(self) -> str:
        """The interpreter that runs the engine."""
        return self._python()

    def missingRequirements(self) -> list[str]:
        """What the engine needs that this Python lacks: PyTorch and the lines of the
        requirements file (package metadata only: milliseconds)."""
        return missing_requirements([TORCH_REQUIREMENT, *read_requirements(self._requirements)])

    def installRequirements(self, missing: list[str], waitForCompletion: bool = False,
                            progressCallback: Callable[[InstallJob], None] | None = None,
                            completedCallback: Callable[[InstallJob], None] | None = None
                            ) -> InstallJob:
        """Install ``missing`` in child processes (``install``): PyTorch with light-the-torch,
        run from a private folder so that the environment's pip stays as it is, then the rest
        with pip; each step waits while ``busy()``. Raises ``InputError`` rather than replace a
        PyTorch already installed. Ask the user before calling this."""
        self._refuseWhileRunning()
        installer = Path(tempfile.mkdtemp(prefix="DeepOrganSeg-installer-",
                                          dir=self._temporary_root()))
        try:
            steps = install_steps(self.pythonExecutable(), missing, installer)
        except Exception:
            installer.rmdir()
            raise
        job = InstallJob(steps, environment=self._environment(), busy=self._busy,
                         still_missing=self.missingRequirements, scratch=[installer])
        return self._run(job, waitForCompletion, progressCallback, completedCallback)

    # -- running -------------------------------------------------------------------------------

    @property
    def isRunning(self) -> bool:
        """A job is under way."""
        return self._job is not None and not self._job.state.finished

    @property
    def isInstalling(self) -> bool:
        return self.isRunning and isinstance(self._job, InstallJob)

    def process(self, request: SegmentationRequest, waitForCompletion: bool = False,
                progressCallback: Callable[[SegmentationJob], None] | None = None,
                completedCallback: Callable[[SegmentationJob], None] | None = None
                ) -> SegmentationJob:
        """Segment ``request.input_volume``.

        With ``waitForCompletion`` the call returns the finished job and raises
        ``SegmentationFailed`` unless it succeeded. Otherwise it returns the started job at
        once, followed by :meth:`poll`. Raises ``InputError`` (nothing started) for a request
        that cannot run."""
        self._refuseWhileRunning()
        environment, root = self._environment(), self._temporary_root()
        if waitForCompletion:
            return run_segmentation(request, self.pythonExecutable(), environment=environment,
                                    temporary_root=root)
        job = SegmentationJob(request, self.pythonExecutable(), environment=environment,
                              temporary_root=root, earlier=self.stageProfile)
        return self._follow(job, progressCallback, completedCallback)

    def loadSample(self, task: str, waitForCompletion: bool = False,
                   progressCallback: Callable[[SampleJob], None] | None = None,
                   completedCallback: Callable[[SampleJob], None] | None = None) -> SampleJob:
        """A synthetic phantom of ``task`` (``abdomen-ct``, ``heart-mr``, ``brain-mr``), made
        in the engine process and added to the scene as a volume node (``job.volume_node``
        once DONE). Needs the engine's packages."""
        self._refuseWhileRunning()
        job = SampleJob(self._scene(), task, self.pythonExecutable(),
                        environment=self._environment(), temporary_root=self._temporary_root())
        return self._run(job, waitForCompletion, progressCallback, completedCallback)

    def refine(self, session: RefinementSession, organ: str,
               progressCallback: Callable[[RefineJob], None] | None = None,
               completedCallback: Callable[[RefineJob], None] | None = None) -> RefineJob:
        """Correct ``organ`` of the run ``session`` belongs to from the strokes painted into
        its stroke segments; the engine runs in a subprocess (the session's warm engine once
        :meth:`warmUp` made it ready), followed by :meth:`poll`."""
        self._refuseWhileRunning()
        job = RefineJob(session, organ, self.pythonExecutable(), environment=self._environment())
        return self._follow(job, progressCallback, completedCallback)

    def warmUp(self, session: RefinementSession) -> None:
        """Start ``session``'s warm engine in the background (a few seconds; refinements run
        cold until it is ready): stroke -> segments then costs the refinement alone."""
        session.warm_up(self.pythonExecutable(), self._environment())

    def poll(self) -> RunState:
        """Advance the followed job; call back with its progress and, once it is finished,
        its completion (a completion callback may start the next job)."""
        job = self._job
        assert job is not None  # _follow set it
        state = job.poll()
        if self._progressCallback:
            self._progressCallback(job)
        if state.finished:
            self._stop_polling()
            logging.info("DeepOrganSeg: %s in %.1f s", state.value, job.elapsed_s)
            if state is RunState.DONE and isinstance(job, SegmentationJob):
                self.stageProfile = job.remaining.profile()
            if self._completedCallback:
                self._completedCallback(job)
        return state

    def cancel(self, wait: bool = False) -> None:
        """Cancel the running job (kills the engine's process tree; the scene is unchanged);
        with ``wait``, until it has ended (at most ``TERMINATE_GRACE_S`` + 1 s)."""
        if self.isRunning:
            assert self._job is not None  # isRunning
            self._job.cancel()
            if wait:
                self._job.wait(timeout=TERMINATE_GRACE_S + 1.0)
                self._stop_polling()

    def _refuseWhileRunning(self) -> None:
        if self.isRunning:
            raise RuntimeError("another DeepOrganSeg job is running; wait for it or cancel it")

    def _run(self, job: JobT, waitForCompletion: bool,
             progressCallback: Callable[[JobT], None] | None,
             completedCallback: Callable[[JobT], None] | None) -> JobT:
        """Run ``job`` to its end (scripts, tests), or start it and follow it (the panel)."""
        if waitForCompletion:
            job.start()
            job.wait()
            return job
        return self._follow(job, progressCallback, completedCallback)

    def _follow(self, job: JobT, progressCallback: Callable[[JobT], None] | None,
                completedCallback: Callable[[JobT], None] | None) -> JobT:
        """Start ``job`` and follow it: :meth:`poll` advances it from now on."""
        self._job = job
        self._progressCallback, self._completedCallback = progressCallback, completedCallback
        job.start()
        self._start_polling()
        return job

    def _start_polling(self) -> None:
        """Have :meth:`poll` called regularly (the module: its QTimer); a test polls itself."""

    def _stop_polling(self) -> None:
        """No more polls needed."""
