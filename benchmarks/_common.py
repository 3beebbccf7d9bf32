"""What several benchmarks share: the ``--quick`` flag, markdown table rows, "skipped" lines for
what is not installed here, the peak resident memory of this process or of a command, and a tiny
model file.

Every benchmark is run as a script (``python benchmarks/NAME.py``), so this directory is first
on ``sys.path`` and ``from _common import ...`` finds this file; the leading underscore keeps it
out of the benchmarks that ``Testing/test_benchmarks.py`` runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

QUICK_HELP = ("tiny inputs, one repeat: runs the benchmark's whole code path in seconds and prints "
              "the same tables (CI runs it so that no benchmark rots)")


def add_quick_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--quick`` flag, with one wording in every benchmark's ``--help``."""
    parser.add_argument("--quick", action="store_true", help=QUICK_HELP)


def print_header(*columns: str) -> None:
    """A markdown table's header and separator line (docs/benchmarks.md pastes the tables)."""
    print_row(*columns)
    print("|" + "---|" * len(columns), flush=True)


def print_row(*cells: object) -> None:
    """One markdown table row, flushed at once so that a long run shows what it has."""
    print("| " + " | ".join(str(cell) for cell in cells) + " |", flush=True)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it."""
    return importlib.util.find_spec(module) is not None


def report_skipped(what: str, why: str) -> None:
    """One line saying that ``what`` was not measured and why (an optional package or device
    absent): a benchmark goes on without it instead of failing."""
    print(f"skipped: {what} ({why})", flush=True)


def status_kb(field: str) -> int:
    """A memory figure of this process from ``/proc/self/status`` (``VmRSS``, ``VmHWM``), kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss_kb() -> int:
    """Reset this process's peak resident set size (``VmHWM``) to the current one and return
    that, so that the next reading of ``VmHWM`` is the peak of what follows alone (Linux:
    ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")
    return status_kb("VmRSS")


_MEASURE = """
import json, os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.write(json.dumps({"wall_s": time.perf_counter() - started,
                             "peak_rss_kib": usage.ru_maxrss}) + "\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(command: list[str]) -> list[str]:
    """``command`` started by a small launcher process that writes, as the last line of its
    stderr, the command's wall time and peak resident memory (:func:`measurement`); the
    command's own stdout and stderr pass through. A command started straight from a benchmark
    process would report that process's peak as its own if it is larger: Linux keeps a
    process's resident high-water mark across ``exec``, so a child forked from a 2 GB process
    starts at 2 GB (``ru_maxrss``)."""
    return [sys.executable, "-c", _MEASURE, *command]


def measurement(stderr: str) -> tuple[float, float]:
    """Wall time (s) and peak resident memory (GB) of a :func:`measured` command, from its
    stderr."""
    record = json.loads(stderr.strip().splitlines()[-1])
    return float(record["wall_s"]), float(record["peak_rss_kib"]) * 1024 / 1e9


def tiny_model(folder: Path, steps: int = 5) -> Path:
    """A valid single-stage model file in ``folder``: ``Testing/helpers.py``'s tiny DSN (one
    abdomen-ct task, liver and spleen) trained for ``steps`` steps, about a second. Its weights
    are poor: it is for exercising code paths, not for Dice."""
    sys.path.insert(0, str(ROOT / "Testing"))
    from helpers import train_tiny_model

    return train_tiny_model(folder / "tiny.safetensors", steps=steps)
