"""Running the cases of a batch: one after another in this process (one worker), or in K
worker processes that each load the model once and take one case at a time.

The workers share the machine's cores (each runs torch, SimpleITK, OpenMP and BLAS on its share
of them) and its memory: a case starts only while the workers' own memory plus the estimates
of the cases in flight fit the budget (:mod:`.memory`). A worker that dies (the kernel's
out-of-memory killer, a crash in native code) fails its case with the reason and is replaced;
the other cases go on. A cancel (the token, SIGINT or SIGTERM) reaches every worker, which
stops at its next cancel check and leaves no partial file (:mod:`DeepOrganSegLib.cli.signals`);
a worker whose parent is gone stops too.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from ..errors import Cancelled, Failure, InputError
from ..progress import CancelToken
from .cases import Case
from .memory import WORKER_BYTES, CaseMemory, peak_resident_bytes, resident_bytes
from .work import CaseJob, CaseProgress, CaseRunner, Outcome

__all__ = ["PROGRESS_INTERVAL_S", "WORKER_GRACE_S", "OutcomeHandler", "ProgressSender",
           "run_cases"]

#: Called with each case's outcome as it ends.
OutcomeHandler = Callable[[Outcome], None]
#: Seconds between two progress messages of a worker within one stage (a case reports every
#: tile; the parent needs a few a second at most).
PROGRESS_INTERVAL_S = 0.5
#: Seconds the workers get to unwind after a cancel (or to leave after the last case) before
#: they are terminated.
WORKER_GRACE_S = 3.0

MAX_STARTUP_KILLS = 3
"""Workers killed by a signal while starting (the out-of-memory killer, when the others' cases
fill the memory) that are replaced before the batch gives up; a worker that exits by itself
while starting means every worker would (a broken install), and stops the batch at once."""


def run_cases(cases: list[Case], job: CaseJob, workers: int, budget_bytes: int,
              progress: CaseProgress, finished: OutcomeHandler, cancel: CancelToken) -> None:
    """Segment ``cases`` with ``job``: in this process when ``workers`` is 1 (or there is one
    case), else in that many worker processes within ``budget_bytes``. ``progress`` hears of
    every case's stages and warnings, ``finished`` of every outcome. Raises
    :class:`Cancelled` when ``cancel`` is set (the cases already finished stay)."""
    if workers <= 1 or len(cases) <= 1:
        runner = CaseRunner(job)
        for case in cases:
            cancel.raise_if_cancelled()
            finished(runner.run(case, progress, cancel))
        return
    pool = _WorkerPool(job, min(workers, len(cases)), budget_bytes, progress, cancel)
    try:
        pool.run(cases, finished)
    finally:
        pool.close()


#: Thread counts of the native libraries a worker loads (read when they load: set in its
#: environment as it starts), its share of the cores.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _cpu_count() -> int:
    """Cores this process may run on (a Slurm job's or a container's cpuset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _watch(stop: Any, parent: int, cancel: CancelToken) -> None:
    """Cancel the worker's run when the batch asks (``stop``) or its parent is gone."""
    while not cancel.cancelled:
        if stop.wait(0.5) or os.getppid() != parent:
            cancel.cancel()


def _serve(job: CaseJob, connection: Connection, stop: Any, threads: int) -> None:
    """A worker process: load the model, then segment each case the parent sends until it
    sends None; report readiness (with its resident memory), progress, and outcomes (with the
    peak memory of the case)."""
    import SimpleITK as sitk
    import torch

    from ..cli.signals import SignalCancellation

    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    cancel = CancelToken()
    threading.Thread(target=_watch, args=(stop, os.getppid(), cancel), daemon=True).start()
    report = ProgressSender(connection)
    with SignalCancellation(cancel):
        try:
            try:
                runner = CaseRunner(job)
            except Exception as error:
                connection.send(("broken", Failure.of(error).message))
                return
            connection.send(("ready", resident_bytes()))
            peak_resident_bytes(reset=True)
            while (case := connection.recv()) is not None:
                outcome = runner.run(case, report, cancel)
                connection.send(("outcome", outcome, peak_resident_bytes(reset=True)))
        except (Cancelled, EOFError, OSError):  # the batch was cancelled, or its parent is gone
            return


class ProgressSender:
    """A worker's :data:`CaseProgress`: sends a case's progress to the parent, at most every
    :data:`PROGRESS_INTERVAL_S` within a stage (warnings and new stages at once), each message
    as plain text (a message may be a ``str`` subclass, the task Auto note, that does not
    survive pickling)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.stage, self.sent = "", 0.0

    def __call__(self, case_id: str, stage: str, fraction: float, message: str) -> None:
        now = time.monotonic()
        if stage == "warning" or stage != self.stage or now - self.sent >= PROGRESS_INTERVAL_S:
            self.stage, self.sent = stage, now
            self.connection.send(("progress", case_id, stage, fraction, str(message)))


class _Worker:
    """One worker process, its pipe, and the case it is on."""

    def __init__(self, context: Any, job: CaseJob, stop: Any, threads: int) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(job, child, stop, threads),
                                       name="deeporganseg-batch-worker", daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.resident_bytes = WORKER_BYTES
        self.case: Case | None = None
        self.case_bytes = 0
        self.started = 0.0

    def send(self, case: Case | None) -> None:
        try:
            self.connection.send(case)
        except OSError:  # it has died; the parent's loop sees it
            pass

    def lost_reason(self) -> str:
        """Why the worker died, for the case it was on."""
        code = self.process.exitcode or 0
        if code == -9:
            return ("the worker process was killed (SIGKILL), most likely by the out-of-memory "
                    "killer; run with fewer --workers or a lower --memory-budget-gb")
        if code < 0:
            return f"the worker process was killed by signal {-code}"
        return f"the worker process ended unexpectedly (exit code {code})"


class _WorkerPool:
    """K worker processes fed one case at a time within a memory budget."""

    def __init__(self, job: CaseJob, count: int, budget_bytes: int, progress: CaseProgress,
                 cancel: CancelToken) -> None:
        from ..model import read_metadata

        self.job, self.count, self.budget_bytes = job, count, budget_bytes
        self.progress, self.cancel = progress, cancel
        self.memory = CaseMemory(read_metadata(job.model_path), job.options)
        self.context = multiprocessing.get_context("spawn")  # fork is unsafe once torch runs
        self.stop = self.context.Event()
        self.threads = max(1, _cpu_count() // count)
        self.workers: list[_Worker] = []
        self.startup_kills = 0

    def _start(self) -> _Worker:
        saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
        os.environ.update(dict.fromkeys(_THREAD_VARIABLES, str(self.threads)))
        try:  # a spawned process starts with this process's environment
            worker = _Worker(self.context, self.job, self.stop, self.threads)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self.workers.append(worker)
        return worker

    def run(self, cases: list[Case], finished: OutcomeHandler) -> None:
        pending = deque(cases)
        for _ in range(self.count):
            self._start()
        while pending or any(worker.case for worker in self.workers):
            self.cancel.raise_if_cancelled()
            self._assign(pending)
            wait([w.connection for w in self.workers] + [w.process.sentinel for w in self.workers],
                 timeout=0.25)
            for worker in list(self.workers):
                self._receive(worker, finished)
                if not worker.process.is_alive():
                    self._lost(worker, finished, pending)

    def _assign(self, pending: deque[Case]) -> None:
        """Give the next cases to idle workers while the budget allows (a case runs alone
        when it does not fit beside the others)."""
        for worker in self.workers:
            if not pending:
                return
            if not worker.ready or worker.case is not None:
                continue
            estimate = self.memory.estimate(pending[0].input)
            busy = [w for w in self.workers if w.case is not None]
            planned = sum(w.resident_bytes for w in self.workers) + sum(
                w.case_bytes for w in busy) + estimate
            if busy and planned > self.budget_bytes:
                return
            worker.case, worker.case_bytes, worker.started = pending.popleft(), estimate, \
                time.perf_counter()
            worker.send(worker.case)

    def _receive(self, worker: _Worker, finished: OutcomeHandler) -> None:
        """Handle every message the worker has sent."""
        while True:
            try:
                if not worker.connection.poll():
                    return
                message = worker.connection.recv()
            except (EOFError, OSError):
                return
            kind = message[0]
            if kind == "ready":
                worker.ready, worker.resident_bytes = True, message[1]
            elif kind == "broken":
                raise InputError(message[1])
            elif kind == "progress":
                self.progress(*message[1:])
            elif kind == "outcome":
                self.memory.learn(message[1].case.input, message[2], worker.resident_bytes)
                worker.case, worker.case_bytes = None, 0
                finished(message[1])

    def _lost(self, worker: _Worker, finished: OutcomeHandler, pending: deque[Case]) -> None:
        """A worker died: fail its case with the reason, and replace it while cases remain.
        One killed while starting is replaced as well when another has started (up to
        :data:`MAX_STARTUP_KILLS`): the out-of-memory killer can pick a worker still loading
        its model, and that must not end the cohort."""
        self.workers.remove(worker)
        if not worker.ready:
            killed = (worker.process.exitcode or 0) < 0
            others_started = any(other.ready for other in self.workers)
            self.startup_kills += killed
            if not (killed and others_started and self.startup_kills <= MAX_STARTUP_KILLS):
                raise InputError(f"a batch worker process could not start "
                                 f"({worker.lost_reason()}); run with --workers 1 to see why")
        if worker.case is not None:
            finished(Outcome(worker.case, False, time.perf_counter() - worker.started,
                             worker.lost_reason()))
        if pending:
            self._start()

    def close(self) -> None:
        """Let the workers go: at once after a cancel or an error (they stop at their next
        cancel check), when idle otherwise; terminate any still running after the grace."""
        if self.cancel.cancelled or any(worker.case for worker in self.workers):
            self.stop.set()
        for worker in self.workers:
            worker.send(None)
        deadline = time.monotonic() + WORKER_GRACE_S
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.terminate()  # SIGTERM: the worker's own cancel and clean-up
                worker.process.join(WORKER_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
