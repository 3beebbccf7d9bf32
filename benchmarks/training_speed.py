"""Seconds per training step on this CPU for each speed option, beside the bundled recipe.

Every row runs the same loop as ``training/train.py`` (forward, marginal Dice + CE over the
task's channels with deep supervision, backward, gradient clipping, AdamW step) on one fixed
synthetic batch, so only the option differs: bf16 autocast on CPU, ``channels_last_3d``,
``torch.compile``, thread count, no side outputs, a larger patch, a narrower network. The
baseline is the bundled model's recipe (DSN3D 16-32-64-128, side outputs on levels 1 and 2,
batch 4 of 48³, float32, 2 threads), measured in the same run. Median of ``--steps`` steps
after two warm-up steps. ``benchmarks/gpu.py`` times the same step on CUDA.

Run: ``python benchmarks/training_speed.py [--steps 8] [--skip-compile]``; ``--quick``: batch 2 of
16³, one step per row, no ``torch.compile``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import add_quick_flag, report_skipped  # noqa: E402
from DeepOrganSegLib.model.network import DSN3D, DSNConfig  # noqa: E402
from training.losses import DeepSupervisionLoss, MarginalDiceCELoss  # noqa: E402

#: background + 9 organs of the 19 outputs
TASK_CHANNELS: dict[str, Sequence[int]] = {"abdomen-ct": list(range(10))}


@dataclass(frozen=True)
class Option:
    name: str
    network: DSNConfig = DSNConfig(in_channels=3, num_classes=19, widths=(16, 32, 64, 128))
    patch: int = 48
    batch: int = 4
    threads: int = 2
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    notes: dict = field(default_factory=dict)


def options(skip_compile: bool, patch: int = 48, batch: int = 4) -> list[Option]:
    """The rows: the baseline with batches of ``batch`` patches of ``patch``³ voxels, then one
    option changed per row (the larger patch: 16 voxels more a side, half the batch)."""
    base = Option("baseline: bundled recipe (fp32, 2 threads)", patch=patch, batch=batch)
    larger, fewer = patch + 16, max(1, batch // 2)
    voxels = (larger ** 3 * fewer) / (patch ** 3 * batch)
    rows = [
        base,
        replace(base, name="bf16 autocast on CPU", bf16=True),
        replace(base, name="channels_last_3d", channels_last=True),
        replace(base, name="1 thread", threads=1),
        replace(base, name="no side outputs", network=replace(base.network,
                                                              side_output_levels=())),
        replace(base, name=f"patch {larger}³, batch {fewer} ({voxels:.1f}x the voxels)",
                patch=larger, batch=fewer),
        replace(base, name="widths 8-16-32-64", network=replace(base.network,
                                                                widths=(8, 16, 32, 64))),
    ]
    if not skip_compile:
        rows.append(replace(base, name="torch.compile", compile=True))
    return rows


def seconds_per_step(option: Option, steps: int, device: str = "cpu") -> float:
    """Median seconds of ``steps`` training steps of ``option`` on ``device`` (``cpu`` or
    ``cuda``: there each step ends when the GPU has finished it), after two warm-up steps."""
    torch.set_num_threads(option.threads)
    torch.manual_seed(0)
    memory = torch.channels_last_3d if option.channels_last else torch.contiguous_format
    network = DSN3D(option.network).train().to(device=device, memory_format=memory)
    model = torch.compile(network) if option.compile else network
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    criterion = DeepSupervisionLoss(MarginalDiceCELoss(TASK_CHANNELS))
    size = (option.batch, option.network.in_channels, *(option.patch,) * 3)
    images = torch.randn(size, device=device).contiguous(memory_format=memory)
    labels = torch.randint(0, 10, (option.batch, *(option.patch,) * 3), device=device)
    tasks = ["abdomen-ct"] * option.batch
    sides = len(option.network.side_output_levels)
    autocast = (torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if option.bf16
                else contextlib.nullcontext())
    cuda = torch.device(device).type == "cuda"
    times = []
    for step in range(steps + 2):
        started = time.perf_counter()
        with autocast:
            main, side_outputs = model(images)
        loss, _ = criterion(main.float(), [s.float() for s in side_outputs], labels, tasks,
                            [0.2, 0.1][:sides])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12.0)
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--skip-compile", action="store_true")
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        report_skipped("torch.compile", "--quick: compiling takes minutes")
    rows = (options(skip_compile=True, patch=16, batch=2) if args.quick
            else options(args.skip_compile))
    steps = 1 if args.quick else args.steps
    print("| option | s/step | vs baseline |")
    print("|---|---|---|")
    baseline = None
    for option in rows:
        try:
            seconds = seconds_per_step(option, steps)
        except Exception as error:  # torch.compile without a working C++ toolchain
            if not option.compile:
                raise
            print(f"| {option.name} | failed: {str(error).splitlines()[0][:80]} | |", flush=True)
            continue
        baseline = baseline or seconds
        print(f"| {option.name} | {seconds:.2f} | {baseline / seconds:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
