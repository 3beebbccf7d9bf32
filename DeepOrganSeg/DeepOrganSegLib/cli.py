"""The ``deeporganseg`` command line (also what the Slicer module runs as a subprocess).

Exit codes: 0 ok, 1 internal error, 2 bad input, 3 cancelled (SIGINT/SIGTERM). Expected failures
print one line, ``error: ...``, and no traceback (set ``DEEPORGANSEG_DEBUG=1`` to see one).
With ``--progress json`` stdout carries one JSON object per line,
``{"stage": ..., "fraction": 0..1 overall, "message": ...}``; a failure ends with
``{"stage": "error", "message": ..., "exit_code": N}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

from .errors import EXIT_CANCELLED, EXIT_INTERNAL, EXIT_OK, Cancelled, DeepOrganSegError, InputError
from .progress import CancelToken

__all__ = ["main", "build_parser", "default_model_path"]

#: Seconds a cancelled run may take to unwind before the process exits hard with code 3.
CANCEL_GRACE_S = 1.5


def default_model_path() -> Path:
    """The bundled model: ``Resources/Models`` of a source checkout or of an installed module."""
    here = Path(__file__).resolve().parent
    for folder in (here.parent.parent / "Resources" / "Models", here.parent / "Resources" / "Models",
                   Path(sys.prefix) / "share" / "deeporganseg" / "Models"):
        models = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        if models:
            return models[0]
    raise InputError("no bundled model found; give --model FILE")


# ---------------------------------------------------------------------------------------------
# Progress reporting.


class JsonProgress:
    """One JSON object per line on stdout, for the Slicer module to parse."""

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        print(json.dumps({"stage": stage, "fraction": fraction, "message": message}), flush=True)

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar on stderr showing the overall fraction and the current stage."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1000, unit="‰", file=sys.stderr, leave=False,
                        bar_format="{desc:<40} {percentage:3.0f}%|{bar}| {elapsed}")

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.bar.set_description_str(f"{stage}: {message}"[:40], refresh=False)
        self.bar.update(max(0, int(fraction * 1000) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def _reporter(kind: str):
    return JsonProgress() if kind == "json" else BarProgress() if kind == "bar" else None


# ---------------------------------------------------------------------------------------------
# Cancellation by signal.


def install_cancel_handlers(token: CancelToken) -> None:
    """SIGINT/SIGTERM set ``token``; if the work has not unwound within ``CANCEL_GRACE_S``
    (a long native operation), exit hard with code 3. Outputs are written atomically, so an
    exit at any point leaves no partial file."""

    def hard_exit() -> None:
        sys.stderr.write("error: cancelled\n")
        sys.stderr.flush()
        os._exit(EXIT_CANCELLED)

    def handler(signum, frame) -> None:
        if token.cancelled:
            hard_exit()
        token.cancel()
        timer = threading.Timer(CANCEL_GRACE_S, hard_exit)
        timer.daemon = True
        timer.start()
        raise Cancelled("cancelled by the user")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------------------------------
# Commands.


def _add_segment_command(subparsers) -> None:
    parser = subparsers.add_parser("segment", help="segment a volume (NIfTI/NRRD/MHA/DICOM folder)")
    parser.add_argument("input", help="input volume file or DICOM series folder")
    parser.add_argument("output", help="output labelmap (.nii.gz, .nrrd, .seg.nrrd, .mha)")
    parser.add_argument("--model", help="model file (.safetensors); default: the bundled model")
    parser.add_argument("--task", default="auto", help="task name from the model, or auto")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu", "mps"))
    parser.add_argument("--no-crf", action="store_true", help="skip the dense CRF refinement")
    parser.add_argument("--crf-param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a CRF parameter of the model file (repeatable)")
    parser.add_argument("--organs", nargs="+", metavar="NAME", help="only these organs")
    parser.add_argument("--no-cleanup", action="store_true",
                        help="keep all connected components and holes")
    parser.add_argument("--overlap", type=float, default=0.25,
                        help="tile overlap as a fraction of the model patch size (default 0.25)")
    parser.add_argument("--memory-budget-gb", type=float, default=1.5,
                        help="activation memory per forward pass; larger volumes are tiled")
    parser.add_argument("--probabilities", metavar="FILE",
                        help="also write class probabilities on the input grid (vector image)")
    parser.add_argument("--stats", metavar="FILE.json", help="write organ volumes (mL) as JSON")
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="bar")
    parser.set_defaults(handler=_run_segment)


def _parse_crf_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator:
            raise InputError(f"--crf-param {pair}: expected NAME=VALUE")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            raise InputError(f"--crf-param {pair}: value is not a number or list") from None
    return overrides


def _run_segment(args: argparse.Namespace, progress, cancel: CancelToken) -> int:
    import SimpleITK as sitk

    from .bundle import load_model
    from .inference import InferenceSettings
    from .labelmap_io import check_output_path, write_labelmap
    from .segment import SegmentationOptions, StagedProgress, segment_volume
    from .volume import read_volume, write_atomically

    if not 0 <= args.overlap < 1:
        raise InputError(f"--overlap {args.overlap}: must be in [0, 1)")
    if args.memory_budget_gb <= 0:
        raise InputError("--memory-budget-gb must be positive")
    output = check_output_path(args.output)
    if args.stats:
        check_output_path(args.stats, (".json",))
    if args.probabilities:
        check_output_path(args.probabilities, (".nrrd", ".nii.gz", ".nii", ".mha"))
    staged = StagedProgress(progress)
    staged("load", 0.0, "reading the model")
    model = load_model(args.model or default_model_path())
    staged("load", 0.5, f"reading {args.input}")
    volume = read_volume(args.input)
    staged("load", 1.0, f"{volume.size} voxels, spacing {tuple(round(s, 3) for s in volume.spacing)} mm")
    options = SegmentationOptions(
        task=args.task, organs=tuple(args.organs) if args.organs else None, crf=not args.no_crf,
        crf_overrides=_parse_crf_overrides(args.crf_param),
        largest_component=not args.no_cleanup, fill_holes=not args.no_cleanup,
        keep_probabilities=bool(args.probabilities),
        inference=InferenceSettings(device=args.device, overlap=args.overlap,
                                    memory_budget_bytes=int(args.memory_budget_gb * 1e9)))
    result = segment_with_fallback(volume, model, options, staged, cancel)

    staged("write", 0.0, f"writing {output}")
    specs = [s.label for s in result.statistics]
    write_labelmap(result.labels, output, specs)
    if args.probabilities:
        image = sitk.GetImageFromArray(result.probabilities, isVector=True)
        image.SetSpacing(volume.spacing)
        image.SetOrigin(volume.origin)
        image.SetDirection(volume.direction.flatten().tolist())
        write_atomically(args.probabilities, lambda tmp: sitk.WriteImage(image, str(tmp), True))
    if args.stats:
        document = json.dumps(result.stats_dict(), indent=2, allow_nan=False, default=float)
        write_atomically(args.stats, lambda tmp: tmp.write_text(document.replace("NaN", "null")))
    staged("write", 1.0, "done")
    progress("done", 1.0, f"{result.task.name} in {result.elapsed_s:.1f} s on {result.device}")
    if args.progress != "json":
        _print_statistics(result)
    return EXIT_OK


def segment_with_fallback(volume, model, options, progress, cancel):
    """Run :func:`segment_volume`; on CUDA out-of-memory retry with half the memory budget
    (twice), then on the CPU, saying so."""
    from dataclasses import replace

    import torch

    from .segment import segment_volume

    attempt = options
    for _ in range(3):
        try:
            return segment_volume(volume, model, attempt, progress=progress, cancel=cancel)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            budget = attempt.inference.memory_budget_bytes // 2
            progress("inference", 0.0, f"GPU out of memory: retrying with {budget / 1e9:.2f} GB tiles")
            attempt = replace(attempt, inference=replace(attempt.inference,
                                                         memory_budget_bytes=budget))
    progress("inference", 0.0, "GPU out of memory: falling back to the CPU")
    model.network.to("cpu")
    return segment_volume(volume, model, replace(attempt, inference=replace(
        attempt.inference, device="cpu")), progress=progress, cancel=cancel)


def _print_statistics(result) -> None:
    print(f"{result.task.title}: {result.elapsed_s:.1f} s on {result.device}"
          f"{' with CRF' if result.crf_applied else ''}")
    print(f"{'organ':<24}{'volume (mL)':>12}{'mean':>10}")
    for stats in result.statistics:
        print(f"{stats.label.display_name:<24}{stats.volume_ml:>12.1f}{stats.mean_intensity:>10.1f}")


def _add_info_command(subparsers) -> None:
    parser = subparsers.add_parser("info", help="describe a model file")
    parser.add_argument("model", nargs="?", help="model file; default: the bundled model")
    parser.add_argument("--json", action="store_true", help="print the metadata as JSON")
    parser.set_defaults(handler=_run_info)


def _run_info(args: argparse.Namespace, progress, cancel: CancelToken) -> int:
    from .bundle import read_metadata

    path = Path(args.model) if args.model else default_model_path()
    metadata = read_metadata(path)
    if args.json:
        print(json.dumps(metadata.to_dict(), indent=2))
        return EXIT_OK
    print(f"{path.name}: {metadata.architecture} {metadata.parameters.get('widths')}, "
          f"patch {metadata.patch_size}, format v{metadata.format_version}")
    for task in metadata.tasks:
        organs = ", ".join(label.display_name for label in task.labels)
        print(f"  {task.name} ({task.modality}, {task.spacing_mm} mm): {organs}")
    if metadata.crf:
        print(f"  CRF: {metadata.crf}")
    for key, value in metadata.provenance.items():
        print(f"  {key}: {value}")
    return EXIT_OK


def _optional_commands() -> list[Callable]:
    """Sub-commands contributed by other engine modules (phantoms, demo, body regions)."""
    adders = []
    for module, name in (("phantoms", "add_phantom_command"), ("demo", "add_demo_command"),
                         ("bodypart", "add_regions_command")):
        try:
            imported = __import__(f"{__package__}.{module}", fromlist=[name])
        except ImportError:
            continue
        if hasattr(imported, name):
            adders.append(getattr(imported, name))
    return adders


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="deeporganseg", description="3D DSN organ segmentation with a dense 3D CRF.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_segment_command(subparsers)
    _add_info_command(subparsers)
    for add in _optional_commands():
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    progress_kind = getattr(args, "progress", "none")
    reporter = _reporter(progress_kind)
    progress = reporter or (lambda stage, fraction, message="": None)
    cancel = CancelToken()
    install_cancel_handlers(cancel)
    try:
        code = args.handler(args, progress, cancel)
    except DeepOrganSegError as error:
        code = _report_failure(str(error), error.exit_code, progress_kind)
    except KeyboardInterrupt:
        code = _report_failure("cancelled by the user", EXIT_CANCELLED, progress_kind)
    except MemoryError:
        code = _report_failure("out of memory; crop the volume or lower --memory-budget-gb",
                               EXIT_INTERNAL, progress_kind)
    except Exception as error:  # a bug: say so in one line, keep the traceback for debugging
        if os.environ.get("DEEPORGANSEG_DEBUG"):
            raise
        first_line = str(error).splitlines()[0] if str(error) else ""
        message = (f"internal error ({type(error).__name__}: {first_line}); "
                   f"set DEEPORGANSEG_DEBUG=1 and report it")
        code = _report_failure(message, EXIT_INTERNAL, progress_kind)
    finally:
        if reporter is not None:
            reporter.close()
    return code


def _report_failure(message: str, code: int, progress_kind: str) -> int:
    if progress_kind == "json":
        print(json.dumps({"stage": "error", "message": message, "exit_code": code}), flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
