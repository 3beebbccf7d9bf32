"""Run the ``deeporganseg segment`` command in a child process and follow it without blocking.

This is the process half of the Slicer module's Logic, free of Qt and MRML so that pytest runs
the very code Slicer runs: the module only calls :meth:`EngineProcess.poll` from a ``QTimer``.

* :func:`segment_command` builds the command line (``python -m DeepOrganSegLib.cli segment ...
  --progress json``).
* :class:`EngineProcess` starts it in its own process group/session, reads its stdout and stderr
  on two daemon threads (so that neither pipe can fill up and stall the engine), and hands the
  parsed progress lines (:func:`..progress.parse_progress_line`, re-exported here) to whoever
  polls.
* :func:`kill_process_tree` ends the engine *and* anything it started (DataLoader workers,
  OpenMP helpers), politely first (SIGTERM: the engine exits with code 3 within one unit of
  work), then by force.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DeepOrganSegError
from ..options import SegmentationOptions
from ..progress import ProgressEvent, parse_progress_line
from ..resources import bundled_models

__all__ = ["RunState", "poll_until_finished", "ProgressEvent", "EngineFailure",
           "parse_progress_line", "segment_command",
           "refine_command", "engine_environment", "EngineProcess", "kill_process_tree",
           "bundled_models", "slicer_python", "LIB_PARENT"]

#: The folder that holds the ``DeepOrganSegLib`` package: what the child needs on its path.
LIB_PARENT = Path(__file__).resolve().parents[2]

#: How long a cancelled engine gets to exit on SIGTERM before it is killed.
TERMINATE_GRACE_S = 5.0

#: How long to wait for the last output after the child exited.
OUTPUT_DRAIN_S = 2.0

#: How many trailing lines of the engine's stderr are kept for error details.
STDERR_LINES_KEPT = 200


class RunState(enum.Enum):
    """Where a job followed by polling is (a segmentation, a refinement, a package install: each
    passes through the states that apply to it). CANCELLED, FAILED and DONE are final."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    IMPORTING = "importing"
    CANCEL_REQUESTED = "cancel requested"
    CANCELLED = "cancelled"
    FAILED = "failed"
    DONE = "done"

    @property
    def finished(self) -> bool:
        return self in (RunState.CANCELLED, RunState.FAILED, RunState.DONE)


def poll_until_finished(poll: Callable[[], RunState], timeout: float | None = None,
                        interval: float = 0.1) -> RunState:
    """Call ``poll`` until the state it returns is final (or ``timeout`` seconds passed), with
    ``interval`` seconds between calls: how scripts and tests wait for a job the GUI polls."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not (state := poll()).finished:
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(interval)
    return state


@dataclass(frozen=True)
class EngineFailure:
    """Why a run failed: the engine's one-line message, its exit code and the details (stderr)."""

    message: str
    exit_code: int | None
    details: str = ""


def segment_command(input_path: str | os.PathLike, output_path: str | os.PathLike,
                    stats_path: str | os.PathLike, *, model: str | os.PathLike,
                    options: SegmentationOptions = SegmentationOptions(),
                    probabilities: str | os.PathLike | None = None,
                    python: str | os.PathLike = sys.executable) -> list[str]:
    """The ``deeporganseg segment`` command line for one run, with JSON progress on stdout:
    the paths, then ``options`` as the command's own flags (:meth:`SegmentationOptions.to_argv`).
    ``probabilities``: also write the class probabilities there (for refinement)."""
    command = [str(python), "-m", "DeepOrganSegLib.cli", "segment", str(input_path),
               str(output_path), "--model", str(model), "--stats", str(stats_path),
               "--progress", "json", *options.to_argv()]
    if probabilities is not None:
        command += ["--probabilities", str(probabilities)]
    return command


