"""Fine-tuning from the bundled model vs training from scratch, on a data set written as a user
would bring it: held-out phantoms of the current generator as an MSD folder, with labels under
other names (Spleen, IVC, Kidney Left). Both arms run ``train.py --data`` with the same steps,
patch budget, working spacing and validation cases; prints mean validation Dice per step side by
side and the steps each needs to reach the target Dice.

    python benchmarks/finetune.py [--steps 200] [--val-every 40] [--target 0.7] [--threads 2]

``--quick``: three 64x64x48 phantoms on the 2.5 mm working grid (two to train, one held out) in
a temporary folder, two steps, the fine-tuned arm only (the other differs in ``--init`` alone).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, add_quick_flag, print_header, print_row, report_skipped

sys.path.insert(0, str(ROOT))

from training.phantom_dataset import write_phantom_dataset  # noqa: E402

#: Seeds no bundled model was trained or validated on (training: 0-59, 200-219; tests 10000+).
SEEDS = range(300, 310)
#: ``--quick``: the phantoms' seeds and ``make_phantom`` options (small, on the working grid).
QUICK_SEEDS = range(300, 303)
QUICK_PHANTOMS = {"shape": (48, 64, 64), "spacing": (2.5, 2.5, 2.5)}
RENAME = {"spleen": "Spleen", "inferior_vena_cava": "IVC", "left_kidney": "Kidney Left"}
#: (column, ``train.py --init``) of each arm.
ARMS = (("fine-tuned from bundled", "bundled"), ("from scratch", "scratch"))


def run_arm(folder: Path, out: Path, init: str, args: argparse.Namespace) -> tuple[dict, float]:
    command = [sys.executable, str(ROOT / "training" / "train.py"), "--data", str(folder),
               "--init", init, "--steps", str(args.steps), "--output-dir", str(out),
               "--memory-gb", str(args.memory_gb), "--spacing", "2.5", "2.5", "2.5",
               "--threads", str(args.threads), "--no-progress",
               "--set", f"schedule.val_every={args.val_every}"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    per_step: dict[int, list[float]] = {}
    with open(out / "validation.csv", newline="") as stream:
        for row in csv.DictReader(stream):
            per_step.setdefault(int(row["step"]) + 1, []).append(float(row["dice"]))
    return {step: sum(v) / len(v) for step, v in sorted(per_step.items())}, seconds


def compare(work: Path, seeds: range, phantom_options: dict, arms_to_run: tuple,
            args: argparse.Namespace) -> None:
    """Write the data set under ``work`` (unless there), run the arms, print the table."""
    folder = work / "msd"
    if not (folder / "dataset.json").exists():
        write_phantom_dataset(folder, "abdomen-ct", seeds, rename=RENAME, **phantom_options)
    arms = {}
    for name, init in arms_to_run:
        arms[name] = run_arm(folder, work / init, init, args)
    steps = sorted(set().union(*(curve for curve, _ in arms.values())))
    names = list(arms)
    print(f"\nmean validation Dice on {len(seeds)} phantoms' held-out split "
          f"(labels renamed: {', '.join(RENAME.values())})")
    print_header("step", *names)
    for step in steps:
        print_row(step, *(f"{arms[n][0].get(step, float('nan')):.3f}" for n in names))
    for name in names:
        curve, seconds = arms[name]
        reached = next((step for step, dice in curve.items() if dice >= args.target), None)
        print(f"{name}: Dice >= {args.target} at step "
              f"{reached if reached else f'not within {args.steps}'}; {seconds:.0f} s wall")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--val-every", type=int, default=40)
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--memory-gb", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="runs/bench-finetune")
    add_quick_flag(parser)
    args = parser.parse_args()
    if not args.quick:
        compare(ROOT / args.work, SEEDS, {}, ARMS, args)
        return 0
    args.steps = args.val_every = 2
    report_skipped(f"the arm {ARMS[1][0]}", "--quick")
    with tempfile.TemporaryDirectory() as work:
        compare(Path(work), QUICK_SEEDS, QUICK_PHANTOMS, ARMS[:1], args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
