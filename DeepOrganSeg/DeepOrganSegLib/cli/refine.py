"""``deeporganseg refine``: correct the organs that strokes mark, with the dense CRF, on the
files of one ``segment`` run; every other voxel keeps its label."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EXIT_OK
from ..progress import CancelToken, ProgressFunction
from ..resources import default_model_path
from .native_stderr import native_stderr_silenced
from .remote import add_server_options, refine_remotely
from .reporters import add_progress_option

if TYPE_CHECKING:
    from ..model import ModelMetadata

__all__ = ["add_parser", "add_segment_run_options", "run", "refine_files"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg refine``."""
    parser = subparsers.add_parser(
        "refine", help="correct organs of a segmentation with strokes (dense CRF)",
        description="Correct the organs that SCRIBBLES marks: value v (1-127) paints 'this is "
                    "the organ of label value v', 128+v 'this is not that organ', 0 nothing. "
                    "Only those organs change; every other voxel keeps its label.",
        epilog="SEGMENTATION and PROBABILITIES come from `deeporganseg segment INPUT "
               "SEGMENTATION --probabilities PROBABILITIES`; all volumes share INPUT's grid. "
               "An existing OUTPUT is replaced atomically; an OUTPUT that is one of the inputs "
               "is refused (exit 2).")
    parser.add_argument("input", help="the image that was segmented")
    parser.add_argument("segmentation", help="its labelmap (segment's OUTPUT)")
    parser.add_argument("scribbles", help="labelmap of strokes on the same grid (values above)")
    parser.add_argument("output", help="corrected labelmap (.nii.gz, .nrrd, .seg.nrrd, .mha)")
    add_segment_run_options(parser)
    add_progress_option(parser, default="none")
    add_server_options(parser)
    parser.set_defaults(handler=run)


def add_segment_run_options(parser: argparse.ArgumentParser) -> None:
    """``--probabilities``, ``--model`` and ``--task``: what a refinement needs of the segment
    run it corrects (``refine`` and ``refine-session``)."""
    parser.add_argument("--probabilities", required=True, metavar="FILE",
                        help="segment's --probabilities file of the same run")
    parser.add_argument("--model", help="the model that segmented (default: the bundled one)")
    parser.add_argument("--task", help="its task (default: the one whose organs match)")


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Check the output, then refine here (:func:`refine_files`) or on ``--server``."""
    from ..model import load_model
    from ..outputs import check_output_path, check_outputs_spare_inputs

    model_path = args.model or default_model_path()
    check_outputs_spare_inputs([args.output], [args.input, args.segmentation, args.scribbles,
                                               args.probabilities, model_path])
    output = check_output_path(args.output)
    if args.server:
        return refine_remotely(args, output, progress, cancel)
    refine_files(args, output, load_model(model_path).metadata, progress, cancel)
    return EXIT_OK


def refine_files(args: argparse.Namespace, output: Path, metadata: ModelMetadata,
                 progress: ProgressFunction, cancel: CancelToken) -> None:
    """Read the four inputs ``args`` names, refine (:func:`..refine.refine_volume`) with the
    model's ``metadata``, write ``output``: the command's work once its model is loaded (a
    server's is loaded once for all its jobs)."""
    from ..labelmap_io import write_labelmap
    from ..refine import refine_volume
    from ..volume_io import read_probabilities, read_volume

    with native_stderr_silenced():
        image, segmentation = read_volume(args.input), read_volume(args.segmentation)
        scribbles = read_volume(args.scribbles)
        probabilities, probability_grid = read_probabilities(args.probabilities)
    labels, task = refine_volume(image, segmentation, probabilities, probability_grid,
                                 scribbles, metadata, args.task, progress=progress,
                                 cancel=cancel)
    progress("write", 0.99, f"writing {output}")
    write_labelmap(labels, output, list(task.labels))
    progress("done", 1.0, "refined")
