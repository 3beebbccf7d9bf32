"""Errors the engine raises on purpose, each mapped to a documented exit code of the CLI.

Their message is one line that says what is wrong and what to do; the CLI prints it without a
traceback. Anything else that escapes is a bug (exit code 1).
"""

from __future__ import annotations

__all__ = ["DeepOrganSegError", "InputError", "ModelFileError", "Cancelled", "EXIT_OK",
           "EXIT_INTERNAL", "EXIT_BAD_INPUT", "EXIT_CANCELLED"]

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
