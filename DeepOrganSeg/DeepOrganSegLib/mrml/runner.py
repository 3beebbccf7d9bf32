"""Run the ``deeporganseg segment`` command in a child process and follow it without blocking.

This is the process half of the Slicer module's Logic, free of Qt and MRML so that pytest runs
the very code Slicer runs: the module only calls a job's ``poll()`` from a ``QTimer``.

* :func:`segment_command` builds the command line (``python -m DeepOrganSegLib.cli segment ...
  --progress json``).
* :class:`EngineProcess` starts it in its own process group/session, reads its stdout and stderr
  on two daemon threads (so that neither pipe can fill up and stall the engine), and hands the
  parsed progress lines (:func:`..progress.parse_progress_line`) to whoever polls.
* :func:`kill_process_tree` ends the engine *and* anything it started (DataLoader workers,
  OpenMP helpers), politely first (SIGTERM: the engine exits with code 3 within one unit of
  work), then by force.
* :class:`EngineJob` is what every job the module follows shares (the package install of
  :mod:`.install` too): states, cancel, wait, timing, the end of a child process;
  :class:`EngineCommandJob` is one engine command whose result is then applied, the shape of
  :class:`.job.SegmentationJob` and :class:`.refine.RefineJob`.
"""

from __future__ import annotations

import abc
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
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import EXIT_CANCELLED, DeepOrganSegError
from ..options import SegmentationOptions
from ..progress import ProgressEvent, parse_progress_line
from .eta import RemainingTime, StageProfile

__all__ = ["RunState", "poll_until_finished", "EngineFailure", "segment_command",
           "refine_command", "refine_session_command", "phantom_command", "engine_environment",
           "EngineProcess", "kill_process_tree", "EngineJob", "EngineCommandJob", "slicer_python",
           "LIB_PARENT"]

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
                    stats_path: str | os.PathLike, *, model: str | os.PathLike | None,
                    options: SegmentationOptions = SegmentationOptions(),
                    probabilities: str | os.PathLike | None = None,
                    uncertainty: str | os.PathLike | None = None,
                    server: Sequence[str] = (),
                    python: str | os.PathLike = sys.executable) -> list[str]:
    """The ``deeporganseg segment`` command line for one run, with JSON progress on stdout:
    the paths, then ``options`` as the command's own flags (:meth:`SegmentationOptions.to_argv`).
    ``probabilities``: also write the class probabilities there (for refinement);
    ``uncertainty``: also write the voxelwise uncertainty there (where to look); ``server``:
    the ``--server`` flags of a run on a server (:meth:`.server.ServerConnection.engine_flags`;
    its operator chooses model and device, so ``model`` is None and the device ``auto``)."""
    command = [str(python), "-m", "DeepOrganSegLib.cli", "segment", str(input_path),
               str(output_path), *_model_flag(model), "--stats", str(stats_path),
               "--progress", "json", *options.to_argv(), *server]
    for flag, path in (("--probabilities", probabilities), ("--uncertainty", uncertainty)):
        if path is not None:
            command += [flag, str(path)]
    return command


def refine_command(input_path: str | os.PathLike, segmentation_path: str | os.PathLike,
                   scribbles_path: str | os.PathLike, output_path: str | os.PathLike, *,
                   probabilities: str | os.PathLike, model: str | os.PathLike | None, task: str,
                   server: Sequence[str] = (),
                   python: str | os.PathLike = sys.executable) -> list[str]:
    """The ``deeporganseg refine`` command line for one refinement, JSON progress on stdout
    (``server``, ``model``: as :func:`segment_command`'s)."""
    return [str(python), "-m", "DeepOrganSegLib.cli", "refine", str(input_path),
            str(segmentation_path), str(scribbles_path), str(output_path),
            "--probabilities", str(probabilities), *_model_flag(model), "--task", task,
            "--progress", "json", *server]


