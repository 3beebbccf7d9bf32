"""The ``deeporganseg`` program: its parser, built from an explicit list of sub-command
modules, and :func:`main`, which sets the process up, runs one handler under signal
cancellation and turns every failure into one ``error: ...`` line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType
from typing import Sequence

from ..errors import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_INTERNAL, DeepOrganSegError
from ..progress import CancelToken, JsonProgress, no_progress
from .reporters import Reporter, make_reporter, with_warnings
from .signals import SignalCancellation

__all__ = ["build_parser", "main"]


def _commands() -> tuple[ModuleType, ...]:
    """The sub-command modules, in the order ``--help`` lists them. Imported on demand: some
    load torch at import, which must come after :func:`main` has set ``OMP_WAIT_POLICY``."""
    from . import demo, info, phantom, refine, refine_session, regions, segment

    return (segment, refine, refine_session, info, phantom, demo, regions)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="deeporganseg", description="3D DSN organ segmentation with a dense 3D CRF.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in _commands():
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin while waiting slow torch 3-6x on a shared or busy machine
    # (measured with the CRF on 2 cores); it takes effect if torch is not yet imported, which
    # holds for the command line: every command imports torch lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    reporter = make_reporter(getattr(args, "progress", "none"))
    progress = with_warnings(reporter or no_progress)
    cancel = CancelToken()
    failure: tuple[str, int] | None = None
    try:
        with SignalCancellation(cancel):
            code = args.handler(args, progress, cancel)
        sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
    except DeepOrganSegError as error:
        failure = (str(error), error.exit_code)
    except KeyboardInterrupt:
        failure = ("cancelled by the user", EXIT_CANCELLED)
    except BrokenPipeError:  # whoever read stdout went away (`info | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CANCELLED
    except MemoryError:
        failure = ("out of memory; crop the volume or lower --memory-budget-gb", EXIT_INTERNAL)
    except ModuleNotFoundError as error:  # an install problem, not a bug
        failure = (f"the Python package '{error.name}' is missing; install DeepOrganSeg's "
                   f"requirements (pip install -e ., or in Slicer click Segment and accept the "
                   f"install)", EXIT_BAD_INPUT)
    except Exception as error:  # a bug: say so in one line, keep the traceback for debugging
        if os.environ.get("DEEPORGANSEG_DEBUG"):
            raise
        first_line = str(error).splitlines()[0] if str(error) else ""
        failure = (f"internal error ({type(error).__name__}: {first_line}); "
                   f"set DEEPORGANSEG_DEBUG=1 and report it", EXIT_INTERNAL)
    finally:
        if reporter is not None:
            reporter.close()  # before the error line, so no progress bar shares its line
    if failure is None:
        return code
    return _report_failure(*failure, reporter)


def _report_failure(message: str, code: int, reporter: Reporter | None) -> int:
    """Say why the run failed (a last JSON line too with ``--progress json``); ``code``."""
    if isinstance(reporter, JsonProgress):
        reporter.error(message, code)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code
