"""Progress reporting and cooperative cancellation for long engine work, and the JSON-lines
progress protocol between the engine process and whoever follows it.

Engine functions take a ``progress`` callable ``(stage, fraction, message)`` and a
:class:`CancelToken`; they report at every unit of work and call ``token.raise_if_cancelled()``
between units, so a cancel takes effect within one tile / one CRF iteration.

``deeporganseg ... --progress json`` writes one JSON object per line on stdout
(:class:`JsonProgress`), ``{"stage": ..., "fraction": 0..1 overall, "message": ...}`` (plus
``"auto_task": ...`` on the line that reports task Auto's choice, an :class:`AutoTaskNote`), and
on failure a last ``{"stage": "error", "message": ..., "exit_code": N}``; the Slicer side reads
them back with :func:`parse_progress_line` (lines without ``auto_task`` parse as before). Writer
and parser live here together so that the protocol has one home; this module stays free of
torch (the Slicer module loads the parser into Slicer's own process).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Callable

from .errors import Cancelled

__all__ = ["CancelToken", "no_progress", "AutoTaskNote", "ProgressEvent", "JsonProgress",
           "parse_progress_line"]


def no_progress(stage: str, fraction: float, message: str = "") -> None:
    """A progress callback that ignores everything."""


class CancelToken:
    """A thread-safe flag that long-running work polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


ProgressFunction = Callable[[str, float, str], None]


class AutoTaskNote(str):
    """The progress message that reports task Auto's choice: its text is the status line for
    people, :attr:`auto_task` the task chosen. A ``str``, so that every progress function takes
    it as it is and passes it on unchanged; :class:`JsonProgress` writes :attr:`auto_task` as
    the line's own field, so that the Slicer side never parses the text."""

    auto_task: str

    def __new__(cls, text: str, auto_task: str) -> AutoTaskNote:
        note = super().__new__(cls, text)
        note.auto_task = auto_task
        return note


@dataclass(frozen=True)
class ProgressEvent:
    """One ``--progress json`` line: stage, overall fraction (0-1) and a message.

    The engine's last line on failure has ``stage == "error"`` and carries its exit code; the
    line that reports task Auto's choice carries the task chosen in ``auto_task``."""

    stage: str
    fraction: float
    message: str = ""
    exit_code: int | None = None
    auto_task: str | None = None


class JsonProgress:
    """A progress callback that writes one JSON object per line on stdout, for the Slicer module
    to parse. A ``warning`` event carries the overall fraction reached so far, so that
    fractions never decrease."""

    def __init__(self) -> None:
        self.fraction = 0.0

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if stage == "warning":
            fraction = self.fraction
        self.fraction = fraction
        line: dict[str, object] = {"stage": stage, "fraction": fraction, "message": message}
        if isinstance(message, AutoTaskNote):
            line["auto_task"] = message.auto_task
        print(json.dumps(line), flush=True)

    def error(self, message: str, exit_code: int) -> None:
        """The last line of a failed run: why, and the process's exit code."""
        print(json.dumps({"stage": "error", "message": message, "exit_code": exit_code}),
              flush=True)

    def close(self) -> None:
        """Nothing to release: every line is flushed as it is written."""


def parse_progress_line(line: str) -> ProgressEvent | None:
    """The progress event on ``line``, or None for anything else (warnings, library chatter)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("stage"), str):
        return None
    try:
        fraction = min(max(float(data.get("fraction", 0.0)), 0.0), 1.0)
    except (TypeError, ValueError):
        fraction = 0.0
    exit_code, auto_task = data.get("exit_code"), data.get("auto_task")
    return ProgressEvent(stage=data["stage"], fraction=fraction,
                         message=str(data.get("message", "")),
                         exit_code=exit_code if isinstance(exit_code, int) else None,
                         auto_task=auto_task if isinstance(auto_task, str) else None)
