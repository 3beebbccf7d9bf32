"""Where a segmentation's memory goes: the resident memory (RSS) of one ``deeporganseg segment``
run over time, per progress event.

    python benchmarks/memory_timeline.py INPUT [segment options ...]
    python benchmarks/memory_timeline.py --quick

The command runs in this process with a thread sampling ``/proc/self/status`` every 5 ms; each
row is one progress event and the lowest and highest RSS until the next one, so a stage's peak
shows beside what it holds before it starts. Linux only (``/proc``). ``--quick``: a small CT
phantom. docs/benchmarks.md ("Peak memory") was measured with it on the 512 x 512 x 300 CT of
``benchmarks/inference.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "DeepOrganSeg")]

from _common import add_quick_flag, print_header, print_row, report_skipped  # noqa: E402

SAMPLE_S = 0.005


def resident_gb() -> float:
    """This process's resident memory now (GB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
    return 0.0


def timeline(argv: list[str]) -> tuple[list[tuple[float, float]], list[tuple[float, str]]]:
    """Run ``deeporganseg segment ARGV --progress json`` here; the RSS samples (s, GB) and the
    progress events (s, stage: message), both timed from the start."""
    import contextlib
    import io

    from DeepOrganSegLib.cli.app import main

    samples: list[tuple[float, float]] = []
    events: list[tuple[float, str]] = []
    running = True
    started = time.monotonic()

    def sample() -> None:
        while running:
            samples.append((time.monotonic() - started, resident_gb()))
            time.sleep(SAMPLE_S)

    class Events(io.TextIOBase):
        def write(self, text: str) -> int:
            for line in text.splitlines():
                if line.startswith("{"):
                    event = json.loads(line)
                    events.append((time.monotonic() - started,
                                   f"{event.get('stage')}: {event.get('message', '')}"[:90]))
            return len(text)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with contextlib.redirect_stdout(Events()):
        code = main(["segment", *argv, "--progress", "json"])
    running = False
    sampler.join()
    if code:
        raise SystemExit(f"segment failed with exit code {code}")
    return samples, events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("segment_args", nargs="*", help="INPUT and segment's options (OUTPUT "
                                                        "goes to a temporary folder)")
    add_quick_flag(parser)
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        report_skipped("the memory timeline", "no /proc (Linux only)")
        return 0
    with tempfile.TemporaryDirectory() as folder:
        if args.quick:
            from DeepOrganSegLib.phantoms import make_phantom
            from DeepOrganSegLib.volume_io import write_volume

            phantom = make_phantom("abdomen-ct", 10001, shape=(40, 80, 80), spacing=(3.0, 3.0, 3.0))
            args.segment_args = [str(write_volume(phantom.image, Path(folder) / "ct.nrrd")),
                                 "--task", "abdomen-ct"]
        if not args.segment_args:
            parser.error("give the input volume (and segment's options), or --quick")
        source, options = args.segment_args[0], args.segment_args[1:]
        samples, events = timeline([source, str(Path(folder) / "labels.nii.gz"), *options])
    peak_s, peak_gb = max(samples, key=lambda sample: sample[1])
    print(f"peak RSS {peak_gb:.2f} GB at {peak_s:.2f} s\n")
    print_header("s", "min GB", "max GB", "event")
    ends = [at for at, _ in events[1:]] + [samples[-1][0] + SAMPLE_S]
    for (at, event), end in zip(events, ends):
        window = [gb for when, gb in samples if at <= when < end] or [resident_gb()]
        print_row(f"{at:.2f}", f"{min(window):.2f}", f"{max(window):.2f}", event)
    return 0


if __name__ == "__main__":
    sys.exit(main())
