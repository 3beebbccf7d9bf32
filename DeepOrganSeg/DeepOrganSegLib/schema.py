"""Field checks shared by every DeepOrganSeg file format (segmentation and body-part
classifier model files): each failure raises :class:`~DeepOrganSegLib.errors.ModelFileError`
naming the offending field, so that an untrusted file is refused in one line."""

from __future__ import annotations

import math
from typing import Any, Literal, overload

from .errors import ModelFileError

__all__ = ["require", "get_field", "numbers", "check_format"]


def require(condition: bool, where: str, what: str) -> None:
    if not condition:
        raise ModelFileError(f"metadata field '{where}' {what}")


def get_field(mapping: dict, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    require(isinstance(mapping, dict), where, "must be an object")
    require(key in mapping, f"{where}.{key}" if where else key, "is missing")
    value = mapping[key]
    path = f"{where}.{key}" if where else key
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in
                                           (kind if isinstance(kind, tuple) else (kind,)))
    require(ok, path, f"must be of type {getattr(kind, '__name__', kind)}")
    return value


@overload
def numbers(values: Any, count: Literal[2], where: str,
             positive: bool = False) -> tuple[float, float]: ...
@overload
def numbers(values: Any, count: Literal[3], where: str,
             positive: bool = False) -> tuple[float, float, float]: ...
def numbers(values: Any, count: int, where: str, positive: bool = False) -> tuple[float, ...]:
    ok = (isinstance(values, list) and len(values) == count
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive) for v in values))
    require(ok, where, f"must be {count} finite {'positive ' if positive else ''}numbers")
    return tuple(float(v) for v in values)


def check_format(data: Any, expected_format: str, newest_version: int, what: str) -> int:
    """Check a metadata document's ``format`` and ``format_version``; return the version.

    A newer version than this code reads gets advice to update rather than a field error."""
    require(isinstance(data, dict), "(root)", "must be a JSON object")
    require(data.get("format") == expected_format, "format", f"must be {expected_format!r}")
    version = get_field(data, "format_version", int, "")
    if version > newest_version:
        raise ModelFileError(f"{what} format version {version} is newer than this DeepOrganSeg "
                             f"reads ({newest_version}); update DeepOrganSeg")
    require(version >= 1, "format_version", "must be >= 1")
    return version