def refine_session_command(input_path: str | os.PathLike, *, probabilities: str | os.PathLike,
                           model: str | os.PathLike, task: str,
                           python: str | os.PathLike = sys.executable) -> list[str]:
    """The ``deeporganseg refine-session`` command line: a warm engine for one kept run that
    answers one refinement request per stdin line (:mod:`DeepOrganSegLib.cli.refine_session`)."""
    return [str(python), "-m", "DeepOrganSegLib.cli", "refine-session", str(input_path),
            "--probabilities", str(probabilities), "--model", str(model), "--task", task]


def _model_flag(model: str | os.PathLike | None) -> list[str]:
    """``--model PATH``, or nothing for a run whose model someone else chooses (a server)."""
    return [] if model is None else ["--model", str(model)]


def phantom_command(kind: str, image_path: str | os.PathLike, labels_path: str | os.PathLike,
                    *, seed: int = 0, python: str | os.PathLike = sys.executable) -> list[str]:
    """The ``deeporganseg phantom`` command line that writes one synthetic case of ``kind`` (a
    task name: ``abdomen-ct``, ``heart-mr``, ``brain-mr``)."""
    return [str(python), "-m", "DeepOrganSegLib.cli", "phantom", "--kind", kind,
            "--seed", str(seed), "--out", str(image_path), "--labels", str(labels_path)]


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
                 cwd: str | os.PathLike | None = None, interactive: bool = False) -> None:
        self.command = list(command)
        self.env = engine_environment(env)
        self.cwd = cwd
        #: A session that reads requests on stdin (:meth:`send`) and answers with JSON lines
        #: (:attr:`replies`); otherwise stdin is empty.
        self.interactive = interactive
        #: The JSON objects the child printed that are not progress lines, oldest first.
        self.replies: deque[dict] = deque()
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
            self.command, env=self.env, cwd=self.cwd,
            stdin=subprocess.PIPE if self.interactive else subprocess.DEVNULL,
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
                reply = _json_object(line) if self.interactive else None
                if reply is not None:
                    self.replies.append(reply)
                elif line.strip():
                    logging.info("DeepOrganSeg engine: %s", line)
                continue
            events.append(event)
            self.last_event = event

    def send(self, document: dict) -> bool:
        """Write ``document`` as one JSON line to an interactive child's stdin; False when the
        child is gone (its end shows in :meth:`poll`)."""
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("not an interactive engine process, or not started")
        try:
            self._process.stdin.write(json.dumps(document) + "\n")
            self._process.stdin.flush()
        except (OSError, ValueError):  # a broken pipe, or stdin already closed
            return False
        return True

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
        # "error: ..." (the engine's one line) or "deeporganseg X: error: ..." (argparse's)
        error_lines = [line.partition("error:")[2].strip() for line in self._stderr
                       if line.startswith("error:") or ": error: " in line]
        if not message and error_lines:
            message = error_lines[-1]
        elif not message and self.returncode < 0:
            message = (f"the segmentation engine was killed (signal {-self.returncode}); "
                       "if the computer ran out of memory, crop the volume or use the CPU")
        elif not message:
            message = f"the segmentation engine stopped with exit code {self.returncode}"
        return EngineFailure(message=message, exit_code=self.returncode, details=details)


def _json_object(line: str) -> dict | None:
    """The JSON object on ``line``, or None (chatter, or JSON that is not an object)."""
    try:
        document = json.loads(line)
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


