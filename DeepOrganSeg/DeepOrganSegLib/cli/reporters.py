"""How a command shows its progress: JSON lines for the Slicer module
(:class:`DeepOrganSegLib.progress.JsonProgress`), a tqdm bar for a person, or nothing; and
``warning`` events as ``warning: ...`` lines on stderr whatever the choice."""

from __future__ import annotations

import argparse
import sys
from typing import Union

from ..errors import printable
from ..progress import JsonProgress, ProgressFunction

__all__ = ["PROGRESS_KINDS", "Reporter", "BarProgress", "add_progress_option", "make_reporter",
           "with_warnings"]

#: The values of ``--progress``.
PROGRESS_KINDS = ("bar", "json", "none")


class BarProgress:
    """A tqdm bar on stderr showing the overall fraction and the current stage."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1000, unit="‰", file=sys.stderr, leave=False,
                        bar_format="{desc:<40} {percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.bar.set_description_str(f"{stage}: {message}"[:40], refresh=False)
        self.bar.update(max(0, int(fraction * 1000) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


Reporter = Union[JsonProgress, BarProgress]


def add_progress_option(parser: argparse.ArgumentParser, default: str) -> None:
    """The ``--progress bar|json|none`` option of a sub-command."""
    parser.add_argument("--progress", choices=PROGRESS_KINDS, default=default)


def make_reporter(kind: str) -> Reporter | None:
    """The reporter for ``--progress kind``; None for ``none``."""
    return JsonProgress() if kind == "json" else BarProgress() if kind == "bar" else None


def with_warnings(progress: ProgressFunction) -> ProgressFunction:
    """``progress`` that also prints ``warning`` events as ``warning: ...`` lines on stderr."""

    def report(stage: str, fraction: float, message: str = "") -> None:
        if stage == "warning":
            print(f"warning: {printable(message)}", file=sys.stderr, flush=True)
        progress(stage, fraction, message)

    return report
