"""The engine's Python packages in Slicer's Python: which are missing, and installing them in
child processes, so that the GUI never waits on pip.

Slicer's own process never imports PyTorch (the engine runs as a ``PythonSlicer`` child), so what
a child installs is usable by the next engine run at once, without restarting Slicer. PyTorch is
installed with light-the-torch, as the PyTorch extension's ``PyTorchUtils`` does (it picks the
build that matches the computer's NVIDIA driver, or the CPU build); the other packages with pip,
in the version ranges of ``Resources/requirements.txt``. Slicer's own numpy and SimpleITK are
never replaced (they are not listed there). No MRML, no Qt: pytest runs this as Slicer does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .runner import EngineFailure, EngineJob, EngineProcess, RunState

__all__ = ["TORCH_REQUIREMENT", "LIGHT_THE_TORCH", "InstallStep",
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
    """One child process of an install: what it shows the user, its command line, and what
    the user can do by hand when it fails."""

    description: str
    command: tuple[str, ...]
    remedy: str


def install_steps(python: str | os.PathLike, missing: Sequence[str]) -> list[InstallStep]:
    """The child processes that install ``missing`` into ``python``'s environment: PyTorch
    first (light-the-torch, installed itself when needed), then the rest in one pip call."""
    from packaging.requirements import Requirement

    python = str(python)
    torch = [line for line in missing if Requirement(line).name == "torch"]
    others = [line for line in missing if Requirement(line).name != "torch"]
    steps = []
    if torch:
        by_hand = "install PyTorch from the PyTorch Utils module (PyTorch extension)"
        steps.append(InstallStep("installing the PyTorch installer (light-the-torch)",
                                 (python, "-m", "pip", "install", LIGHT_THE_TORCH), by_hand))
        steps.append(InstallStep("installing PyTorch for this computer (a few minutes; about "
                                 "2 GB with CUDA)",
                                 (python, "-m", "light_the_torch", "install", *torch), by_hand))
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
    to do."""

    def __init__(self, steps: Sequence[InstallStep], *,
                 environment: dict[str, str] | None = None,
                 process: Callable[..., EngineProcess] = EngineProcess) -> None:
        super().__init__(environment)
        self.steps = list(steps)
        self.failure: str | None = None
        self.details = ""
        self._make_process = process
        self._index = 0

    @property
    def fraction(self) -> float:
        """Share of the steps finished (0 to 1)."""
        return 1.0 if not self.steps else min(self._index / len(self.steps), 1.0)

    @property
    def message(self) -> str:
        """What is happening now, for the status line."""
        if self.state is RunState.RUNNING:
            return (f"step {self._index + 1}/{len(self.steps)}: "
                    f"{self.steps[self._index].description}")
        return self.failure or self.state.value

    def start(self) -> None:
        """Launch the first step (an install without steps is DONE at once)."""
        self._begin(RunState.RUNNING)
        self._start_step()

    def _start_step(self) -> None:
        if self._index >= len(self.steps):
            self._finish(RunState.DONE)
            return
        self._process = self._make_process(self.steps[self._index].command,
                                           env=self.environment)
        try:
            self._process.start()
        except OSError as error:
            self._fail(f"{self.steps[self._index].description} could not start ({error})")

    def poll(self) -> RunState:
        """Advance: notice the running step's end and start the next one."""
        if not self.state.finished and self._process is not None:
            self._follow_process()
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
