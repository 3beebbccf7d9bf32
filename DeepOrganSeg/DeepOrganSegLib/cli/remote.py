"""``deeporganseg segment/refine --server URL``: the same command, run on a ``deeporganseg
serve`` machine (:func:`DeepOrganSegLib.remote.client.run_remote`), after the local checks of
its outputs; the same files, messages and exit codes as the local run.

The server's operator chooses the model and the device, so ``--model`` and ``--device`` are
refused here. An input the server does not take as it is (a DICOM series folder, a detached
header) is read here and sent as a compressed NRRD.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..errors import EXIT_OK, InputError
from ..options import SegmentationOptions
from ..progress import CancelToken, ProgressFunction
from ..remote.protocol import UPLOAD_SUFFIXES, suffix_of

__all__ = ["add_server_options", "segment_remotely", "refine_remotely"]


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """The ``--server URL`` and ``--token-file FILE`` options of a command."""
    group = parser.add_argument_group("on a server")
    group.add_argument("--server", metavar="URL",
                       help="run on a `deeporganseg serve` machine, e.g. https://gpu.example:8765 "
                            "(its model and device; set SSL_CERT_FILE to trust a private CA)")
    group.add_argument("--token-file", metavar="FILE", help="file holding the server's token")


def segment_remotely(args: argparse.Namespace, options: SegmentationOptions, output: Path,
                     progress: ProgressFunction, cancel: CancelToken) -> int:
    """``deeporganseg segment`` on the server, once its outputs are checked here."""
    _refuse_operator_flags(args)
    flags = options.to_argv()
    at = flags.index("--device")
    del flags[at:at + 2]
    outputs = {"output": output, **{role: Path(getattr(args, role)) for role in
                                    ("probabilities", "uncertainty", "stats") if getattr(args, role)}}
    with tempfile.TemporaryDirectory(prefix="deeporganseg-upload-") as folder:
        inputs = {"input": _uploadable(args.input, Path(folder), progress)}
        report = _run("segment", args, inputs, outputs, flags, progress, cancel)
    if args.progress != "json":
        print(report)
    return EXIT_OK


def refine_remotely(args: argparse.Namespace, output: Path, progress: ProgressFunction,
                    cancel: CancelToken) -> int:
    """``deeporganseg refine`` on the server, once its output is checked here."""
    _refuse_operator_flags(args)
    with tempfile.TemporaryDirectory(prefix="deeporganseg-upload-") as folder:
        inputs = {role: _uploadable(getattr(args, role), Path(folder), progress)
                  for role in ("input", "segmentation", "scribbles")}
        inputs["probabilities"] = _uploadable(args.probabilities, Path(folder), progress,
                                              probabilities=True)
        _run("refine", args, inputs, {"output": output}, ["--task", args.task] if args.task else [],
             progress, cancel)
    return EXIT_OK


def _refuse_operator_flags(args: argparse.Namespace) -> None:
    if args.model:
        raise InputError("--model: with --server the server's operator chooses the model; "
                         "leave --model out")
    if getattr(args, "device", "auto") != "auto":
        raise InputError("--device: with --server the server's operator chooses the device; "
                         "leave --device out")


def _run(command: str, args: argparse.Namespace, inputs: dict[str, Path],
         outputs: dict[str, Path], flags: list[str], progress: ProgressFunction,
         cancel: CancelToken) -> str:
    from ..remote.client import Server, read_token, run_remote

    server = Server(args.server, read_token(args.token_file) if args.token_file else None)
    names = {role: str(getattr(args, role)) for role in inputs}  # not a converted copy's
    return run_remote(server, command, inputs, outputs, flags, progress, cancel, names)


def _uploadable(path: str, folder: Path, progress: ProgressFunction,
                probabilities: bool = False) -> Path:
    """``path`` if the server takes it as it is; else its volume (or probabilities) read here,
    with the local command's checks and messages, and written into ``folder`` as NRRD."""
    if Path(path).is_file() and suffix_of(path, UPLOAD_SUFFIXES):
        return Path(path)
    from .native_stderr import native_stderr_silenced
    from ..volume_io import read_probabilities, read_volume, write_probabilities, write_volume

    progress("upload", 0.0, f"reading {path}")
    converted = folder / f"{len(list(folder.iterdir()))}.nrrd"
    with native_stderr_silenced():
        if probabilities:
            return write_probabilities(*read_probabilities(path), converted)
        return write_volume(read_volume(path), converted)
