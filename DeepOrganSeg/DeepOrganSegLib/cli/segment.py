"""``deeporganseg segment``: one volume in, its labelmap (and optionally the class
probabilities and the organ statistics) out, all or nothing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..devices import DEVICES
from ..errors import EXIT_OK
from ..options import BYTES_PER_GB, InferenceSettings
from ..progress import CancelToken, ProgressFunction
from ..resources import default_model_path
from .native_stderr import native_stderr_silenced
from .remote import add_server_options, segment_remotely
from .reporters import add_progress_option

if TYPE_CHECKING:
    from ..segment import SegmentationResult

__all__ = ["statistics_table", "add_parser", "add_segmentation_flags", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg segment``."""
    parser = subparsers.add_parser(
        "segment", help="segment a volume (NIfTI/NRRD/MHA/DICOM folder)",
        epilog="An existing output file is replaced, atomically and only when the run succeeds; "
               "an output that is the input (or the model, or a file inside an input DICOM "
               "folder) is refused before any work, with exit code 2.")
    parser.add_argument("input", help="input volume file or DICOM series folder")
    parser.add_argument("output", help="output labelmap (.nii.gz, .nrrd, .seg.nrrd, .mha)")
    add_segmentation_flags(parser)
    parser.add_argument("--probabilities", metavar="FILE",
                        help="also write class probabilities on the input grid (vector image)")
    parser.add_argument("--uncertainty", metavar="FILE",
                        help="also write the voxelwise uncertainty on the input grid: the "
                             "entropy of the class probabilities over ln(classes), 0 (certain) "
                             "to 1 (all classes equally likely); overlay it to see where to "
                             "correct")
    parser.add_argument("--stats", metavar="FILE.json", help="write organ volumes (mL) as JSON")
    add_progress_option(parser, default="bar")
    add_server_options(parser)
    parser.set_defaults(handler=run)


def add_segmentation_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that say how to segment (model, task, device, CRF, organs, clean-up, tiles):
    ``segment``'s, and ``batch``'s for every case; :meth:`SegmentationOptions.from_args` reads
    them back."""
    parser.add_argument("--model", help="model file (.safetensors); default: the bundled model")
    parser.add_argument("--task", default="auto", help="task name from the model, or auto")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--no-crf", action="store_true", help="skip the dense CRF refinement")
    parser.add_argument("--crf-param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a CRF parameter of the model file (repeatable)")
    parser.add_argument("--organs", nargs="+", metavar="NAME", help="only these organs")
    parser.add_argument("--no-cleanup", action="store_true",
                        help="keep all connected components and holes")
    defaults = InferenceSettings()
    parser.add_argument("--overlap", type=float, default=defaults.overlap,
                        help="tile overlap as a fraction of the model patch size (default "
                             f"{defaults.overlap:g})")
    parser.add_argument("--memory-budget-gb", type=float,
                        default=defaults.memory_budget_bytes / BYTES_PER_GB,
                        help="activation memory per forward pass; larger volumes are tiled "
                             f"(default {defaults.memory_budget_bytes / BYTES_PER_GB:g})")


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Check every output location, read, segment (with the out-of-memory fallback), write."""
    from ..model import load_model
    from ..outputs import check_free_space, check_output_path, check_outputs_spare_inputs
    from ..options import SegmentationOptions
    from ..result_files import ResultFiles, write_result
    from ..segment import StagedProgress, segment_with_fallback
    from ..volume_io import read_volume

    options = SegmentationOptions.from_args(args)  # refuses bad values before any work
    check_outputs_spare_inputs([args.output, args.stats, args.probabilities, args.uncertainty],
                               [args.input, args.model or default_model_path()])
    output = check_output_path(args.output)
    if args.stats:
        check_output_path(args.stats, (".json",))
    for image_output in (args.probabilities, args.uncertainty):
        if image_output:
            check_output_path(image_output, (".nrrd", ".nii.gz", ".nii", ".mha"))
    if args.server:
        return segment_remotely(args, options, output, progress, cancel)
    staged = StagedProgress(progress)
    staged("load", 0.0, "reading the model")
    model = load_model(args.model or default_model_path())
    cancel.raise_if_cancelled()
    staged("load", 0.5, f"reading {args.input}")
    with native_stderr_silenced():
        volume = read_volume(args.input)
    cancel.raise_if_cancelled()
    labelmap_bytes = volume.array.size + 65536  # uncompressed uint8 + header: an upper bound
    check_free_space(output, labelmap_bytes)
    staged("load", 1.0, f"{volume.size} voxels, spacing {tuple(round(s, 3) for s in volume.spacing)} mm")
    result = segment_with_fallback(volume, model, options, staged, cancel)

    cancel.raise_if_cancelled()
    staged("write", 0.0, f"writing {output}")
    write_result(result, volume, ResultFiles(output, *(Path(p) if p else None for p in (
        args.probabilities, args.uncertainty, args.stats))), cancel)
    staged("write", 1.0, "done")
    progress("done", 1.0, f"{result.task.name} in {result.elapsed_s:.1f} s on {result.device}")
    if args.progress != "json":
        print(statistics_table(result))
    return EXIT_OK


def statistics_table(result: SegmentationResult) -> str:
    """The organ table a person sees: volume, mean intensity, confidence, review flags (what
    the command prints, here or from a server's run)."""
    lines = [f"{result.task.title}: {result.elapsed_s:.1f} s on {result.device}"
             f"{' with CRF' if result.crf_applied else ''}",
             f"{'organ':<24}{'volume (mL)':>12}{'mean':>10}{'confidence':>12}"]
    for stats in result.statistics:
        flag = "  review" if stats.review else "  not found" if not stats.voxels else ""
        lines.append(f"{stats.label.display_name:<24}{stats.volume_ml:>12.1f}"
                     f"{stats.mean_intensity:>10.1f}{stats.confidence:>12.2f}{flag}")
    return "\n".join(lines)
