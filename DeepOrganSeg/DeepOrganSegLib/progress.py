"""Progress reporting and cooperative cancellation for long engine work.

Engine functions take a ``progress`` callable ``(stage, fraction, message)`` and a
:class:`CancelToken`; they report at every unit of work and call ``token.raise_if_cancelled()``
between units, so a cancel takes effect within one tile / one CRF iteration.
"""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from .errors import Cancelled

__all__ = ["ProgressCallback", "CancelToken", "no_progress"]


class ProgressCallback(Protocol):
    def __call__(self, stage: str, fraction: float, message: str = "") -> None: ...


def no_progress(stage: str, fraction: float, message: str = "") -> None:
    """A progress callback that ignores everything."""


class CancelToken:
    """A thread-safe flag that long-running work polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


ProgressFunction = Callable[[str, float, str], None]
