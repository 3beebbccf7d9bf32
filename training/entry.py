"""Entry point of the training scripts: an expected failure (a bad model file, a data set or
phantom kind that does not exist, an unreadable file) ends with one ``error:`` line and the
engine's exit code (2 for bad input, 3 for Ctrl-C), not a traceback. Anything else is a bug and keeps its
traceback. Every line is :func:`printable`: a file's name or bytes quoted in a message
cannot split the line or reach the terminal as an escape sequence. Ctrl-C while a script is
still importing (torch: a second or two) ends the same way
(:func:`interrupt_quietly_while_starting`)."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Callable

from DeepOrganSegLib.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, DeepOrganSegError, printable

__all__ = ["interrupt_quietly_while_starting", "run_script"]


def interrupt_quietly_while_starting() -> None:
    """Until :func:`run_script` takes over, Ctrl-C ends the process with one ``error:`` line
    and the cancel exit code instead of a ``KeyboardInterrupt`` traceback from inside an import.
    Every script calls it first when run as a file; imported as a module, a script leaves the
    process's handler alone, and so does a process started with Ctrl-C ignored (``nohup``, a
    shell's background job)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _cancelled_while_starting)


def _cancelled_while_starting(signum: int, frame: FrameType | None) -> None:
    print("error: cancelled by the user", file=sys.stderr)
    raise SystemExit(EXIT_CANCELLED)


def run_script(main: Callable[[], int]) -> int:
    """``main()``, with expected failures turned into one line on stderr and an exit code."""
    if signal.getsignal(signal.SIGINT) is _cancelled_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # main's own Ctrl-C: below
    try:
        return main()
    except DeepOrganSegError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: cancelled by the user", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {printable(where + str(error.strerror or error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
