"""Network inference on a whole working-grid volume: one pass, or Gaussian-blended tiles.

Why not MONAI's ``sliding_window_inference``? It always tiles at the training patch size, so
with 25 % overlap most voxels are computed 2-3 times. A fully convolutional network needs no
such thing: we run the largest tile that fits the memory budget (often the whole volume) and
overlap tiles only by the receptive-field margin (``overlap`` x patch size), blending with the
same Gaussian importance map. ``benchmarks/inference.py`` measures both on the same weights.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

from .devices import check_device_name
from .errors import InputError
from .model.network import DSN3D
from .options import InferenceSettings
from .progress import CancelToken, ProgressFunction, no_progress

__all__ = ["Prediction", "predict", "resolve_device", "activation_bytes"]


@dataclass
class Prediction:
    """Class probabilities on the working grid, [C, k, j, i] float32 each, C = ``channels``."""

    main: Tensor
    sides: list[Tensor]
    channels: list[int]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available, else MPS if available, else CPU. Explicit requests for an
    absent accelerator are an input error, not a silent fallback."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available here; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise InputError("--device mps: Apple MPS is not available here; use --device auto or cpu")
    return torch.device(name)


def activation_bytes(network: DSN3D, voxels: int, side_outputs: bool) -> int:
    """Peak activation memory (bytes, float32) of one eval forward pass over ``voxels`` voxels.

    Counts the live feature maps at each level's peak (input and output of a convolution, the
    kept skip features of finer levels) plus the output heads; calibrated against measured
    peak RSS on CPU (``benchmarks/inference.py``) with a 1.3x safety margin."""
    config = network.config
    per_voxel = 0.0
    for level, width in enumerate(config.widths):
        fraction = 8.0 ** -level
        per_voxel += 3 * width * fraction  # conv in/out + the skip kept for the decoder
    heads = 1 + (len(config.side_output_levels) if side_outputs else 0)
    per_voxel += (2 * config.widths[0]) + 2 * heads * config.num_classes
    return int(1.3 * 4 * per_voxel * voxels)


def _gaussian_importance(shape: tuple[int, int, int], device: torch.device) -> Tensor:
    """Separable Gaussian weight (sigma = 1/8 of the tile) as in nnU-Net and MONAI."""
    weights = None
    for size in shape:
        axis = torch.arange(size, dtype=torch.float32, device=device)
        sigma = size / 8
        g = torch.exp(-0.5 * ((axis - (size - 1) / 2) / sigma) ** 2)
        weights = g if weights is None else weights[..., None] * g
    assert weights is not None  # shape has three axes
    weights = weights / weights.max()
    return weights.clamp_min(1e-3)


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if tile >= size:
        return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1)
    return sorted({round(n * step) for n in range(count)})


def _choose_tile(shape: tuple[int, ...], network: DSN3D, budget: int, side_outputs: bool,
                 divisor: int, minimum: tuple[int, ...], margin: tuple[int, ...]
                 ) -> tuple[int, int, int]:
    """The tile (multiple of ``divisor``, at least ``minimum``, within ``budget``) that computes
    the fewest voxels in all: for each count of tiles per axis, the smallest tile that covers
    the axis with ``margin`` overlap. The network's cost per voxel is flat from 64³ up on CPU
    (measured), so fewer computed voxels is faster; one tile when the volume fits."""
    def covering_tile(size: int, count: int, overlap: int, floor: int) -> int:
        tile = math.ceil((size + (count - 1) * overlap) / count / divisor) * divisor
        return max(tile, floor)

    best: tuple[int, tuple[int, ...]] | None = None
    for counts in itertools.product(range(1, 9), repeat=3):
        tile = tuple(covering_tile(s, n, m, f) for s, n, m, f in zip(shape, counts, margin, minimum))
        if any(n > 1 and t >= s for n, t, s in zip(counts, tile, shape)):
            continue  # more tiles than the axis needs
        if activation_bytes(network, math.prod(tile), side_outputs) > budget:
            continue
        computed = math.prod(counts) * math.prod(tile)
        if best is None or computed < best[0]:
            best = (computed, tile)
    if best is None:  # even the smallest tiles exceed the budget: use them anyway
        return cast("tuple[int, int, int]", tuple(minimum))  # one size per axis of shape (3D)
    return cast("tuple[int, int, int]", best[1])


def _pad_input(image: Tensor, padded: tuple[int, ...]) -> Tensor:
    """``image`` [C, k, j, i] padded at the far ends to ``padded``: the image channel with its
    minimum (air, background), further channels (positions) by repeating their edge, as
    ``training.data.sample_patch`` pads."""
    extra = [p - s for p, s in zip(padded, image.shape[1:])]
    if not any(extra):
        return image
    source = torch.nn.functional.pad(image[None], (0, extra[2], 0, extra[1], 0, extra[0]),
                                     mode="replicate")[0]
    k, j, i = image.shape[1:]
    floor = float(image[0].min())
    source[0, k:], source[0, :, j:], source[0, :, :, i:] = floor, floor, floor
    return source


def _run_network(network: DSN3D, batch: Tensor, channels: list[int], side_outputs: bool,
                 autocast: contextlib.AbstractContextManager) -> list[Tensor]:
    """Forward one tile; softmax over the task's channels only. Returns [main, *sides]."""
    with autocast:
        output = network(batch, return_side_outputs=side_outputs, channels=channels)
    main, sides = output if side_outputs else (output, [])
    # the main output has the task's channels only; each side output all of the network's
    return [torch.softmax(main.float(), dim=1)[0],
            *(torch.softmax(side[:, channels].float(), dim=1)[0] for side in sides)]


