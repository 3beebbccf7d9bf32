"""The engine's Python packages in Slicer's Python: which are missing, and installing them in
child processes, so that the GUI never waits on pip.

Slicer's own process never imports PyTorch (the engine runs as a ``PythonSlicer`` child), so what
a child installs is usable by the next engine run at once, without restarting Slicer. PyTorch is
installed with light-the-torch, the installer the PyTorch extension's *PyTorch Utils* runs (it
picks the build that matches the computer's NVIDIA driver, or the CPU build); the other packages
with pip, in the version ranges of ``Resources/requirements.txt``. What is never changed:

* Slicer's own pip: light-the-torch pins pip (``<24.4`` in 0.8.0, ``<26.1`` in 0.8.1; Slicer
  5.12 ships pip 26.1.1), so it is installed with its pip into a private folder
  (``pip install --target``) and run from there; nothing is installed into Slicer's Python but
  PyTorch and the listed packages;
* a PyTorch already installed (by PyTorch Utils, or by hand): it is used as it is; one too old
  is not replaced behind the user's back (:func:`install_steps` says to update it in PyTorch
  Utils);
* Slicer's numpy and SimpleITK (they are not listed).

An install waits while another pip run of Slicer's is under way (``busy``: Slicer 5.12's
``slicer.packaging.isPipInstallInProgress``), since two pip runs at once can corrupt the
environment. No MRML, no Qt: pytest runs this as Slicer does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ..errors import InputError
from .runner import EngineFailure, EngineJob, EngineProcess, RunState

__all__ = ["TORCH_REQUIREMENT", "LIGHT_THE_TORCH", "PYTORCH_BY_HAND", "InstallStep",
           "read_requirements", "missing_requirements", "install_steps", "InstallJob"]

#: The PyTorch the engine needs (``torch.amp`` autocast on CPU and CUDA, ``weights_only`` loads).
TORCH_REQUIREMENT = "torch>=2.2"
#: The installer that chooses the PyTorch build for this computer (as PyTorchUtils uses it).
LIGHT_THE_TORCH = "light-the-torch>=0.5"


def read_requirements(path: str | os.PathLike) -> list[str]:
    """The requirement lines of a ``requirements.txt`` (comments and blank lines dropped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines
            if line.split("#", 1)[0].strip()]


def missing_requirements(requirements: Sequence[str],
                         installed: Callable[[str], str] = version) -> list[str]:
    """The requirements that the installed packages do not satisfy (absent, or a version out of
    range), in the given order. ``installed(name)`` returns a distribution's version or raises
    ``PackageNotFoundError`` (default: :func:`importlib.metadata.version`, i.e. this Python's)."""
    from packaging.requirements import Requirement

    missing = []
    for line in requirements:
        requirement = Requirement(line)
        try:
            if requirement.specifier.contains(installed(requirement.name), prereleases=True):
                continue
        except PackageNotFoundError:
            pass
        missing.append(str(requirement))
    return missing


@dataclass(frozen=True)
class InstallStep:
    """One child process of an install: what it shows the user, its command line, what the
    user can do by hand when it fails, and folders put first on its ``PYTHONPATH``."""

    description: str
    command: tuple[str, ...]
    remedy: str
    python_path: tuple[str, ...] = ()


#: What to do about PyTorch by hand: the PyTorch extension's module that installs it.
PYTORCH_BY_HAND = "install PyTorch from the PyTorch Utils module (PyTorch extension)"


def install_steps(python: str | os.PathLike, missing: Sequence[str],
                  installer_folder: str | os.PathLike,
                  installed: Callable[[str], str] = version) -> list[InstallStep]:
    """The child processes that install ``missing`` into ``python``'s environment: PyTorch
    first, by light-the-torch installed (with the pip it pins) into ``installer_folder`` and run
    from there, then the rest in one pip call. Raises ``InputError`` when the PyTorch to install
    would replace one already there (``installed`` as in :func:`missing_requirements`)."""
    from packaging.requirements import Requirement

    python = str(python)
    torch = [line for line in missing if Requirement(line).name == "torch"]
    others = [line for line in missing if Requirement(line).name != "torch"]
    steps = []
    if torch:
        try:
            present = installed("torch")
        except PackageNotFoundError:
            present = ""
        if present:
            raise InputError(f"PyTorch {present} is installed but DeepOrganSeg needs "
                             f"{torch[0]}; update it with the PyTorch Utils module (PyTorch "
                             f"extension), which keeps the build you chose")
        folder = str(installer_folder)
        steps.append(InstallStep("installing the PyTorch installer (light-the-torch, into a "
                                 "private folder: Slicer's pip stays as it is)",
                                 (python, "-m", "pip", "install", "--target", folder,
                                  LIGHT_THE_TORCH), PYTORCH_BY_HAND))
        steps.append(InstallStep("installing PyTorch for this computer (a few minutes; about "
                                 "2 GB with CUDA)",
                                 (python, "-m", "light_the_torch", "install", *torch),
                                 PYTORCH_BY_HAND, python_path=(folder,)))
    if others:
        steps.append(InstallStep(
            "installing " + ", ".join(others), (python, "-m", "pip", "install", *others),
            "run in Slicer's Python console: slicer.util.pip_install("
            + repr(" ".join(others)) + ")"))
    return steps


