"""The offline demo: a synthetic phantom, segmented by the bundled model, scored against its
known truth (``deeporganseg demo``, :mod:`DeepOrganSegLib.cli.demo`, runs it).

    deeporganseg demo [--out DIR] [--kind abdomen-ct|heart-mr|brain-mr] [--seed N] [--no-crf]

Writes ``image.nii.gz``, ``labels.nii.gz``, ``labels.seg.nrrd`` (named, coloured, SNOMED-coded
segments for Slicer), ``truth.nii.gz``, ``qc.png`` and ``stats.json`` (organ volumes in mL,
per-organ Dice) to ``--out``; :func:`format_report` is the table the command prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .metrics import dice as dice_of
from .progress import CancelToken

__all__ = ["run_demo", "format_report", "DEMO_SEED", "DEMO_KINDS", "DEMO_OUTPUTS"]

#: The default phantom seed: a held-out case (training used seeds below 10 000).
DEMO_SEED = 20_000
DEMO_KINDS = ("abdomen-ct", "heart-mr", "brain-mr")


#: The files the demo writes into its folder.
DEMO_OUTPUTS = ("image.nii.gz", "truth.nii.gz", "labels.nii.gz", "labels.seg.nrrd", "stats.json",
                "qc.png")


def run_demo(out: Path, *, kind: str = "abdomen-ct", seed: int = DEMO_SEED,
             model_path: str | Path | None = None, crf: bool = True, device: str = "auto",
             progress=None, cancel: CancelToken | None = None) -> dict:
    """Generate, segment, write and score one phantom; returns the ``stats.json`` document."""
    from .model import load_model
    from .resources import default_model_path
    from .options import InferenceSettings
    from .labelmap_io import write_labelmap
    from .outputs import check_outputs_spare_inputs
    from .phantoms import make_phantom
    from .options import SegmentationOptions
    from .segment import StagedProgress, segment_volume
    from .volume_io import write_atomically, write_volume

    if kind not in DEMO_KINDS:
        raise InputError(f"--kind {kind}: choose one of {', '.join(DEMO_KINDS)}")
    check_outputs_spare_inputs([out / name for name in DEMO_OUTPUTS],
                               [model_path or default_model_path()])
    out.mkdir(parents=True, exist_ok=True)
    staged = StagedProgress(progress or (lambda stage, fraction, message="": None))
    staged("load", 0.0, "reading the model")
    model = load_model(model_path or default_model_path())
    staged("load", 0.5, f"making a {kind} phantom (seed {seed})")
    phantom = make_phantom(kind, seed)
    staged("load", 1.0, f"{phantom.image.size} voxels")
    result = segment_volume(phantom.image, model, SegmentationOptions(
        task=kind, crf=crf, inference=InferenceSettings(device=device)),
        progress=staged, cancel=cancel)

    staged("write", 0.0, f"writing to {out}")
    specs = [s.label for s in result.statistics]
    write_volume(phantom.image, out / "image.nii.gz")
    write_volume(phantom.labels, out / "truth.nii.gz")
    write_labelmap(result.labels, out / "labels.nii.gz", specs)
    write_labelmap(result.labels, out / "labels.seg.nrrd", specs)
    truth_by_name = {name: value for value, name in phantom.label_names.items()}
    organs: list[dict[str, Any]] = []
    for stats in result.statistics:
        truth_value = truth_by_name.get(stats.label.name)
        dice = (dice_of(result.labels.array == stats.label.value,
                        phantom.labels.array == truth_value)
                if truth_value is not None else None)
        organs.append({"name": stats.label.name, "display_name": stats.label.display_name,
                       "volume_ml": round(float(stats.volume_ml), 2),
                       "truth_volume_ml": round(float((phantom.labels.array == truth_value).sum()
                                                      * phantom.image.voxel_volume_ml), 2)
                       if truth_value is not None else None,
                       "dice": None if dice is None else round(dice, 4)})
    scored = [o["dice"] for o in organs if o["dice"] is not None]
    report = {"kind": kind, "seed": seed, "model": str(model.path), "task": result.task.name,
              "crf": result.crf_applied, "elapsed_s": round(result.elapsed_s, 2),
              "device": result.device, "mean_dice": round(float(np.mean(scored)), 4)
              if scored else None, "organs": organs}
    document = json.dumps(report, indent=2)
    write_atomically(out / "stats.json", lambda tmp: tmp.write_text(document))
    _save_qc(phantom.image, result.labels, specs, out / "qc.png",
             f"{result.task.title}, phantom seed {seed}: mean Dice {report['mean_dice']}")
    staged("write", 1.0, "done")
    return report


def _save_qc(image, labels, specs, path: Path, title: str) -> None:
    from .qc import save_overlay_png

    save_overlay_png(image, labels, path, colors={s.value: s.color for s in specs}, title=title,
                     label_names={s.value: s.display_name for s in specs})


def format_report(report: dict) -> str:
    """The printed table: organ, volume (mL), truth volume (mL), Dice."""
    lines = [f"{report['task']} phantom (seed {report['seed']}) segmented in "
             f"{report['elapsed_s']:.1f} s on {report['device']}"
             f"{' with CRF' if report['crf'] else ''}",
             f"{'organ':<24}{'volume (mL)':>12}{'truth (mL)':>12}{'Dice':>8}"]
    for organ in report["organs"]:
        truth = organ["truth_volume_ml"]
        dice = organ["dice"]
        lines.append(f"{organ['display_name']:<24}{organ['volume_ml']:>12.1f}"
                     f"{(f'{truth:.1f}' if truth is not None else '-'):>12}"
                     f"{(f'{dice:.3f}' if dice is not None else '-'):>8}")
    if report["mean_dice"] is not None:
        lines.append(f"{'mean Dice':<48}{report['mean_dice']:>8.3f}")
    return "\n".join(lines)
