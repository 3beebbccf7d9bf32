"""The HTTP protocol between ``deeporganseg serve`` and its clients, in one place.

A job is four kinds of request, each authenticated by ``Authorization: Bearer TOKEN``:

1. ``POST /v1/jobs`` with a small JSON body (:func:`job_request`): the command, its option
   flags, the suffix and size of each input and the suffix of each output wanted. The server
   checks all of it (and the size limit, and its queue) before any volume is sent, and answers
   ``201 {"job": ID}``.
2. ``PUT /v1/jobs/ID/inputs/ROLE`` once per input, the file's bytes as the body. The job starts
   when its last input has arrived.
3. ``GET /v1/jobs/ID?since=N&wait_s=W``: the job's state and its progress events from number
   ``N`` on, waiting up to ``W`` seconds for news (long polling).
4. ``GET /v1/jobs/ID/outputs/ROLE`` for each output once it is done, then ``DELETE /v1/jobs/ID``
   (which also cancels a job that is still queued or running).

Bytes in, bytes out: no file path crosses the wire in either direction. The server names its
own files after their role, and writes each of its file paths in messages as ``<role>``
(:func:`mark_paths`); the client puts its own paths back (:func:`unmark_paths`), so that a
remote run says what a local one says. Every refusal is a 4xx/5xx status whose JSON body is
``{"error": ONE LINE, "exit_code": N}`` (the exit code a local run would give).
"""

from __future__ import annotations

import json
import re
from typing import Mapping, Sequence

__all__ = ["API", "INPUT_ROLES", "OUTPUT_ROLES", "UPLOAD_SUFFIXES", "IMAGE_SUFFIXES",
           "STATES", "FINISHED_STATES", "DEFAULT_PORT", "job_request", "suffix_of",
           "mark_paths", "unmark_paths", "error_body"]

#: The prefix of every route.
API = "/v1"
#: The port ``deeporganseg serve`` listens on unless told otherwise.
DEFAULT_PORT = 8765

#: The files each command reads, by role (the names of the local command's arguments).
INPUT_ROLES: dict[str, tuple[str, ...]] = {
    "segment": ("input",),
    "refine": ("input", "segmentation", "scribbles", "probabilities"),
}
#: Formats the server accepts as uploads: single files whose voxel data lives inside them
#: (detached headers, .mhd/.nhdr/.hdr, would name a second file on the server).
UPLOAD_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")
#: Formats of the image outputs (probabilities, uncertainty) the local command writes.
IMAGE_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha")
_LABELMAP_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")
#: The files each command can write, by role, with the suffixes each may have (one file per
#: output: a .mhd labelmap would be two).
OUTPUT_ROLES: dict[str, dict[str, tuple[str, ...]]] = {
    "segment": {"output": _LABELMAP_SUFFIXES, "probabilities": IMAGE_SUFFIXES,
                "uncertainty": IMAGE_SUFFIXES, "stats": (".json",)},
    "refine": {"output": _LABELMAP_SUFFIXES},
}

#: A job's states, in order; the last three are final.
STATES = ("uploading", "queued", "running", "done", "failed", "cancelled")
FINISHED_STATES = frozenset(STATES[3:])

_MARK = re.compile(r"<([a-z]+)>")


def suffix_of(name: str, allowed: tuple[str, ...]) -> str | None:
    """The suffix among ``allowed`` that ``name`` ends with (case-insensitive, the longest
    first: ``.seg.nrrd`` before ``.nrrd``), or None."""
    lower = name.lower()
    for suffix in sorted(allowed, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    return None


def job_request(command: str, options: Sequence[str], inputs: Mapping[str, tuple[str, int]],
                outputs: Mapping[str, str]) -> dict:
    """The body of ``POST /v1/jobs``: ``command``'s option flags (``options``, as its command
    line gives them), each input role's (suffix, size in bytes) and each output role's
    suffix."""
    return {"command": command, "options": list(options),
            "inputs": {role: {"suffix": suffix, "bytes": size}
                       for role, (suffix, size) in inputs.items()},
            "outputs": dict(outputs)}


def mark_paths(message: str, paths: Mapping[str, str]) -> str:
    """``message`` with each of the server's file paths (values of ``paths``, by role) written
    as ``<role>``; longer paths first, so that no path is cut by a shorter one."""
    for role, path in sorted(paths.items(), key=lambda item: -len(item[1])):
        message = message.replace(path, f"<{role}>")
    return message


def unmark_paths(message: str, paths: Mapping[str, str]) -> str:
    """``message`` with every ``<role>`` the client knows replaced by its own path for that
    role (other text is left as it is)."""
    return _MARK.sub(lambda match: paths.get(match.group(1), match.group(0)), message)


def error_body(message: str, exit_code: int) -> bytes:
    """The JSON body of a refusal: the reason on one line and the local run's exit code."""
    line = " ".join(message.split()) or "error"
    return json.dumps({"error": line, "exit_code": exit_code}).encode()
