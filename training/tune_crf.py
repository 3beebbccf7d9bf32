"""Choose a model's dense-CRF parameters per task on labelled validation data.

    python training/tune_crf.py MODEL DATA [DATA ...] [--out crf.json]
    python training/export.py CHECKPOINT MODEL --crf crf.json          # store the choice

``DATA`` as for ``training/evaluate.py`` (``phantom:KIND:SEEDS``, ``icbm152``, an MSD/nnU-Net
folder); each case is tuned for its own task (``--task`` for folders). The network runs once per
case; then every parameter set of a small grid refines its probabilities on the working grid
(ROI mode, as ``deeporganseg segment`` does), the best of them once more with the side
outputs fused in, then the best with organs the CRF shrinks below a share of the network's
volume kept as the network found them (``min_organ_share``), and each is scored by the mean
organ Dice against the reference resampled (nearest neighbour) onto that grid. Each of the two
later steps is taken only where it gains at least ``--min-gain``. Per task the best set is kept if it
beats the network alone by at least ``--min-gain``; otherwise the task gets both weights 0, which
turns the CRF off for it. The grid's intensity widths are in each modality's normalised units:
CT ``(HU - 40) / 350`` (0.03 = 10 HU), MR z-scores.

Writes ``{"crf": model-level parameters, "tasks": {task: its parameters that differ},
"scores": {task: {"network": Dice, "crf": Dice, "chosen": {...}}}}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import numpy as np
import SimpleITK as sitk
import torch

from DeepOrganSegLib.model import LoadedModel, TaskSpec, load_model
from DeepOrganSegLib.crf.meanfield import (ROI_MARGIN_MM, bounding_box, fuse_side_outputs,
                                           refine_network_probabilities)
from DeepOrganSegLib.crf.parameters import CRFParameters
from DeepOrganSegLib.cascade import network_probabilities
from DeepOrganSegLib.options import InferenceSettings
from DeepOrganSegLib.outputs import check_outputs_spare_inputs
from DeepOrganSegLib.grid import resample_to_grid, working_grid
from DeepOrganSegLib.volume_io import write_atomically
from training.entry import run_script
from training.evaluate import EvaluationCase, _truth_in_model_values, data_files, iter_cases

__all__ = ["CaseOutputs", "parameter_grid", "with_side_outputs", "network_outputs", "case_dice",
           "tune", "main"]

#: Intensity widths θβ tried, per modality, in normalised image units.
INTENSITY_WIDTHS = {"CT": (0.03, 0.1), "MR": (0.1, 0.3)}
APPEARANCE_WEIGHTS = (3.0, 10.0)
APPEARANCE_SPATIAL_MM = (3.0, 5.0, 10.0)
SMOOTHNESS_WEIGHTS = (0.0, 1.0)
#: Weights τ_d tried for every side output, at the best kernel parameters only.
SIDE_OUTPUT_WEIGHTS = (0.1, 0.2)
#: Shares of the network's volume below which an organ keeps the network's voxels, tried last.
MIN_ORGAN_SHARES = (0.25, 0.5, 0.75)


@dataclass
class CaseOutputs:
    """One case on its task's working grid, cropped to the only region a CRF setting can change:
    the bounding box of what the main or a side output labels, grown by the CRF's ROI margin
    (every fusion of the outputs labels background outside it, so :func:`dense_crf_roi` never
    reaches further). Inside: the normalised image ``[Z, Y, X]``, the network's probabilities
    ``[C, Z, Y, X]`` over the task's channels (and side outputs), the reference in channel
    indices; outside, only the count of reference voxels of each channel (what a setting
    misses there). A whole abdomen phantom's outputs take 1.4 GB, the crop a fraction."""

    case_id: str
    image: torch.Tensor
    probabilities: torch.Tensor
    sides: list[torch.Tensor]
    truth: np.ndarray
    scored: list[int]
    spacing_kji: tuple[float, float, float]
    truth_outside: np.ndarray
    box: tuple[slice, ...] = ()  # the crop on the whole working grid


def parameter_grid(modality: str) -> list[CRFParameters]:
    """The kernel parameter sets tried for a task of ``modality`` (side outputs not fused)."""
    return [CRFParameters(appearance_weight=w1, appearance_spatial_mm=theta_alpha,
                          appearance_intensity=theta_beta, smoothness_weight=w2)
            for w1, theta_alpha, theta_beta, w2 in itertools.product(
                APPEARANCE_WEIGHTS, APPEARANCE_SPATIAL_MM, INTENSITY_WIDTHS[modality],
                SMOOTHNESS_WEIGHTS)]


