"""No benchmark may rot (issue 31): every ``benchmarks/NAME.py --quick`` runs the benchmark's own
code path on tiny inputs in seconds, exits 0 and prints its table.

Scripts are found by file name, so a benchmark is covered from the commit that adds it; files
whose names start with ``_`` are code the benchmarks share, not benchmarks. Each runs in a fresh
process, as a user runs it. What a benchmark compares against and is not installed here
(pydensecrf2, SimpleCRF, MONAI, a GPU) is reported as skipped by the script, not failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_"))

#: Seconds one ``--quick`` run may take on CI's 2 cores.
TIMEOUT_S = 90

#: Runs at a time. Much of a quick run is Python starting, importing and generating phantoms on
#: one core, so two at a time keep CI's 2 cores busy: the file takes about half as long.
PARALLEL = 2

#: A markdown table's separator line and a row under it: what every benchmark prints.
TABLE_ROW = re.compile(r"^\|(?: *:?-+:? *\|)+\n\|.*\|$", re.MULTILINE)

QuickRun = Future[subprocess.CompletedProcess[str]]


def run_quick(script: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/SCRIPT --quick`` from the repository root, as a user runs it; fails
    the test for a script without a ``--quick`` mode or one that runs over :data:`TIMEOUT_S`."""
    source = (BENCHMARKS / script).read_text(encoding="utf-8")
    if "--quick" not in source and "add_quick_flag" not in source:
        pytest.fail(f"benchmarks/{script} has no --quick mode: give it one (tiny inputs, one "
                    f"repeat, the same tables; benchmarks/_common.py: add_quick_flag) so that "
                    f"CI runs it")
    environment = {**os.environ,
                   "PYTHONPATH": os.pathsep.join([str(ROOT / "DeepOrganSeg"),
                                                  os.environ.get("PYTHONPATH", "")]),
                   # OpenMP threads that spin at every barrier wait for a peer that the other
                   # run has descheduled (docs/benchmarks.md, "OpenMP wait policy")
                   "OMP_WAIT_POLICY": "PASSIVE"}
    try:
        return subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick"], cwd=ROOT,
                              env=environment, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout
        pytest.fail(f"benchmarks/{script} --quick ran over {TIMEOUT_S} s: --quick must take "
                    f"seconds (smaller inputs, one repeat). Its output so far:\n{output}")


@pytest.fixture(scope="module")
def quick_runs(request: pytest.FixtureRequest) -> Iterator[dict[str, QuickRun]]:
    """The ``--quick`` run of every benchmark this session selected, started at once,
    :data:`PARALLEL` at a time; each test waits for its own."""
    selected = [str(item.callspec.params["script"]) for item in request.session.items
                if isinstance(item, pytest.Function) and item.module is request.module
                and hasattr(item, "callspec")]
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        yield {script: pool.submit(run_quick, script) for script in selected}


def test_the_benchmarks_are_found() -> None:
    assert {"crf.py", "gpu.py", "inference.py", "training_speed.py"} <= set(SCRIPTS)
    assert "_common.py" not in SCRIPTS


def test_a_benchmark_without_quick_mode_fails_saying_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "BENCHMARKS", tmp_path)
    (tmp_path / "new.py").write_text("print('| a full run |')\n", encoding="utf-8")
    with pytest.raises(pytest.fail.Exception, match="new.py has no --quick mode: give it one"):
        run_quick("new.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_mode_runs_and_prints_a_table(script: str, quick_runs: dict[str, QuickRun]) -> None:
    result = quick_runs[script].result()
    assert result.returncode == 0, (
        f"benchmarks/{script} --quick exited {result.returncode}:\n{result.stderr[-3000:]}")
    assert TABLE_ROW.search(result.stdout), (
        f"benchmarks/{script} --quick printed no markdown table row:\n{result.stdout[-3000:]}")