def refine_command(input_path: str | os.PathLike, segmentation_path: str | os.PathLike,
                   scribbles_path: str | os.PathLike, output_path: str | os.PathLike, *,
                   probabilities: str | os.PathLike, model: str | os.PathLike, task: str,
                   python: str | os.PathLike = sys.executable) -> list[str]:
    """The ``deeporganseg refine`` command line for one refinement, JSON progress on stdout."""
    return [str(python), "-m", "DeepOrganSegLib.cli", "refine", str(input_path),
            str(segmentation_path), str(scribbles_path), str(output_path),
            "--probabilities", str(probabilities), "--model", str(model), "--task", task,
            "--progress", "json"]


def slicer_python(application_folder: str | os.PathLike | None,
                  which=shutil.which) -> str:
    """The ``PythonSlicer`` interpreter of the running Slicer: beside the application in its
    ``bin`` folder, else on PATH. Never ``sys.executable``: inside Slicer that is the Slicer
    application itself, which would open a second Slicer instead of running the engine.
    Raises :class:`DeepOrganSegError` with what to do when there is none."""
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    if application_folder:
        for folder in (Path(application_folder), Path(application_folder) / "bin"):
            if (folder / name).is_file():
                return str(folder / name)
    found = which("PythonSlicer")
    if found:
        return found
    raise DeepOrganSegError(f"Slicer's Python interpreter ({name}) was not found next to the "
                            f"application; reinstall 3D Slicer")


#: What the device probe runs in a fresh interpreter: one JSON line.
_CUDA_PROBE = ("import json, torch; ok = torch.cuda.is_available(); print(json.dumps("
               "{'available': ok, 'torch': torch.__version__, "
               "'device': torch.cuda.get_device_name(0) if ok else ''}))")


def probe_cuda(python: str | os.PathLike, timeout_s: float = 120.0) -> dict | None:
    """Ask a fresh interpreter whether PyTorch sees a CUDA GPU: ``{"available": bool, "torch":
    version, "device": name}``, or None when PyTorch is missing or the probe fails. A child
    process, so that neither torch nor the CUDA libraries load into Slicer's own process (run
    it off the GUI thread: importing torch takes seconds)."""
    try:
        completed = subprocess.run([str(python), "-c", _CUDA_PROBE], capture_output=True,
                                   text=True, timeout=timeout_s, env=engine_environment(),
                                   creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        return None
    try:
        answer = json.loads(lines[-1])
    except json.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) and "available" in answer else None


