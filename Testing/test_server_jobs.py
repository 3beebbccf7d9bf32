"""The server's job board without HTTP or a model: at most N jobs run at once, each job's files
live in its own private folder and go when the job is done with, a job whose client stopped
asking is cancelled and removed, and a failure becomes one line with the local exit code."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import pytest

from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.server.jobs import Job, JobBoard
from DeepOrganSegLib.server.request import JobSpec

PATIENCE_S = 30.0


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, f"waited in vain for {what}"
        time.sleep(0.01)


SPEC = JobSpec("segment", (), {"input": (".nrrd", 3)}, {"output": ".nrrd"})


def _submit(board: JobBoard) -> Job:
    """A job with its input 'uploaded', queued."""
    job = board.create(SPEC)
    assert job is not None
    Path(job.paths["input"]).write_bytes(b"abc")
    board.arrived(job, "input")
    return job


class Runner:
    """A job runner that writes the output and then holds the job until released (or
    cancelled), counting how many jobs run at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, job: Job, worker: int) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            Path(job.paths["output"]).write_bytes(b"labels")
            while not self.release.wait(0.01):
                job.cancel.raise_if_cancelled()
            return "table"
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture()
def runner() -> Runner:
    return Runner()


@pytest.fixture()
def board(runner, tmp_path):
    board = JobBoard(runner, workers=2, limit=5, root=tmp_path, abandoned_s=0.5)
    yield board
    runner.release.set()
    board.close()
    assert not list(tmp_path.iterdir()), "closing the board leaves no file"


def test_at_most_n_jobs_run_at_once_and_the_rest_wait_their_turn(board, runner):
    jobs = [_submit(board) for _ in range(4)]
    _until(lambda: runner.running == 2, "two jobs to run")
    assert [job.state for job in jobs].count("queued") == 2
    assert jobs[3].events[-1]["message"] == "waiting for a worker (3 jobs ahead)"
    runner.release.set()
    _until(lambda: all(board.get(job.id).state == "done" for job in jobs), "all jobs")
    assert runner.most == 2 and all(job.report == "table" for job in jobs)


def test_a_jobs_files_are_private_and_go_with_it(board, runner):
    job = _submit(board)
    assert stat.S_IMODE(job.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(board.root.stat().st_mode) == 0o700
    assert sorted(Path(path).name for path in job.paths.values()) == ["input.nrrd", "output.nrrd"]
    runner.release.set()
    _until(lambda: job.state == "done", "the job")
    assert not Path(job.paths["input"]).exists(), "inputs go when the job has run"
    assert Path(job.paths["output"]).read_bytes() == b"labels"
    assert board.forget(job.id) and not job.folder.exists()
    assert board.get(job.id) is None and not board.forget(job.id)


def test_a_job_nobody_asks_about_is_cancelled_and_removed(board, runner):
    job = _submit(board)
    _until(lambda: job.state == "cancelled" and not job.folder.exists(),
           "the abandoned job to be cancelled and its folder to go")  # (asking would keep it)
    assert board.get(job.id) is None and runner.running == 0


def test_a_job_still_asked_about_is_kept(board, runner):
    job = _submit(board)
    started = time.monotonic()
    while time.monotonic() - started < 1.5:  # three abandon periods, asking all along
        assert board.get(job.id) is job
        time.sleep(0.05)
    assert job.state == "running"


def test_beyond_the_limit_no_job_is_made(board):
    jobs = [board.create(SPEC) for _ in range(5)]
    assert all(jobs) and board.create(SPEC) is None
    assert board.retry_after_s() >= 1
    board.forget(jobs[0].id)
    assert board.create(SPEC) is not None


@pytest.mark.parametrize("failure, exit_code, message", [
    (InputError, 2, "<input>: cannot read image"),
    (ZeroDivisionError, 1, "internal error on the server (ZeroDivisionError: <input>: cannot "
                           "read image); its log has the details"),
])
def test_a_failure_has_the_local_exit_code_and_names_files_by_role(tmp_path, failure, exit_code,
                                                                   message):
    def runner(job: Job, worker: int) -> str:
        raise failure(f"{job.paths['input']}: cannot read image")

    board = JobBoard(runner, workers=1, limit=2, root=tmp_path)
    try:
        job = _submit(board)
        _until(lambda: job.state == "failed", "the job to fail")
        assert job.error == {"error": message, "exit_code": exit_code}
    finally:
        board.close()
