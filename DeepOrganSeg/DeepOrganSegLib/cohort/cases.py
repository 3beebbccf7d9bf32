"""The cases of a batch: which scans, under which ids, and which of them one part runs.

An input is a volume file (one case), a DICOM series folder (one case), a folder holding
volume files and series folders (one case each), or a ``.csv``/``.txt`` list of paths (one case
each, relative paths taken from the list's folder; a ``.csv`` names its path column ``path`` or
``image``, and may give ids in a ``case`` column). A case's id is its file name without the
volume suffix, or its series folder's name, made safe as a file name; ids that clash (compared
without case, as some file systems do) take their parent folders' names, nearest first, until
they differ, else a number. The cases are sorted by id, so every part of a batch sees the same
list and ``--parts N --part I`` takes every N-th case from the I-th (nnU-Net's
``-num_parts/-part_id``; sizes spread evenly between the parts).
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, printable

__all__ = ["VOLUME_SUFFIXES", "LIST_SUFFIXES", "PART_VARIABLES", "Case", "CaseList",
           "find_cases", "case_id", "part_index", "part_of"]

#: Suffixes of volume files (a folder's other files are not cases; ``.dcm`` files belong to
#: a series folder).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Suffixes of the data files that a ``.mhd`` or ``.nhdr`` header points to: not cases, and
#: not worth a notice when a folder is scanned.
_DATA_SUFFIXES = (".raw", ".zraw", ".raw.gz")
#: Suffixes of case lists.
LIST_SUFFIXES = (".csv", ".txt")
#: Environment variables that give a job's part when ``--part`` is not given: a Slurm array's
#: task id and a Kubernetes indexed Job's completion index.
PART_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX")

#: Characters not kept in a case id (besides controls, which :func:`printable` escapes): path
#: separators and what Windows refuses in file names.
_UNSAFE = re.compile(r'[<>:"/\\|?*]')


@dataclass(frozen=True)
class Case:
    """One scan of the batch: its id (the outputs' file name stem) and its volume file or DICOM
    series folder."""

    id: str
    input: Path


@dataclass
class CaseList:
    """The cases found, sorted by id, and notes for the user (clashes resolved, files skipped,
    inputs given twice)."""

    cases: list[Case]
    notes: list[str] = field(default_factory=list)


def _has_suffix(name: str, suffixes: Sequence[str]) -> str:
    """The suffix of ``suffixes`` that ``name`` ends with (ignoring case), or ""."""
    lower = name.lower()
    return next((suffix for suffix in suffixes if lower.endswith(suffix)), "")


def case_id(name: str) -> str:
    """The case id of a volume file or series folder name: the name without its volume suffix,
    controls escaped (:func:`printable`), then separators and ``<>:"|?*`` (the escapes'
    backslashes too) as ``_``, without leading dots: a name that is safe as a file name and in
    a terminal, e.g. ``a_x1b[31m_nb`` for ``a\\x1b[31m\\nb``."""
    stem = name[: len(name) - len(_has_suffix(name, VOLUME_SUFFIXES + (".dcm",)))]
    safe = _UNSAFE.sub("_", printable(stem)).strip(" ").lstrip(".").rstrip(". ")
    return safe or "case"


def _folder_entries(folder: Path, notes: list[str]) -> Iterator[Path]:
    """The cases in ``folder``: its volume files and subfolders, or the folder itself when it
    holds files only (one DICOM series)."""
    children = sorted(child for child in folder.iterdir() if not child.name.startswith("."))
    cases = [child for child in children
             if child.is_dir() or _has_suffix(child.name, VOLUME_SUFFIXES)]
    if not cases:
        if not children:
            raise InputError(f"{folder}: folder is empty; give volume files, DICOM series "
                             f"folders or a folder holding them")
        yield folder
        return
    others = [child.name for child in children if child not in cases
              and not _has_suffix(child.name, _DATA_SUFFIXES)]
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        notes.append(f"{folder}: {len(others)} file(s) that are not volumes left out ({shown})")
    yield from cases


def _list_entries(path: Path) -> Iterator[tuple[Path, str | None]]:
    """The (path, id or None) pairs of a ``.txt`` list (one path a line; blank lines and
    ``#`` comments skipped) or a ``.csv`` with a ``path`` (or ``image``) column and an optional
    ``case`` column. Relative paths are taken from the list's folder."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the case list "
                         f"({getattr(error, 'strerror', None) or error})") from None
    if path.suffix.lower() == ".txt":
        rows: list[tuple[str, str | None]] = [
            (line.strip(), None) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]
    else:
        reader = csv.DictReader(text.splitlines())
        columns = {name.strip().lower(): name for name in reader.fieldnames or ()}
        column = columns.get("path") or columns.get("image")
        if column is None:
            raise InputError(f"{path}: the case list has no 'path' column; give the column of "
                             f"volume paths the header 'path' (and ids, if you like, 'case')")
        id_column = columns.get("case")
        rows = [((row.get(column) or "").strip(),
                 (row.get(id_column) or "").strip() or None if id_column else None)
                for row in reader]
        rows = [(listed, given) for listed, given in rows if listed]
    if not rows:
        raise InputError(f"{path}: the case list names no cases")
    for listed, given in rows:
        yield path.parent / Path(listed).expanduser(), given


def _entries(inputs: Sequence[str], notes: list[str]) -> list[tuple[Path, str | None]]:
    """Every (case input, id or None) that ``inputs`` name, each input path once."""
    found: list[tuple[Path, str | None]] = []
    for given in inputs:
        path = Path(given)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_dir():
            found += [(entry, None) for entry in _folder_entries(path, notes)]
        elif _has_suffix(path.name, LIST_SUFFIXES):
            found += list(_list_entries(path))
        else:
            found.append((path, None))
    unique: dict[Path, tuple[Path, str | None]] = {}
    for path, given_id in found:
        key = path.resolve()
        if key in unique:
            notes.append(f"{path}: given twice; segmented once")
        else:
            unique[key] = (path, given_id)
    return list(unique.values())


def _distinct(paths: list[Path], ids: list[str]) -> list[str]:
    """Distinct ids for ``paths`` whose ``ids`` clash: each after its parent folders' names, as
    many as make them differ; else each with a number, in path order."""
    depth = max(len(path.resolve().parent.parts) for path in paths)
    for levels in range(1, depth):
        named = ["_".join([case_id(part) for part in path.resolve().parent.parts[-levels:]]
                          + [own]) for path, own in zip(paths, ids)]
        if len({name.casefold() for name in named}) == len(named):
            return named
    order = sorted(range(len(paths)), key=lambda n: str(paths[n]))
    return [f"{own}-{order.index(n) + 1}" for n, own in enumerate(ids)]


def find_cases(inputs: Sequence[str]) -> CaseList:
    """The cases that ``inputs`` (files, folders, lists) name, with distinct ids, sorted by id.
    An input that does not exist, an empty folder or an unreadable list is an
    :class:`InputError` (before any work); a listed path that is not a readable volume fails
    as its case, when it runs."""
    notes: list[str] = []
    entries = _entries(inputs, notes)
    if not entries:
        raise InputError("no cases to segment in " + ", ".join(inputs))
    ids = [case_id(given) if given else case_id(path.name) for path, given in entries]
    for _ in range(len(ids)):  # each pass resolves every clash; new clashes are rarer still
        groups: dict[str, list[int]] = defaultdict(list)
        for number, name in enumerate(ids):
            groups[name.casefold()].append(number)
        clashes = [members for members in groups.values() if len(members) > 1]
        if not clashes:
            break
        for members in clashes:
            renamed = _distinct([entries[n][0] for n in members], [ids[n] for n in members])
            notes.append(f"{len(members)} inputs have the case id '{ids[members[0]]}': " + ", ".join(
                f"{entries[n][0]} is {name}" for n, name in zip(members, renamed)))
            for n, name in zip(members, renamed):
                ids[n] = name
    cases = sorted((Case(name, path) for name, (path, _) in zip(ids, entries)),
                   key=lambda case: (case.id.casefold(), case.id))
    return CaseList(cases, [printable(note) for note in notes])


def part_index(part: int | None, parts: int, environ: Mapping[str, str] = os.environ
               ) -> tuple[int, list[str]]:
    """Which part (0 to ``parts - 1``) this job runs: ``part``, else the scheduler's index
    (:data:`PART_VARIABLES`); and warnings. An index out of range, or none for several
    parts, is an :class:`InputError`."""
    if parts < 1:
        raise InputError(f"--parts {parts}: must be at least 1")
    source, warnings = "--part", []
    if part is None:
        variable = next((name for name in PART_VARIABLES if environ.get(name, "").strip()), None)
        if variable is not None and parts > 1:
            source = variable
            try:
                part = int(environ[variable])
            except ValueError:
                raise InputError(f"{variable}={printable(environ[variable])}: not a part "
                                 f"number; give --part I") from None
        elif variable is not None:
            warnings.append(f"{variable} is set but --parts is not: this job runs every case; "
                            f"give --parts N to split the cases between the scheduler's jobs")
    if part is None:
        if parts > 1:
            raise InputError(f"--parts {parts} needs --part I (0 to {parts - 1}), or a "
                             f"scheduler's index in {' or '.join(PART_VARIABLES)}")
        part = 0
    if not 0 <= part < parts:
        raise InputError(f"{source} {part}: must be 0 to {parts - 1} for --parts {parts} (a Slurm "
                         f"array for it is --array=0-{parts - 1})")
    return part, warnings


def part_of(cases: Sequence[Case], parts: int, part: int) -> list[Case]:
    """The cases of part ``part`` of ``parts``: every ``parts``-th case from the ``part``-th."""
    return list(cases[part::parts])
