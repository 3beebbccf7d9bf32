"""The ``deeporganseg`` command line (also what the Slicer module runs as a subprocess).

Exit codes: 0 ok, 1 internal error, 2 bad input, 3 cancelled (SIGINT/SIGTERM). Expected failures
print one line, ``error: ...``, and no traceback (set ``DEEPORGANSEG_DEBUG=1`` to see one).
With ``--progress json`` stdout carries one JSON object per line,
``{"stage": ..., "fraction": 0..1 overall, "message": ...}``; a failure ends with
``{"stage": "error", "message": ..., "exit_code": N}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Sequence

from .devices import DEVICES
from .errors import (EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_INTERNAL, EXIT_OK, DeepOrganSegError,
                     InputError)
from .progress import CancelToken
from .resources import default_model_path

__all__ = ["main", "build_parser", "default_model_path"]

#: Seconds a cancelled run may take to unwind before the process exits hard with code 3.
CANCEL_GRACE_S = 1.0


# ---------------------------------------------------------------------------------------------
# Progress reporting.


class JsonProgress:
    """One JSON object per line on stdout, for the Slicer module to parse. A ``warning`` event
    carries the overall fraction reached so far, so that fractions never decrease."""

    def __init__(self) -> None:
        self.fraction = 0.0

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if stage == "warning":
            fraction = self.fraction
        self.fraction = fraction
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


def _with_warnings(progress):
    """``progress`` that also prints ``warning`` events as ``warning: ...`` lines on stderr."""

    def report(stage: str, fraction: float, message: str = "") -> None:
        if stage == "warning":
            print(f"warning: {message}", file=sys.stderr, flush=True)
        progress(stage, fraction, message)

    return report


# ---------------------------------------------------------------------------------------------
# Cancellation by signal.


def _hard_exit() -> None:
    """Exit now with code 3, deleting the temporary files of writes in progress."""
    from .volume import remove_pending_temporaries

    remove_pending_temporaries()
    sys.stderr.write("error: cancelled by the user\n")
    sys.stderr.flush()
    os._exit(EXIT_CANCELLED)


class SignalCancellation:
    """While active, SIGINT/SIGTERM cancel the run: ``token`` is set at once and, if the work
    has not unwound within ``grace_s`` seconds, the process exits hard with code 3 (a second
    signal exits at once). Outputs are renamed into place only when complete and the hard exit
    deletes pending temporaries, so an exit at any point leaves no partial file.

    On POSIX the signals are blocked and taken by a watcher thread, so that a cancel takes
    effect even while the main thread sits in a long native call (reading or writing a large
    image, a torch operation) that would hold back a Python signal handler. A Python handler
    does the same for signals that reach a thread which does not block them (one started
    before, e.g. by an imported library). Either way the work stops at its next cancel check,
    never in the middle of arbitrary code. Leaving the context restores the previous handling:
    ``main`` also runs in-process (tests, scripts)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, token: CancelToken, grace_s: float = CANCEL_GRACE_S) -> None:
        self.token, self.grace_s = token, grace_s
        self._active = False
        self._stopped = threading.Event()
        self._watcher: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._previous_handlers: dict = {}
        self._previous_mask: set | None = None

    def __enter__(self) -> "SignalCancellation":
        self._active = threading.current_thread() is threading.main_thread()
        if not self._active:
            return self
        self._previous_handlers = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        if hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigtimedwait"):
            self._previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
            self._watcher = threading.Thread(target=self._watch, name="deeporganseg-signals",
                                             daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exception) -> None:
        if not self._active:
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._stopped.set()
            self._watcher.join()
            signal.pthread_sigmask(signal.SIG_SETMASK, self._previous_mask)
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)

    def _watch(self) -> None:
        while not self._stopped.is_set():
            if signal.sigtimedwait(self.SIGNALS, 0.1) is not None:
                self._cancel()

    def _handle(self, signum, frame) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self.token.cancelled:
            _hard_exit()
        self.token.cancel()
        self._timer = threading.Timer(self.grace_s, _hard_exit)
        self._timer.daemon = True
        self._timer.start()


# ---------------------------------------------------------------------------------------------
# Commands.


