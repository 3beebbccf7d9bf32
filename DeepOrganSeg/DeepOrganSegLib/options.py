"""What to segment and how: one options object from the Slicer panel to the engine.

The Slicer module runs the engine as ``deeporganseg segment`` in a child process, so an option
crosses a command line on its way. :meth:`SegmentationOptions.to_argv` renders it and
:meth:`SegmentationOptions.from_args` parses it back (the command's own argparse defines the
flags), so that the panel, the command line and the pipeline cannot disagree on a default or a
name. Torch-free: the Slicer module builds these in Slicer's own process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    import argparse

__all__ = ["InferenceSettings", "SegmentationOptions", "BYTES_PER_GB"]

#: Bytes per GB of ``--memory-budget-gb``.
BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class InferenceSettings:
    """How to run the network.

    ``memory_budget_bytes`` bounds the activations of one forward pass (tiles are sized to fit;
    the estimate is about twice what a CPU forward pass holds, 1 GB keeps a 512 x 512 x 300
    CT's whole run under 1.5 GB);
    ``overlap`` is the tile overlap as a fraction of the model's patch size; ``amp`` picks the
    autocast dtype on CUDA ("bf16", "fp16" or "off"); CPU always runs float32.
    """

    device: str = "auto"
    memory_budget_bytes: int = 1_000_000_000
    overlap: float = 0.25
    amp: str = "bf16"
    side_outputs: bool = False


@dataclass(frozen=True)
class SegmentationOptions:
    """What to segment and how. ``organs``: label names to keep (None = all of the task's);
    ``crf_overrides``: CRF parameters (names as in the model's ``crf`` metadata) over the
    model's own; ``keep_probabilities``: also return the class probabilities (the command line
    asks for it by naming the file, ``--probabilities FILE``); ``keep_uncertainty``: also
    return their normalised entropy per voxel (``--uncertainty FILE``)."""

    task: str = "auto"
    organs: tuple[str, ...] | None = None
    crf: bool = True
    crf_overrides: dict[str, Any] = field(default_factory=dict)
    largest_component: bool = True
    fill_holes: bool = True
    keep_probabilities: bool = False
    keep_uncertainty: bool = False
    inference: InferenceSettings = InferenceSettings()
    #: Upper bound on the working grid's voxels (after resampling); larger inputs are refused
    #: with the numbers instead of exhausting memory.
    max_working_voxels: int = 80_000_000

    def to_argv(self) -> list[str]:
        """The ``deeporganseg segment`` flags that give these options (input, output, model and
        the file paths are the caller's). Raises ``ValueError`` for what the command line cannot
        express: components and holes cleaned up separately, the CUDA autocast type, side
        outputs, the working-grid limit."""
        defaults = SegmentationOptions()
        inexpressible = [name for name in ("amp", "side_outputs")
                         if getattr(self.inference, name) != getattr(defaults.inference, name)]
        if self.largest_component != self.fill_holes:
            inexpressible.append("largest_component != fill_holes")
        if self.max_working_voxels != defaults.max_working_voxels:
            inexpressible.append("max_working_voxels")
        if inexpressible:
            raise ValueError("not expressible as deeporganseg segment flags: "
                             + ", ".join(inexpressible))
        argv = ["--task", self.task, "--device", self.inference.device]
        if self.organs:
            argv += ["--organs", *self.organs]
        if not self.crf:
            argv.append("--no-crf")
        for name, value in self.crf_overrides.items() if self.crf else ():
            argv += ["--crf-param", f"{name}={json.dumps(value)}"]
        if not self.largest_component:
            argv.append("--no-cleanup")
        if self.inference.overlap != defaults.inference.overlap:
            argv += ["--overlap", repr(self.inference.overlap)]
        if self.inference.memory_budget_bytes != defaults.inference.memory_budget_bytes:
            argv += ["--memory-budget-gb", repr(self.inference.memory_budget_bytes / BYTES_PER_GB)]
        return argv

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SegmentationOptions:
        """The options of a parsed ``deeporganseg segment`` command line; raises
        :class:`~.errors.InputError` with a one-line message for out-of-range values."""
        if not 0 <= args.overlap < 1:
            raise InputError(f"--overlap {args.overlap}: must be in [0, 1)")
        if args.memory_budget_gb <= 0:
            raise InputError("--memory-budget-gb must be positive")
        return cls(
            task=args.task, organs=tuple(args.organs) if args.organs else None,
            crf=not args.no_crf, crf_overrides=_parse_crf_overrides(args.crf_param),
            largest_component=not args.no_cleanup, fill_holes=not args.no_cleanup,
            keep_probabilities=bool(args.probabilities), keep_uncertainty=bool(args.uncertainty),
            inference=InferenceSettings(device=args.device, overlap=args.overlap,
                                        memory_budget_bytes=round(args.memory_budget_gb * BYTES_PER_GB)))


def _parse_crf_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--crf-param NAME=VALUE`` pairs as a dict; each VALUE is JSON (a number or a list)."""
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
