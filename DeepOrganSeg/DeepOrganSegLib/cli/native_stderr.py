"""Quiet native readers: ITK's (niftilib, teem, GDCM) print multi-line diagnostics straight to
file descriptor 2, which would bury the command's one-line ``error: ...``."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

__all__ = ["native_stderr_silenced"]


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """While the block runs, file descriptor 2 points to the null device, so that a failure
    shows our one line only (the reason is in the exception)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