def _add_segment_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment a volume (NIfTI/NRRD/MHA/DICOM folder)",
        epilog="An existing output file is replaced, atomically and only when the run succeeds; "
               "an output that is the input (or the model, or a file inside an input DICOM "
               "folder) is refused before any work, with exit code 2.")
    parser.add_argument("input", help="input volume file or DICOM series folder")
    parser.add_argument("output", help="output labelmap (.nii.gz, .nrrd, .seg.nrrd, .mha)")
    parser.add_argument("--model", help="model file (.safetensors); default: the bundled model")
    parser.add_argument("--task", default="auto", help="task name from the model, or auto")
    parser.add_argument("--device", default="auto", choices=DEVICES)
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
    from .labelmap_io import (check_free_space, check_output_path, check_outputs_spare_inputs,
                              write_labelmap)
    from .segment import SegmentationOptions, StagedProgress, check_input_volume
    from .volume import read_volume, write_atomically

    if not 0 <= args.overlap < 1:
        raise InputError(f"--overlap {args.overlap}: must be in [0, 1)")
    if args.memory_budget_gb <= 0:
        raise InputError("--memory-budget-gb must be positive")
    check_outputs_spare_inputs([args.output, args.stats, args.probabilities],
                               [args.input, args.model or default_model_path()])
    output = check_output_path(args.output)
    if args.stats:
        check_output_path(args.stats, (".json",))
    if args.probabilities:
        check_output_path(args.probabilities, (".nrrd", ".nii.gz", ".nii", ".mha"))
    staged = StagedProgress(progress)
    staged("load", 0.0, "reading the model")
    model = load_model(args.model or default_model_path())
    cancel.raise_if_cancelled()
    staged("load", 0.5, f"reading {args.input}")
    with _native_stderr_silenced():
        volume = read_volume(args.input)
    try:
        check_input_volume(volume)
    except InputError as error:
        raise InputError(f"{args.input}: {error}") from None
    cancel.raise_if_cancelled()
    labelmap_bytes = volume.array.size + 65536  # uncompressed uint8 + header: an upper bound
    check_free_space(output, labelmap_bytes)
    staged("load", 1.0, f"{volume.size} voxels, spacing {tuple(round(s, 3) for s in volume.spacing)} mm")
    options = SegmentationOptions(
        task=args.task, organs=tuple(args.organs) if args.organs else None, crf=not args.no_crf,
        crf_overrides=_parse_crf_overrides(args.crf_param),
        largest_component=not args.no_cleanup, fill_holes=not args.no_cleanup,
        keep_probabilities=bool(args.probabilities),
        inference=InferenceSettings(device=args.device, overlap=args.overlap,
                                    memory_budget_bytes=int(args.memory_budget_gb * 1e9)))
    result = segment_with_fallback(volume, model, options, staged, cancel)

    cancel.raise_if_cancelled()
    staged("write", 0.0, f"writing {output}")
    specs = [s.label for s in result.statistics]
    written = []  # all or nothing: a failure or cancel removes the outputs already written
    try:
        written.append(write_labelmap(result.labels, output, specs))
        cancel.raise_if_cancelled()
        if args.probabilities:
            image = sitk.GetImageFromArray(result.probabilities, isVector=True)
            image.SetSpacing(volume.spacing)
            image.SetOrigin(volume.origin)
            image.SetDirection(volume.direction.flatten().tolist())
            written.append(write_atomically(
                args.probabilities, lambda tmp: sitk.WriteImage(image, str(tmp), True)))
            cancel.raise_if_cancelled()
        if args.stats:
            document = json.dumps(_json_safe(result.stats_dict()), indent=2, allow_nan=False)
            written.append(write_atomically(args.stats, lambda tmp: tmp.write_text(document)))
        cancel.raise_if_cancelled()
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    staged("write", 1.0, "done")
    progress("done", 1.0, f"{result.task.name} in {result.elapsed_s:.1f} s on {result.device}")
    if args.progress != "json":
        _print_statistics(result)
    return EXIT_OK


@contextlib.contextmanager
def _native_stderr_silenced():
    """Readers inside ITK (niftilib, teem, GDCM) print multi-line diagnostics straight to file
    descriptor 2; while they run it points to the null device, so that a failure shows our one
    line only (the reason is in the exception)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _json_safe(value):
    """``value`` with NumPy scalars as Python numbers and NaN/Inf (e.g. the mean intensity of
    an organ that was not found) as None, which strict JSON allows."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def segment_with_fallback(volume, model, options, progress, cancel):
    """Run :func:`segment_volume`; on CUDA out-of-memory retry with half the memory budget
    (smaller tiles; twice), then on the CPU, saying so in ``warning`` progress events."""
    from dataclasses import replace

    import torch

    from .segment import segment_volume

    attempt = options
    for retry in range(3):
        try:
            return segment_volume(volume, model, attempt, progress=progress, cancel=cancel)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if retry == 2:
                break
            budget = attempt.inference.memory_budget_bytes // 2
            progress("warning", 0.0,
                     f"GPU out of memory: retrying with smaller tiles ({budget / 1e9:.2f} GB)")
            attempt = replace(attempt, inference=replace(attempt.inference,
                                                         memory_budget_bytes=budget))
    progress("warning", 0.0, "GPU out of memory: falling back to the CPU (slower)")
    model.network.to("cpu")
    return segment_volume(volume, model, replace(attempt, inference=replace(
        attempt.inference, device="cpu")), progress=progress, cancel=cancel)