def predict(network: DSN3D, image: Tensor, channels: list[int], patch_kji: tuple[int, int, int],
            settings: InferenceSettings = InferenceSettings(), *,
            progress: ProgressFunction = no_progress, cancel: CancelToken | None = None
            ) -> Prediction:
    """Class probabilities of a normalised working-grid ``image`` [k, j, i], or [C, k, j, i]
    with the model's further input channels after the image (position channels).

    ``channels`` are the output channels to keep (background first, then the task's labels);
    the softmax runs over them only, which restricts a multi-task network to one task.
    ``patch_kji`` (voxels, array order k, j, i) sets the overlap margin and the smallest tile.
    """
    device = resolve_device(settings.device)
    network = network.to(device).eval()
    cuda = device.type == "cuda"
    if cuda:
        # (Module.to takes memory_format at runtime; torch's type stubs omit it)
        network = network.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.amp)
    autocast = (torch.autocast("cuda", dtype=amp_dtype) if cuda and amp_dtype
                else contextlib.nullcontext())

    if image.dim() == 3:
        image = image[None]
    divisor = network.config.size_divisor
    shape = tuple(image.shape[1:])
    margin = tuple(max(divisor, round(settings.overlap * p / divisor) * divisor)
                   for p in patch_kji)
    minimum = tuple(min(math.ceil(s / divisor) * divisor, math.ceil(p / divisor) * divisor)
                    for s, p in zip(shape, patch_kji))
    tile = _choose_tile(shape, network, settings.memory_budget_bytes, settings.side_outputs,
                        divisor, minimum, margin)
    padded = tuple(max(s, t) for s, t in zip(shape, tile))
    source = _pad_input(image.float(), padded)

    starts = [_tile_starts(p, t, m) for p, t, m in zip(padded, tile, margin)]
    tiles = list(itertools.product(*starts))
    heads = 1 + (len(network.config.side_output_levels) if settings.side_outputs else 0)
    sums = [torch.zeros((len(channels), *padded), dtype=torch.float32) for _ in range(heads)]
    weight_sum = torch.zeros(padded, dtype=torch.float32) if len(tiles) > 1 else None
    importance = _gaussian_importance(tile, torch.device("cpu")) if len(tiles) > 1 else None

    progress("inference", 0.0, f"{len(tiles)} tile(s) of {tile[::-1]} voxels on {device.type}")
    with torch.inference_mode():
        for number, (k, j, i) in enumerate(tiles):
            if cancel is not None:
                cancel.raise_if_cancelled()
            region = (slice(k, k + tile[0]), slice(j, j + tile[1]), slice(i, i + tile[2]))
            batch = source[(slice(None), *region)][None].to(device)
            if cuda:
                batch = batch.contiguous(memory_format=torch.channels_last_3d)
            outputs = _run_network(network, batch, channels, settings.side_outputs, autocast)
            for accumulated, output in zip(sums, outputs):
                output = output.cpu()
                if importance is None:
                    accumulated[(slice(None), *region)] = output
                else:
                    accumulated[(slice(None), *region)] += output * importance
            if weight_sum is not None:
                assert importance is not None  # both are set when there are several tiles
                weight_sum[region] += importance
            progress("inference", (number + 1) / len(tiles), f"tile {number + 1}/{len(tiles)}")

    crop = (slice(None), slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    if weight_sum is not None:
        for accumulated in sums:
            accumulated /= weight_sum
    results = [accumulated[crop].contiguous() for accumulated in sums]
    return Prediction(main=results[0], sides=results[1:], channels=list(channels))
