"""What finding the blank background costs, beside the preprocessing every segmentation runs.

``preprocess.blank_background`` (masked-out or zero-filled space is never an organ) runs once per
``segment``, after the network. Measured beside ``preprocess.prepare_image`` (resampling and
normalising the network's input: the baseline step of the same size) on two inputs:

* a 512x512x300 int16 CT-sized volume (0.75 x 0.75 x 1 mm, abdomen-ct grid) with -3024 HU
  outside the inscribed reconstruction circle (384 mm), as many scanners write it;
* the skull-stripped ICBM152 2009 T1 (1 mm, brain-mr grid), zero outside the brain.

Each step runs in a fresh process; the peak is the growth of the process's peak RSS over what
the loaded input already took (``/proc/self/clear_refs``). Linux only.

Run: ``python benchmarks/blank_background.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _ct_volume():
    from benchmarks.inference import ct_like_volume
    from DeepOrganSegLib.volume import Volume

    array = np.clip(ct_like_volume((300, 512, 512), seed=1), -1024, 3071).astype(np.int16)
    j, i = np.indices(array.shape[1:])
    outside = (j - 255.5) ** 2 + (i - 255.5) ** 2 > 256.0 ** 2  # the inscribed circle
    array[:, outside] = -3024
    return Volume(array, spacing=(0.75, 0.75, 1.0)), "abdomen-ct"


def _mr_volume():
    from training.evaluate import icbm152_case

    return icbm152_case().image, "brain-mr"


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _measure(which: str, step: str, repeats: int, queue) -> None:
    from DeepOrganSegLib.model import load_model
    from DeepOrganSegLib.grid import working_grid
    from DeepOrganSegLib.preprocess import blank_background, prepare_image
    from DeepOrganSegLib.resources import default_model_path

    volume, task_name = _ct_volume() if which == "ct" else _mr_volume()
    task = load_model(default_model_path()).metadata.task(task_name)
    grid = working_grid(volume, task.spacing_mm)
    run = {"blank": lambda: blank_background(volume, grid),
           "prepare": lambda: prepare_image(volume, task, grid)}[step]
    Path("/proc/self/clear_refs").write_text("5")
    before = _peak_rss_bytes()
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    share = float(result.mean()) if step == "blank" else None
    queue.put((statistics.median(times), _peak_rss_bytes() - before, grid.shape, share))


def measure(which: str, step: str, repeats: int) -> tuple[float, int, tuple, float | None]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(which, step, repeats, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| input | working grid (k, j, i) | blank share | prepare_image (s) | "
          "blank_background (s) | time ratio | prepare_image peak +MB | "
          "blank_background peak +MB |")
    print("|---|---|---|---|---|---|---|---|")
    for which, label in (("ct", "512x512x300 int16 CT, -3024 outside the FOV circle"),
                         ("mr", "ICBM152 T1, skull-stripped, 1 mm")):
        base_s, base_bytes, shape, _ = measure(which, "prepare", args.repeats)
        blank_s, blank_bytes, _, share = measure(which, "blank", args.repeats)
        print(f"| {label} | {shape} | {100 * share:.1f} % | {base_s:.2f} | {blank_s:.2f} | "
              f"{blank_s / base_s:.2f}x | {base_bytes / 1e6:.0f} | {blank_bytes / 1e6:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