def _print_statistics(result) -> None:
    print(f"{result.task.title}: {result.elapsed_s:.1f} s on {result.device}"
          f"{' with CRF' if result.crf_applied else ''}")
    print(f"{'organ':<24}{'volume (mL)':>12}{'mean':>10}{'confidence':>12}")
    for stats in result.statistics:
        flag = "  review" if stats.review else "  not found" if not stats.voxels else ""
        print(f"{stats.label.display_name:<24}{stats.volume_ml:>12.1f}{stats.mean_intensity:>10.1f}"
              f"{stats.confidence:>12.2f}{flag}")


def _add_refine_command(subparsers) -> None:
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
    parser.add_argument("--progress", choices=("bar", "json", "none"), default="none")
    parser.set_defaults(handler=_run_refine)


def _same_grid(reference, other, name: str) -> None:
    from .volume import grid_differences

    if grid_differences(other, reference, spacing_mm=1e-8, spacing_rtol=1e-4, origin_mm=1e-3,
                        direction=1e-4):
        raise InputError(f"{name} is not on the input's grid (size, spacing, origin and "
                         f"direction must match); use the files of one segment run")


def _run_refine(args: argparse.Namespace, progress, cancel: CancelToken) -> int:
    import numpy as np
    import SimpleITK as sitk

    from .bundle import load_model
    from .crf.parameters import CRFParameters
    from .labelmap_io import check_output_path, check_outputs_spare_inputs, write_labelmap
    from .labelmap_io import REMOVE_OFFSET
    from .refine import refine, scribbles_for
    from .volume import Volume, read_volume

    model_path = args.model or default_model_path()
    check_outputs_spare_inputs([args.output], [args.input, args.segmentation, args.scribbles,
                                               args.probabilities, model_path])
    output = check_output_path(args.output)
    model = load_model(model_path)
    with _native_stderr_silenced():
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
    spacing = tuple(image.spacing[::-1])
    for number, organ in enumerate(organs):
        cancel.raise_if_cancelled()
        progress("crf", number / len(organs), f"refining label {organ}")
        labels = refine(image.array, labels, array, channels, organ,
                        scribbles_for(strokes, organ), spacing, task.normalization, crf).labels
    progress("write", 0.99, f"writing {output}")
    write_labelmap(image.with_array(labels), output, list(task.labels))
    progress("done", 1.0, f"refined {len(organs)} organ(s)")
    return EXIT_OK


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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="deeporganseg", description="3D DSN organ segmentation with a dense 3D CRF.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_segment_command(subparsers)
    _add_refine_command(subparsers)
    _add_info_command(subparsers)
    from .bodypart.command import add_regions_command
    from .demo import add_demo_command
    from .phantoms.command import add_phantom_command

    for add in (add_phantom_command, add_demo_command, add_regions_command):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin while waiting slow torch 3-6x on a shared or busy machine
    # (measured with the CRF on 2 cores); it takes effect if torch is not yet imported, which
    # holds for the command line: every command imports torch lazily.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    progress_kind = getattr(args, "progress", "none")
    reporter = _reporter(progress_kind)
    progress = _with_warnings(reporter or (lambda stage, fraction, message="": None))
    cancel = CancelToken()
    failure: tuple[str, int] | None = None
    try:
        with SignalCancellation(cancel):
            code = args.handler(args, progress, cancel)
        sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
    except DeepOrganSegError as error:
        failure = (str(error), error.exit_code)
    except KeyboardInterrupt:
        failure = ("cancelled by the user", EXIT_CANCELLED)
    except BrokenPipeError:  # whoever read stdout went away (`info | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CANCELLED
    except MemoryError:
        failure = ("out of memory; crop the volume or lower --memory-budget-gb", EXIT_INTERNAL)
    except ModuleNotFoundError as error:  # an install problem, not a bug
        failure = (f"the Python package '{error.name}' is missing; install DeepOrganSeg's "
                   f"requirements (pip install -e ., or in Slicer click Segment and accept the "
                   f"install)", EXIT_BAD_INPUT)
    except Exception as error:  # a bug: say so in one line, keep the traceback for debugging
        if os.environ.get("DEEPORGANSEG_DEBUG"):
            raise
        first_line = str(error).splitlines()[0] if str(error) else ""
        failure = (f"internal error ({type(error).__name__}: {first_line}); "
                   f"set DEEPORGANSEG_DEBUG=1 and report it", EXIT_INTERNAL)
    finally:
        if reporter is not None:
            reporter.close()  # before the error line, so no progress bar shares its line
    if failure is None:
        return code
    return _report_failure(*failure, progress_kind)


def _report_failure(message: str, code: int, progress_kind: str) -> int:
    if progress_kind == "json":
        print(json.dumps({"stage": "error", "message": message, "exit_code": code}), flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