def engine_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the engine importable and unbuffered."""
    environment = dict(os.environ if base is None else base)
    existing = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = (str(LIB_PARENT) if not existing
                                 else os.pathsep.join([str(LIB_PARENT), existing]))
    environment["PYTHONUNBUFFERED"] = "1"
    environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see cli.app.main
    return environment


def kill_process_tree(process: subprocess.Popen, force: bool = False) -> None:
    """Signal the process group (or tree) that ``process`` leads.

    POSIX: the child was started as a session leader, so its process group holds everything it
    spawned; SIGTERM (or SIGKILL when ``force``) goes to the whole group. Windows: psutil's
    view of the tree when available, ``taskkill /T /F`` otherwise."""
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
            os.killpg(process.pid, signal.SIGKILL if force else signal.SIGTERM)
        return
    try:
        import psutil
    except ImportError:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)],
                       capture_output=True, check=False,  # no console window flashes up
                       creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(process.pid)
        for member in [*parent.children(recursive=True), parent]:
            member.kill()


class EngineProcess:
    """One engine run in a child process, followed by polling.

    ``poll()`` never blocks: it drains what the reader threads collected, returns the new
    progress events and, once the child has exited and its output is read, sets ``returncode``.
    ``cancel()`` asks the whole process tree to stop; ``poll()`` escalates to a kill if the tree
    is still there after :data:`TERMINATE_GRACE_S`."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        self.command = list(command)
        self.env = engine_environment(env)
        self.cwd = cwd
        self.returncode: int | None = None
        self.last_event: ProgressEvent | None = None
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self._threads: list[threading.Thread] = []
        self._kill_deadline: float | None = None
        self._cancel_requested = False
        self._stdout_closed = False
        self._exited_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    def start(self) -> None:
        """Launch the child in a new process group; raises OSError if it cannot be started."""
        if self._process is not None:
            raise RuntimeError("engine process already started")
        logging.info("DeepOrganSeg: launching %s", subprocess.list2cmdline(self.command))
        # The creationflags constants exist only on Windows: mypy on Linux does not know them.
        platform_options: dict = ({"start_new_session": True} if os.name == "posix" else
                                  {"creationflags":
                                   subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
                                   | subprocess.CREATE_NO_WINDOW})  # type: ignore[attr-defined]
        self._process = subprocess.Popen(
            self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", bufsize=1, **platform_options)
        self._threads = [
            threading.Thread(target=self._read_stdout, name="DeepOrganSeg-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="DeepOrganSeg-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None  # start(): PIPE
        for line in self._process.stdout:
            self._lines.put(line.rstrip("\r\n"))
        self._lines.put(None)  # end of output

    def _read_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None  # start(): PIPE
        for line in self._process.stderr:
            self._stderr.append(line.rstrip("\r\n"))

    def poll(self) -> list[ProgressEvent]:
        """New progress events since the last call; sets ``returncode`` once the child is done."""
        if self._process is None or self.finished:
            return []
        events = self._drain()
        now = time.monotonic()
        if self._process.poll() is None:
            if self._kill_deadline is not None and now > self._kill_deadline:
                kill_process_tree(self._process, force=True)
                self._kill_deadline = None
            return events
        if self._exited_at is None:
            self._exited_at = now
        # Output may still be in flight after the exit; wait for the end of stdout, but not for
        # long: a straggling grandchild could hold the pipe open.
        if self._stdout_closed or now - self._exited_at > OUTPUT_DRAIN_S:
            if self._cancel_requested:
                kill_process_tree(self._process, force=True)  # stragglers of a cancelled run
            for thread in self._threads:
                thread.join(timeout=0.2)  # stderr's last lines; never long in the GUI thread
            events += self._drain()
            self.returncode = self._process.returncode
        return events

    def _drain(self) -> list[ProgressEvent]:
        events: list[ProgressEvent] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return events
            if line is None:
                self._stdout_closed = True
                continue
            event = parse_progress_line(line)
            if event is None:
                if line.strip():
                    logging.info("DeepOrganSeg engine: %s", line)
                continue
            events.append(event)
            self.last_event = event

    def cancel(self) -> None:
        """Ask the engine and everything it started to stop (SIGTERM now, SIGKILL later)."""
        if self._process is None or self.finished or self._cancel_requested:
            return
        self._cancel_requested = True
        kill_process_tree(self._process)
        self._kill_deadline = time.monotonic() + TERMINATE_GRACE_S

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> int | None:
        """Poll until the child is done (or ``timeout`` seconds passed); its return code."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished and (deadline is None or time.monotonic() < deadline):
            self.poll()
            if not self.finished:
                time.sleep(interval)
        return self.returncode

    def failure(self) -> EngineFailure | None:
        """Why the finished run failed (its last ``error`` event and stderr); None if it did not."""
        if not self.finished or self.returncode == 0:
            return None
        assert self.returncode is not None  # finished
        details = "\n".join(self._stderr)
        message = ""
        if self.last_event is not None and self.last_event.stage == "error":
            message = self.last_event.message
        error_lines = [line for line in self._stderr if line.startswith("error:")]
        if not message and error_lines:
            message = error_lines[-1][len("error:"):].strip()
        elif not message and self.returncode < 0:
            message = (f"the segmentation engine was killed (signal {-self.returncode}); "
                       "if the computer ran out of memory, crop the volume or use the CPU")
        elif not message:
            message = f"the segmentation engine stopped with exit code {self.returncode}"
        return EngineFailure(message=message, exit_code=self.returncode, details=details)
