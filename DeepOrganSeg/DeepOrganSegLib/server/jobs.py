"""The server's jobs: a bounded board of them, worker threads that run at most N at a time,
and each job's private folder, progress and cancel.

A job lives ``uploading`` (its slot reserved, its inputs arriving) → ``queued`` → ``running`` →
``done``/``failed``/``cancelled``. Its files are in a folder of its own (mode 0700, inside the
server's own 0700 folder), named after their role, never after anything a client said; the
inputs are deleted when the job has run, the folder when the client deletes the job or stops
asking about it (:data:`ABANDONED_S`, which also cancels a job nobody waits for), and the
server's folder when it stops. At most ``limit`` jobs exist at once: beyond, :meth:`create`
says no and the client is told when to try again (:meth:`retry_after_s`).
"""

from __future__ import annotations

import logging
import math
import queue
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import EXIT_CANCELLED, EXIT_INTERNAL, Cancelled, DeepOrganSegError
from ..progress import AutoTaskNote, CancelToken
from ..remote.protocol import FINISHED_STATES, mark_paths
from .request import JobSpec

__all__ = ["Job", "JobBoard", "ABANDONED_S", "JobRunner"]

#: Seconds without a request about a job after which it is cancelled and its folder removed:
#: its client has gone (a client asks several times a second while it waits).
ABANDONED_S = 30.0
#: The progress events a job keeps (the first ones and the last ones are what matter; a job
#: never comes near this).
_MAX_EVENTS = 10_000

log = logging.getLogger("deeporganseg.serve")

#: What runs a job: ``(job, worker index) -> the text its command prints``, reporting through
#: ``job.progress`` and stopping when ``job.cancel`` is set.
JobRunner = Callable[["Job", int], str]


@dataclass
class Job:
    """One job: its request, its folder and files (``paths``: role → the server's path),
    state, progress events and outcome."""

    id: str
    spec: JobSpec
    folder: Path
    paths: dict[str, str]
    state: str = "uploading"
    events: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    report: str = ""
    claimed: set[str] = field(default_factory=set)  # inputs being sent or sent
    uploaded: set[str] = field(default_factory=set)  # inputs sent whole
    cancel: CancelToken = field(default_factory=CancelToken)
    seen: float = field(default_factory=time.monotonic)
    forgotten: bool = False

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        """The job's progress function: one event, the server's paths written as roles."""
        event: dict[str, Any] = {"stage": stage, "fraction": fraction,
                                 "message": mark_paths(str(message), self.paths)}
        if isinstance(message, AutoTaskNote):
            event["auto_task"] = message.auto_task
        if len(self.events) < _MAX_EVENTS:
            self.events.append(event)

    def touch(self) -> None:
        """Its client is still there (an upload in progress counts)."""
        self.seen = time.monotonic()

    def fail(self, message: str, exit_code: int) -> None:
        self.error = {"error": mark_paths(message, self.paths), "exit_code": exit_code}

    def status(self, since: int) -> dict[str, Any]:
        """What ``GET /v1/jobs/ID?since=N`` answers: the state, the events from ``since`` on,
        the next event number, and the outcome once there is one."""
        events = self.events[since:]
        document: dict[str, Any] = {"job": self.id, "state": self.state, "events": events,
                                    "next": since + len(events)}
        if self.state == "done":
            document["report"] = self.report
            document["outputs"] = sorted(self.spec.outputs)
        if self.error is not None:
            document["error"] = self.error
        return document


