"""A warm refinement engine: one ``deeporganseg refine-session`` child per kept run.

A cold refinement starts Python, imports torch, loads the model and reads the run's image and
probabilities before it refines (about 3 s of a 3.3 s round trip on a real CT). While the
panel's Refine section is open, this child keeps all of that in memory and answers one request
per stdin line, so a stroke costs the refinement and three small files. It holds the run's
image and class probabilities (on the input grid: C float32 channels) for as long as it lives;
it ends with the refinement session, on Cancel, or with Slicer.

No MRML, no Qt: :class:`.refine.RefineJob` sends it requests and polls for the answers.
"""

from __future__ import annotations

import os
from pathlib import Path

from .runner import EngineProcess, refine_session_command

__all__ = ["WarmRefiner"]


class WarmRefiner:
    """The ``refine-session`` child of one kept run: ``ready`` once it has read the run,
    ``alive`` until it ends; :meth:`request` sends a refinement, :meth:`answer` polls for it."""

    def __init__(self, input_path: Path, probabilities_path: Path, model: Path, task: str,
                 python: str, *, environment: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> None:
        self.process = EngineProcess(
            refine_session_command(input_path, probabilities=probabilities_path, model=model,
                                   task=task, python=python),
            env=environment, cwd=cwd, interactive=True)
        self.process.start()
        self.ready = False
        self._answers: list[dict] = []

    @property
    def alive(self) -> bool:
        """Whether the child still runs (polls it)."""
        self._collect()
        return not self.process.finished

    def request(self, segmentation: Path, scribbles: Path, output: Path) -> bool:
        """Ask for one refinement (the files of ``deeporganseg refine``); False when the child
        is gone. One request at a time: wait for its :meth:`answer` before the next."""
        self._answers.clear()
        return self.process.send({"segmentation": str(segmentation),
                                  "scribbles": str(scribbles), "output": str(output)})

    def answer(self) -> dict | None:
        """The answer to the last request once it came (``{"output": PATH, "seconds": S}`` or
        ``{"error": ONE LINE, "exit_code": N}``), else None; never blocks."""
        self._collect()
        return self._answers.pop(0) if self._answers else None

    def close(self) -> None:
        """End the child (SIGTERM: an idle session exits at once); never blocks."""
        self.process.cancel()

    def _collect(self) -> None:
        self.process.poll()
        while self.process.replies:
            reply = self.process.replies.popleft()
            if reply.get("ready"):
                self.ready = True
            else:
                self._answers.append(reply)
