"""One run of a batch (one part of it): the complete cases skipped, the others segmented (in
this process or in worker processes), each failure recorded with its reason, and the cohort's
report rewritten over the whole folder; progress for the whole run, with an estimate of the
time left."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..progress import CancelToken, ProgressFunction
from .cases import Case
from .memory import WORKER_BYTES
from .pool import run_cases
from .work import CaseJob, Outcome

__all__ = ["BatchRun", "BatchSummary", "run_batch"]


@dataclass(frozen=True)
class BatchRun:
    """What to run: ``cases``, this part's cases of the whole batch ``everyone`` (all parts,
    for the report), with ``job``, in ``workers`` processes within ``budget_bytes``."""

    cases: list[Case]
    everyone: list[Case]
    job: CaseJob
    workers: int
    budget_bytes: int


@dataclass
class BatchSummary:
    """How a run went: the cases complete from earlier (``skipped``), the outcomes of those it
    ran, and the report written."""

    skipped: list[Case] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    report: tuple[Path, Path] | None = None

    @property
    def failed(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.done]


class _Tally:
    """The run's overall progress: finished cases plus the fractions of those in flight."""

    def __init__(self, total: int, progress: ProgressFunction) -> None:
        self.total, self.progress = max(total, 1), progress
        self.finished = 0
        self.running: dict[str, float] = {}
        self.started = time.monotonic()

    def fraction(self) -> float:
        return min(1.0, (self.finished + sum(self.running.values())) / self.total)

    def eta(self) -> str:
        """The time left at the pace so far, as ``h:mm:ss`` (``?`` before any progress)."""
        done = self.fraction()
        if done <= 0:
            return "?"
        left = round((time.monotonic() - self.started) * (1 - done) / done)
        return f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"

    def case_progress(self, case_id: str, stage: str, fraction: float, message: str) -> None:
        if stage == "warning":
            self.progress("warning", self.fraction(), f"{case_id}: {message}")
            return
        self.running[case_id] = max(self.running.get(case_id, 0.0), min(fraction, 1.0))
        self.progress("segment", self.fraction(), f"{case_id}: {stage} {message}")

    def case_finished(self, outcome: Outcome) -> None:
        self.running.pop(outcome.case.id, None)
        self.finished += 1
        state = "done" if outcome.done else "failed"
        self.progress("case", self.fraction(),
                      f"{outcome.case.id}: {state}, {outcome.message} ({self.finished}/"
                      f"{self.total}, about {self.eta()} left)")


def run_batch(run: BatchRun, progress: ProgressFunction, cancel: CancelToken) -> BatchSummary:
    """Run ``run``: skip its complete cases (those made with other settings are refused
    before any work, :meth:`OutputFolder.split_complete`), segment the others, record each
    outcome in the folder, then write the report over every case there. ``progress`` gets
    ``case`` events (a case ended), ``segment`` events (inside a case) and warnings. Raises
    :class:`~DeepOrganSegLib.errors.Cancelled` on a cancel; nothing half-written is left."""
    from .report import write_report

    folder = run.job.folder
    folder.prepare()
    skipped, todo = folder.split_complete(run.cases, run.job.settings)
    summary = BatchSummary(skipped=skipped)
    if skipped:
        progress("skip", 0.0, f"{len(skipped)} case(s) complete from an earlier run: skipped")
    workers = min(run.workers, len(todo))
    fitting = max(1, run.budget_bytes // WORKER_BYTES)
    if workers > fitting:
        progress("warning", 0.0, f"--workers {run.workers}: the memory budget "
                 f"({run.budget_bytes / 1e9:.1f} GB) holds {fitting}; running {fitting}")
        workers = fitting
    tally = _Tally(len(todo), progress)

    def finished(outcome: Outcome) -> None:
        if outcome.done:
            folder.clear_failure(outcome.case.id)
        else:
            folder.record_failure(outcome.case, outcome.message)
        summary.outcomes.append(outcome)
        tally.case_finished(outcome)

    if todo:
        run_cases(todo, run.job, workers, run.budget_bytes, tally.case_progress, finished,
                  cancel)
    progress("report", 1.0, "writing the cohort report")
    summary.report = write_report(folder, run.everyone)
    return summary
