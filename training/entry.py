"""Entry point of the training scripts: an expected failure (a bad model file, a data set or
phantom kind that does not exist, an unreadable file) ends with one ``error:`` line and the
engine's exit code (2 for bad input, 3 for Ctrl-C), not a traceback. Anything else is a bug and keeps its
traceback. Every line is :func:`printable`: a file's name or bytes quoted in a message
cannot split the line or reach the terminal as an escape sequence."""

from __future__ import annotations

import sys
from typing import Callable

from DeepOrganSegLib.errors import EXIT_BAD_INPUT, EXIT_CANCELLED, DeepOrganSegError, printable

__all__ = ["run_script"]


def run_script(main: Callable[[], int]) -> int:
    """``main()``, with expected failures turned into one line on stderr and an exit code."""
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
