"""The files of one segmentation run: the labelmap, optionally the class probabilities, the
uncertainty and the organ statistics (JSON), written all or nothing. ``deeporganseg segment``
writes one run's; ``deeporganseg batch`` one per case, the statistics last, so that their file
says the case is complete."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .labelmap_io import write_labelmap
from .progress import CancelToken
from .segment import SegmentationResult
from .volume import Volume
from .volume_io import write_atomically, write_probabilities, write_volume

__all__ = ["ResultFiles", "write_result", "statistics_document"]

@dataclass(frozen=True)
class ResultFiles:
    """Where one run's outputs go; None: not asked for. The probabilities and the uncertainty
    need a result made with ``keep_probabilities`` / ``keep_uncertainty``."""

    labelmap: Path
    probabilities: Path | None = None
    uncertainty: Path | None = None
    statistics: Path | None = None


def statistics_document(result: SegmentationResult, extra: dict[str, Any] | None = None) -> str:
    """The statistics JSON of ``result`` (``--stats``: task, device, seconds, CRF, and per organ
    its value, names, voxels, volume in mL, mean intensity, confidence and review flag), with
    ``extra`` keys before them; strict JSON (NaN as null)."""
    return json.dumps(_json_safe({**(extra or {}), **result.stats_dict()}), indent=2,
                      allow_nan=False)


def write_result(result: SegmentationResult, volume: Volume, files: ResultFiles,
                 cancel: CancelToken, extra_statistics: dict[str, Any] | None = None
                 ) -> list[Path]:
    """Write ``result`` (segmented from ``volume``) to ``files``: the labelmap, the
    probabilities, the uncertainty, then the statistics (with ``extra_statistics``), each
    atomically. All or nothing: a failure or a cancel removes the outputs already written.
    Returns the paths written, in that order."""
    specs = [s.label for s in result.statistics]
    written: list[Path] = []
    try:
        written.append(write_labelmap(result.labels, files.labelmap, specs))
        cancel.raise_if_cancelled()
        if files.probabilities:
            assert result.probabilities is not None  # kept: keep_probabilities=True
            written.append(write_probabilities(result.probabilities, volume, files.probabilities))
            cancel.raise_if_cancelled()
        if files.uncertainty:
            assert result.uncertainty is not None  # kept: keep_uncertainty=True
            written.append(write_volume(volume.with_array(result.uncertainty), files.uncertainty))
            cancel.raise_if_cancelled()
        if files.statistics:
            document = statistics_document(result, extra_statistics)
            written.append(write_atomically(files.statistics,
                                            lambda tmp: tmp.write_text(document)))
        cancel.raise_if_cancelled()
    except BaseException:
        for path in written:
            Path(path).unlink(missing_ok=True)
        raise
    return written


def _json_safe(value: Any) -> Any:
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
