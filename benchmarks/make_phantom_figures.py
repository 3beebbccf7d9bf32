"""Regenerate the pictures of docs/phantoms.md: one QC montage per phantom kind, and the real images
available offline for comparison.

    python benchmarks/make_phantom_figures.py [--out docs/images]
    python benchmarks/make_phantom_figures.py --quick      # a quarter of the size, in a temporary folder

Real images (skipped with a note when absent):
  * head CT "Cranium.inv3" from Debian's ``invesalius-examples``
    (apt-get install invesalius-examples)
  * ICBM152 2009 T1 with its grey/white-matter maps, bundled in the PyPI package ``nilearn``
"""

from __future__ import annotations

import argparse
import plistlib
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DeepOrganSeg"))

from _common import add_quick_flag, print_header, print_row, report_skipped  # noqa: E402
from DeepOrganSegLib.bodypart import REGIONS  # noqa: E402
from DeepOrganSegLib.errors import InputError  # noqa: E402
from DeepOrganSegLib.phantoms import make_phantom  # noqa: E402
from DeepOrganSegLib.phantoms.brain import icbm152, nilearn_data_folder  # noqa: E402
from DeepOrganSegLib.qc import save_overlay_png  # noqa: E402
from DeepOrganSegLib.volume import Volume  # noqa: E402
from DeepOrganSegLib.volume_io import write_atomically  # noqa: E402

CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
CT_WINDOW = (-160.0, 240.0)  # abdominal soft-tissue window (HU)

#: (file stem, kind, seed, make_phantom options, title) of each phantom figure
FIGURES = [
    ("phantom_abdomen-ct", "abdomen-ct", 7,
     dict(shape=(144, 224, 224), contrast_phase="portal-venous"), "abdomen-ct, portal-venous"),
    ("phantom_abdomen-ct_arterial", "abdomen-ct", 7,
     dict(shape=(144, 224, 224), contrast_phase="arterial"), "abdomen-ct, arterial (same seed)"),
    ("phantom_abdomen-ct_non-contrast", "abdomen-ct", 7,
     dict(shape=(144, 224, 224), contrast_phase="non-contrast"),
     "abdomen-ct, non-contrast (same seed)"),
    ("phantom_abdomen-ct_oblique_synthseg", "abdomen-ct", 8,
     dict(shape=(96, 160, 160), random_orientation=True, synthseg=True),
     "abdomen-ct, SynthSeg contrast, random oblique orientation"),
    ("phantom_heart-mr", "heart-mr", 3, dict(shape=(128, 160, 160)), "heart-mr (bSSFP)"),
    ("phantom_brain-mr", "brain-mr", 3, dict(shape=(144, 176, 176)), "brain-mr (T1-weighted)"),
    ("phantom_body-ct", "body-ct", 2, dict(shape=(320, 128, 128), contrast_phase="portal-venous"),
     "body-ct, portal-venous"),
]


