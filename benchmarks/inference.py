"""Inference speed: our tiling beside MONAI's ``sliding_window_inference``, and the whole CLI.

1. Same weights, same normalised 256x256x160 volume (k=160): MONAI with roi = the model's
   patch size, overlap 0.25, Gaussian blending, against ``DeepOrganSegLib.inference.predict``
   (largest tile that fits the memory budget, overlap = 0.25 x patch). Prints wall time of
   each (median of ``--repeats``, interleaved), the ratio, and the share of voxels whose argmax
   agrees. Two volumes: an abdominal CT phantom rendered on the task's working grid (what the
   network sees inside ``segment``: 2.5 mm voxels, 640x640x400 mm), and the same kind of phantom
   stretched to that size (organs 1.6-2x larger than any the network was trained on).
2. ``deeporganseg segment`` on a 512x512x300 int16 CT-sized volume (CRF on, task abdomen-ct):
   wall time, peak RSS of the process and the time of each stage, read off its ``--progress
   json`` events as they arrive.

Run: ``python benchmarks/inference.py [--model FILE] [--repeats 3] [--skip-cli] [--no-crf]``;
``--quick`` runs both parts on small volumes in a few seconds (CI runs it so that the benchmark
cannot rot).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from _common import installed, measured, measurement, report_skipped
from DeepOrganSegLib.cascade import network_input
from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.resources import default_model_path
from DeepOrganSegLib.inference import predict
from DeepOrganSegLib.options import InferenceSettings
from DeepOrganSegLib.metrics import dice
from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.segment import STAGE_WEIGHTS
from DeepOrganSegLib.volume_io import write_volume


def working_grid_volume(shape_kji: tuple[int, int, int], spacing_mm: tuple[float, float, float],
                        seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An abdominal CT phantom in HU rendered directly on a grid of ``shape_kji`` voxels of
    ``spacing_mm`` (i, j, k): a network input as ``segment`` would make it; and its organ masks
    by name."""
    from DeepOrganSegLib.phantoms import make_phantom

    phantom = make_phantom("abdomen-ct", seed, shape=shape_kji, spacing=spacing_mm,
                           contrast_phase="portal-venous")
    masks = {name: phantom.labels.array == value for value, name in phantom.label_names.items()}
    return phantom.image.array.astype(np.float32), masks


def mean_dice(probabilities: torch.Tensor, channels: list[int], names: dict[int, str],
              masks: dict[str, np.ndarray]) -> float:
    """Mean Dice of the argmax of ``probabilities`` (over ``channels``) against ``masks`` (an
    organ absent from both scores 0)."""
    labels = probabilities.argmax(0).numpy()
    return float(np.mean([dice(labels == index, masks[names[value]], empty=0.0)
                          for index, value in enumerate(channels[1:], start=1)]))


