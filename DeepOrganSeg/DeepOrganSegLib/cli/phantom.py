"""``deeporganseg phantom``: write one synthetic phantom image and its label map; the
generator (:mod:`DeepOrganSegLib.phantoms`) knows nothing of argparse."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..phantoms import KINDS, PHASES, make_phantom
from ..progress import CancelToken, ProgressFunction, no_progress
from ..volume_io import write_volume

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg phantom``."""
    parser = subparsers.add_parser(
        "phantom", help="write a synthetic phantom image and its label map",
        description="Generate a synthetic anatomical phantom (deterministic from --seed).")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, metavar="IMG",
                        help="image file (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--labels", required=True, type=Path, metavar="LBL",
                        help="label map file (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("K", "J", "I"))
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SI", "SJ", "SK"),
                        help="voxel spacing in mm")
    parser.add_argument("--oblique", action="store_true",
                        help="random flipped/permuted/oblique direction matrix")
    parser.add_argument("--synthseg", action="store_true",
                        help="random intensity per tissue (contrast-agnostic training)")
    parser.add_argument("--phase", choices=PHASES, help="CT contrast phase (random if omitted)")
    parser.add_argument("--fov-cutoff", action="store_true",
                        help="tight, off-centre field of view that cuts anatomy off")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, progress: ProgressFunction | None = None,
        cancel: CancelToken | None = None) -> int:
    """Generate, then write both volumes atomically.

    Generation takes about a second, so it is not cancellable midway; ``progress`` and
    ``cancel`` may be left out (tests call the handler directly).
    """
    from ..outputs import check_outputs_spare_inputs

    report = progress or no_progress
    check_outputs_spare_inputs([args.out, args.labels], [])
    for path in (args.out, args.labels):
        if not path.parent.exists():
            raise InputError(f"{path.parent}: output folder does not exist")
    report("phantom", 0.0, f"generating a {args.kind} phantom (seed {args.seed})")
    phantom = make_phantom(args.kind, args.seed, shape=args.shape, spacing=args.spacing,
                           random_orientation=args.oblique, contrast_phase=args.phase,
                           synthseg=args.synthseg, field_of_view_cutoff=args.fov_cutoff)
    report("phantom", 0.8, "writing")
    write_volume(phantom.image, args.out)
    write_volume(phantom.labels, args.labels)
    report("phantom", 1.0, "done")
    names = ", ".join(f"{v}={n}" for v, n in phantom.label_names.items())
    print(f"{args.kind} seed {args.seed}: {phantom.image.size} voxels, spacing "
          f"{tuple(round(s, 2) for s in phantom.image.spacing)} mm -> {args.out}, {args.labels} "
          f"({names})")
    return 0
