"""The ``deeporganseg`` program: its parser, built from an explicit list of sub-command
modules, and :func:`main`, which sets the process up, runs one handler under signal
cancellation and turns every failure into one ``error: ...`` line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType
from typing import Sequence

from ..errors import EXIT_CANCELLED, Failure
from ..progress import CancelToken, JsonProgress, no_progress
from .reporters import Reporter, make_reporter, with_warnings
from .signals import SignalCancellation

__all__ = ["build_parser", "main"]


def _commands() -> tuple[ModuleType, ...]:
    """The sub-command modules, in the order ``--help`` lists them. Imported on demand: some
    load torch at import, which must come after :func:`main` has set ``OMP_WAIT_POLICY``."""
    from . import batch, demo, info, phantom, refine, refine_session, regions, segment, serve

    return (segment, batch, refine, refine_session, info, phantom, demo, regions, serve)


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
    # a command may show its progress its own way (batch: a bar over its cases)
    reporter = getattr(args, "reporter", make_reporter)(getattr(args, "progress", "none"))
    progress = with_warnings(reporter or no_progress)
    cancel = CancelToken()
    failure: Failure | None = None
    try:
        with SignalCancellation(cancel):
            code = args.handler(args, progress, cancel)
        sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
    except BrokenPipeError:  # whoever read stdout went away (`info | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CANCELLED
    except (Exception, KeyboardInterrupt) as error:
        failure = Failure.of(error)
        if failure.bug and os.environ.get("DEEPORGANSEG_DEBUG"):
            raise  # a bug: keep the traceback for debugging
    finally:
        if reporter is not None:
            reporter.close()  # before the error line, so no progress bar shares its line
    if failure is None:
        return code
    return _report_failure(failure, reporter)


def _report_failure(failure: Failure, reporter: Reporter | None) -> int:
    """Say why the run failed, on one line whatever the message quotes (a last JSON line too
    with ``--progress json``); its exit code."""
    if isinstance(reporter, JsonProgress):
        reporter.error(failure.message, failure.exit_code)
    print(f"error: {failure.message}", file=sys.stderr, flush=True)
    return failure.exit_code
