"""The dense CRF's parameters: what a model file stores, the command line and the Slicer panel
set, checked in one place. Torch-free, so that the Slicer module can import it in Slicer's own
process (for its defaults and bounds) without loading PyTorch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import InputError

__all__ = ["CRFParameters", "MAX_ITERATIONS", "PANEL_RANGES"]

#: Most mean-field iterations a run may ask for (each costs about as much as the first).
MAX_ITERATIONS = 100

#: (minimum, maximum) the Slicer panel offers for each parameter. Its spin boxes and sliders
#: need finite bounds where the engine only needs a value >= 0 (or > 0): wide enough for every
#: tuned model (training/tune_crf.py's grid) and a user's corrections, the rest of the engine's
#: range left to the command line.
PANEL_RANGES: dict[str, tuple[float, float]] = {
    "iterations": (1, MAX_ITERATIONS),
    "appearance_weight": (0.0, 20.0),
    "appearance_spatial_mm": (0.5, 50.0),
    "appearance_intensity": (0.01, 2.0),
    "smoothness_weight": (0.0, 20.0),
    "smoothness_spatial_mm": (0.5, 20.0),
}


@dataclass(frozen=True)
class CRFParameters:
    """Parameters of the dense CRF; a model file stores tuned ones as :meth:`to_dict`.

    Spatial widths are in millimetres, the intensity width in the units of the image given to
    :func:`dense_crf` (for the bundled models: normalised intensities, CT ``(HU - 40) / 350``,
    so 0.05 is 17.5 HU, MR z-scores). Weights are dimensionless, relative to the unary
    ``-log p``. The defaults were chosen on noisy predictions of CT and MR phantoms and of the
    ICBM152 brain on 2 mm grids (docs/crf.md).
    """

    iterations: int = 5
    appearance_weight: float = 10.0  # w1
    appearance_spatial_mm: float = 5.0  # θα
    appearance_intensity: float = 0.05  # θβ
    smoothness_weight: float = 1.0  # w2
    smoothness_spatial_mm: float = 2.0  # θγ
    side_output_weights: tuple[float, ...] = ()  # τ_d, one per side output
    #: An organ the CRF would shrink below this share of the network's own volume of it keeps
    #: the network's voxels (0: off). The fully connected CRF pulls thin and small structures
    #: (an unenhanced aorta, a flattened IVC, a pancreas among bowel) into the organ or
    #: background around them; a structure the network found is never erased.
    min_organ_share: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) \
                or not 1 <= self.iterations <= MAX_ITERATIONS:
            raise InputError(f"iterations must be an integer from 1 to {MAX_ITERATIONS}, "
                             f"got {self.iterations!r}")
        for name in ("appearance_weight", "smoothness_weight"):
            _check_number(name, getattr(self, name), minimum=0.0)
        for name in ("appearance_spatial_mm", "appearance_intensity", "smoothness_spatial_mm"):
            _check_number(name, getattr(self, name), minimum=0.0, exclusive=True)
        _check_number("min_organ_share", self.min_organ_share, minimum=0.0)
        if self.min_organ_share > 1.0:
            raise InputError(f"min_organ_share must be at most 1, got {self.min_organ_share}")
        for weight in self.side_output_weights:
            _check_number("side_output_weights", weight, minimum=0.0)
        if sum(self.side_output_weights) > 1.0:
            raise InputError(f"side_output_weights must sum to at most 1, got {self.side_output_weights}")

    @property
    def has_weight(self) -> bool:
        """Whether the CRF would change anything: one of its kernels has a weight."""
        return self.appearance_weight != 0 or self.smoothness_weight != 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary (the tuple becomes a list)."""
        data = asdict(self)
        data["side_output_weights"] = list(self.side_output_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CRFParameters:
        """Parameters from a model file or CLI overrides; missing keys take the defaults.

        Raises :class:`~.errors.InputError` (a ``ValueError``) with a one-line message for unknown
        keys, wrong types and out-of-range values."""
        if not isinstance(data, dict):
            raise InputError(f"CRF parameters must be a mapping of names to values, got {data!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown CRF parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if "iterations" in values:
            values["iterations"] = _as_integer("iterations", values["iterations"])
        if "side_output_weights" in values:
            weights = values["side_output_weights"]
            if isinstance(weights, (int, float)) and not isinstance(weights, bool):
                weights = [weights]
            if not isinstance(weights, (list, tuple)):
                raise InputError(f"side_output_weights must be a list of numbers, got {weights!r}")
            values["side_output_weights"] = tuple(_as_float("side_output_weights", w) for w in weights)
        for name in known - {"iterations", "side_output_weights"}:
            if name in values:
                values[name] = _as_float(name, values[name])
        return cls(**values)


def _check_number(name: str, value: Any, *, minimum: float, exclusive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        raise InputError(f"{name} must be a finite number {bound}, got {value!r}")


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}")
    return float(value)


def _as_integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value):
        raise InputError(f"{name} must be an integer, got {value!r}")
    return int(value)
