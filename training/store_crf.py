"""Store a training/tune_crf.py choice in a model file, its weights untouched.

    python training/tune_crf.py MODEL DATA... --keep-kernels --out runs/crf.json
    python training/store_crf.py MODEL runs/crf.json --why "min_organ_share chosen on phantoms"

A CRF retuned after training (a new policy such as ``min_organ_share``, new validation data)
changes what a model does without new weights; the model file carries its CRF, so the choice
must go into the file. Tasks the document names get its parameters; the others keep the CRF
they ran with before (in a model that had none: none, both weights 0). The old parameters, the
tuning scores, the date and the reason go in ``provenance.crf_retuned``. Tensors are copied
byte for byte and the file is replaced atomically
(:func:`DeepOrganSegLib.model.replace_metadata`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Any, Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

from DeepOrganSegLib.crf.parameters import CRFParameters
from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.model import read_metadata, replace_metadata
from training.entry import run_script

__all__ = ["read_crf_file", "split_crf_document", "store_crf", "main"]

#: What a task of a model without a CRF ran with: both weights 0 turn the CRF off for a task.
_CRF_OFF = {"appearance_weight": 0.0, "smoothness_weight": 0.0}


def read_crf_file(path: Path) -> dict:
    """A JSON file of CRF parameters, or tune_crf.py's ``{"crf", "tasks"}`` document."""
    try:
        crf = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a JSON file of CRF parameters ({error})") from None
    if not isinstance(crf, dict):
        raise InputError(f"{path}: expected a JSON object of CRF parameters")
    return crf


def split_crf_document(document: dict) -> tuple[dict | None, dict[str, dict] | None]:
    """(model-wide parameters, per-task parameters) of what :func:`read_crf_file` read: a
    tune_crf.py document gives both, plain parameters only the first."""
    if "tasks" not in document:
        return document, None
    tasks = document["tasks"]
    if not isinstance(tasks, dict) or not all(isinstance(value, dict) for value in tasks.values()):
        raise InputError("the CRF document's \"tasks\" must map task names to parameters")
    return document.get("crf"), tasks


def store_crf(model: Path, document: dict, why: str) -> Path:
    """Give ``model`` the CRF of ``document`` (see the module docstring); returns its path."""
    metadata = read_metadata(model)
    model_crf, task_crf = split_crf_document(document)
    model_crf = dict(model_crf if model_crf is not None else metadata.crf or CRFParameters().to_dict())
    task_crf = task_crf or {}
    known = {task.name for task in metadata.tasks}
    unknown = sorted(set(task_crf) - known)
    if unknown:
        raise InputError(f"the CRF document names task(s) {', '.join(unknown)} that {model.name} "
                         f"does not have; it has {', '.join(sorted(known))}")
    CRFParameters.from_dict(model_crf)  # one line for a bad parameter, before anything changes
    tasks = []
    for task in metadata.tasks:
        # a task left out keeps the parameters it ran with, restated against the new model-wide ones
        wanted = {**model_crf, **task_crf[task.name]} if task.name in task_crf \
            else metadata.crf_for(task.name) or _CRF_OFF
        CRFParameters.from_dict(wanted)
        tasks.append(dataclasses.replace(task, crf={key: value for key, value in wanted.items()
                                                    if model_crf.get(key) != value}))
    provenance = dict(metadata.provenance)
    provenance["crf_retuned"] = {
        "date": datetime.date.today().isoformat(), "why": why,
        "before": {task.name: metadata.crf_for(task.name) for task in metadata.tasks},
        **({"scores": document["scores"]} if isinstance(document.get("scores"), dict) else {})}
    return replace_metadata(model, dataclasses.replace(metadata, crf=model_crf, tasks=tuple(tasks),
                                                       provenance=provenance))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model file to update (.safetensors)")
    parser.add_argument("crf", type=Path, help="training/tune_crf.py's JSON (or CRF parameters)")
    parser.add_argument("--why", required=True, help="what changed, for the provenance")
    args = parser.parse_args(argv)
    document: dict[str, Any] = read_crf_file(args.crf)
    path = store_crf(args.model, document, args.why)
    metadata = read_metadata(path)
    for task in metadata.tasks:
        print(f"{task.name}: {metadata.crf_for(task.name)}")
    print(f"stored in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
