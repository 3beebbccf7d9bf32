"""A ``deeporganseg serve`` process for tests (the server's own tests, and the Slicer Logic's
runs on a server): started on a free port of localhost, its URL read from its first line, its
jobs' temporary files in a folder of the test's own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

#: The longest any wait here may take before the test fails (never reached when all is well).
PATIENCE_S = 60.0


class Served:
    """A ``deeporganseg serve`` process: its URL, and the folder its jobs' files live in."""

    def __init__(self, model: Path, folder: Path, *flags: str) -> None:
        self.jobs_folder = folder / "tmp"
        self.jobs_folder.mkdir(parents=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "DeepOrganSegLib", "serve", "--port", "0", "--model",
             str(model), *flags], stdout=subprocess.PIPE, stderr=(folder / "log").open("w"),
            text=True, env={**os.environ, "TMPDIR": str(self.jobs_folder)})
        line = line_within(self.process, PATIENCE_S)
        match = re.search(r"(https?://\S+)", line)
        assert match, f"serve said {line!r}"
        self.url = match.group(1)

    def job_folders(self) -> list[Path]:
        return [job for root in self.jobs_folder.glob("deeporganseg-serve-*")
                for job in root.iterdir()]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=PATIENCE_S)


def line_within(process: subprocess.Popen, timeout_s: float) -> str:
    """The first line ``process`` prints, or a failure after ``timeout_s``."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert lines and lines[0], "the server did not start"
    return lines[0]
