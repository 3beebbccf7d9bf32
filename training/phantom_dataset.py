"""Phantoms written as a data set folder (MSD or nnU-Net raw), to try ``train.py --data`` on
data that looks like a user's: the tests' tiny folders and the fine-tuning benchmark.

    python training/phantom_dataset.py OUT --kind abdomen-ct --seeds 0 23 [--format nnunet]
        [--rename spleen=Spleen aorta=Aorta] [--shape K J I --spacing I J K]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import SimpleITK as sitk

from DeepOrganSegLib.phantoms import make_phantom
from training.entry import run_script

__all__ = ["write_phantom_dataset", "main"]


def write_phantom_dataset(folder: str | Path, kind: str, seeds: Sequence[int], *,
                          layout: str = "msd", rename: dict[str, str] | None = None,
                          **options) -> Path:
    """Write the phantoms ``kind`` of ``seeds`` under ``folder`` as an MSD (``layout="msd"``)
    or nnU-Net raw (``"nnunet"``) data set: images as int16 (CT, HU) or float32 (MR), labels as
    uint8, ``dataset.json`` with the label names (``rename``d: {engine name: data set name}).
    ``options`` go to ``make_phantom`` (e.g. ``shape``, ``spacing``). Returns ``folder``."""
    if layout not in ("msd", "nnunet"):
        raise ValueError(f"layout {layout!r}: use msd or nnunet")
    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    rename = rename or {}
    names: dict[int, str] = {}
    modality = "CT"
    training = []
    for seed in seeds:
        phantom = make_phantom(kind, int(seed), **options)
        modality = phantom.modality
        names = {value: rename.get(name, name) for value, name in phantom.label_names.items()}
        case = f"{kind.replace('-', '')}_{int(seed):03d}"
        image_name = f"{case}_0000.nii.gz" if layout == "nnunet" else f"{case}.nii.gz"
        image = phantom.image.to_sitk()
        image = sitk.Cast(image, sitk.sitkInt16 if modality == "CT" else sitk.sitkFloat32)
        sitk.WriteImage(image, str(folder / "imagesTr" / image_name), True)
        sitk.WriteImage(sitk.Cast(phantom.labels.to_sitk(), sitk.sitkUInt8),
                        str(folder / "labelsTr" / f"{case}.nii.gz"), True)
        training.append({"image": f"./imagesTr/{case}.nii.gz",
                         "label": f"./labelsTr/{case}.nii.gz"})
    if layout == "msd":
        document = {"name": f"phantom-{kind}", "modality": {"0": modality},
                    "labels": {"0": "background", **{str(v): n for v, n in names.items()}},
                    "numTraining": len(training), "training": training}
    else:
        document = {"name": f"phantom-{kind}", "channel_names": {"0": modality},
                    "labels": {"background": 0, **{n: v for v, n in names.items()}},
                    "numTraining": len(training), "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(document, indent=2))
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write phantoms as an MSD or nnU-Net folder.")
    parser.add_argument("folder")
    parser.add_argument("--kind", default="abdomen-ct")
    parser.add_argument("--seeds", type=int, nargs=2, metavar=("FIRST", "LAST"), required=True)
    parser.add_argument("--format", choices=("msd", "nnunet"), default="msd")
    parser.add_argument("--rename", nargs="*", default=[], metavar="NAME=NEW")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("K", "J", "I"))
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("I", "J", "K"))
    args = parser.parse_args(argv)
    rename = dict(pair.split("=", 1) for pair in args.rename)
    options = {key: tuple(value) for key, value in (("shape", args.shape),
                                                     ("spacing", args.spacing)) if value}
    folder = write_phantom_dataset(args.folder, args.kind,
                                   range(args.seeds[0], args.seeds[1] + 1), layout=args.format,
                                   rename=rename, **options)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