class EngineJob(abc.ABC):
    """What every job the Slicer module follows shares (a segmentation, a refinement, a package
    install): it runs child processes (:class:`EngineProcess`) one at a time, starts once, is
    advanced by ``poll()`` from the module's ``QTimer`` (never blocking), is cancelled by
    stopping the running child's process tree, and is waited for by scripts and tests.

    Its states are :class:`RunState`'s (IDLE first; CANCELLED, FAILED and DONE final; each
    subclass says which others it passes through). A child's end is handled here: CANCELLED
    after a cancel, else the subclass's ``_succeeded()`` or ``_failed(why)``."""

    def __init__(self, environment: dict[str, str] | None = None) -> None:
        #: The children's environment (None: this process's), made importable and unbuffered
        #: by :func:`engine_environment`.
        self.environment = environment
        self.state = RunState.IDLE
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._process: EngineProcess | None = None

    @abc.abstractmethod
    def start(self) -> None:
        """Leave IDLE (:meth:`_begin`) and launch the first child."""

    @abc.abstractmethod
    def poll(self) -> RunState:
        """Advance without blocking (:meth:`_follow_process` while a child runs); the state."""

    def cancel(self) -> None:
        """Stop the running child and everything it started (SIGTERM now, SIGKILL later); the
        job ends CANCELLED at a later poll, once the child is gone. Does nothing before the
        start, after the end, or a second time."""
        if self.state.finished or self.state in (RunState.IDLE, RunState.CANCEL_REQUESTED):
            return
        self.state = RunState.CANCEL_REQUESTED
        if self._process is not None:
            self._process.cancel()

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> RunState:
        """Poll until the job is finished (or ``timeout`` seconds passed)."""
        return poll_until_finished(self.poll, timeout, interval)

    @property
    def elapsed_s(self) -> float:
        """Wall-clock seconds from start to finish (or to now)."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    def _begin(self, state: RunState) -> None:
        """Leave IDLE for ``state``, the job's first, noting the time: a job runs once."""
        if self.state is not RunState.IDLE:
            raise RuntimeError(f"job already {self.state.value}")
        self.started_at = time.monotonic()
        self.state = state

    def _follow_process(self) -> None:
        """Hand the running child's new progress events to :meth:`_take`; once the child is
        gone, end CANCELLED after a cancel, else go on with :meth:`_succeeded` or
        :meth:`_failed`."""
        process = self._process
        assert process is not None  # start() launched it before any poll that follows it
        self._take(process.poll())
        if not process.finished:
            return
        if self.state is RunState.CANCEL_REQUESTED:
            self._finish(RunState.CANCELLED)
        elif process.returncode == 0:
            self._succeeded()
        else:
            failure = process.failure()
            assert failure is not None  # finished with a non-zero return code
            self._failed(failure)

    def _take(self, events: list[ProgressEvent]) -> None:
        """The running child's new progress events; a job that shows none ignores them."""

    @abc.abstractmethod
    def _succeeded(self) -> None:
        """The running child exited with code 0 (and no cancel was asked for)."""

    @abc.abstractmethod
    def _failed(self, failure: EngineFailure) -> None:
        """The running child failed (and no cancel was asked for): why."""

    def _finish(self, state: RunState) -> None:
        """End in the final ``state``, noting the time."""
        self.state = state
        self.finished_at = time.monotonic()


