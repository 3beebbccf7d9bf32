"""What does a cascade's stage 2 rely on? Per-organ Dice of the network (no CRF) on a labelled
real CT and its contrast-phase variants, under controlled changes of stage 2's inputs:

* ``as scanned``: the model as it runs;
* ``blank prior``: stage 1's probabilities replaced by zeros (stage 2 alone, from the image);
* ``oracle prior``: stage 1's probabilities replaced by the reference labels, blurred to stage
  1's coarse scale (what stage 2 makes of a perfect stage 1);
* ``flat image``: the image channel replaced by the body's median (stage 2 from its prior and
  position channels alone: how much of the answer the image carries);
* ``fat planes``: voxels no reference label covers (the case's own labels, also those the task
  does not segment) within 4 mm of a labelled structure set to fat (-100 HU), as if every organ
  had a clean fat plane around it (do the patient's touching neighbours hide it?).

    python training/probe_stage2.py MODEL CASE_FOLDER [--phases as-scanned non-contrast ...]
        [--out runs/probe-stage2.md]

Prints one markdown table per phase (rows: condition, columns: organ) and writes them to
``--out``. A diagnostic, not an evaluation: the conditions change the model's inputs.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator, Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

import DeepOrganSegLib.cascade as cascade
from DeepOrganSegLib.metrics import dice_per_label
from DeepOrganSegLib.model import LoadedModel, load_model
from DeepOrganSegLib.grid import WorkingGrid, resample_to_grid
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume import Volume
from training.entry import run_script
from training.evaluate import EvaluationCase, _truth_in_model_values, labelled_folder_case
from training.phase_variants import PHASE_MEDIANS_HU, render_phase

__all__ = ["CONDITIONS", "probe", "main"]

#: Fat, in HU, for the ``fat planes`` condition; the plane's width in mm.
FAT_HU, FAT_PLANE_MM = -100.0, 4.0


@contextmanager
def _prior_replaced(make: Callable[[WorkingGrid, list[int], int], np.ndarray]) -> Iterator[None]:
    """Within the block, stage 2's prior is ``make(target_grid, channels, num_classes)``."""
    original = cascade.prior_channels

    def replaced(probabilities, coarse, target, channels, num_classes):  # noqa: ARG001
        return make(target, channels, num_classes)

    cascade.prior_channels = replaced  # type: ignore[assignment]
    try:
        yield
    finally:
        cascade.prior_channels = original  # type: ignore[assignment]


def _oracle(truth: Volume, coarse_mm: float) -> Callable[[WorkingGrid, list[int], int],
                                                          np.ndarray]:
    """The reference labels (model values) as a prior, blurred by a Gaussian of stage 1's
    voxel size so that it is as sharp as a coarse stage could be."""
    def make(target: WorkingGrid, channels: list[int], num_classes: int) -> np.ndarray:
        labels = resample_to_grid(truth, target, interpolator=sitk.sitkNearestNeighbor,
                                  default_value=0)
        prior = np.zeros((num_classes - 1, *target.shape), np.float32)
        sigma = [coarse_mm / 2.355 / s for s in target.spacing[::-1]]
        for value in channels[1:]:
            prior[value - 1] = ndimage.gaussian_filter((labels == value).astype(np.float32),
                                                       sigma)
        return prior
    return make


def _blank(target: WorkingGrid, channels: list[int], num_classes: int) -> np.ndarray:  # noqa
    return np.zeros((num_classes - 1, *target.shape), np.float32)


def _fat_planes(image: Volume, labels: Volume) -> Volume:
    """Unlabelled voxels within :data:`FAT_PLANE_MM` of a labelled organ set to fat."""
    organs = labels.array > 0
    distance = ndimage.distance_transform_edt(~organs, sampling=image.spacing[::-1])
    array = image.array.astype(np.float32).copy()
    array[(~organs) & (distance <= FAT_PLANE_MM)] = FAT_HU
    return image.with_array(array)


def _flat_image(image: Volume) -> Volume:
    """The image replaced by the median of the body (voxels above -500 HU)."""
    array = image.array.astype(np.float32)
    body = array > -500
    flat = np.where(body, float(np.median(array[body])), array).astype(np.float32)
    return image.with_array(flat)


#: The probe's conditions, in table order.
CONDITIONS = ("as scanned", "blank prior", "oracle prior", "flat image", "fat planes")


def probe(model: LoadedModel, case: EvaluationCase, task_name: str = "abdomen-ct",
          conditions: Sequence[str] = CONDITIONS) -> dict[str, dict[str, float]]:
    """``{condition: {organ: Dice}}`` of the network (no CRF) on ``case``."""
    truth_array, specs = _truth_in_model_values(case, model.metadata.task(task_name))
    truth = case.labels.with_array(truth_array)
    scored = {spec.value: spec.name for spec in specs}
    stage1 = model.metadata.stage1
    coarse_mm = max(stage1.spacing_for(task_name)) if stage1 is not None else 6.0
    options = SegmentationOptions(task=task_name, crf=False)
    results: dict[str, dict[str, float]] = {}
    for condition in conditions:
        image = case.image
        if condition == "flat image":
            image = _flat_image(image)
        elif condition == "fat planes":
            image = _fat_planes(image, case.labels)
        context: AbstractContextManager = nullcontext()
        if condition == "blank prior":
            context = _prior_replaced(_blank)
        elif condition == "oracle prior":
            context = _prior_replaced(_oracle(truth, coarse_mm))
        with context:
            predicted = segment_volume(image, model, options).labels.array
        dice = dice_per_label(predicted, truth.array, list(scored), empty=1.0)
        results[condition] = {scored[value]: dice[value] for value in scored}
    return results


def _table(results: dict[str, dict[str, float]]) -> list[str]:
    organs = list(next(iter(results.values())))
    lines = ["| condition | " + " | ".join(organs) + " | mean |",
             "|---|" + "---|" * (len(organs) + 1)]
    for condition, dice in results.items():
        values = [dice[o] for o in organs]
        lines.append(f"| {condition} | " + " | ".join(f"{v:.2f}" for v in values)
                     + f" | {np.mean(values):.3f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("case", help="a labelled case folder (reference_labels.*)")
    parser.add_argument("--phases", nargs="+", default=["as-scanned", *PHASE_MEDIANS_HU],
                        choices=["as-scanned", *PHASE_MEDIANS_HU])
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    parser.add_argument("--out", default="runs/probe-stage2.md")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    lines: list[str] = []
    for phase in args.phases:
        case = labelled_folder_case(Path(args.case))
        if phase != "as-scanned":
            case.image = render_phase(case.image, case.labels, case.names, phase)
        table = [f"### {case.case_id}, {phase} (network, no CRF)", "",
                 *_table(probe(model, case, conditions=args.conditions)), ""]
        print("\n".join(table), flush=True)
        lines += table
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
