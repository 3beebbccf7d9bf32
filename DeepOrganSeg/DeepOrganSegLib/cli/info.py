"""``deeporganseg info``: what a model file holds (stages, networks, tasks and organs, CRF
parameters, provenance), as text or as its JSON metadata."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import EXIT_OK
from ..progress import CancelToken, ProgressFunction
from ..resources import default_model_path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg info``."""
    parser = subparsers.add_parser("info", help="describe a model file")
    parser.add_argument("model", nargs="?", help="model file; default: the bundled model")
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Print the model file's description (reads the metadata only, not the weights)."""
    from ..model import read_metadata

    path = Path(args.model) if args.model else default_model_path()
    metadata = read_metadata(path)
    if args.json:
        print(json.dumps(metadata.to_dict(), indent=2))
        return EXIT_OK
    stage1 = metadata.stage1
    kind = "cascade of 2 stages" if stage1 else "single stage"
    print(f"{path.name}: {kind}, format v{metadata.format_version}")
    if stage1:
        spacings = ", ".join(f"{task} {list(mm)} mm" for task, mm in stage1.spacing_mm.items())
        print(f"  stage 1 (whole volume, coarse): {stage1.architecture} "
              f"{stage1.parameters.get('widths')}, patch {stage1.patch_size}, inputs "
              f"{' + '.join(stage1.inputs)} ({metadata.stage1_input_channels} channel"
              f"{'s' if metadata.stage1_input_channels > 1 else ''}); {spacings}")
    print(f"  {'stage 2 (organ region + ' + str(stage1.margin_mm) + ' mm)' if stage1 else 'network'}"
          f": {metadata.architecture} {metadata.parameters.get('widths')}, patch "
          f"{metadata.patch_size}, inputs {' + '.join(metadata.inputs)} "
          f"({metadata.input_channels} channel{'s' if metadata.input_channels > 1 else ''})")
    for task in metadata.tasks:
        organs = ", ".join(label.display_name for label in task.labels)
        print(f"  {task.name} ({task.modality}, {task.spacing_mm} mm): {organs}")
        if task.crf and metadata.crf:
            print(f"    CRF for {task.name}: {task.crf}")
    if metadata.crf:
        print(f"  CRF: {metadata.crf}")
    for key, value in metadata.provenance.items():
        print(f"  {key}: {value}")
    return EXIT_OK
