"""Real images for the model card's realism checks (no labels needed for a QC picture).

    python training/realdata.py head-ct MODEL OUT.png [--task abdomen-ct]

``head-ct``: the real head CT of Debian's ``invesalius-examples`` (``Cranium.inv3``: a tar
holding ``matrix.dat``, int16 108x256x256, and ``main.plist`` with the voxel spacing). The ICBM152
T1 with its grey/white matter maps is scored by ``training/evaluate.py MODEL icbm152``.
"""

from __future__ import annotations

import argparse
import plistlib
import sys
import tarfile
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import numpy as np

from DeepOrganSegLib.volume import Volume
from training.entry import run_script

__all__ = ["CRANIUM_INV3", "read_invesalius", "main"]

CRANIUM_INV3 = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def read_invesalius(path: str | Path = CRANIUM_INV3) -> Volume:
    """An InVesalius 3 project's image (HU) with its spacing (mm); the direction is taken as
    the identity (the project stores no orientation)."""
    with tarfile.open(path) as archive:
        members = {Path(m.name).name: m for m in archive.getmembers()}
        header = plistlib.loads(archive.extractfile(members["main.plist"]).read())
        raw = archive.extractfile(members[header["matrix"]["filename"]]).read()
    shape = tuple(header["matrix"]["shape"])
    array = np.frombuffer(raw, dtype=header["matrix"]["dtype"]).reshape(shape)
    return Volume(array.astype(np.float32), spacing=tuple(header["spacing"]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="QC picture of a model on a real image.")
    parser.add_argument("image", choices=("head-ct",))
    parser.add_argument("model", help="model file (.safetensors)")
    parser.add_argument("png", help="QC picture to write")
    parser.add_argument("--task", default="abdomen-ct")
    parser.add_argument("--no-crf", action="store_true")
    args = parser.parse_args(argv)

    from DeepOrganSegLib.model import load_model
    from DeepOrganSegLib.qc import save_overlay_png
    from DeepOrganSegLib.options import SegmentationOptions
    from DeepOrganSegLib.segment import segment_volume

    volume = read_invesalius()
    model = load_model(args.model)
    result = segment_volume(volume, model, SegmentationOptions(task=args.task,
                                                               crf=not args.no_crf))
    specs = [s.label for s in result.statistics]
    found = {s.label.display_name: round(s.volume_ml, 1) for s in result.statistics
             if s.volume_ml > 0}
    save_overlay_png(volume, result.labels, args.png, colors={s.value: s.color for s in specs},
                     label_names={s.value: s.display_name for s in specs},
                     title=f"Real head CT (invesalius-examples), task {args.task}: "
                           f"{len(found)} labels found", window=(-100, 200))
    print(f"{args.png}: labels found (mL): {found or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
