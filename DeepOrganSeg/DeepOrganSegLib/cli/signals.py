"""Cancellation by signal: SIGINT/SIGTERM set the run's :class:`CancelToken`, and a run that
does not unwind in time ends with a hard exit (code 3) that leaves no partial file behind."""

from __future__ import annotations

import os
import signal
import sys
import threading

from ..errors import EXIT_CANCELLED
from ..progress import CancelToken

__all__ = ["CANCEL_GRACE_S", "SignalCancellation", "hard_exit"]

#: Seconds a cancelled run may take to unwind before the process exits hard with code 3.
CANCEL_GRACE_S = 1.0


def hard_exit() -> None:
    """Exit now with code 3, deleting the temporary files of writes in progress."""
    from ..volume_io import remove_pending_temporaries

    remove_pending_temporaries()
    sys.stderr.write("error: cancelled by the user\n")
    sys.stderr.flush()
    os._exit(EXIT_CANCELLED)


class SignalCancellation:
    """While active, SIGINT/SIGTERM cancel the run: ``token`` is set at once and, if the work
    has not unwound within ``grace_s`` seconds, the process exits hard with code 3 (a second
    signal exits at once). Outputs are renamed into place only when complete and the hard exit
    deletes pending temporaries, so an exit at any point leaves no partial file.

    On POSIX the signals are blocked and taken by a watcher thread, so that a cancel takes
    effect even while the main thread sits in a long native call (reading or writing a large
    image, a torch operation) that would hold back a Python signal handler. A Python handler
    does the same for signals that reach a thread which does not block them (one started
    before, e.g. by an imported library). Either way the work stops at its next cancel check,
    never in the middle of arbitrary code. Leaving the context restores the previous handling:
    ``main`` also runs in-process (tests, scripts)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, token: CancelToken, grace_s: float = CANCEL_GRACE_S) -> None:
        self.token, self.grace_s = token, grace_s
        self._active = False
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._previous_handlers: dict = {}
        self._previous_mask: set | None = None

    def __enter__(self) -> "SignalCancellation":
        self._active = threading.current_thread() is threading.main_thread()
        if not self._active:
            return self
        self._previous_handlers = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        if hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigtimedwait"):
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
            self._watcher = threading.Thread(target=self._watch, name="deeporganseg-signals",
                                             daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exception) -> None:
        if not self._active:
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._stopped.set()
            self._watcher.join()
            assert self._previous_mask is not None  # __enter__ sets it before the watcher
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)

    def _watch(self) -> None:
        while not self._stopped.is_set():
            if signal.sigtimedwait(self.SIGNALS, 0.1) is not None:
                self._cancel()

    def _handle(self, signum, frame) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self.token.cancelled:
            hard_exit()
        self.token.cancel()
        self._timer = threading.Timer(self.grace_s, hard_exit)
        self._timer.daemon = True
        self._timer.start()
