"""Record re-measured accuracy in a model file's provenance, its weights untouched.

    python training/record_metrics.py Resources/Models/DeepOrganSeg-multitask-v18.safetensors \\
        runs/eval/icbm152/summary.json --why "engine: blank background is never an organ"

An engine change can move a model's accuracy without touching its weights; the file must go on
saying what it measures (``deeporganseg info`` shows it). Each training/evaluate.py summary
replaces the provenance metrics stored under its folder's name, as export.py stores them; the
date and the reason go in ``provenance.metrics_remeasured``. Tensors are copied byte for byte
and the file is replaced atomically (:func:`DeepOrganSegLib.model.replace_metadata`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.model import read_metadata, replace_metadata
from training.entry import run_script

__all__ = ["record_metrics", "main"]


def _read_summary(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a training/evaluate.py summary.json ({error})") from None
    if not isinstance(summary, dict) or not all(
            isinstance(entry, dict) and {"no_crf", "crf"} & set(entry) for entry in summary.values()):
        raise InputError(f"{path}: not a training/evaluate.py summary.json "
                         "(expected {task: {no_crf/crf: ...}})")
    return summary


def record_metrics(model: Path, summaries: Sequence[Path], why: str) -> Path:
    """Replace ``model``'s provenance metrics by ``summaries`` (each under its folder's name)."""
    metadata = read_metadata(model)
    provenance = dict(metadata.provenance)
    metrics = dict(provenance.get("metrics") or {})
    updated = {}
    for path in summaries:
        metrics[path.parent.name] = _read_summary(path)
        updated[path.parent.name] = {"date": datetime.date.today().isoformat(), "why": why}
    provenance["metrics"] = metrics
    provenance["metrics_remeasured"] = {**(provenance.get("metrics_remeasured") or {}),
                                        **updated}
    return replace_metadata(model, dataclasses.replace(metadata, provenance=provenance))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="model file to update (.safetensors)")
    parser.add_argument("summaries", type=Path, nargs="+", metavar="SUMMARY.json",
                        help="training/evaluate.py summaries, each stored under its folder's "
                             "name (e.g. runs/eval/icbm152/summary.json)")
    parser.add_argument("--why", required=True, help="what changed, for the provenance")
    args = parser.parse_args(argv)
    path = record_metrics(args.model, args.summaries, args.why)
    print(f"updated the metrics of {', '.join(p.parent.name for p in args.summaries)} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