class EngineCommandJob(EngineJob):
    """One ``deeporganseg`` command in a child process, whose result is then applied on the
    caller's thread (a segmentation, a refinement): IDLE -> STARTING -> RUNNING -> IMPORTING ->
    DONE, or -> CANCEL_REQUESTED -> CANCELLED, or -> FAILED.

    ``poll()`` never blocks for long: applying the result is the one step done on the caller's
    thread (a fraction of a second). The temporary folder the inputs are written to is removed
    when the job finishes, whatever the outcome. A subclass writes its inputs and gives the
    command line (:meth:`_command`), applies the result (:meth:`_apply`) and says what it did
    (:meth:`_done_message`)."""

    def __init__(self, python: str, *, environment: dict[str, str] | None = None,
                 earlier: StageProfile | None = None) -> None:
        super().__init__(environment)
        #: The interpreter that runs the engine (Slicer's ``PythonSlicer``: :func:`slicer_python`).
        self.python = python
        self.progress = ProgressEvent("starting", 0.0, "")
        #: The time left, from the engine's stages as they go and ``earlier``, the stages of the
        #: last finished run of the same kind (:mod:`.eta`).
        self.remaining = RemainingTime(earlier or StageProfile())
        #: Messages worth keeping on screen after the next progress line replaces them: what
        #: task Auto detected and chose, and the engine's warnings.
        self.notes: list[str] = []
        self.failure: EngineFailure | None = None
        self.temporary_folder: Path | None = None

    def start(self) -> None:
        """Check what the job needs, write its inputs to a temporary folder and launch the
        engine.

        Raises the reason, with the job FAILED, when it cannot start (an ``InputError`` for a
        request that cannot run)."""
        self._begin(RunState.STARTING)
        self.progress = ProgressEvent("starting", 0.0, "writing the inputs")
        try:
            self._launch(self._command())
        except Exception as error:
            message = str(error) if isinstance(error, DeepOrganSegError) else (
                f"could not start the segmentation engine: {error}")
            self._finish(RunState.FAILED, EngineFailure(
                message, getattr(error, "exit_code", None), traceback.format_exc()))
            raise

    def cancel(self) -> None:
        """Stop the run; the scene stays as it was. The job ends CANCELLED at a later poll."""
        super().cancel()
        if self.state is RunState.CANCEL_REQUESTED:
            self.progress = ProgressEvent("cancel", self.progress.fraction, "cancelling")

    def poll(self) -> RunState:
        """Advance: take the engine's progress, notice its end, apply a successful result."""
        if self.state in (RunState.STARTING, RunState.RUNNING, RunState.CANCEL_REQUESTED):
            self._follow_process()
        elif self.state is RunState.IMPORTING:
            self._import()
        return self.state

    def _launch(self, command: list[str]) -> None:
        """Start the engine child with ``command``."""
        self._process = EngineProcess(command, env=self.environment, cwd=self.temporary_folder)
        self._process.start()
        self.progress = ProgressEvent("starting", 0.0, "starting the engine")

    @property
    def engine_pid(self) -> int | None:
        """The engine's process ID (on POSIX also its process group), once started."""
        return self._process.pid if self._process is not None else None

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """Check what the job needs, create :attr:`temporary_folder` and write the engine's
        inputs into it; the engine's command line."""

    @abc.abstractmethod
    def _apply(self) -> None:
        """Read the engine's result and put it into the scene."""

    @abc.abstractmethod
    def _done_message(self) -> str:
        """The status line of a job that is DONE."""

    def _temporary_path(self, name: str) -> Path:
        """The file ``name`` in the job's temporary folder."""
        assert self.temporary_folder is not None  # _command creates it first
        return self.temporary_folder / name

    def _take(self, events: list[ProgressEvent]) -> None:
        for event in events:
            if event.stage == "error":
                continue  # reported through failure() once the process is gone
            if event.stage == "warning" or event.auto_task is not None:
                self.notes.append(event.message)
            if self.state is RunState.STARTING:
                self.state = RunState.RUNNING
            if self.state is RunState.RUNNING:
                self.progress = event
                if event.stage != "warning":
                    self.remaining.observe(event.stage, event.fraction, time.monotonic())

    def _succeeded(self) -> None:
        self.state = RunState.IMPORTING
        self.progress = ProgressEvent("import", 1.0, "adding the segments to the scene")

    def _failed(self, failure: EngineFailure) -> None:
        cancelled_elsewhere = failure.exit_code == EXIT_CANCELLED
        self._finish(RunState.CANCELLED if cancelled_elsewhere else RunState.FAILED,
                     None if cancelled_elsewhere else failure)

    def _import(self) -> None:
        try:
            self._apply()
        except Exception as error:
            self._finish(RunState.FAILED, EngineFailure(
                f"could not import the result: {error}", None, traceback.format_exc()))
            return
        self._finish(RunState.DONE)

    def _finish(self, state: RunState, failure: EngineFailure | None = None) -> None:
        """End in the final ``state`` (FAILED with its ``failure``), show it, and remove the
        temporary folder."""
        self.failure = failure
        super()._finish(state)
        if state is RunState.CANCELLED:
            self.progress = ProgressEvent("cancelled", self.progress.fraction,
                                          "the scene is unchanged")
        elif state is RunState.FAILED:
            assert failure is not None  # every FAILED finish gives its failure
            self.progress = ProgressEvent("error", self.progress.fraction, failure.message)
            logging.error("DeepOrganSeg: %s\n%s", failure.message, failure.details)
        else:
            self.progress = ProgressEvent("done", 1.0, self._done_message())
        if self.temporary_folder is not None:
            shutil.rmtree(self.temporary_folder, ignore_errors=True)
