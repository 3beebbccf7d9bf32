"""What finding the blank background costs, beside the preprocessing every segmentation runs.

``preprocess.blank_background`` (masked-out or zero-filled space is never an organ) runs once per
``segment``, after the network. Measured beside ``preprocess.prepare_image`` (resampling and
normalising the network's input: the baseline step of the same size) on two inputs:

* a 512x512x300 int16 CT-sized volume (0.75 x 0.75 x 1 mm, abdomen-ct grid) with -3024 HU
  outside the inscribed reconstruction circle (384 mm), as many scanners write it;
* the skull-stripped ICBM152 2009 T1 (1 mm, brain-mr grid), zero outside the brain.

Each step runs in a fresh process; the peak is the growth of the process's peak RSS over what
the loaded input already took (``/proc/self/clear_refs``). Linux only.

Run: ``python benchmarks/blank_background.py [--repeats 3]``; ``--quick``: the CT at 128x128x40,
one repeat, no ICBM152 (reading it takes longer than the rest).
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

from _common import (add_quick_flag, print_header, print_row, report_skipped,  # noqa: E402
                     reset_peak_rss_kb, status_kb)

CT_SHAPES = {False: (300, 512, 512), True: (40, 128, 128)}
"""The CT-sized volume's (k, j, i) voxels in a full run and with ``--quick``."""


def _ct_volume(quick: bool):
    from benchmarks.inference import ct_like_volume
    from DeepOrganSegLib.volume import Volume

    array = np.clip(ct_like_volume(CT_SHAPES[quick], seed=1), -1024, 3071).astype(np.int16)
    rows, columns = array.shape[1:]
    j, i = np.indices((rows, columns))
    centre_j, centre_i = (rows - 1) / 2, (columns - 1) / 2
    outside = (j - centre_j) ** 2 + (i - centre_i) ** 2 > (columns / 2) ** 2  # inscribed circle
    array[:, outside] = -3024
    return Volume(array, spacing=(0.75, 0.75, 1.0)), "abdomen-ct"


def _mr_volume():
    from training.evaluate import icbm152_case

    return icbm152_case().image, "brain-mr"


def _measure(which: str, step: str, repeats: int, quick: bool, queue) -> None:
    from DeepOrganSegLib.model import read_metadata
    from DeepOrganSegLib.grid import working_grid
    from DeepOrganSegLib.preprocess import blank_background, prepare_image
    from DeepOrganSegLib.resources import default_model_path

    volume, task_name = _ct_volume(quick) if which == "ct" else _mr_volume()
    task = read_metadata(default_model_path()).task(task_name)
    grid = working_grid(volume, task.spacing_mm)
    run = {"blank": lambda: blank_background(volume, grid),
           "prepare": lambda: prepare_image(volume, task, grid)}[step]
    before = reset_peak_rss_kb()
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    share = float(result.mean()) if step == "blank" else None
    queue.put((statistics.median(times), (status_kb("VmHWM") - before) * 1024, grid.shape,
               share))


def measure(which: str, step: str, repeats: int, quick: bool
            ) -> tuple[float, int, tuple, float | None]:
    """(median seconds, peak growth in bytes, working grid shape, blank share) of ``step``
    on the ``which`` input, in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(which, step, repeats, quick, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_quick_flag(parser)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    ct_size = "x".join(map(str, CT_SHAPES[args.quick][::-1]))
    inputs = [("ct", f"{ct_size} int16 CT, -3024 outside the FOV circle"),
              ("mr", "ICBM152 T1, skull-stripped, 1 mm")]
    if args.quick:
        report_skipped("the ICBM152 T1", "--quick")
        inputs = inputs[:1]
    print_header("input", "working grid (k, j, i)", "blank share", "prepare_image (s)",
                 "blank_background (s)", "time ratio", "prepare_image peak +MB",
                 "blank_background peak +MB")
    for which, label in inputs:
        base_s, base_bytes, shape, _ = measure(which, "prepare", repeats, args.quick)
        blank_s, blank_bytes, _, share = measure(which, "blank", repeats, args.quick)
        print_row(label, shape, f"{100 * share:.1f} %", f"{base_s:.2f}", f"{blank_s:.2f}",
                  f"{blank_s / base_s:.2f}x", f"{base_bytes / 1e6:.0f}",
                  f"{blank_bytes / 1e6:.0f}")


if __name__ == "__main__":
    main()
