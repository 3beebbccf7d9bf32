"""Time phantom generation: seconds per case for each kind, on the cores this process may use.

Run pinned to one core, as training workers generate on the fly:

    taskset -c 0 python benchmarks/phantoms.py            # 128^3, 5 seeds per kind
    taskset -c 0 python benchmarks/phantoms.py --shape 96 96 96 --cases 3

The first case of each kind is a warm-up (brain-mr reads and caches the ICBM152 maps then) and is
reported separately. CPU seconds (process time) are reported beside wall seconds: on a shared
machine they are the fairer measure of what one dedicated core would take.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DeepOrganSeg"))

from DeepOrganSegLib.phantoms import KINDS, make_phantom  # noqa: E402


def time_kind(kind: str, shape: tuple[int, int, int], cases: int
              ) -> tuple[float, list[float], list[float]]:
    """Wall seconds of a warm-up case, then wall and CPU seconds of ``cases`` further seeds."""
    start = time.perf_counter()
    make_phantom(kind, 0, shape=shape)
    warm_up = time.perf_counter() - start
    wall, cpu = [], []
    for seed in range(1, cases + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        make_phantom(kind, seed, shape=shape)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return warm_up, sorted(wall), sorted(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 128),
                        metavar=("K", "J", "I"))
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = parser.parse_args()
    shape = tuple(args.shape)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"phantom generation, {cores} core(s), shape {shape}, {args.cases} cases per kind")
    print(f"load average before: {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    print(f"{'kind':<12} {'shape':<12} {'warm-up s':>9} {'wall median s':>14} {'wall max s':>11} "
          f"{'CPU median s':>13} {'CPU max s':>10}")
    for kind in args.kinds:
        warm_up, wall, cpu = time_kind(kind, shape, args.cases)
        middle = len(wall) // 2
        print(f"{kind:<12} {'x'.join(map(str, shape)):<12} {warm_up:>9.2f} {wall[middle]:>14.2f} "
              f"{wall[-1]:>11.2f} {cpu[middle]:>13.2f} {cpu[-1]:>10.2f}")


if __name__ == "__main__":
    main()
