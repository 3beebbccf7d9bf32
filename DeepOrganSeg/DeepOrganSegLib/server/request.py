"""What a client may ask for, checked before any of its volumes is sent.

A job request (:func:`.remote.protocol.job_request`) names a command, its option flags and the
suffix and size of each file. The flags are parsed by the local command's own parser (so a
flag means on the server what it means on the command line) after an allow-list has kept out
every flag that names a file, a model or a device: those are the operator's. What the model
can tell before seeing a volume (the task, the organs, the CRF parameters) is checked here too,
so that a request the job would refuse costs no upload.
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..errors import InputError
from ..model import ModelMetadata
from ..options import SegmentationOptions
from ..remote.protocol import INPUT_ROLES, OUTPUT_ROLES, UPLOAD_SUFFIXES, suffix_of

__all__ = ["JobSpec", "TooLarge", "ALLOWED_FLAGS", "parse_job_request", "command_args"]

#: The option flags a client may give, per command; any other (``--model``, ``--device``, a
#: file option, an abbreviation, ``--help``) is refused.
ALLOWED_FLAGS = {
    "segment": frozenset({"--task", "--organs", "--no-crf", "--crf-param", "--no-cleanup",
                          "--overlap", "--memory-budget-gb"}),
    "refine": frozenset({"--task"}),
}
#: The command-line arguments that are positional, per command (in their order); every other
#: role is the option of the same name.
_POSITIONAL = {"segment": ("input", "output"),
               "refine": ("input", "segmentation", "scribbles", "output")}
#: A job request's largest body: a few flags and file suffixes.
MAX_REQUEST_BYTES = 65536


class TooLarge(InputError):
    """The inputs are larger than the server takes (HTTP 413)."""


@dataclass(frozen=True)
class JobSpec:
    """A checked job request: the command, its option flags, each input's (suffix, bytes)
    and each output's suffix."""

    command: str
    options: tuple[str, ...]
    inputs: dict[str, tuple[str, int]]
    outputs: dict[str, str]

    @property
    def upload_bytes(self) -> int:
        return sum(size for _, size in self.inputs.values())

    def file_names(self) -> dict[str, str]:
        """Each role's file name in the job's folder: the role and its suffix."""
        suffixes = {**{role: suffix for role, (suffix, _) in self.inputs.items()}, **self.outputs}
        return {role: role + suffix for role, suffix in suffixes.items()}


class _RequestParser(argparse.ArgumentParser):
    """An argument parser that refuses with an :class:`InputError` instead of printing to the
    server's stderr and exiting."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"options: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise InputError(f"options: {message or 'not accepted'}")


@functools.lru_cache(maxsize=1)
def _parsers() -> dict[str, argparse.ArgumentParser]:
    """The local commands' own parsers, built once (parsing leaves a parser unchanged)."""
    from ..cli.refine import add_parser as add_refine
    from ..cli.segment import add_parser as add_segment

    subparsers = _RequestParser(prog="deeporganseg").add_subparsers(dest="command")
    for add_parser in (add_segment, add_refine):
        add_parser(subparsers)
    return dict(subparsers.choices)


def command_args(command: str, options: tuple[str, ...], paths: dict[str, str],
                 device: str) -> argparse.Namespace:
    """The local command's parsed arguments for ``options``, with each role's file at
    ``paths[role]`` and the server's ``device``: what its handler would receive."""
    argv = [paths[role] for role in _POSITIONAL[command]] + list(options)
    for role, path in paths.items():
        if role not in _POSITIONAL[command]:
            argv += [f"--{role}", path]
    if command == "segment":
        argv += ["--device", device]
    return _parsers()[command].parse_args(argv)


def parse_job_request(body: bytes, metadata: ModelMetadata, device: str,
                      max_upload_bytes: int) -> JobSpec:
    """The checked request of ``POST /v1/jobs``. Raises :class:`InputError` with one line for
    anything the job would refuse before reading a volume, :class:`TooLarge` for inputs above
    ``max_upload_bytes`` in all."""
    try:
        document = json.loads(body)
    except ValueError:
        raise InputError("the job request is not JSON") from None
    if not isinstance(document, dict):
        raise InputError("the job request must be a JSON object")
    command = document.get("command")
    if command not in INPUT_ROLES:
        raise InputError(f"command must be one of {', '.join(INPUT_ROLES)}")
    options = _checked_options(command, document.get("options", []))
    spec = JobSpec(command, options, _checked_inputs(command, document.get("inputs")),
                   _checked_outputs(command, document.get("outputs")))
    if spec.upload_bytes > max_upload_bytes:
        raise TooLarge(f"the inputs are {spec.upload_bytes / 1e6:.1f} MB; this server takes at "
                       f"most {max_upload_bytes / 1e6:.1f} MB per job")
    placeholders = {role: str(Path("job") / name) for role, name in spec.file_names().items()}
    _check_against_model(command, command_args(command, options, placeholders, device), metadata)
    return spec


def _checked_options(command: str, options: Any) -> tuple[str, ...]:
    if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
        raise InputError("options must be a list of strings")
    for option in options:
        if option.startswith("-") and option not in ALLOWED_FLAGS[command] \
                and not _is_number(option):
            raise InputError(f"option {option} is not for a client to give; the server's "
                             f"operator chooses the model, the device and the files")
    return tuple(options)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _checked_inputs(command: str, inputs: Any) -> dict[str, tuple[str, int]]:
    roles = INPUT_ROLES[command]
    if not isinstance(inputs, dict) or set(inputs) != set(roles):
        raise InputError(f"{command} takes the inputs {', '.join(roles)}")
    checked = {}
    for role in roles:
        entry = inputs[role]
        suffix = entry.get("suffix") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(suffix, str) or suffix_of(suffix, UPLOAD_SUFFIXES) != suffix.lower():
            raise InputError(f"input {role}: the server takes {', '.join(UPLOAD_SUFFIXES)} files")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InputError(f"input {role}: give its size in bytes")
        checked[role] = (suffix.lower(), size)
    return checked


def _checked_outputs(command: str, outputs: Any) -> dict[str, str]:
    allowed = OUTPUT_ROLES[command]
    if not isinstance(outputs, dict) or "output" not in outputs or not set(outputs) <= set(allowed):
        raise InputError(f"{command} writes output and optionally "
                         f"{', '.join(role for role in allowed if role != 'output') or 'nothing else'}")
    checked = {}
    for role, suffix in outputs.items():
        if not isinstance(suffix, str) or suffix_of(suffix, allowed[role]) != suffix.lower():
            raise InputError(f"output {role}: use one of {', '.join(allowed[role])}")
        checked[role] = suffix.lower()
    return checked


def _check_against_model(command: str, args: argparse.Namespace, metadata: ModelMetadata) -> None:
    """What the model refuses without a volume: an unknown task, organ or CRF parameter."""
    if command == "refine":
        if args.task is not None:
            metadata.task(args.task)
        return
    options = SegmentationOptions.from_args(args)
    task = None if options.task == "auto" else options.task
    if task is not None:
        metadata.selected_labels(task, options.organs)
    if options.crf:
        metadata.crf_parameters(task, options.crf_overrides)