def ct_like_volume(shape_kji: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A CT-sized volume in HU from the abdomen phantom, stretched to ``shape_kji``."""
    from DeepOrganSegLib.phantoms import make_phantom

    phantom = make_phantom("abdomen-ct", seed)
    array = phantom.image.array
    zoom = [t / s for t, s in zip(shape_kji, array.shape)]
    return ndimage.zoom(array, zoom, order=1).astype(np.float32)


def time_call(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def compare_with_monai(model_path: Path, repeats: int, volume: str,
                       shape: tuple[int, int, int] = (160, 256, 256)) -> dict:
    """``volume``: ``working-grid`` or ``stretched`` (see the module docstring), of ``shape``
    (k, j, i) voxels."""
    from monai.inferers import sliding_window_inference

    model = load_model(model_path)
    task = model.metadata.tasks[0]
    channels = [0] + [label.value for label in task.labels]
    patch_kji = model.metadata.patch_size_kji
    hounsfield, masks = (working_grid_volume(shape, task.spacing_mm) if volume == "working-grid"
                         else (ct_like_volume(shape), None))
    # the network input as segment builds it: image, position channels and, for a cascade,
    # stage 1's prior over its organ region (stage 1 itself is not timed: the same for both)
    scan = Volume(hounsfield, spacing=tuple(task.spacing_mm))
    inputs = network_input(scan, model, task, working_grid(scan, task.spacing_mm),
                           InferenceSettings(device="cpu"))
    tensor = inputs.tensor  # [C, k, j, i] over the organ region of a cascade's stage 1
    if masks is not None:
        masks = {name: mask[inputs.region] for name, mask in masks.items()}
    network = model.network

    def monai_run() -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(
                tensor[None], patch_kji, 1,
                lambda x: torch.softmax(network(x)[:, channels], 1),
                overlap=0.25, mode="gaussian")[0]

    def ours() -> torch.Tensor:
        return predict(network, tensor, channels, patch_kji, InferenceSettings(device="cpu")).main

    monai_times, ours_times = [], []
    for _ in range(repeats):  # interleaved so that machine load hits both alike
        t, monai_out = time_call(monai_run, 1)
        monai_times.append(t)
        t, ours_out = time_call(ours, 1)
        ours_times.append(t)
    agreement = float((monai_out.argmax(0) == ours_out.argmax(0)).float().mean())
    return {"monai_s": statistics.median(monai_times), "ours_s": statistics.median(ours_times),
            "agreement": agreement, "patch": patch_kji[::-1], "volume": volume,
            "dice": None if masks is None else {
                name: mean_dice(out, channels, {label.value: label.name for label in task.labels},
                                masks) for name, out in (("monai", monai_out), ("ours", ours_out))}}


def run_cli_on_ct_sized_volume(model_path: Path, shape: tuple[int, int, int] = (300, 512, 512),
                               crf: bool = True) -> dict:
    """``deeporganseg segment`` on an int16 CT of ``shape`` (k, j, i) voxels of 0.75 x 0.75 x
    1 mm: wall time, peak RSS and seconds per stage (from one ``--progress json`` event to the
    first event of the next stage, timed here as they arrive)."""
    with tempfile.TemporaryDirectory() as folder:
        array = np.clip(ct_like_volume(shape, seed=1), -1024, 3071).astype(np.int16)
        source = write_volume(Volume(array, spacing=(0.75, 0.75, 1.0)), Path(folder) / "ct.nrrd")
        del array
        command = [sys.executable, "-m", "DeepOrganSegLib", "segment", str(source),
                   str(Path(folder) / "labels.nii.gz"), "--model", str(model_path),
                   "--task", "abdomen-ct", "--progress", "json"] + ([] if crf else ["--no-crf"])
        started = time.perf_counter()
        stage_starts: dict[str, float] = {}
        with subprocess.Popen(measured(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as process:
            assert process.stdout is not None
            for line in process.stdout:
                stage = json.loads(line).get("stage")
                if stage in STAGE_WEIGHTS and stage not in stage_starts:
                    stage_starts[stage] = time.perf_counter() - started
            stderr = process.stderr.read() if process.stderr else ""
        elapsed = time.perf_counter() - started
        if process.returncode:
            raise SystemExit(f"segment failed ({process.returncode}): {stderr.strip()}")
        _, peak_gb = measurement(stderr)
    ordered = sorted(stage_starts.items(), key=lambda item: item[1])
    ends = [start for _, start in ordered[1:]] + [elapsed]
    stages = {"start Python + imports": ordered[0][1] if ordered else elapsed}
    stages.update({stage: end - start for (stage, start), end in zip(ordered, ends)})
    return {"wall_s": elapsed, "peak_rss_gb": peak_gb,
            "stages": stages, "crf": crf, "shape": shape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-monai", action="store_true")
    parser.add_argument("--no-crf", action="store_true", help="the CLI run without the CRF")
    parser.add_argument("--quick", action="store_true",
                        help="small volumes, one repeat: checks that the benchmark runs")
    args = parser.parse_args()
    model_path = args.model or default_model_path()
    repeats = 1 if args.quick else args.repeats
    print(f"model: {model_path.name}, torch threads: {torch.get_num_threads()}")

    if not args.skip_monai and not installed("monai"):
        report_skipped("part 1, beside MONAI's sliding_window_inference", "MONAI is not installed")
    elif not args.skip_monai:
        shape = (48, 64, 64) if args.quick else (160, 256, 256)
        print(f"\n| {'x'.join(map(str, shape[::-1]))}, CPU | MONAI sliding_window_inference "
              "| DeepOrganSeg predict | ratio |")
        print("|---|---|---|---|")
        for volume in ("working-grid", "stretched"):
            print_monai_comparison(compare_with_monai(model_path, repeats, volume, shape))
    if not args.skip_cli:
        cli = run_cli_on_ct_sized_volume(model_path, (40, 96, 96) if args.quick
                                         else (300, 512, 512), crf=not args.no_crf)
        size = "x".join(map(str, cli["shape"][::-1]))
        print(f"\n| deeporganseg segment, {size} int16 CT, CRF {'on' if cli['crf'] else 'off'} "
              "| value | target |")
        print("|---|---|---|")
        print(f"| wall time (s) | {cli['wall_s']:.1f} | <= 12 |")
        print(f"| peak RSS (GB) | {cli['peak_rss_gb']:.2f} | <= 1.5 |")
        for stage, seconds in cli["stages"].items():
            print(f"| stage: {stage} (s) | {seconds:.1f} | |")


def print_monai_comparison(result: dict) -> None:
    volume = result["volume"]
    print(f"| {volume}: wall time (s), roi {result['patch']}, overlap 0.25, gaussian | "
          f"{result['monai_s']:.2f} | {result['ours_s']:.2f} | "
          f"{result['monai_s'] / result['ours_s']:.2f}x faster |", flush=True)
    print(f"| {volume}: argmax agreement | | {100 * result['agreement']:.3f} % | |", flush=True)
    if result["dice"]:
        print(f"| {volume}: mean organ Dice against the phantom's truth | "
              f"{result['dice']['monai']:.4f} | {result['dice']['ours']:.4f} | |", flush=True)


if __name__ == "__main__":
    main()
