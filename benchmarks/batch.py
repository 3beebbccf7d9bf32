"""Cohort throughput: ``deeporganseg batch`` with ``--workers 1`` and ``--workers 2`` beside a
shell loop of ``deeporganseg segment`` (which starts Python and loads the model for every case).

    python benchmarks/batch.py [--cases 20] [--model FILE] [--no-crf] [--runs loop 1 2] [--quick]

Makes ``--cases`` abdominal CT phantoms (``make_phantom("abdomen-ct", seed)``, seeds 1000 on,
their default sizes and spacings), then times, each from a fresh process and into an empty
folder: the shell loop (labelmap and ``--stats`` per case), and the batch with one and two
workers (labelmaps, statistics, QC pictures and the cohort report). Prints a table: wall time,
cases per hour, and the speed-up over the loop. Every run uses the same model and flags (CRF on
unless ``--no-crf``); the machine's cores are shared by whatever runs (two here).

``--quick``: two small phantoms (32 x 48 x 48 voxels of 5 mm) and the tiny test model trained
for a few steps: the same three runs in seconds, so that CI runs the benchmark's code.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "DeepOrganSeg")]

from _common import add_quick_flag, print_header, print_row, tiny_model  # noqa: E402
from DeepOrganSegLib.phantoms import make_phantom  # noqa: E402
from DeepOrganSegLib.resources import default_model_path  # noqa: E402
from DeepOrganSegLib.volume_io import write_volume  # noqa: E402

#: The runs: the shell loop, and the batch with one and with two workers.
RUNS = ("loop", "1", "2")
#: The engine's command line as a user runs it, from this checkout.
COMMAND = [sys.executable, "-m", "DeepOrganSegLib"]


def make_scans(folder: Path, cases: int, quick: bool) -> list[Path]:
    """``cases`` abdominal CT phantoms as ``.nii.gz`` files in ``folder``."""
    folder.mkdir(parents=True)
    size = dict(shape=(32, 48, 48), spacing=(5.0, 5.0, 5.0)) if quick else {}
    paths = []
    for seed in range(1000, 1000 + cases):
        phantom = make_phantom("abdomen-ct", seed, contrast_phase="portal-venous", **size)
        paths.append(write_volume(phantom.image, folder / f"ct{seed}.nii.gz"))
    return paths


def timed(command: list[str] | str, shell: bool = False) -> float:
    """Wall time (s) of ``command`` run to its end; a failure stops the benchmark."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "DeepOrganSeg"), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    result = subprocess.run(command, shell=shell, env=environment, capture_output=True,
                            text=True, executable="/bin/bash" if shell else None)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{command} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20, help="CT phantoms (default 20)")
    parser.add_argument("--model", type=Path, help="model file (default: the bundled model)")
    parser.add_argument("--no-crf", action="store_true", help="segment without the CRF")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                        help="which runs to time (default all: loop 1 2)")
    add_quick_flag(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        cases = 2 if args.quick else args.cases
        model = tiny_model(work) if args.quick else args.model or default_model_path()
        flags = ["--model", str(model), "--progress", "none"] + (["--no-crf"] if args.no_crf
                                                                 else [])
        scans = make_scans(work / "scans", cases, args.quick)
        (work / "loop").mkdir()
        segment = shlex.join([*COMMAND, "segment"])
        loop = (f'for scan in {shlex.quote(str(work / "scans"))}/*.nii.gz; do '
                f'name=$(basename "$scan" .nii.gz); {segment} "$scan" '
                f'{shlex.quote(str(work / "loop"))}/"$name".nii.gz --stats '
                f'{shlex.quote(str(work / "loop"))}/"$name".json {shlex.join(flags)} '
                f'> /dev/null || exit 1; done')
        print(f"{len(scans)} CT phantoms, model {Path(model).name}, CRF "
              f"{'off' if args.no_crf else 'on'}, {os.cpu_count()} CPU cores", flush=True)
        print_header("how", "cases", "wall time (s)", "cases per hour", "vs the loop")
        baseline = timed(loop, shell=True) if "loop" in args.runs else None
        if baseline is not None:
            report("shell loop of deeporganseg segment", len(scans), baseline, baseline)
        for workers in ("1", "2"):
            if workers in args.runs:
                seconds = timed([*COMMAND, "batch", str(work / "scans"), "--out",
                                 str(work / f"batch{workers}"), "--workers", workers, *flags])
                report(f"deeporganseg batch --workers {workers}", len(scans), seconds, baseline)


def report(how: str, cases: int, seconds: float, baseline: float | None) -> None:
    """One row of the table: wall time, cases per hour, speed-up over the loop (if run)."""
    print_row(how, cases, f"{seconds:.1f}", f"{cases / seconds * 3600:.0f}",
              f"{baseline / seconds:.2f}x" if baseline else "")


if __name__ == "__main__":
    main()
