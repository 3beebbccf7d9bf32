"""A warm server under load: 16 clients at once, 2 jobs each, against one ``deeporganseg
serve`` on localhost, beside 32 local ``deeporganseg segment`` runs in sequence.

    python benchmarks/serve.py [--model FILE] [--clients 16] [--jobs 2] [--local 32]
                               [--workers 1] [--shape 40 56 64]

Each client calls :func:`DeepOrganSegLib.remote.client.run_remote` (what ``segment --server``
and the Slicer panel call) in its own thread, its jobs one after the other; every result is
compared voxel for voxel with a local run's. The local runs are the command a user types,
each a fresh process (Python, torch, the model). Prints one row per way: jobs, wall time,
throughput, latency p50/p95 (from the call to the outputs in place) and the peak resident
memory of the server (its ``VmHWM``) or of the largest local run.

The default model is ``Testing/helpers.py``'s tiny one on its ellipsoid scene: the network's own
work is the same either way, so this measures what serving changes (no start-up per job, the
queue, the transfers); give ``--model`` and ``--shape`` for a real model's numbers.

``--quick``: 4 clients x 2 jobs and 2 local runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "DeepOrganSeg"), str(ROOT / "Testing")]

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from _common import (add_quick_flag, measured, measurement, print_header, print_row,  # noqa: E402
                     tiny_model)
from helpers import ellipsoid_scene  # noqa: E402
from DeepOrganSegLib.remote.client import Server, run_remote  # noqa: E402
from DeepOrganSegLib.volume_io import write_volume  # noqa: E402

COMMAND = [sys.executable, "-m", "DeepOrganSegLib"]
ENVIRONMENT = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT / "DeepOrganSeg"), os.environ.get("PYTHONPATH", "")])}


def labels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def local_run(source: Path, output: Path, model: Path) -> tuple[float, float]:
    """One ``deeporganseg segment`` process: its seconds and peak resident memory (MB)."""
    result = subprocess.run(measured([*COMMAND, "segment", str(source), str(output), "--model",
                                      str(model), "--progress", "none"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENVIRONMENT)
    if result.returncode != 0:
        raise SystemExit(f"deeporganseg segment exited {result.returncode}")
    seconds, peak_gb = measurement(result.stderr)
    return seconds, peak_gb * 1e9 / 2 ** 20


def start_server(model: Path, workers: int, max_jobs: int) -> tuple[subprocess.Popen, str]:
    """A ``deeporganseg serve`` on a free localhost port, and its URL once it is ready."""
    process = subprocess.Popen([*COMMAND, "serve", "--port", "0", "--model", str(model),
                                "--workers", str(workers), "--max-jobs", str(max_jobs)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=ENVIRONMENT)
    assert process.stdout is not None
    match = re.search(r"(http://\S+)", process.stdout.readline())
    if match is None:
        raise SystemExit("deeporganseg serve did not start")
    return process, match.group(1)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def clients(url: str, source: Path, folder: Path, count: int, jobs: int,
            reference: np.ndarray) -> tuple[list[float], float]:
    """``count`` threads, ``jobs`` jobs each; (latencies, wall seconds). Fails on any result
    that differs from ``reference``."""
    latencies: list[float] = []
    failures: list[str] = []

    def client(number: int) -> None:
        for job in range(jobs):
            output = folder / f"client{number}-job{job}.nii.gz"
            started = time.perf_counter()
            try:
                run_remote(Server(url), "segment", {"input": source}, {"output": output})
            except Exception as error:  # reported below, with the others
                failures.append(f"client {number} job {job}: {error}")
                return
            latencies.append(time.perf_counter() - started)
            if not np.array_equal(labels(output), reference):
                failures.append(f"client {number} job {job}: differs from the local result")

    threads = [threading.Thread(target=client, args=(number,)) for number in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit("\n".join(failures))
    return latencies, wall


def row(way: str, latencies: list[float], wall: float, rss_mb: float) -> None:
    p50, p95 = np.percentile(latencies, [50, 95])
    print_row(way, len(latencies), f"{wall:.1f}", f"{len(latencies) / wall * 60:.0f}",
              f"{p50:.2f}", f"{p95:.2f}", f"{rss_mb:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model file (default: the tiny test model)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=2, help="jobs per client, in sequence")
    parser.add_argument("--local", type=int, default=32, help="local runs, in sequence")
    parser.add_argument("--workers", type=int, default=1, help="the server's --workers")
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 56, 64), metavar=("K", "J", "I"),
                        help="the scene's size in voxels")
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.clients, args.jobs, args.local = 4, 2, 2
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as temporary:
        folder = Path(temporary)
        model = args.model or tiny_model(folder)
        image, _ = ellipsoid_scene(seed=7, shape=tuple(args.shape))
        source = write_volume(image, folder / "ct.nii.gz")
        local_run(source, folder / "reference.nii.gz", model)  # also warms the file cache
        reference = labels(folder / "reference.nii.gz")

        server, url = start_server(model, args.workers, args.clients * args.jobs)
        try:
            run_remote(Server(url), "segment", {"input": source},  # the first job warms up
                       {"output": folder / "warm-up.nii.gz"})
            latencies, wall = clients(url, source, folder, args.clients, args.jobs, reference)
            server_rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait()

        started = time.perf_counter()
        local = [local_run(source, folder / f"local{run}.nii.gz", model) for run in range(args.local)]
        local_wall = time.perf_counter() - started
        if not all(np.array_equal(labels(folder / f"local{run}.nii.gz"), reference)
                   for run in range(args.local)):
            raise SystemExit("a local run differs from the first")

    print(f"scene {tuple(args.shape)} voxels, model {model.name}, server --workers "
          f"{args.workers}, {os.cpu_count()} CPU cores; every result equal to the local one")
    print_header("way", "jobs", "wall (s)", "jobs/min", "latency p50 (s)", "latency p95 (s)",
                 "peak RSS (MB)")
    row(f"server: {args.clients} clients x {args.jobs} jobs at once", latencies, wall, server_rss)
    row("local: `deeporganseg segment` runs in sequence", [seconds for seconds, _ in local],
        local_wall, max(rss for _, rss in local))


if __name__ == "__main__":
    main()
