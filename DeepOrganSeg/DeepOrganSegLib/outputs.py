"""Where outputs may go: checked before any work, so that a run never fails at its end on a
folder it cannot write, never writes over an input, and never runs out of disk half-way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError

__all__ = ["LABELMAP_SUFFIXES", "check_output_path", "check_outputs_spare_inputs",
           "check_free_space"]

LABELMAP_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] = LABELMAP_SUFFIXES
                      ) -> Path:
    """Fail early (before any inference) on an output that is a folder, an unsupported suffix
    or an unwritable folder. A folder is named first: ``segment ct.nii.gz results/`` means a
    file inside it, not an unknown format."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name in it ending in "
                         f"{', '.join(suffixes)}")
    if not path.name.lower().endswith(suffixes):
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(suffixes)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: output folder {folder} does not exist; create it first")
    try:  # a real write, not os.access: read-only file systems refuse even root
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"{path}: output folder {folder} is not writable "
                         f"({error.strerror or error}); choose another") from None
    return path


def _same_file(a: Path, b: Path) -> bool:
    """The same path, or the same file through a link (hard links and symlinks count)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs_spare_inputs(outputs: list[str | os.PathLike | None],
                               inputs: list[str | os.PathLike | None]) -> None:
    """Refuse, before any work, to write an output over a file the command reads (a scan, a
    model, a checkpoint), into an input DICOM folder, or two outputs to one file: a mistyped or
    tab-completed name must never destroy a user's data. ``None`` entries are ignored."""
    written = [Path(o) for o in outputs if o is not None]
    for number, output in enumerate(written):
        for source in (Path(i) for i in inputs if i is not None):
            if source.is_dir():
                if output.resolve().is_relative_to(source.resolve()):
                    raise InputError(f"{output}: lies inside the input folder {source}; writing "
                                     f"there would mix outputs into the series; choose another "
                                     f"folder")
            elif _same_file(output, source):
                raise InputError(f"{output}: is the input {source}; writing it would destroy "
                                 f"the input; choose another output name")
        for other in written[number + 1:]:
            if _same_file(output, other):
                raise InputError(f"{output}: named for two outputs; give each its own name")


def check_free_space(path: str | os.PathLike, needed_bytes: int) -> None:
    """Fail early when the output's file system has less room than ``needed_bytes``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        status = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself will tell
        return
    free = status.f_bavail * status.f_frsize
    if free < needed_bytes:
        raise InputError(f"{path}: only {free / 1e6:.1f} MB free in {folder}, the output needs "
                         f"up to {needed_bytes / 1e6:.1f} MB; free some space or choose another "
                         f"folder")
