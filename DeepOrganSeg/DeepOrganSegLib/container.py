"""The safetensors container every DeepOrganSeg model file is (segmentation models and the
body-part classifier): its JSON header read without trusting it, and the tensors it announces
checked against an architecture before any weight is read. Opening a file never executes code
(pickle/``.pt`` files are refused)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import ModelFileError

__all__ = ["MAX_HEADER_BYTES", "read_header", "check_header_shapes"]

#: A header larger than this (bytes) is refused before it is read.
MAX_HEADER_BYTES = 16 * 1024 * 1024


def read_header(path: Path) -> tuple[dict, int]:
    """Parse a safetensors header without trusting it: (header dict, header byte length)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as stream:
            prefix = stream.read(8)
            if len(prefix) < 8:
                raise ModelFileError(f"{path}: file is truncated ({size} bytes); re-copy the model")
            (length,) = struct.unpack("<Q", prefix)
            if length == 0 or length > MAX_HEADER_BYTES or length > size - 8:
                raise ModelFileError(
                    f"{path}: not a DeepOrganSeg model file (expected .safetensors with "
                    f"DeepOrganSeg metadata; pickle/.pt files are refused because opening them "
                    f"can run code)")
            raw = stream.read(length)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot read model file ({error.strerror})") from None
    if not raw.lstrip().startswith(b"{"):
        raise ModelFileError(f"{path}: not a safetensors file; give a DeepOrganSeg .safetensors "
                             f"model file")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path}: model file header is corrupt; re-copy the model") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: model file header is corrupt; re-copy the model")
    return header, length


def check_header_shapes(path: Path, header: dict, expected: dict) -> None:
    """Compare the tensors a file's header announces with the architecture's, by name and
    shape, before any weight is read."""
    announced = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool)
                                                and n >= 0 for n in shape)):
            raise ModelFileError(f"{path}: model file header is corrupt (tensor {name!r}); "
                                 f"re-copy the model")
        announced[name] = tuple(shape)
    missing = sorted(set(expected) - set(announced))
    unexpected = sorted(set(announced) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise ModelFileError(f"{path}: weights do not match the architecture ({detail}; "
                             f"{len(missing)} missing, {len(unexpected)} unexpected)")
    for name, shape in announced.items():
        if shape != tuple(expected[name].shape):
            raise ModelFileError(f"{path}: weight {name} has shape {shape}, the architecture "
                                 f"needs {tuple(expected[name].shape)}")
