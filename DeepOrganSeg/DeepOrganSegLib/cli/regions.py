"""``deeporganseg regions``: the body regions (and modality) a volume shows, as the body-part
classifier sees them, and what task Auto would choose; a table or JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..bodypart.classifier import CLASSIFIER_FILE, bundled_classifier, load_classifier
from ..bodypart.profile import abdomen_slab, choose_auto_task, region_profile
from ..errors import InputError
from ..progress import CancelToken, ProgressFunction
from ..resources import default_model_path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg regions INPUT [--json]``."""
    parser = subparsers.add_parser(
        "regions", help="show which body regions (and modality) a volume covers",
        description="Classify the axial slices of a volume into body regions with the bundled "
                    "body-part classifier; print the regions' slice and z ranges.")
    parser.add_argument("input", help="input volume file or DICOM series folder")
    parser.add_argument("--classifier", help=f"classifier file; default: the bundled "
                                             f"{CLASSIFIER_FILE}")
    parser.add_argument("--model", help="segmentation model whose tasks Auto chooses from; "
                                        "default: the bundled model (if any)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def _available_tasks(model: str | None) -> tuple[str, ...]:
    """The tasks of ``--model`` (or the bundled model); the standard three without one."""
    from ..model import read_metadata

    try:
        path = Path(model) if model else default_model_path()
    except InputError:
        return ("abdomen-ct", "heart-mr", "brain-mr")
    return tuple(task.name for task in read_metadata(path).tasks)


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Classify the slices, build the regions document, print it."""
    from ..volume_io import read_volume

    classifier = (load_classifier(args.classifier) if args.classifier else bundled_classifier())
    if classifier is None:
        raise InputError(f"no body-part classifier {CLASSIFIER_FILE} found; give --classifier")
    volume = read_volume(args.input)
    profile = region_profile(volume, classifier)
    available = _available_tasks(args.model)
    slab = None
    try:
        task = choose_auto_task(profile, available)
        slab = abdomen_slab(profile, volume) if task == "abdomen-ct" else None
    except InputError as error:
        task = f"none ({error})"
    document = {**profile.to_dict(), "auto_task": task,
                "slab_slices": None if slab is None else [slab.start, slab.stop - 1]}
    print(json.dumps(document, indent=2) if args.json else _table(document))
    return 0


def _table(document: dict[str, Any]) -> str:
    """The regions document as a fixed-width text table."""
    def indices(r: dict[str, Any]) -> str:
        return "-" if r["first_slice"] is None else f"{r['first_slice']}-{r['last_slice']}"

    lines = [f"modality: {document['modality']} (p = {document['modality_probability']:.3f})",
             f"{'region':<10}{'slices':>12}{'z top (mm)':>14}{'z bottom (mm)':>16}"]
    lines += [f"{r['region']:<10}{indices(r):>12}{r['z_top_mm']:>14.1f}{r['z_bottom_mm']:>16.1f}"
              for r in document["regions"]]
    lines.append(f"auto task: {document['auto_task']}")
    if document["slab_slices"]:
        lines.append(f"slab: slices {document['slab_slices'][0]}-{document['slab_slices'][1]}")
    return "\n".join(lines)