def with_side_outputs(params: CRFParameters, side_outputs: int) -> list[CRFParameters]:
    """``params`` with every side output fused at weight 0.1 and at 0.2 (none without any)."""
    return [replace(params, side_output_weights=(tau,) * side_outputs)
            for tau in SIDE_OUTPUT_WEIGHTS] if side_outputs else []


def network_outputs(model: LoadedModel, case: EvaluationCase, task: TaskSpec) -> CaseOutputs:
    """Run the network once on ``case`` as ``deeporganseg segment`` would, keeping its
    working-grid probabilities and side outputs."""
    grid = working_grid(case.image, task.spacing_mm)
    channels = [0] + [label.value for label in task.labels]
    output = network_probabilities(case.image, model, task, grid,
                                   InferenceSettings(side_outputs=True))
    prediction = output.prediction
    truth_values, scored = _truth_in_model_values(case, task)
    truth = resample_to_grid(case.labels.with_array(truth_values.astype(np.float32)), grid,
                             interpolator=sitk.sitkNearestNeighbor, default_value=0.0)
    index_of = np.zeros(max(channels) + 1, np.int64)
    index_of[channels] = np.arange(len(channels))
    truth_channels = index_of[truth.astype(np.int64)].astype(np.uint8)
    spacing_kji = grid.spacing[::-1]
    box = _changeable_box([prediction.main, *prediction.sides], spacing_kji)
    inside = (slice(None), *box)
    outside = np.bincount(truth_channels.ravel(), minlength=len(channels))
    outside -= np.bincount(truth_channels[box].ravel(), minlength=len(channels))
    return CaseOutputs(case.case_id, torch.from_numpy(output.image)[box].clone(),
                       prediction.main[inside].clone(),
                       [side[inside].clone() for side in prediction.sides],
                       truth_channels[box].copy(),
                       [channels.index(spec.value) for spec in scored], spacing_kji, outside, box)


def _changeable_box(outputs: Sequence[torch.Tensor], spacing_kji: Sequence[float]
                    ) -> tuple[slice, ...]:
    """Where :func:`dense_crf_roi` may change the labels of any fusion of ``outputs``: a fused
    voxel is background wherever every output's is (background beats each organ in each, so
    in any convex combination), so the box of their union grown by the ROI margin holds every
    box the CRF refines (a single voxel when no output labels anything)."""
    foreground = outputs[0].max(0).indices > 0
    for output in outputs[1:]:
        foreground |= output.max(0).indices > 0
    if not foreground.any():
        return (slice(0, 1),) * foreground.ndim
    return bounding_box(foreground, spacing_kji, ROI_MARGIN_MM)


def case_dice(case: CaseOutputs, labels: np.ndarray) -> float:
    """Mean Dice over the case's scored organs of ``labels`` (on its crop) against its
    reference, counting the reference voxels outside the crop as missed (an organ absent from
    both scores 1)."""
    scores = []
    for value in case.scored:
        predicted, reference = labels == value, case.truth == value
        both = int(np.count_nonzero(predicted & reference))
        total = int(np.count_nonzero(predicted)) + int(np.count_nonzero(reference)) \
            + int(case.truth_outside[value])
        scores.append(2.0 * both / total if total else 1.0)
    return float(np.mean(scores))


def _refined_labels(case: CaseOutputs, params: CRFParameters) -> np.ndarray:
    unary = case.probabilities
    if params.side_output_weights:
        unary = fuse_side_outputs(unary, case.sides, params.side_output_weights)
    return refine_network_probabilities(unary, case.image, case.spacing_kji,
                                        params).max(0).indices.numpy()


