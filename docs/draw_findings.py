"""Draw docs/images/phantom_findings.png: one axial CT slice per finding of the phantom generator
(ascites, oral contrast in the bowel, surgical clips, pedicle screws with metal streaks, beam
hardening), each at the slice where its tissue is largest, labels outlined beside it.

    python docs/draw_findings.py

The seeds are held-out abdomen-ct seeds (10 000 and up) that draw the finding.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "DeepOrganSeg"))

from DeepOrganSegLib.phantoms import make_phantom  # noqa: E402

OUT = ROOT / "docs" / "images" / "phantom_findings.png"

#: (title, seed, the tissue whose largest axial cross-section picks the slice)
CASES = (
    ("ascites (seed 10064)", 10064, "ascites"),
    ("oral contrast in the bowel (seed 10003)", 10003, "bowel_content"),
    ("surgical clips, no gallbladder (seed 10055)", 10055, "metal"),
    ("pedicle screws + rods, streaks (seed 10016)", 10016, "metal"),
    ("beam-hardening band (seed 10001)", 10001, "bone_cortical"),
)


def largest_slice(tissues: np.ndarray, value: int) -> int:
    """The k-index (axial slice) holding the most voxels of tissue ``value``."""
    return int(np.argmax((tissues == value).sum(axis=(1, 2))))


def body_box(image: np.ndarray) -> tuple[slice, slice]:
    """The in-plane bounding box of an axial slice's voxels above -500 HU, 10 voxels wider."""
    rows, columns = np.nonzero(image > -500.0)
    return (slice(max(rows.min() - 10, 0), rows.max() + 11),
            slice(max(columns.min() - 10, 0), columns.max() + 11))


def main() -> None:
    figure, axes = plt.subplots(2, len(CASES), figsize=(4.0 * len(CASES), 6.4))
    for column, (title, seed, tissue) in enumerate(CASES):
        phantom = make_phantom("abdomen-ct", seed)
        assert phantom.tissues is not None
        tissue_value = {name: value for value, name in phantom.tissue_names.items()}[tissue]
        k = largest_slice(phantom.tissues.array, tissue_value)
        box = body_box(phantom.image.array[k])
        image = phantom.image.array[k][box]
        labels = phantom.labels.array[k][box]
        aspect = phantom.image.spacing[1] / phantom.image.spacing[0]
        axes[0, column].imshow(image, cmap="gray", vmin=-160, vmax=240, aspect=aspect)
        axes[0, column].set_title(title, fontsize=10)
        axes[1, column].imshow(image, cmap="gray", vmin=-160, vmax=240, aspect=aspect)
        shown = np.ma.masked_equal(labels, 0)
        axes[1, column].imshow(shown, cmap="tab10", vmin=1, vmax=10, alpha=0.45,
                               interpolation="nearest", aspect=aspect)
        info = phantom.info
        axes[1, column].set_title(f"labels; variants: {', '.join(info['variants']) or 'none'}"
                                  f"{'; bowel contrast' if info.get('bowel_contrast') else ''}",
                                  fontsize=8)
        for axis in axes[:, column]:
            axis.axis("off")
    figure.suptitle("Phantom findings and artefacts (CT window −160…240 HU); the label maps "
                    "never change", fontsize=12)
    figure.tight_layout()
    figure.savefig(OUT, dpi=90)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
