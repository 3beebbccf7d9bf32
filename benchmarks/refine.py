"""A simulated user corrects the automatic result with strokes (``DeepOrganSegLib.refine``).

    python benchmarks/refine.py [--model FILE] [--real ../shared/data/real-ct-upper-abdomen]
        (or --real phase:non-contrast:FOLDER, the CT with its organs re-centred on that phase's
        HU: training/phase_variants.py, where the bundled model misses the aorta and pancreas)
                                [--phantoms 10001-10003] [--strokes 5] [--organs spleen ...]

For every case and organ, the model segments the volume once (with the CRF, keeping the
probabilities, as ``deeporganseg segment --probabilities`` does); then, up to ``--strokes``
times, the user paints one stroke where the error is largest — an "add" stroke (a 4 mm disc on
one axial slice, inside the truth) at the deepest point of the largest missed part, or a
"remove" stroke at the deepest point of the largest false positive, whichever is larger — and
refines. Prints a table: Dice before, after each stroke, strokes used, the worst time per
refinement (2 cores here), and whether the other organs stayed voxel for voxel the same.

``--quick``: phantom 10001 only, rendered on 80x80x40 voxels of 3 mm (no real CT), the spleen,
two strokes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "DeepOrganSeg")]

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from _common import add_quick_flag, print_header, print_row, report_skipped  # noqa: E402
from DeepOrganSegLib.model import load_model  # noqa: E402
from DeepOrganSegLib.resources import default_model_path  # noqa: E402
from DeepOrganSegLib.crf.parameters import CRFParameters  # noqa: E402
from DeepOrganSegLib.metrics import dice  # noqa: E402
from DeepOrganSegLib.refine import refine  # noqa: E402
from DeepOrganSegLib.strokes import Scribbles  # noqa: E402
from DeepOrganSegLib.options import SegmentationOptions  # noqa: E402
from DeepOrganSegLib.segment import segment_volume  # noqa: E402
from training.evaluate import EvaluationCase, _truth_in_model_values, iter_cases  # noqa: E402

STROKE_RADIUS_MM = 4.0
QUICK_SEED = 10001
QUICK_PHANTOM = {"shape": (40, 80, 80), "spacing": (3.0, 3.0, 3.0)}
"""``--quick``'s phantom: ``make_phantom`` options that keep its working grid small (240 x 240
x 120 mm: the upper abdomen of a default phantom)."""


def next_stroke(truth: np.ndarray, predicted: np.ndarray, spacing_kji: tuple[float, ...]
                ) -> tuple[str, np.ndarray] | None:
    """Where a user would paint next: ("add" | "remove", stroke mask), or None if no error."""
    errors = {"add": truth & ~predicted, "remove": predicted & ~truth}
    best = None
    for kind, error in errors.items():
        parts, count = ndimage.label(error)
        if not count:
            continue
        sizes = np.bincount(parts.ravel())[1:]
        largest = parts == (int(np.argmax(sizes)) + 1)
        if best is None or largest.sum() > best[1].sum():
            best = (kind, largest)
    if best is None or best[1].sum() < 20:
        return None
    kind, part = best
    return kind, disc_at_deepest(part, spacing_kji)


def disc_at_deepest(part: np.ndarray, spacing_kji: tuple[float, ...]) -> np.ndarray:
    """A user's stroke into ``part``: a :data:`STROKE_RADIUS_MM` disc on one axial slice at
    its deepest point, never outside ``part``."""
    depth = ndimage.distance_transform_edt(part, sampling=spacing_kji)
    k, j, i = np.unravel_index(int(np.argmax(depth)), part.shape)
    jj, ii = np.ogrid[: part.shape[1], : part.shape[2]]
    disc = ((jj - j) * spacing_kji[1]) ** 2 + ((ii - i) * spacing_kji[2]) ** 2 <= STROKE_RADIUS_MM ** 2
    stroke = np.zeros(part.shape, bool)
    stroke[k] = disc & part[k]
    return stroke


def simulate(case, model, organs: list[str], strokes: int, crf: CRFParameters) -> list[dict]:
    task = model.metadata.task(case.task)
    result = segment_volume(case.image, model, SegmentationOptions(task=task.name,
                                                                   keep_probabilities=True))
    truth_values, scored = _truth_in_model_values(case, task)
    spacing = tuple(case.image.spacing[::-1])
    rows = []
    for spec in scored:
        if organs and spec.name not in organs:
            continue
        labels = result.labels.array.copy()
        truth = truth_values == spec.value
        add = np.zeros(labels.shape, bool)
        remove = np.zeros(labels.shape, bool)
        dices = [dice(labels == spec.value, truth)]
        seconds, others_kept = [], True
        for _ in range(strokes):
            stroke = next_stroke(truth, labels == spec.value, spacing)
            if stroke is None:
                break
            (add if stroke[0] == "add" else remove)[stroke[1]] = True
            before = labels
            refined = refine(case.image.array, labels, result.probabilities, result.channels,
                             spec.value, Scribbles(add, remove), spacing, task.normalization,
                             crf)
            labels = refined.labels
            untouched = (before != spec.value) & (labels != spec.value)
            others_kept &= bool((before[untouched] == labels[untouched]).all())
            seconds.append(refined.elapsed_s)
            dices.append(dice(labels == spec.value, truth))
        rows.append({"case": case.case_id, "organ": spec.name, "dices": dices,
                     "strokes": len(seconds), "worst_s": max(seconds, default=0.0),
                     "others_kept": others_kept})
    return rows


def quick_case() -> EvaluationCase:
    """``--quick``'s one case: the abdomen phantom :data:`QUICK_SEED` as :data:`QUICK_PHANTOM`
    says (``iter_cases``' phantom names cannot give it a shape)."""
    from DeepOrganSegLib.phantoms import make_phantom

    phantom = make_phantom("abdomen-ct", QUICK_SEED, **QUICK_PHANTOM)
    return EvaluationCase(f"abdomen-ct-{QUICK_SEED}-quick", phantom.image, phantom.labels,
                          dict(phantom.label_names), "abdomen-ct")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" /
                                              "real-ct-upper-abdomen"))
    parser.add_argument("--phantoms", default="10001-10003")
    parser.add_argument("--strokes", type=int, default=5)
    parser.add_argument("--organs", nargs="*", default=[])
    add_quick_flag(parser)
    args = parser.parse_args()
    model = load_model(args.model or default_model_path())
    crf = model.metadata.crf_parameters("abdomen-ct") or CRFParameters()
    cases: list[EvaluationCase] = []
    if args.quick:
        report_skipped("the real CT", "--quick")
        cases.append(quick_case())
        args.organs, args.strokes = ["spleen"], 2
    else:
        if Path(args.real).exists() or args.real.startswith("phase:"):
            cases += iter_cases(args.real)
        else:
            report_skipped("the real CT", f"{args.real} does not exist")
        if args.phantoms:
            cases += iter_cases(f"phantom:abdomen-ct:{args.phantoms}")
    print(f"model {Path(model.path).name}; strokes are {STROKE_RADIUS_MM:g} mm discs on one "
          f"axial slice\n")
    print_header("case", "organ", "Dice before", "after each stroke", "strokes",
                 "worst s / refinement", "other organs unchanged")
    for case in cases:
        for row in simulate(case, model, args.organs, args.strokes, crf):
            steps = " → ".join(f"{d:.3f}" for d in row["dices"][1:]) or "–"
            print_row(row["case"], row["organ"], f"{row['dices'][0]:.3f}", steps, row["strokes"],
                      f"{row['worst_s']:.2f}", "yes" if row["others_kept"] else "NO")
    return 0


if __name__ == "__main__":
    sys.exit(main())
