"""``deeporganseg batch`` end to end with the tiny model: a cohort's outputs and report, a bad
case among good ones, resume after a kill, two parts at once into one folder, worker processes,
and reasons that come from hostile files shown escaped everywhere."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from helpers import ellipsoid_scene
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.volume_io import read_volume, write_volume

#: A file whose name and bytes hold a newline, an ANSI escape (red) and markup.
HOSTILE_NAME = "evil\x1b[31m\n<script>alert(1).nrrd"
HOSTILE_BYTES = b"NRRD\x1b[31mDub\r\n<script>alert(1)</script>\n\x1b[2J\n"
#: Control characters that must never reach a terminal, a record or the report raw.
CONTROL = [chr(n) for n in range(32) if chr(n) not in "\n\t"] + ["\x7f", "\x85"]


def _scans(folder: Path, seeds: range) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        write_volume(ellipsoid_scene(seed)[0], folder / f"case{seed}.nii.gz")
    return folder


def _batch(*args: str) -> tuple[int, str, str]:
    """``deeporganseg batch ARGS --progress none`` in this process: code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["batch", *args, "--progress", "none"])
    return code, out.getvalue(), err.getvalue()


def _subprocess(*args: str, **env: str) -> subprocess.Popen:
    """``deeporganseg batch ARGS --progress json`` as a process (one torch thread)."""
    return subprocess.Popen([sys.executable, "-m", "DeepOrganSegLib", "batch", *args,
                             "--progress", "json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def _cases_done(folder: Path) -> set[str]:
    return {path.stem for path in folder.glob("*.json")}


@pytest.fixture(scope="module")
def cohort(tiny_model_path, tmp_path_factory):
    """Three good scans and one hostile file, batched once: (exit code, stdout, stderr, DIR)."""
    root = tmp_path_factory.mktemp("cohort")
    scans = _scans(root / "scans", range(3))
    (scans / HOSTILE_NAME).write_bytes(HOSTILE_BYTES)
    code, out, err = _batch(str(scans), "--out", str(root / "out"), "--model",
                            str(tiny_model_path), "--format", "seg.nrrd")
    return code, out, err, root / "out"


def test_each_case_gets_its_labelmap_statistics_and_picture_on_its_own_grid(cohort):
    _, out, _, folder = cohort
    assert {"case0", "case1", "case2"} <= _cases_done(folder)
    for case in ("case0", "case1", "case2"):
        labels = read_volume(folder / f"{case}.seg.nrrd")
        image = read_volume(folder.parent / "scans" / f"{case}.nii.gz")
        assert labels.array.shape == image.array.shape
        np.testing.assert_allclose(labels.origin, image.origin, atol=1e-4)
        statistics = json.loads((folder / f"{case}.json").read_text())
        assert statistics["case"] == case and statistics["task"] == "abdomen-ct"
        assert statistics["input"] == str(folder.parent / "scans" / f"{case}.nii.gz")
        assert {organ["name"] for organ in statistics["labels"]} == {"liver", "spleen"}
        assert (folder / "qc" / f"{case}.png").read_bytes()[:4] == b"\x89PNG"
    assert "3 segmented, 0 complete from earlier, 1 failed" in out


def test_a_bad_case_among_good_ones_fails_alone_with_its_reason(cohort):
    code, _, err, folder = cohort
    assert code == 2
    failed = list((folder / "failed").glob("*.json"))
    assert len(failed) == 1
    record = json.loads(failed[0].read_text())
    assert "cannot read image" in record["reason"]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"case {record['case']}: " in errors[0]


def test_reasons_from_hostile_bytes_are_escaped_in_every_message_and_record(cohort):
    _, out, err, folder = cohort
    record = next((folder / "failed").glob("*.json"))
    texts = {"stdout": out, "stderr": err, "failure record": record.read_text(),
             "cohort.csv": (folder / "cohort.csv").read_text(),
             "report.html": (folder / "report.html").read_text()}
    for name, text in texts.items():
        assert not any(character in text for character in CONTROL), name
    assert all(line.startswith(("error: ", "warning: ")) for line in err.splitlines()), err
    assert "<script>alert" not in texts["report.html"]
    assert "&lt;script&gt;alert(1)" in texts["report.html"]
    assert "\\x1b[31m" in json.loads(texts["failure record"])["reason"]


def test_segment_says_why_a_hostile_file_is_unreadable_on_one_escaped_line(tiny_model_path,
                                                                          tmp_path, capsys):
    hostile = tmp_path / HOSTILE_NAME
    hostile.write_bytes(HOSTILE_BYTES)
    code = main(["segment", str(hostile), str(tmp_path / "out.nii.gz"), "--model",
                 str(tiny_model_path), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), repr(err)
    assert not any(character in err[:-1] for character in CONTROL + ["\n"]), repr(err)
    assert "\\x1b[31m\\n<script>" in err


def test_the_report_lists_every_case_with_its_flags_and_the_failure(cohort):
    _, _, _, folder = cohort
    with open(folder / "cohort.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    done = [row for row in rows if row["status"] == "done"]
    assert sorted({row["case"] for row in done}) == ["case0", "case1", "case2"]
    assert len(done) == 6 and all(float(row["volume_ml"]) > 0 for row in done)
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(failed) == 1 and "cannot read image" in failed[0]["reason"]
    page = (folder / "report.html").read_text()
    assert all(f'src="qc/case{n}.png"' in page for n in range(3))
    assert "Failed cases" in page and "fewer than 5 cases" in page


def test_resume_after_a_kill_keeps_finished_cases_byte_for_byte(tiny_model_path, tmp_path):
    scans = _scans(tmp_path / "scans", range(3))
    folder = tmp_path / "out"
    process = _subprocess(str(scans), "--out", str(folder), "--model", str(tiny_model_path))
    assert process.stdout is not None
    for line in process.stdout:  # kill it hard as soon as its first case is done
        if json.loads(line)["stage"] == "case":
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=120)
    finished = _cases_done(folder)
    assert 1 <= len(finished) < 3, "the kill came after the first case and before the last"
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()
              and path.stem.split(".")[0] in finished and not path.name.startswith(".")}
    code, out, _ = _batch(str(scans), "--out", str(folder), "--model", str(tiny_model_path))
    assert code == 0 and f"{len(finished)} complete from earlier" in out
    assert _cases_done(folder) == {"case0", "case1", "case2"}
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_sigterm_cancels_with_exit_3_and_leaves_no_partial_file(tiny_model_path, tmp_path):
    scans = _scans(tmp_path / "scans", range(2))
    folder = tmp_path / "out"
    process = _subprocess(str(scans), "--out", str(folder), "--model", str(tiny_model_path))
    assert process.stdout is not None
    for line in process.stdout:  # as a scheduler stops a job: SIGTERM in the middle of a case
        event = json.loads(line)
        if event["stage"] == "segment" and ": inference" in event["message"]:
            process.send_signal(signal.SIGTERM)
            break
    _, err = process.communicate(timeout=120)
    assert process.returncode == 3, err
    assert err.strip().splitlines()[-1] == "error: cancelled by the user"
    leftovers = [path.name for path in folder.rglob("*") if path.name.startswith(".")
                 and path.name != ".report.lock"]
    assert not leftovers


def test_two_parts_at_once_into_one_folder_give_every_case_exactly_once(tiny_model_path, tmp_path):
    """Each part as its scheduler starts it, with --progress json (fractions never go back)."""
    scans = _scans(tmp_path / "scans", range(5))
    folder = tmp_path / "out"
    common = (str(scans), "--out", str(folder), "--model", str(tiny_model_path), "--parts", "2")
    parts = [_subprocess(*common, SLURM_ARRAY_TASK_ID="0"),  # as a Slurm array task
             _subprocess(*common, JOB_COMPLETION_INDEX="1")]  # as a Kubernetes indexed Job
    done_by = []
    for process in parts:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        fractions = [event["fraction"] for event in events]
        assert fractions == sorted(fractions) and events[-1]["stage"] == "done"
        done_by.append({event["message"].split(":")[0] for event in events
                        if event["stage"] == "case"})
    assert done_by[0] | done_by[1] == {f"case{n}" for n in range(5)}
    assert not done_by[0] & done_by[1] and len(done_by[0]) == 3 and len(done_by[1]) == 2
    with open(folder / "cohort.csv", newline="") as stream:
        reported = {row["case"] for row in csv.DictReader(stream)}
    assert reported == {f"case{n}" for n in range(5)}, "the last report covers both parts"


def test_worker_processes_segment_as_this_process_does(tiny_model_path, tmp_path):
    scans = _scans(tmp_path / "scans", range(3))
    code, out, err = _batch(str(scans), "--out", str(tmp_path / "two"), "--model",
                            str(tiny_model_path), "--workers", "2")
    assert code == 0, err
    _batch(str(scans), "--out", str(tmp_path / "one"), "--model", str(tiny_model_path))
    for case in ("case0", "case1", "case2"):
        two = read_volume(tmp_path / "two" / f"{case}.nii.gz").array
        one = read_volume(tmp_path / "one" / f"{case}.nii.gz").array
        assert np.mean(two == one) > 0.999


def _worker_processes(parent: int) -> list[int]:
    """The batch worker processes of ``parent`` (spawned; not multiprocessing's tracker)."""
    children = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        children += (task / "children").read_text().split()
    return [int(pid) for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux's /proc")
def test_a_worker_killed_by_the_oom_killer_fails_its_case_alone(tiny_model_path, tmp_path):
    """SIGKILL, as the kernel's out-of-memory killer sends it, to the workers mid-case: their
    cases fail with the likely reason and what to do, the others finish, a re-run does the rest."""
    scans = _scans(tmp_path / "scans", range(4))
    folder = tmp_path / "out"
    process = _subprocess(str(scans), "--out", str(folder), "--model", str(tiny_model_path),
                          "--workers", "2")
    assert process.stdout is not None
    inferring: set[str] = set()
    for line in process.stdout:
        event = json.loads(line)
        if event["stage"] == "segment" and ": inference" in event["message"]:
            # both workers mid-case (a worker still starting up, killed, fails as a start-up)
            inferring.add(event["message"].split(":")[0])
            if len(inferring) == 2:
                for pid in _worker_processes(process.pid):
                    os.kill(pid, signal.SIGKILL)
                break
    _, err = process.communicate(timeout=120)
    killed = [line for line in err.splitlines() if "killed (SIGKILL), most likely by the "
              "out-of-memory killer; run with fewer --workers" in line]
    assert process.returncode == 2 and killed, err
    assert len(killed) == len(err.strip().splitlines()), "every failure is a killed worker's"
    assert len(_cases_done(folder)) + len(killed) == 4
    code, _, err = _batch(str(scans), "--out", str(folder), "--model", str(tiny_model_path))
    assert code == 0 and _cases_done(folder) == {f"case{n}" for n in range(4)}, err


def test_a_folder_made_with_other_settings_is_refused_before_any_work(tiny_model_path, tmp_path):
    scans = _scans(tmp_path / "scans", range(1))
    folder = tmp_path / "out"
    assert _batch(str(scans), "--out", str(folder), "--model", str(tiny_model_path))[0] == 0
    before = {path: path.stat().st_mtime_ns for path in folder.rglob("*")}
    code, _, err = _batch(str(scans), "--out", str(folder), "--model", str(tiny_model_path),
                          "--no-cleanup")
    assert code == 2 and err.count("\n") == 1
    assert "case case0 there was made with other settings (flags differ)" in err
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*")} == before


def test_an_output_folder_inside_the_input_folder_is_refused(tiny_model_path, tmp_path):
    scans = _scans(tmp_path / "scans", range(1))
    code, _, err = _batch(str(scans), "--out", str(scans / "out"), "--model",
                          str(tiny_model_path))
    assert code == 2 and err.count("\n") == 1 and "lies inside the input folder" in err
    assert not (scans / "out").exists()


def _pool_with_a_started_worker(monkeypatch):
    """A worker pool (without processes) whose one worker has started, and the replacements
    it starts."""
    from types import SimpleNamespace

    from DeepOrganSegLib.cohort.pool import _WorkerPool

    pool = object.__new__(_WorkerPool)
    pool.workers, pool.startup_kills = [SimpleNamespace(ready=True, case=None)], 0
    replacements: list[int] = []
    monkeypatch.setattr(pool, "_start", lambda: replacements.append(1))
    return pool, replacements


def _starting_worker(exitcode: int):
    from types import SimpleNamespace

    return SimpleNamespace(ready=False, case=None, process=SimpleNamespace(exitcode=exitcode),
                           lost_reason=lambda: f"exit code {exitcode}")


def test_a_worker_killed_while_starting_is_replaced_while_another_runs(monkeypatch):
    """The out-of-memory killer may pick a worker still loading its model: it is replaced (up
    to MAX_STARTUP_KILLS times) instead of ending the cohort, as it did before."""
    from DeepOrganSegLib.cohort.pool import MAX_STARTUP_KILLS
    from DeepOrganSegLib.errors import InputError

    pool, replacements = _pool_with_a_started_worker(monkeypatch)
    finished: list = []
    for _ in range(MAX_STARTUP_KILLS):
        worker = _starting_worker(-9)
        pool.workers.append(worker)
        pool._lost(worker, finished.append, deque(["case1"]))
    assert len(replacements) == MAX_STARTUP_KILLS and not finished
    worker = _starting_worker(-9)
    pool.workers.append(worker)
    with pytest.raises(InputError, match="could not start"):
        pool._lost(worker, finished.append, deque(["case1"]))


def test_a_worker_that_exits_while_starting_stops_the_batch(monkeypatch):
    """Exiting by itself while starting (an import error, a broken install) is what every
    worker would do: the batch stops at once with the reason."""
    from DeepOrganSegLib.errors import InputError

    pool, replacements = _pool_with_a_started_worker(monkeypatch)
    worker = _starting_worker(1)
    pool.workers.append(worker)
    with pytest.raises(InputError, match=r"could not start \(exit code 1\)"):
        pool._lost(worker, [].append, deque(["case1"]))
    assert not replacements


def test_a_workers_progress_reaches_the_parent_as_plain_text():
    """Task Auto's note is a str subclass that cannot be unpickled: a worker sends its text."""
    from multiprocessing import Pipe

    from DeepOrganSegLib.cohort.pool import ProgressSender
    from DeepOrganSegLib.progress import AutoTaskNote

    parent, child = Pipe()
    ProgressSender(child)("case0", "preprocess", 0.1, AutoTaskNote("task auto: abdomen-ct",
                                                                   "abdomen-ct"))
    assert parent.recv() == ("progress", "case0", "preprocess", 0.1, "task auto: abdomen-ct")


def test_a_cases_memory_is_learned_from_the_peaks_the_workers_measure(tiny_model_path, tmp_path):
    from DeepOrganSegLib.cohort.memory import LEARNED_MARGIN, CaseMemory, case_bytes
    from DeepOrganSegLib.model import read_metadata
    from DeepOrganSegLib.options import SegmentationOptions

    scan = _scans(tmp_path, range(1)) / "case0.nii.gz"
    voxels = read_volume(scan).array.size
    memory = CaseMemory(read_metadata(tiny_model_path), SegmentationOptions())
    assert memory.estimate(scan) == case_bytes(scan, memory.metadata, memory.options) > 0
    memory.learn(scan, peak_bytes=500_000_000 + 1000 * voxels, worker_bytes=500_000_000)
    assert memory.estimate(scan) == int(LEARNED_MARGIN * 1000 * voxels)
