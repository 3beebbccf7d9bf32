"""The output folder of a batch, ``DIR``, and what it holds:

* ``DIR/<case>.<format>``: the labelmap; ``DIR/<case>.probabilities.nrrd`` and
  ``DIR/<case>.uncertainty.nrrd`` when asked for;
* ``DIR/<case>.json``: the organ statistics (``segment --stats``) with the case id, its input
  and the settings it was made with; written last, so that it says the case is complete;
* ``DIR/qc/<case>.png``: the case's QC picture, organs outlined;
* ``DIR/failed/<case>.json``: why a case failed (a one-line reason), removed when it succeeds;
* ``DIR/cohort.csv`` and ``DIR/report.html``: the cohort's report (:mod:`.report`).

Every file is written atomically, so the folder holds whole files only, whoever wrote them:
parts of one batch share it, each writing its own cases.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..options import SegmentationOptions
from ..volume_io import write_atomically
from .cases import Case

__all__ = ["FORMATS", "OutputFolder", "result_settings", "read_json"]

#: Labelmap formats of ``--format``: the file suffix without its dot.
FORMATS = ("nii.gz", "seg.nrrd", "nrrd", "mha")

#: ``segment`` flags that change resources, not results: left out of the settings compared on
#: resume (one part of a batch may run on a GPU machine, another on a CPU).
_RESOURCE_FLAGS = ("--device", "--memory-budget-gb")


def result_settings(model_path: Path, options: SegmentationOptions, format: str,
                    probabilities: bool, uncertainty: bool) -> dict[str, Any]:
    """What shapes a batch's results: the model file (name and SHA-256 of its bytes), the
    ``segment`` flags that change the labels, the format and the extra outputs. Every case
    records them; a run into a folder whose cases were made otherwise is refused."""
    digest = hashlib.sha256()
    with open(model_path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    flags, argv = [], options.to_argv()
    while argv:
        flag = argv.pop(0)
        if flag in _RESOURCE_FLAGS:
            argv.pop(0)
        else:
            flags.append(flag)
    return {"model": model_path.name, "model_sha256": digest.hexdigest(), "flags": flags,
            "format": format, "probabilities": probabilities, "uncertainty": uncertainty}


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class OutputFolder:
    """``DIR`` with the labelmap ``format`` (:data:`FORMATS`) and the extra outputs asked for."""

    path: Path
    format: str = "nii.gz"
    probabilities: bool = False
    uncertainty: bool = False

    def labelmap(self, case_id: str) -> Path:
        return self.path / f"{case_id}.{self.format}"

    def statistics(self, case_id: str) -> Path:
        return self.path / f"{case_id}.json"

    def thumbnail(self, case_id: str) -> Path:
        return self.path / "qc" / f"{case_id}.png"

    def failure(self, case_id: str) -> Path:
        return self.path / "failed" / f"{case_id}.json"

    def extras(self, case_id: str) -> tuple[Path | None, Path | None]:
        """The probabilities and uncertainty files of a case; None where not asked for."""
        return (self.path / f"{case_id}.probabilities.nrrd" if self.probabilities else None,
                self.path / f"{case_id}.uncertainty.nrrd" if self.uncertainty else None)

    def prepare(self) -> None:
        """Create ``DIR`` (its parent must exist) and its ``qc`` and ``failed`` folders."""
        if not self.path.parent.is_dir():
            raise InputError(f"--out {self.path}: its folder {self.path.parent} does not exist; "
                             f"create it first")
        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"--out {self.path}: is a file; give a folder")
        for folder in (self.path, self.path / "qc", self.path / "failed"):
            try:
                folder.mkdir(exist_ok=True)
            except OSError as error:
                raise InputError(f"--out {self.path}: cannot create {folder} "
                                 f"({error.strerror or error}); choose another folder") from None

    def completed(self, case_id: str) -> dict[str, Any] | None:
        """The statistics of ``case_id`` when all its outputs are there, else None."""
        document = read_json(self.statistics(case_id))
        if document is None or document.get("case") != case_id:
            return None
        needed = [self.labelmap(case_id), *(p for p in self.extras(case_id) if p is not None)]
        return document if all(path.is_file() for path in needed) else None

    def record_failure(self, case: Case, reason: str) -> None:
        """Write why ``case`` failed (``reason``: one printable line)."""
        document = json.dumps({"case": case.id, "input": os.path.abspath(case.input),
                               "reason": reason,
                               "when": datetime.datetime.now().isoformat(timespec="seconds")},
                              indent=2)
        write_atomically(self.failure(case.id), lambda tmp: tmp.write_text(document))

    def clear_failure(self, case_id: str) -> None:
        """Forget an earlier failure of ``case_id`` (it has just succeeded)."""
        self.failure(case_id).unlink(missing_ok=True)

    def split_complete(self, cases: list[Case], settings: dict[str, Any]
                       ) -> tuple[list[Case], list[Case]]:
        """``cases`` as (complete, to do). A complete case made with other ``settings``
        (another model, other flags, format or extra outputs) is refused: the cohort would
        mix them."""
        complete, todo = [], []
        for case in cases:
            document = self.completed(case.id)
            if document is None:
                todo.append(case)
            elif document.get("settings") == settings:
                complete.append(case)
            else:
                theirs = document.get("settings") or {}
                differences = [key for key in settings if theirs.get(key) != settings[key]]
                raise InputError(
                    f"--out {self.path}: case {case.id} there was made with other settings "
                    f"({', '.join(differences) or 'unknown'} differ); continue with the same "
                    f"model and flags, or write to another folder")
        return complete, todo
