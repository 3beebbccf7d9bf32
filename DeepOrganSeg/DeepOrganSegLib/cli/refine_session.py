"""``deeporganseg refine-session``: a warm engine for stroke corrections.

The image, the class probabilities and the model of one ``segment`` run are read once; then each
line on stdin asks for one refinement (a JSON object naming the current segmentation, the strokes
and the output file) and one JSON line on stdout answers it. A stroke's round trip then costs the
refinement itself and three small files, not starting Python, importing torch, loading the model
and reading the probabilities again (3.2 s of a 3.3 s ``deeporganseg refine`` on a real CT): the
Slicer panel keeps this process while its Refine section is open.

Request: ``{"segmentation": PATH, "scribbles": PATH, "output": PATH}`` (the same meaning as
``deeporganseg refine``'s arguments). Answer: ``{"output": PATH, "seconds": S}``, or ``{"error":
ONE LINE, "exit_code": 2}`` for a request that cannot be served (the session goes on). The first
line the session prints is ``{"ready": true, "seconds": S}``. The session ends at the end of
stdin (exit 0) or on SIGINT/SIGTERM (exit 3).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, DeepOrganSegError, InputError
from ..progress import CancelToken, ProgressFunction
from ..resources import default_model_path
from .native_stderr import native_stderr_silenced
from .refine import add_segment_run_options

if TYPE_CHECKING:
    import numpy as np

    from ..model import ModelMetadata
    from ..volume import Volume

__all__ = ["add_parser", "run", "REQUEST_FIELDS"]

#: Seconds between cancel checks while the session waits for a request.
_POLL_S = 0.2

#: The fields of a request line, each a file path.
REQUEST_FIELDS = ("segmentation", "scribbles", "output")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg refine-session``."""
    parser = subparsers.add_parser(
        "refine-session", help="a warm engine for stroke refinements, one request per line",
        description="Read INPUT, the probabilities and the model once, then refine one "
                    "request per stdin line: {\"segmentation\": PATH, \"scribbles\": PATH, "
                    "\"output\": PATH}, answered by one JSON line on stdout.",
        epilog="The first line printed is {\"ready\": true, ...}; a request that cannot be "
               "served is answered {\"error\": ..., \"exit_code\": 2} and the session goes on. "
               "It ends at the end of stdin (exit 0) or on SIGINT/SIGTERM (exit 3).")
    parser.add_argument("input", help="the image that was segmented")
    add_segment_run_options(parser)
    parser.set_defaults(handler=run, progress="none")


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Read the session's files, say ready, then answer requests until stdin ends."""
    from ..model import load_model
    from ..volume_io import read_probabilities, read_volume

    started = time.perf_counter()
    model_path = args.model or default_model_path()
    model = load_model(model_path)
    with native_stderr_silenced():
        image = read_volume(args.input)
        probabilities, probability_grid = read_probabilities(args.probabilities)
    session = _Session(image, probabilities, probability_grid, model.metadata, args.task,
                       inputs=[args.input, args.probabilities, str(model_path)])
    _answer({"ready": True, "seconds": round(time.perf_counter() - started, 3)})
    for line in _request_lines(cancel):
        if line.strip():
            _answer(session.serve(line, cancel))
    return EXIT_OK


def _request_lines(cancel: CancelToken) -> Iterator[str]:
    """The lines of stdin until it ends, read by a helper thread so that the main thread keeps
    running Python while it waits: a SIGINT/SIGTERM handled there cancels an idle session at
    once (a main thread blocked in ``read`` would never run the handler)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="deeporganseg-requests", daemon=True).start()
    while True:
        cancel.raise_if_cancelled()
        try:
            line = lines.get(timeout=_POLL_S)
        except queue.Empty:
            continue
        if line is None:
            cancel.raise_if_cancelled()  # a signal that came with the end of stdin still cancels
            return
        yield line


class _Session:
    """The files of one segment run, in memory, and how one request line is served."""

    def __init__(self, image: Volume, probabilities: np.ndarray, probability_grid: Volume,
                 metadata: ModelMetadata, task: str | None, inputs: list[str]) -> None:
        self.image, self.probabilities = image, probabilities
        self.probability_grid, self.metadata, self.task = probability_grid, metadata, task
        self.inputs = inputs

    def serve(self, line: str, cancel: CancelToken) -> dict[str, Any]:
        """The answer to one request line: the output written, or why not (one line)."""
        started = time.perf_counter()
        try:
            output = self._refine(_parse_request(line), cancel)
        except DeepOrganSegError as error:
            if error.exit_code != EXIT_BAD_INPUT:
                raise  # cancelled: the session ends
            return {"error": str(error), "exit_code": error.exit_code}
        except MemoryError:
            return {"error": "out of memory", "exit_code": EXIT_INTERNAL}
        return {"output": str(output), "seconds": round(time.perf_counter() - started, 3)}

    def _refine(self, request: dict[str, str], cancel: CancelToken) -> Path:
        from ..labelmap_io import write_labelmap
        from ..outputs import check_output_path, check_outputs_spare_inputs
        from ..refine import refine_volume
        from ..volume_io import read_volume

        check_outputs_spare_inputs([request["output"]], [
            *self.inputs, request["segmentation"], request["scribbles"]])
        output = check_output_path(request["output"])
        with native_stderr_silenced():
            segmentation = read_volume(request["segmentation"])
            scribbles = read_volume(request["scribbles"])
        labels, task = refine_volume(self.image, segmentation, self.probabilities,
                                     self.probability_grid, scribbles, self.metadata, self.task,
                                     cancel=cancel)
        return write_labelmap(labels, output, list(task.labels))


def _parse_request(line: str) -> dict[str, str]:
    """The request of one stdin line, checked: a JSON object with the three path fields."""
    try:
        request = json.loads(line)
    except json.JSONDecodeError:
        raise InputError("a request must be one JSON object per line") from None
    if not isinstance(request, dict) or any(
            not isinstance(request.get(field), str) or not request[field]
            for field in REQUEST_FIELDS):
        raise InputError("a request needs the paths " + ", ".join(REQUEST_FIELDS))
    return {field: request[field] for field in REQUEST_FIELDS}


def _answer(document: dict[str, Any]) -> None:
    print(json.dumps(document), flush=True)