class InstallJob(EngineJob):
    """The steps of an install run one after the other in child processes, followed by polling
    like a segmentation (:class:`.runner.EngineJob`: ``start``, ``poll``, ``cancel``, ``wait``):
    ``poll()`` never blocks.

    States: IDLE -> RUNNING -> DONE, or -> FAILED, or -> CANCEL_REQUESTED -> CANCELLED.
    A cancelled or failed step ends the job (a cancel stops the running step's process tree;
    nothing further is installed); the packages installed by earlier steps stay (pip installs
    each package whole). ``failure`` is then one line: the step, pip's last error line and what
    to do.

    A step starts only while ``busy()`` is false (another pip run of Slicer's under way: the
    job waits, saying so). Once every step succeeded, ``still_missing()`` says what is still not
    installed (an installer can exit 0 without installing: light-the-torch when no index it
    asks has the package); anything left fails the job. ``scratch`` folders (light-the-torch's
    private one) are removed when the job ends, whatever the outcome."""

    def __init__(self, steps: Sequence[InstallStep], *,
                 environment: dict[str, str] | None = None,
                 process: Callable[..., EngineProcess] = EngineProcess,
                 busy: Callable[[], bool] = lambda: False,
                 still_missing: Callable[[], list[str]] = lambda: [],
                 scratch: Sequence[str | os.PathLike] = ()) -> None:
        super().__init__(environment)
        self.steps = list(steps)
        self.failure: str | None = None
        self.details = ""
        self._make_process = process
        self._busy = busy
        self._still_missing = still_missing
        self._scratch = [Path(folder) for folder in scratch]
        self._index = 0
        self._waiting = False

    @property
    def fraction(self) -> float:
        """Share of the steps finished (0 to 1)."""
        return 1.0 if not self.steps else min(self._index / len(self.steps), 1.0)

    @property
    def message(self) -> str:
        """What is happening now, for the status line."""
        if self.state is RunState.RUNNING and self._waiting:
            return "waiting for another Python package install of Slicer's to finish"
        if self.state is RunState.RUNNING:
            return (f"step {self._index + 1}/{len(self.steps)}: "
                    f"{self.steps[self._index].description}")
        return self.failure or self.state.value

    def start(self) -> None:
        """Launch the first step (an install without steps is DONE at once)."""
        self._begin(RunState.RUNNING)
        self._start_step()

    def _start_step(self) -> None:
        """Start the next step, or wait (``busy``) and try again at the next poll."""
        self._process = None
        if self._index >= len(self.steps):
            left = self._still_missing()
            if left:
                remedy = (PYTORCH_BY_HAND if any(line.startswith("torch") for line in left)
                          else self.steps[-1].remedy)
                self._fail(f"the install ended but {', '.join(left)} is still missing; {remedy}")
            else:
                self._finish(RunState.DONE)
            return
        self._waiting = self._busy()
        if self._waiting:
            return
        step = self.steps[self._index]
        environment = dict(os.environ if self.environment is None else self.environment)
        if step.python_path:
            environment["PYTHONPATH"] = os.pathsep.join(
                [*step.python_path, *filter(None, [environment.get("PYTHONPATH")])])
        self._process = self._make_process(step.command, env=environment)
        try:
            self._process.start()
        except OSError as error:
            self._fail(f"{step.description} could not start ({error})")

    def poll(self) -> RunState:
        """Advance: notice the running step's end and start the next one (or the waiting
        one, once no other pip run is under way)."""
        if self.state is RunState.CANCEL_REQUESTED and self._process is None:
            self._finish(RunState.CANCELLED)  # cancelled while waiting: nothing was running
        elif not self.state.finished and self._process is not None:
            self._follow_process()
        elif self.state is RunState.RUNNING:
            self._start_step()
        return self.state

    def _succeeded(self) -> None:
        self._index += 1
        self._start_step()

    def _failed(self, failure: EngineFailure) -> None:
        self.details = failure.details
        errors = [line.strip() for line in self.details.splitlines()
                  if line.strip().startswith("ERROR:")]
        reason = errors[-1] if errors else f"exit code {failure.exit_code}"
        step = self.steps[self._index]
        self._fail(f"{step.description} failed ({reason}); check the internet connection, "
                   f"or {step.remedy}")

    def _fail(self, message: str) -> None:
        self.failure = message
        self._finish(RunState.FAILED)

    def _finish(self, state: RunState) -> None:
        super()._finish(state)
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)
