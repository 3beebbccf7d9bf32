"""Errors the engine raises on purpose, each mapped to a documented exit code of the CLI.

Their message is one line that says what is wrong and what to do; the CLI prints it without a
traceback. Anything else that escapes is a bug (exit code 1). :meth:`Failure.of` is the one
place where any exception becomes the line a person reads and its exit code, made
:func:`printable` there: what ``deeporganseg`` prints and what ``deeporganseg batch`` records
for a failed case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DeepOrganSegError", "InputError", "ModelFileError", "Cancelled", "EXIT_OK",
           "EXIT_INTERNAL", "EXIT_BAD_INPUT", "EXIT_CANCELLED", "printable", "Failure"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 3


class DeepOrganSegError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""

    exit_code = EXIT_INTERNAL


class InputError(DeepOrganSegError, ValueError):
    """The user's input (volume, flags, output location) cannot be used."""

    exit_code = EXIT_BAD_INPUT


class ModelFileError(InputError):
    """A model file is malformed, incompatible or unsafe; nothing of it was executed."""


class Cancelled(DeepOrganSegError):
    """The run was cancelled by the user (cancel token set, SIGINT or SIGTERM)."""

    exit_code = EXIT_CANCELLED


#: Characters that must not reach a terminal or a log as they are: C0 controls (newline,
#: carriage return, ESC of ANSI sequences), DEL, C1 controls, the line and paragraph separators
#: and the bidirectional overrides and isolates (which reorder the text around them).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character written as its Python escape (``\\n``,
    ``\\x1b``, ``\\u202e``): a message that quotes a file's name or bytes stays one line and
    cannot move the cursor, recolour or clear a terminal, or split a log record."""
    return _CONTROL.sub(lambda match: ascii(match.group())[1:-1], text)


@dataclass(frozen=True)
class Failure:
    """Why a run (or one case of a batch) failed: a one-line ``message`` for a person
    (:func:`printable`), the exit code it maps to, and whether it is a ``bug`` (an unexpected
    exception, whose traceback is worth keeping)."""

    message: str
    exit_code: int
    bug: bool = False

    @classmethod
    def of(cls, error: BaseException) -> Failure:
        """The failure ``error`` stands for: its own message for the engine's errors, a fixed
        line for an interrupt, exhausted memory (Python's or PyTorch's) or a missing package,
        and ``internal error (...)`` with the first line (not blank) of anything else."""
        if isinstance(error, DeepOrganSegError):
            return cls(printable(str(error)), error.exit_code)
        if isinstance(error, KeyboardInterrupt):
            return cls("cancelled by the user", EXIT_CANCELLED)
        if isinstance(error, MemoryError) or _out_of_memory(error):
            return cls("out of memory; crop the volume or lower --memory-budget-gb",
                       EXIT_INTERNAL)
        if isinstance(error, ModuleNotFoundError):  # an install problem, not a bug
            return cls(printable(f"the Python package '{error.name}' is missing; install "
                                 f"DeepOrganSeg's requirements (pip install -e ., or in Slicer "
                                 f"click Segment and accept the install)"), EXIT_BAD_INPUT)
        first_line = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        return cls(printable(f"internal error ({type(error).__name__}: {first_line}); set "
                             f"DEEPORGANSEG_DEBUG=1 and report it"), EXIT_INTERNAL, bug=True)


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is PyTorch running out of memory: ``torch.OutOfMemoryError`` (a GPU's)
    or the CPU allocator's RuntimeError (told by its message; this module loads no torch)."""
    return type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))