def phantom_figures(out: Path, scale: int = 1) -> list[Path]:
    """The pictures of :data:`FIGURES` in ``out``; their phantoms' shapes divided by ``scale``."""
    written = []
    for stem, kind, seed, options, title in FIGURES:
        shape = tuple(n // scale for n in options["shape"])
        phantom = make_phantom(kind, seed, **{**options, "shape": shape})
        window = CT_WINDOW if phantom.modality == "CT" and not options.get("synthseg") else None
        written.append(save_overlay_png(
            phantom.image, phantom.labels, out / f"{stem}.png", window=window,
            title=f"{title}, seed {seed}", label_names=phantom.label_names))
        if kind == "body-ct":
            written.append(body_regions_figure(phantom, out / "phantom_body-ct_regions.png"))
    return written


def body_regions_figure(phantom, path: Path) -> Path:
    """A coronal slice of a body-ct phantom beside a strip coloured by each slice's region."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    image = phantom.image.array
    si, _, sk = phantom.image.spacing
    body = phantom.tissues.array > 0
    j = int(np.argmax(body.sum(axis=(0, 2))))  # the widest coronal slice
    colours = matplotlib.colormaps["Set2"].colors
    strip = np.array([colours[r] for r in phantom.slice_regions])[:, None, :]
    figure = Figure(figsize=(4.2, 6.4), dpi=100, facecolor="black")
    ax_image, ax_strip = figure.subplots(1, 2, gridspec_kw={"width_ratios": [8, 1]})
    ax_image.imshow(image[::-1, j, :], cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1],
                    aspect=sk / si)
    ax_strip.imshow(strip[::-1], aspect="auto")
    for ax in (ax_image, ax_strip):
        ax.axis("off")
    present = sorted(set(phantom.slice_regions.tolist()))
    figure.legend(handles=[Patch(color=colours[r], label=REGIONS[r]) for r in present],
                  loc="lower center", ncol=3, fontsize=8, frameon=False, labelcolor="white")
    figure.suptitle("body-ct: region of every axial slice", color="white", fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, top=0.93, bottom=0.1, wspace=0.05)
    return write_atomically(path, lambda tmp: figure.savefig(tmp, format="png",
                                                             facecolor="black"))


def read_cranium(path: Path = CRANIUM) -> Volume:
    """The InVesalius example head CT (int16 HU, 108 x 256 x 256 voxels) as a Volume.

    The .inv3 file is a tar holding ``main.plist`` (shape, spacing) and the raw ``matrix.dat``.
    Rows run posterior -> anterior and slices inferior -> superior in that file (seen on the
    images: the head holder is at row 0, the face at the last row), so the direction is
    diag(1, -1, 1) in LPS; left-right cannot be told from the symmetric head and is taken as LPS.
    """
    with tarfile.open(path) as archive:
        main = next(name for name in archive.getnames() if name.endswith("main.plist"))
        meta = plistlib.loads(archive.extractfile(main).read())
        folder = main.rsplit("/", 1)[0]
        raw = archive.extractfile(f"{folder}/{meta['matrix']['filename']}").read()
    array = np.frombuffer(raw, dtype=meta["matrix"]["dtype"]).reshape(meta["matrix"]["shape"])
    return Volume(array.astype(np.float32), spacing=tuple(meta["spacing"]),
                  direction=np.diag([1.0, -1.0, 1.0]))


def real_figures(out: Path) -> list[Path]:
    written = []
    if CRANIUM.exists():
        head = read_cranium()
        empty = head.with_array(np.zeros(head.array.shape, dtype=np.uint8))
        written.append(save_overlay_png(
            head, empty, out / "real_head_ct.png", window=CT_WINDOW,
            title="real head CT (InVesalius example, 0.96 x 0.96 x 1.5 mm)"))
    else:
        report_skipped("the real head CT",
                       f"{CRANIUM} absent: apt-get install invesalius-examples")
    try:
        atlas = icbm152()
    except InputError as error:
        report_skipped("the ICBM152 T1", str(error))
        return written
    import SimpleITK as sitk

    t1 = sitk.ReadImage(str(nilearn_data_folder()
                            / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    image = Volume.from_sitk(sitk.Cast(t1, sitk.sitkFloat32))
    stacked = np.stack([atlas["csf"], atlas["gm"], atlas["wm"]])
    labels = np.where(stacked.sum(axis=0) >= 0.5, stacked.argmax(axis=0) + 1, 0).astype(np.uint8)
    written.append(save_overlay_png(image, image.with_array(labels), out / "real_icbm152_t1.png",
                                    title="real ICBM152 2009 T1 (nilearn) with its tissue maps",
                                    label_names={1: "csf", 2: "grey_matter", 3: "white_matter"}))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="default: docs/images (--quick: a temporary "
                                                  "folder, removed at the end)")
    add_quick_flag(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or (Path(scratch) if args.quick
                           else Path(__file__).resolve().parents[1] / "docs" / "images")
        out.mkdir(parents=True, exist_ok=True)
        written = phantom_figures(out, scale=4 if args.quick else 1) + real_figures(out)
        print_header("picture written")
        for path in written:
            print_row(path)


if __name__ == "__main__":
    main()
