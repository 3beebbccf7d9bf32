"""The ``deeporganseg`` command line (also what the Slicer module runs as a subprocess).

Exit codes: 0 ok, 1 internal error, 2 bad input, 3 cancelled (SIGINT/SIGTERM). Expected failures
print one line, ``error: ...``, and no traceback (set ``DEEPORGANSEG_DEBUG=1`` to see one).
With ``--progress json`` stdout carries one JSON object per line,
``{"stage": ..., "fraction": 0..1 overall, "message": ...}``; a failure ends with
``{"stage": "error", "message": ..., "exit_code": N}`` (:mod:`DeepOrganSegLib.progress`).

Modules: ``app`` (the parser with its explicit list of sub-commands, :func:`main`, failure
reporting), ``signals`` (cancel on SIGINT/SIGTERM), ``reporters`` (progress bar, warnings),
``native_stderr`` (quiet native readers), and one module per sub-command, each with
``add_parser(subparsers)`` and the handler it registers: ``segment``, ``refine``, ``info``,
``phantom``, ``demo``, ``regions``. Importing the package imports neither torch nor a
sub-command: :func:`main` sets process settings before anything loads torch.
"""

from .app import build_parser, main

__all__ = ["main", "build_parser"]
