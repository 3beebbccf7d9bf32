"""CUDA speed: the network's inference, the dense CRF and a training step on one GPU.

    python benchmarks/gpu.py [--model FILE] [--repeats 3] [--crf-sizes 128x128x128 96x256x256]
    python benchmarks/gpu.py --quick      # tiny inputs; on the CPU where there is no GPU (CI)

Prints the device's name, then three tables. Wall time: the median of ``--repeats`` calls after
one warm-up call (CUDA context, cuDNN's choice of algorithms), each call ending when the GPU has
finished; peak: torch's peak allocated CUDA memory above what was allocated before the calls.

1. Inference of the bundled model (or ``--model``), task abdomen-ct, on a CT-sized volume
   (512x512x300 int16 HU, 0.75 x 0.75 x 1 mm: ``benchmarks/inference.py``'s stretched abdominal
   phantom): ``cascade.network_probabilities`` on the working grid with bf16 autocast and in
   float32, then the whole ``segment.segment_volume`` (CRF on, in memory: no file I/O).
   ``inference.predict`` hands its probabilities back on the CPU, so the CRF inside
   ``segment_volume`` runs on the CPU even here; table 2 shows what CUDA would make of it.
2. ``crf.meanfield.dense_crf`` on ``benchmarks/crf.py``'s phantom scene (3 classes, default
   parameters) at each of ``--crf-sizes``, from the input arrays to the labels, and the share of
   voxels whose label equals the CPU's.
3. One training step (``benchmarks/training_speed.py``'s: forward, Dice + CE with deep
   supervision, backward, clipping, AdamW) of its baseline network, in float32, with bf16
   autocast, bf16 and ``channels_last_3d``, and bf16 with a batch four times larger. Needs MONAI
   (the training losses); without it this table is skipped.

Without CUDA it says so in one line and exits 0; ``--quick`` runs the same code on tiny inputs
on the CPU then. Nothing is downloaded: the volumes are generated here, the model is a file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from _common import add_quick_flag, installed, print_header, print_row, report_skipped
from crf import make_phantom_scene, run_deeporganseg
from inference import ct_like_volume

from DeepOrganSegLib.cascade import network_probabilities
from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.options import InferenceSettings, SegmentationOptions
from DeepOrganSegLib.resources import default_model_path
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume import Volume

Result = TypeVar("Result")


@dataclass(frozen=True)
class Sizes:
    """What each table measures: the CT's (k, j, i) voxels, the CRF scenes' (Z, Y, X) voxels,
    the training batch (patches of ``patch``³ voxels) and the timed training steps."""

    ct: tuple[int, int, int]
    crf: tuple[tuple[int, int, int], ...]
    patch: int
    batch: int
    steps: int


FULL = Sizes(ct=(300, 512, 512), crf=((128, 128, 128), (96, 256, 256)), patch=48, batch=4,
             steps=5)
QUICK = Sizes(ct=(40, 96, 96), crf=((16, 24, 24),), patch=16, batch=1, steps=1)


def timed(function: Callable[[], Result], device: torch.device, repeats: int
          ) -> tuple[float, float | None, Result]:
    """Median wall seconds of ``repeats`` calls of ``function``, its peak CUDA memory in GB
    above what was allocated before (None on the CPU) and the last call's result. On CUDA a
    warm-up call comes first, and each call ends when the GPU has finished it."""
    cuda = device.type == "cuda"
    if cuda:
        function()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if cuda else 0
    times, result = [], None
    for _ in range(repeats):
        result = None  # the previous call's output is not part of this call's peak
        started = time.perf_counter()
        result = function()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    assert result is not None, "repeats must be at least 1"
    peak = (torch.cuda.max_memory_allocated(device) - before) / 1e9 if cuda else None
    return statistics.median(times), peak, result


def _gb(peak: float | None) -> str:
    return "–" if peak is None else f"{peak:.2f}"


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _shape(size: str) -> tuple[int, int, int]:
    """``ZxYxX`` as a shape."""
    z, y, x = (int(n) for n in size.lower().split("x"))
    return z, y, x


def inference_table(model_path: Path, device: torch.device, shape: tuple[int, int, int],
                    repeats: int) -> None:
    """Table 1: the network alone (bf16 autocast, float32) and the whole segmentation."""
    model = load_model(model_path)
    task = model.metadata.task("abdomen-ct")
    hounsfield = np.clip(ct_like_volume(shape, seed=1), -1024, 3071).astype(np.int16)
    volume = Volume(hounsfield, spacing=(0.75, 0.75, 1.0))
    grid = working_grid(volume, task.spacing_mm)
    print(f"\n{model_path.name} on a {_size(shape[::-1])} int16 CT (0.75 x 0.75 x 1 mm), "
          f"working grid {_size(grid.shape[::-1])}, {'cascade' if model.stage1 else 'single stage'}")
    print_header("inference, task abdomen-ct", "wall time (s)", "peak GPU memory (GB)")
    for amp, name in (("bf16", "bf16 autocast"), ("off", "float32")):
        settings = InferenceSettings(device=device.type, amp=amp)
        seconds, peak, _ = timed(lambda: network_probabilities(volume, model, task, grid, settings),
                                 device, repeats)
        print_row(f"network_probabilities, {name}", f"{seconds:.2f}", _gb(peak))
    options = SegmentationOptions(task="abdomen-ct", inference=InferenceSettings(device=device.type))
    seconds, peak, _ = timed(lambda: segment_volume(volume, model, options), device, repeats)
    print_row("segment_volume, CRF on (on the CPU, see above), in memory", f"{seconds:.2f}",
              _gb(peak))


def crf_table(device: torch.device, shapes: tuple[tuple[int, int, int], ...],
              repeats: int) -> None:
    """Table 2: the dense CRF on ``device`` at each size, and its agreement with the CPU."""
    print()
    print_header("dense CRF, phantom scene, 3 classes", "size (Z×Y×X)", "wall time (s)",
                 "peak GPU memory (GB)", "labels = CPU")
    for shape in shapes:
        scene = make_phantom_scene(shape, seed=0)
        seconds, peak, labels = timed(lambda: run_deeporganseg(scene, device.type), device,
                                      repeats)
        agreement = float((labels == run_deeporganseg(scene)).mean())
        print_row("dense_crf", _size(shape), f"{seconds:.2f}", _gb(peak),
                  f"{100 * agreement:.3f} %")


def training_table(device: torch.device, sizes: Sizes) -> None:
    """Table 3: seconds per training step, float32 and three bf16 variants."""
    print()
    if not installed("monai"):
        report_skipped("the training step", "MONAI is not installed: pip install -e .[training]")
        return
    from training_speed import Option, seconds_per_step

    patches = f"{sizes.patch}³"
    base = Option(f"float32, batch {sizes.batch} of {patches}", patch=sizes.patch,
                  batch=sizes.batch, threads=torch.get_num_threads())
    bf16 = replace(base, name=f"bf16 autocast, batch {sizes.batch} of {patches}", bf16=True)
    larger = 4 * sizes.batch
    options = [base, bf16, replace(bf16, name=f"{bf16.name}, channels_last_3d", channels_last=True),
               replace(bf16, name=f"bf16 autocast, batch {larger} of {patches}", batch=larger)]
    print_header("training step (training_speed.py's baseline network)", "s/step",
                 "patches/s")
    for option in options:
        seconds = seconds_per_step(option, sizes.steps, device.type)
        print_row(option.name, f"{seconds:.3f}", f"{option.batch / seconds:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="default: the bundled model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crf-sizes", nargs="+", metavar="ZxYxX",
                        default=[_size(shape) for shape in FULL.crf],
                        help="sizes of the CRF scene (Z x Y x X voxels)")
    add_quick_flag(parser)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print(f"no CUDA device here (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda}): nothing measured; --quick runs the same code on the CPU")
        return 0
    device = torch.device("cuda" if cuda else "cpu")
    sizes = QUICK if args.quick else replace(FULL, crf=tuple(map(_shape, args.crf_sizes)))
    repeats = 1 if args.quick else args.repeats
    if cuda:
        properties = torch.cuda.get_device_properties(device)
        name = f"{properties.name}, {properties.total_memory / 2 ** 30:.0f} GiB"
    else:
        name = f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (no CUDA)"
    print(f"# device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version() if cuda else None}")
    inference_table(args.model or default_model_path(), device, sizes.ct, repeats)
    crf_table(device, sizes.crf, repeats)
    training_table(device, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
