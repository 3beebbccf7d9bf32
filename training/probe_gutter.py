"""What fills the left paravertebral gutter, level by level, in a real CT and in phantoms.

    python training/probe_gutter.py --real ../shared/data/real-ct-upper-abdomen --seeds 10001-10006

The box is 10-60 mm to the patient's left of the aorta's centre and 10-60 mm behind it on each
axial slice: where the left crus, the spleen's posteromedial part, the left kidney's upper pole
and the lung's posterior recess meet. Printed per case: the share of the box that is spleen,
left kidney, and air (below -400 HU and unlabelled: lung), on the real CT over its slab and on
portal-venous phantoms over bands of the spleen's height. A stage 2 that calls the real CT's
spleen "left kidney" there (docs/phantoms.md, "Spleen and kidney") learned what phantoms put
in that box.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import numpy as np

from training.entry import run_script
from training.evaluate import _parse_seeds, labelled_folder_case

__all__ = ["gutter_shares", "main"]

#: Bands of the spleen's height (0 its lowest slice, 1 its highest) a phantom is read over.
HEIGHT_BANDS = ((0.1, 0.3), (0.3, 0.5), (0.5, 0.7), (0.7, 0.9))
BOX_MM = (10.0, 60.0)  # from the aorta's centre, to the left and to the back


def gutter_shares(image: np.ndarray, labels: np.ndarray, spacing_xyz: Sequence[float],
                  levels: Sequence[int], spleen: int, kidney: int | None, aorta: int
                  ) -> tuple[float, float, float]:
    """Mean share (spleen, left kidney, air) of the gutter box over ``levels`` (slices of
    ``[z, y, x]`` LPS arrays with an aorta on them)."""
    shares = []
    for k in levels:
        where = np.argwhere(labels[k] == aorta)
        if not len(where):
            continue
        y_centre, x_centre = where.mean(0)
        y0, y1 = (int(y_centre + mm / spacing_xyz[1]) for mm in BOX_MM)
        x0, x1 = (int(x_centre + mm / spacing_xyz[0]) for mm in BOX_MM)
        box, hu = labels[k, y0:y1, x0:x1], image[k, y0:y1, x0:x1]
        shares.append((np.mean(box == spleen), np.mean(box == kidney) if kidney else 0.0,
                       np.mean((hu < -400) & (box == 0))))
    return tuple(float(value) for value in np.mean(shares, axis=0)) if shares else (0.0, 0.0, 0.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, help="a labelled real CT folder (spleen and aorta labelled)")
    parser.add_argument("--seeds", default="10001-10006", help="abdomen phantom seeds")
    args = parser.parse_args(argv)
    seeds = _parse_seeds(args.seeds)  # bad input is refused before the table starts
    case = labelled_folder_case(args.real) if args.real else None
    print("| case | levels | spleen | left kidney | air (lung) |")
    print("|---|---|---|---|---|")
    if case is not None:
        value = {name: key for key, name in case.names.items()}
        shares = gutter_shares(case.image.array, case.labels.array, case.image.spacing,
                               range(case.labels.array.shape[0]), value["spleen"],
                               value.get("left_kidney"), value["aorta"])
        print(f"| {case.case_id} | its slab | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
    from DeepOrganSegLib.phantoms import make_phantom

    for seed in seeds:
        phantom = make_phantom("abdomen-ct", seed, contrast_phase="portal-venous")
        value = {name: key for key, name in dict(phantom.label_names).items()}
        labels = phantom.labels.array
        heights = np.nonzero((labels == value["spleen"]).any(axis=(1, 2)))[0]
        for low, high in HEIGHT_BANDS:
            span = heights.max() - heights.min()
            levels = range(int(heights.min() + low * span), int(heights.min() + high * span) + 1)
            shares = gutter_shares(phantom.image.array, labels, phantom.image.spacing, levels,
                                   value["spleen"], value["left_kidney"], value["aorta"])
            print(f"| phantom {seed} | {low:.0%}-{high:.0%} of the spleen's height | "
                  + " | ".join(f"{s:.2f}" for s in shares) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
