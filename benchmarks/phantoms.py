"""Time phantom generation: seconds per case for each kind, on the cores this process may use.

Run pinned to one core, as training workers generate on the fly:

    taskset -c 0 python benchmarks/phantoms.py            # 128^3, 5 seeds per kind
    taskset -c 0 python benchmarks/phantoms.py --shape 96 96 96 --cases 3
    python benchmarks/phantoms.py --quick                 # 32^3, 1 seed per kind

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

from _common import add_quick_flag, print_header, print_row  # noqa: E402
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
    add_quick_flag(parser)
    args = parser.parse_args()
    shape, cases = ((32, 32, 32), 1) if args.quick else (tuple(args.shape), args.cases)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"phantom generation, {cores} core(s), shape {shape}, {cases} cases per kind")
    print(f"load average before: {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    print_header("kind", "shape", "warm-up s", "wall median s", "wall max s", "CPU median s",
                 "CPU max s")
    for kind in args.kinds:
        warm_up, wall, cpu = time_kind(kind, shape, cases)
        middle = len(wall) // 2
        print_row(kind, "x".join(map(str, shape)), f"{warm_up:.2f}", f"{wall[middle]:.2f}",
                  f"{wall[-1]:.2f}", f"{cpu[middle]:.2f}", f"{cpu[-1]:.2f}")


if __name__ == "__main__":
    main()