def tune(model: LoadedModel, cases: Sequence[tuple[TaskSpec, CaseOutputs]],
         min_gain: float = 0.002, show_progress: bool = True,
         grid_for: Callable[[TaskSpec], list[CRFParameters]] | None = None) -> dict:
    """The per-task choice (see the module docstring) for precomputed ``cases``; ``grid_for``
    gives the parameter sets tried for a task (default: :func:`parameter_grid`)."""
    from tqdm import tqdm

    by_task: dict[str, list[CaseOutputs]] = defaultdict(list)
    tasks = {}
    for task, outputs in cases:
        by_task[task.name].append(outputs)
        tasks[task.name] = task
    defaults = CRFParameters()
    result = {"crf": defaults.to_dict(), "tasks": {}, "scores": {}}
    for name, outputs in by_task.items():
        network = float(np.mean([case_dice(o, o.probabilities.max(0).indices.numpy())
                                 for o in outputs]))
        grid = grid_for(tasks[name]) if grid_for else parameter_grid(tasks[name].modality)

        def score(candidates: list[CRFParameters]) -> list[tuple[float, CRFParameters]]:
            scores = []
            # a context, so that the bar is closed before an interrupt's error line is printed
            with tqdm(candidates, desc=f"CRF grid, {name}", unit="set",
                      disable=not show_progress) as bar:
                for params in bar:
                    scores.append((float(np.mean([case_dice(o, _refined_labels(o, params))
                                                  for o in outputs])), params))
            return scores

        best_dice, best = max(score(grid), key=lambda pair: pair[0])
        sides = len(model.network.config.side_output_levels)
        # each later step is taken only where it gains min_gain: a tie or a gain within noise
        # keeps the simpler parameters
        best_dice, best = _step(best_dice, best, score(with_side_outputs(best, sides)), min_gain)
        shares = [(best_dice, best)] + score([replace(best, min_organ_share=share)
                                              for share in MIN_ORGAN_SHARES])
        best_dice, best = _step(best_dice, best, shares[1:], min_gain)
        chosen = best if best_dice >= network + min_gain else replace(
            defaults, appearance_weight=0.0, smoothness_weight=0.0)
        result["tasks"][name] = {key: value for key, value in chosen.to_dict().items()
                                 if value != result["crf"][key]}
        result["scores"][name] = {"network": round(network, 4), "crf": round(best_dice, 4),
                                  "crf_on": chosen is best, "cases": len(outputs),
                                  "best": best.to_dict(),
                                  "min_organ_shares": {str(params.min_organ_share): round(share_dice, 4)
                                                       for share_dice, params in shares}}
    return result


def _step(best_dice: float, best: CRFParameters, candidates: list[tuple[float, CRFParameters]],
          min_gain: float) -> tuple[float, CRFParameters]:
    """The best of ``candidates`` where it beats ``best_dice`` by at least ``min_gain``, else
    the best so far."""
    if not candidates:
        return best_dice, best
    top_dice, top = max(candidates, key=lambda pair: pair[0])
    return (top_dice, top) if top_dice >= best_dice + min_gain else (best_dice, best)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file (.safetensors)")
    parser.add_argument("data", nargs="+", help="phantom:KIND:SEEDS, icbm152 or a folder")
    parser.add_argument("--task", help="model task of folder data (phantoms name their own)")
    parser.add_argument("--out", default="crf.json", help="JSON file to write")
    parser.add_argument("--min-gain", type=float, default=0.002,
                        help="mean Dice the CRF must add to stay on for a task, and each later step "
                             "(side outputs, organ-keeping share) to be taken")
    parser.add_argument("--keep-kernels", action="store_true",
                        help="start from the model's own CRF parameters instead of the grid "
                             "(then side-output weights and the organ-keeping share are tried)")
    args = parser.parse_args(argv)
    check_outputs_spare_inputs([args.out], [args.model, *data_files(args.data)])
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    cases = []
    for data in args.data:
        for case in iter_cases(data):
            task = model.metadata.task(args.task or case.task)
            print(f"{case.case_id}: network on task {task.name}", flush=True)
            cases.append((task, network_outputs(model, case, task)))
    own = model.metadata.crf_parameters
    result = tune(model, cases, args.min_gain, grid_for=(
        lambda task: [own(task.name) or CRFParameters()]) if args.keep_kernels else None)
    write_atomically(args.out, lambda path: Path(path).write_text(json.dumps(result, indent=2)
                                                                    + "\n"))
    print("| task | Dice, network | Dice, best CRF | CRF kept | parameters |")
    print("|---|---|---|---|---|")
    for name, score in result["scores"].items():
        print(f"| {name} | {score['network']:.4f} | {score['crf']:.4f} | "
              f"{'yes' if score['crf_on'] else 'no'} | {result['tasks'][name]} |")
    for name, score in result["scores"].items():
        print(f"{name}, min_organ_share: " + ", ".join(
            f"{share} {value:.4f}" for share, value in score["min_organ_shares"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