class JobBoard:
    """The jobs of one server: at most ``limit`` at once, ``workers`` threads running them
    through ``runner``, their folders in a new folder under ``root`` (None: the system's
    temporary folder); a job nobody asked about for ``abandoned_s`` is forgotten."""

    def __init__(self, runner: JobRunner, workers: int, limit: int, root: Path | None = None,
                 abandoned_s: float = ABANDONED_S) -> None:
        self.runner, self.workers, self.limit = runner, workers, limit
        self.abandoned_s = abandoned_s
        self.root = Path(tempfile.mkdtemp(prefix="deeporganseg-serve-", dir=root))
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._run_s = 10.0  # the mean job duration, learned as jobs finish
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(index,), daemon=True,
                                          name=f"deeporganseg-worker-{index}")
                         for index in range(workers)]
        self._threads.append(threading.Thread(target=self._reap, daemon=True,
                                              name="deeporganseg-reaper"))
        for thread in self._threads:
            thread.start()

    def create(self, spec: JobSpec) -> Job | None:
        """A new job for ``spec`` with its folder, or None when ``limit`` jobs exist."""
        with self._lock:
            if len(self._jobs) >= self.limit:
                return None
            folder = Path(tempfile.mkdtemp(prefix="job-", dir=self.root))
            paths = {role: str(folder / name) for role, name in spec.file_names().items()}
            job = Job(secrets.token_urlsafe(18), spec, folder, paths)
            self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        """The job ``job_id`` (marking that its client still asks), or None."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.touch()
            return job

    def arrived(self, job: Job, role: str) -> None:
        """Input ``role`` of ``job`` is complete; with the last one, the job is queued."""
        with self._lock:
            job.uploaded.add(role)
            if job.state != "uploading" or job.uploaded != set(job.spec.inputs):
                return
            job.state = "queued"
            ahead = sum(1 for other in self._jobs.values() if other.state in ("queued", "running"))
        job.progress("queue", 0.0, f"waiting for a worker ({ahead - 1} job"
                                   f"{'' if ahead == 2 else 's'} ahead)" if ahead > self.workers
                     else "starting")
        self._queue.put(job)

    def forget(self, job_id: str) -> bool:
        """Cancel and remove ``job_id`` (its folder now, or when its worker lets go of it);
        False if there is no such job."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
            if job is None:
                return False
            job.forgotten = True
            job.cancel.cancel()
            running = job.state == "running"
        if not running:
            shutil.rmtree(job.folder, ignore_errors=True)
        return True

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state, and the limit."""
        with self._lock:
            states = [job.state for job in self._jobs.values()]
        return {**{state: states.count(state) for state in ("uploading", "queued", "running")},
                "limit": self.limit, "workers": self.workers}

    def retry_after_s(self) -> int:
        """When a refused client should try again: the time the jobs ahead of it will take."""
        with self._lock:
            waiting = sum(1 for job in self._jobs.values() if job.state not in FINISHED_STATES)
        return min(max(math.ceil(self._run_s * waiting / self.workers), 1), 60)

    def close(self) -> None:
        """Cancel every job, stop the workers and remove every job's files (once; again is
        nothing)."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            jobs = list(self._jobs)
        for job_id in jobs:
            self.forget(job_id)
        for _ in range(self.workers):
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def _work(self, worker: int) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                if job.state != "queued" or job.forgotten:
                    continue
                job.state = "running"
            started = time.monotonic()
            job.state = self._run(job, worker)
            self._run_s = 0.8 * self._run_s + 0.2 * (time.monotonic() - started)
            for role in job.spec.inputs:
                Path(job.paths[role]).unlink(missing_ok=True)
            with self._lock:
                forgotten = job.forgotten
            if forgotten:
                shutil.rmtree(job.folder, ignore_errors=True)

    def _run(self, job: Job, worker: int) -> str:
        """Run ``job``; its final state. Every failure becomes the job's one-line error with
        the local command's exit code; a bug's traceback goes to the server's log only."""
        try:
            job.report = self.runner(job, worker)
            return "done"
        except Cancelled as error:
            job.fail(str(error), EXIT_CANCELLED)
            return "cancelled"
        except DeepOrganSegError as error:
            job.fail(str(error), error.exit_code)
        except MemoryError:
            job.fail("the server ran out of memory; try again later or send a smaller volume",
                     EXIT_INTERNAL)
        except Exception as error:  # a bug: its traceback in the log, one line for the client
            log.exception("job %s failed", job.id)
            first_line = str(error).splitlines()[0] if str(error) else ""
            job.fail(f"internal error on the server ({type(error).__name__}: {first_line}); "
                     f"its log has the details", EXIT_INTERNAL)
        return "failed"

    def _reap(self) -> None:
        """Forget the jobs whose clients stopped asking, every few seconds."""
        while not self._stopping.wait(min(self.abandoned_s / 4, 5.0)):
            now = time.monotonic()
            with self._lock:
                gone = [job.id for job in self._jobs.values() if now - job.seen > self.abandoned_s]
            for job_id in gone:
                log.info("job %s: its client stopped asking; cancelled and removed", job_id)
                self.forget(job_id)
