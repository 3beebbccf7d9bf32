"""``deeporganseg refine``: correct the organs that strokes mark, with the dense CRF, on the
files of one ``segment`` run; every other voxel keeps its label."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, cast

from ..errors import EXIT_OK, InputError
from ..progress import CancelToken, ProgressFunction
from ..resources import default_model_path
from .native_stderr import native_stderr_silenced
from .reporters import add_progress_option

if TYPE_CHECKING:
    from ..volume import Volume

__all__ = ["add_parser", "run"]


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
    parser.add_argument("--probabilities", required=True, metavar="FILE",
                        help="segment's --probabilities file of the same run")
    parser.add_argument("--model", help="the model that segmented (default: the bundled one)")
    parser.add_argument("--task", help="its task (default: the one whose organs match)")
    add_progress_option(parser, default="none")
    parser.set_defaults(handler=run)


def _same_grid(reference: Volume, other: Volume, name: str) -> None:
    from ..volume import grid_differences

    if grid_differences(other, reference, spacing_mm=1e-8, spacing_rtol=1e-4, origin_mm=1e-3,
                        direction=1e-4):
        raise InputError(f"{name} is not on the input's grid (size, spacing, origin and "
                         f"direction must match); use the files of one segment run")


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Read and cross-check the four inputs, find the task, refine organ by organ, write."""
    import numpy as np
    import SimpleITK as sitk

    from ..model import load_model
    from ..crf.parameters import CRFParameters
    from ..labelmap_io import (REMOVE_OFFSET, check_output_path, check_outputs_spare_inputs,
                               write_labelmap)
    from ..refine import refine, scribbles_for
    from ..volume import Volume
    from ..volume_io import read_volume

    model_path = args.model or default_model_path()
    check_outputs_spare_inputs([args.output], [args.input, args.segmentation, args.scribbles,
                                               args.probabilities, model_path])
    output = check_output_path(args.output)
    model = load_model(model_path)
    with native_stderr_silenced():
        image, segmentation = read_volume(args.input), read_volume(args.segmentation)
        scribbles = read_volume(args.scribbles)
        try:
            vector = sitk.ReadImage(str(args.probabilities))
        except RuntimeError:
            raise InputError(f"{args.probabilities}: cannot read the probabilities") from None
    if vector.GetDimension() != 3 or vector.GetNumberOfComponentsPerPixel() < 2:
        raise InputError(f"{args.probabilities}: not a probability file of segment "
                         f"(a vector image with one component per class)")
    array = sitk.GetArrayFromImage(vector).astype(np.float32)  # [k, j, i, C]
    geometry = Volume(array[..., 0], vector.GetSpacing(), vector.GetOrigin(),
                      np.reshape(vector.GetDirection(), (3, 3)))
    for volume, name in ((segmentation, args.segmentation), (scribbles, args.scribbles),
                         (geometry, args.probabilities)):
        _same_grid(image, volume, name)
    labels = np.rint(segmentation.array).astype(np.uint8)
    present = set(np.unique(labels)) - {0}
    candidates = [task for task in model.metadata.tasks if (args.task in (None, task.name))
                  and len(task.labels) + 1 == array.shape[3]
                  and present <= {label.value for label in task.labels}]
    if len(candidates) != 1:
        raise InputError("cannot tell which task of the model made this segmentation; give "
                         "--task" if len(candidates) > 1 else
                         "the segmentation and probabilities do not fit any task of the model "
                         "(--model, --task)")
    task = candidates[0]
    channels = [0] + [label.value for label in task.labels]
    strokes = np.rint(scribbles.array).astype(np.int64)
    organs = sorted({int(v) % REMOVE_OFFSET for v in np.unique(strokes) if v > 0})
    unknown = [v for v in organs if v not in channels[1:]]
    if not organs or unknown:
        raise InputError(f"{args.scribbles}: no strokes" if not organs else
                         f"{args.scribbles}: value {unknown[0]} is no organ of task {task.name}")
    crf = CRFParameters.from_dict(model.metadata.crf_for(task.name) or {})
    spacing = cast("tuple[float, float, float]", tuple(image.spacing[::-1]))
    for number, organ in enumerate(organs):
        cancel.raise_if_cancelled()
        progress("crf", number / len(organs), f"refining label {organ}")
        labels = refine(image.array, labels, array, channels, organ,
                        scribbles_for(strokes, organ), spacing, task.normalization, crf).labels
    progress("write", 0.99, f"writing {output}")
    write_labelmap(image.with_array(labels), output, list(task.labels))
    progress("done", 1.0, f"refined {len(organs)} organ(s)")
    return EXIT_OK
