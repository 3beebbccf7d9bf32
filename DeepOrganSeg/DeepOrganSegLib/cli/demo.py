"""``deeporganseg demo``: the offline demo (:func:`DeepOrganSegLib.demo.run_demo`) from the
command line, its report printed as a table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import DEMO_KINDS, DEMO_SEED, format_report, run_demo
from ..devices import DEVICES
from ..errors import EXIT_OK
from ..progress import CancelToken, ProgressFunction
from .reporters import add_progress_option

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg demo``."""
    parser = subparsers.add_parser(
        "demo", help="segment a synthetic phantom with the bundled model and score it",
        description="Make a phantom, segment it with the bundled model, write the labelmap, a "
                    "QC picture and organ volumes, and print Dice against the phantom's truth.")
    parser.add_argument("--out", default="deeporganseg-demo", help="output folder (created)")
    parser.add_argument("--kind", default="brain-mr", choices=DEMO_KINDS)
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help="phantom seed")
    parser.add_argument("--model", help="model file; default: the bundled model")
    parser.add_argument("--no-crf", action="store_true", help="skip the dense CRF refinement")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    add_progress_option(parser, default="none")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Run the demo into ``--out`` and print its organ table."""
    report = run_demo(Path(args.out), kind=args.kind, seed=args.seed, model_path=args.model,
                      crf=not args.no_crf, device=args.device, progress=progress, cancel=cancel)
    print(format_report(report))
    return EXIT_OK
