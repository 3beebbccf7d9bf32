"""Cascade against single stage: ``deeporganseg segment`` wall time and peak memory on the
512x512x300 int16 CT-sized volume of ``benchmarks/inference.py`` (CRF off), each model in a
fresh process, measured in the same run; and where a cascade spends its time (stage 1 on the
coarse grid, stage 2 on its organ box: the box's share of the working grid).

Run: ``python benchmarks/cascade.py --single MODEL --cascade MODEL``; ``--quick``: a 96x96x40
volume, by default the tiny test model (5 training steps) as the single stage and the bundled
model as the cascade.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_quick_flag, measured, measurement, tiny_model  # noqa: E402
from inference import ct_like_volume  # noqa: E402

from DeepOrganSegLib.resources import default_model_path  # noqa: E402
from DeepOrganSegLib.volume import Volume  # noqa: E402
from DeepOrganSegLib.volume_io import write_volume  # noqa: E402

SHAPES = {False: (300, 512, 512), True: (40, 96, 96)}
"""The CT-sized volume's (k, j, i) voxels in a full run and with ``--quick``."""



def segment_in_fresh_process(model: Path, source: Path, output: Path) -> tuple[float, float]:
    """Wall time (s) and peak RSS (GB) of one ``deeporganseg segment`` process."""
    command = [sys.executable, "-m", "DeepOrganSegLib", "segment", str(source), str(output),
               "--model", str(model), "--no-crf", "--task", "abdomen-ct", "--progress", "none"]
    result = subprocess.run(measured(command), check=True, capture_output=True, text=True)
    return measurement(result.stderr)


def stage_split(model_path: Path, volume: Volume) -> dict:
    """Seconds in stage 1 and stage 2 and the organ box's share of the working grid."""
    from DeepOrganSegLib import cascade
    from DeepOrganSegLib.model import load_model
    from DeepOrganSegLib.grid import working_grid

    model = load_model(model_path)
    task = model.metadata.task("abdomen-ct")
    grid = working_grid(volume, task.spacing_mm)
    marks: list[tuple[str, float]] = []

    def progress(stage: str, fraction: float, message: str = "") -> None:
        if stage == "inference" and message.startswith("stage 2") and not any(
                name == "stage 2" for name, _ in marks):
            marks.append(("stage 2", time.perf_counter()))

    started = time.perf_counter()
    output = cascade.network_probabilities(volume, model, task, grid, progress=progress)
    finished = time.perf_counter()
    stage2_start = marks[0][1] if marks else started
    box = int(np.prod([r.stop - r.start for r in output.region]))
    return {"stage1_s": stage2_start - started, "stage2_s": finished - stage2_start,
            "box_share": box / int(np.prod(grid.shape))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=Path,
                        help="single-stage model file (--quick: the tiny test model)")
    parser.add_argument("--cascade", type=Path,
                        help="cascade model file (--quick: the bundled model)")
    parser.add_argument("--repeats", type=int, default=1)
    add_quick_flag(parser)
    args = parser.parse_args()
    if not args.quick and not (args.single and args.cascade):
        parser.error("give --single and --cascade (or --quick)")
    shape = SHAPES[args.quick]
    with tempfile.TemporaryDirectory() as folder:
        args.single = args.single or tiny_model(Path(folder))
        args.cascade = args.cascade or default_model_path()
        array = np.clip(ct_like_volume(shape, seed=1), -1024, 3071).astype(np.int16)
        volume = Volume(array, spacing=(0.75, 0.75, 1.0))
        source = write_volume(volume, Path(folder) / "ct.nrrd")
        results = {}
        for name in ("single", "cascade"):
            runs = [segment_in_fresh_process(getattr(args, name), source,
                                             Path(folder) / f"{name}.nii.gz")
                    for _ in range(args.repeats)]
            results[name] = (min(w for w, _ in runs), max(m for _, m in runs))
        split = stage_split(args.cascade, Volume(array.astype(np.float32), spacing=volume.spacing))
    (single_s, single_gb), (cascade_s, cascade_gb) = results["single"], results["cascade"]
    print(f"models: single {args.single.name}, cascade {args.cascade.name}")
    print(f"\n| deeporganseg segment, {'x'.join(map(str, shape[::-1]))} int16 CT, CRF off "
          "| single stage | cascade | ratio |")
    print("|---|---|---|---|")
    print(f"| wall time (s) | {single_s:.1f} | {cascade_s:.1f} | {single_s / cascade_s:.2f}x |")
    print(f"| peak RSS (GB) | {single_gb:.2f} | {cascade_gb:.2f} | "
          f"{single_gb / cascade_gb:.2f}x |")
    print(f"\ncascade, network only: stage 1 {split['stage1_s']:.1f} s, stage 2 "
          f"{split['stage2_s']:.1f} s on {100 * split['box_share']:.0f} % of the working grid")
    print(json.dumps({"single": results["single"], "cascade": results["cascade"], **split}))


if __name__ == "__main__":
    main()
