"""Phantoms beside the real CT: per-organ HU, volume and position, a side-by-side picture, and the
generator's speed.

    python benchmarks/phantom_realism.py [--real ../shared/data/real-ct-upper-abdomen]
                                         [--seeds 10001-10006] [--png docs/images/phantom_vs_real.png]

Prints one markdown table per measure (the real case, then the phantoms' median over seeds and
their range), and the generation time per case at the default size and at 128^3 on one core.
Positions are the organ centroid's offset (mm) from the body's axial centre (the centroid of
the voxels above -500 HU, table and arms included, as ``preprocess.position_channels`` uses),
x to the patient's left, y posterior, measured on the slices that hold the organ. The real case
is a 40 mm slab, so its volumes are those of the slab only. Without the real case (CI's checkout
has no ``../shared``) its column says "–".

``--quick``: one seed, the speed line at 64^3, no picture unless ``--png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "DeepOrganSeg")]

import numpy as np  # noqa: E402

from _common import add_quick_flag, print_header, print_row, report_skipped  # noqa: E402
from DeepOrganSegLib.phantoms import make_phantom  # noqa: E402
from DeepOrganSegLib.volume import Volume  # noqa: E402
from training.evaluate import _parse_seeds, labelled_folder_case  # noqa: E402

ORGANS = ("liver", "spleen", "stomach", "pancreas", "aorta", "inferior_vena_cava")


def organ_measures(image: Volume, labels: np.ndarray, names: dict[int, str]) -> dict:
    """{organ: (median HU, IQR low, IQR high, volume mL, x offset mm, y offset mm)}."""
    hu = image.array
    body = hu > -500
    voxel_ml = float(np.prod(image.spacing)) / 1000
    # direction is the identity for the real case and for phantoms without reorientation
    si, sj = image.spacing[0], image.spacing[1]
    out = {}
    for value, name in names.items():
        if name not in ORGANS:
            continue
        mask = labels == value
        if not mask.any():
            continue
        slices = np.nonzero(mask.any(axis=(1, 2)))[0]
        footprint = body[slices].any(axis=0)
        body_j, body_i = np.nonzero(footprint)
        _, organ_j, organ_i = np.nonzero(mask)
        low, median, high = np.percentile(hu[mask], [25, 50, 75])
        out[name] = (median, low, high, mask.sum() * voxel_ml,
                     (organ_i.mean() - body_i.mean()) * si, (organ_j.mean() - body_j.mean()) * sj)
    return out


def _print_table(title: str, real: dict, phantoms: list[dict], column: int, fmt: str) -> None:
    print(f"#### {title}\n")
    print_header("organ", "real CT", "phantoms (median)", "phantoms (range)")
    for organ in ORGANS:
        values = [p[organ][column] for p in phantoms if organ in p]
        real_value = format(real[organ][column], fmt) if organ in real else "–"
        if values:
            print_row(organ, real_value, format(np.median(values), fmt),
                      f"{format(min(values), fmt)} … {format(max(values), fmt)}")
    print()


def side_by_side_png(real_case, phantom, path: Path) -> None:
    """Axial slices: the real CT and a phantom at the spleen's widest level, labels outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = {name: value for value, name in phantom.label_names.items()}
    lookup = np.zeros(256, np.uint8)  # the real case's labels in the phantom's values (colours)
    for value, name in real_case.names.items():
        lookup[value] = values.get(name, 0)
    real_labels = lookup[real_case.labels.array]
    figure, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for axis, (image, labels, spleen, title) in zip(axes, (
            (real_case.image, real_labels, 2, "real CT (TotalSegmentator reference)"),
            (phantom.image, phantom.labels.array, 2, f"phantom seed {phantom.info['seed']}"))):
        k = int(np.argmax((labels == spleen).sum(axis=(1, 2))))
        extent = [0, image.array.shape[2] * image.spacing[0], image.array.shape[1] * image.spacing[1], 0]
        axis.imshow(image.array[k], cmap="gray", vmin=-160, vmax=240, extent=extent)
        axis.imshow(np.ma.masked_equal(labels[k], 0), cmap="tab10", vmin=0, vmax=10, alpha=0.4,
                    extent=extent, interpolation="nearest")
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.suptitle("spleen's widest axial slice (patient right on the left; mm)", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default=str(ROOT.parent / "shared" / "data" /
                                              "real-ct-upper-abdomen"))
    parser.add_argument("--seeds", default="10001-10006")
    parser.add_argument("--png", help="write the side-by-side picture here")
    add_quick_flag(parser)
    args = parser.parse_args()
    seeds = _parse_seeds("10001" if args.quick else args.seeds)

    real_case, real = None, {}
    if Path(args.real).exists():
        real_case = labelled_folder_case(Path(args.real))
        real = organ_measures(real_case.image, real_case.labels.array, real_case.names)
    else:
        report_skipped("the real CT", f"{args.real} does not exist")
    phantoms, cases, seconds = [], [], []
    for seed in seeds:
        started = time.perf_counter()
        phantom = make_phantom("abdomen-ct", seed, contrast_phase="portal-venous")
        seconds.append(time.perf_counter() - started)
        cases.append(phantom)
        phantoms.append(organ_measures(phantom.image, phantom.labels.array, phantom.label_names))
    _print_table("median HU (portal-venous)", real, phantoms, 0, ".0f")
    _print_table("volume (mL; the real case: its 40 mm slab only)", real, phantoms, 3, ".0f")
    _print_table("centroid left of the body centre (mm)", real, phantoms, 4, ".0f")
    _print_table("centroid posterior of the body centre (mm)", real, phantoms, 5, ".0f")
    spleen_minus_liver = [p["spleen"][0] - p["liver"][0] for p in phantoms]
    real_difference = (f"{real['spleen'][0] - real['liver'][0]:+.0f}"
                       if {"spleen", "liver"} <= real.keys() else "–")
    print(f"spleen − liver median HU: real {real_difference}, "
          f"phantoms {min(spleen_minus_liver):+.0f} … {max(spleen_minus_liver):+.0f}")
    side = 64 if args.quick else 128
    cube = []
    for seed in seeds[:3]:
        started = time.perf_counter()
        make_phantom("abdomen-ct", seed, shape=(side, side, side))
        cube.append(time.perf_counter() - started)
    print(f"generation on one core: {np.median(seconds):.2f} s per default-size case "
          f"({cases[0].image.array.shape}), {np.median(cube):.2f} s per {side}^3 case")
    if args.png:
        if real_case is None:
            report_skipped("the side-by-side picture", "no real CT")
        else:
            side_by_side_png(real_case, cases[0], Path(args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
