"""Evaluate a model file on labelled data: per case and organ Dice, HD95 and average surface
distance (mm), with and without the dense CRF; CSV, markdown table, JSON summary, QC PNGs.

    python training/evaluate.py MODEL DATA [--task NAME] [--out DIR] [--crf both|on|off]

``DATA``: ``phantom:KIND:SEEDS[:OPTIONS]`` (``phantom:abdomen-ct:10000-10004`` or ``...:1,5,9``;
``OPTIONS`` are ``make_phantom`` keywords, ``...:10001-10003:contrast_phase=arterial``), a
Medical Segmentation Decathlon or nnU-Net raw folder (its training cases), ``icbm152`` (the
real ICBM152 2009 T1 shipped with nilearn, grey/white matter probability maps thresholded at
0.5 as reference), or a single labelled case: a folder with ``reference_labels.nii.gz``,
``reference_labels.json`` (``{"1": {"name": "liver"}, ...}``) and the image as ``dicom/`` or
``image.nii.gz`` (``../shared/data/real-ct-upper-abdomen``; scored as abdominal CT), or
``phase:PHASE:FOLDER``, such a case re-rendered at another contrast phase from its labels
(:mod:`training.phase_variants`; ``non-contrast``, ``arterial``, ``delayed``). Metrics
are computed on the input grid, for the task's organs that the reference labels (an organ the
data set does not annotate is not scored).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import numpy as np

from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.model import LoadedModel, TaskSpec, load_model
from DeepOrganSegLib.outputs import check_outputs_spare_inputs
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import read_volume
from training.data import read_msd_folder, read_nnunet_folder
from training.entry import run_script
from training.metrics import organ_metrics

__all__ = ["EvaluationCase", "iter_cases", "evaluate", "save_comparison_png", "main"]


@dataclass
class EvaluationCase:
    case_id: str
    image: Volume
    labels: Volume
    names: dict[int, str]  # reference label value -> name
    task: str = ""          # the task this case belongs to, when the data says


def _parse_seeds(text: str) -> list[int]:
    """``"1-3,7"`` -> ``[1, 2, 3, 7]``; a one-line :class:`InputError` for anything else."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            seeds += list(range(int(first), int(last or first) + 1))
        except ValueError:
            raise InputError(f"phantom seeds must look like 10001-10003 or 1,4,7, got {text!r}") from None
    return seeds


def _phantom_options(text: str) -> dict[str, object]:
    """``contrast_phase=arterial,variants=false`` -> ``make_phantom`` keyword arguments (values
    JSON where they parse as JSON, else strings)."""
    options: dict[str, object] = {}
    for pair in text.split(","):
        name, _, value = pair.partition("=")
        try:
            options[name] = json.loads(value)
        except json.JSONDecodeError:
            options[name] = value
    return options


def icbm152_case() -> EvaluationCase:
    """The ICBM152 2009 T1 (1 mm) with grey (1) / white (2) matter = probability > 0.5."""
    import SimpleITK as sitk
    from nilearn.datasets import (load_mni152_gm_template, load_mni152_template,
                                  load_mni152_wm_template)

    def volume(image) -> Volume:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "image.nii.gz"
            image.to_filename(str(path))
            return Volume.from_sitk(sitk.ReadImage(str(path), sitk.sitkFloat32))

    t1 = volume(load_mni152_template(resolution=1))
    gm = volume(load_mni152_gm_template(resolution=1)).array
    wm = volume(load_mni152_wm_template(resolution=1)).array
    labels = np.zeros(t1.array.shape, np.uint8)
    labels[gm > 0.5] = 1
    labels[(wm > 0.5) & (wm >= gm)] = 2
    return EvaluationCase("icbm152", t1, t1.with_array(labels),
                          {1: "grey_matter", 2: "white_matter"}, "brain-mr")


def labelled_folder_case(folder: Path, task: str = "abdomen-ct") -> EvaluationCase:
    """One real case with reference labels (see the module docstring)."""
    names = {int(value): entry["name"] for value, entry in
             json.loads((folder / "reference_labels.json").read_text()).items()}
    image = folder / "dicom" if (folder / "dicom").is_dir() else folder / "image.nii.gz"
    return EvaluationCase(folder.name, read_volume(image),
                          read_volume(folder / "reference_labels.nii.gz"), names, task)


def data_files(specs: Sequence[str]) -> list[str]:
    """The ``DATA`` arguments that name files or folders (not generated phantoms or the
    bundled ICBM152): what an output must never overwrite."""
    return [spec.split(":", 2)[2] if spec.startswith("phase:") else spec for spec in specs
            if not spec.startswith("phantom:") and spec != "icbm152"]


def iter_cases(data: str) -> Iterator[EvaluationCase]:
    """The labelled cases ``data`` names (see the module docstring)."""
    if data == "icbm152":
        yield icbm152_case()
        return
    if data.startswith("phantom:"):
        from DeepOrganSegLib.phantoms import make_phantom

        _, kind, seeds, *rest = data.split(":", 3)
        options = _phantom_options(rest[0]) if rest else {}
        suffix = "".join(f"-{value}" for value in options.values())
        for seed in _parse_seeds(seeds):
            phantom = make_phantom(kind, seed, **options)
            yield EvaluationCase(f"{kind}-{seed}{suffix}", phantom.image, phantom.labels,
                                 dict(phantom.label_names), kind)
        return
    if data.startswith("phase:"):
        from training.phase_variants import render_phase

        _, phase, folder_name = data.split(":", 2)
        case = labelled_folder_case(Path(folder_name))
        case.image = render_phase(case.image, case.labels, case.names, phase)
        case.case_id = f"{case.case_id}-{phase}"
        yield case
        return
    folder = Path(data)
    if (folder / "reference_labels.json").exists():
        yield labelled_folder_case(folder)
        return
    document = json.loads((folder / "dataset.json").read_text())
    reader = read_msd_folder if "training" in document else read_nnunet_folder
    cases, names = reader(folder)
    for case_id, image, label in cases:
        yield EvaluationCase(case_id, read_volume(image), read_volume(label), names)


def _truth_in_model_values(case: EvaluationCase, task: TaskSpec) -> tuple[np.ndarray, list]:
    """Reference labels mapped to the model's values; the task labels the reference has."""
    by_name = {label.name: label for label in task.labels}
    lookup = np.zeros(max(int(case.labels.array.max()), max(case.names, default=0)) + 1,
                      np.uint8)
    scored = []
    for value, name in case.names.items():
        if name in by_name:
            lookup[value] = by_name[name].value
            scored.append(by_name[name])
    return lookup[case.labels.array.astype(np.int64)], sorted(scored, key=lambda s: s.value)


def save_comparison_png(image: Volume, truth: np.ndarray, prediction: np.ndarray,
                        colors: dict[int, tuple[int, int, int]], path: Path, title: str) -> Path:
    """Reference (left) and prediction (right) outlines on the axial, coronal and sagittal
    slices through the labelled region's centre, at the voxels' physical aspect ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    mask = (truth > 0) | (prediction > 0)
    centre = (np.argwhere(mask).mean(0).astype(int) if mask.any()
              else np.array(image.array.shape) // 2)
    sk, sj, si = image.spacing[::-1]
    views = [("axial", lambda a: a[centre[0]], sj / si),
             ("coronal", lambda a: a[:, centre[1]][::-1], sk / si),
             ("sagittal", lambda a: a[:, :, centre[2]][::-1], sk / sj)]
    table = np.zeros((256, 4))
    for value, color in colors.items():
        table[value] = [*(c / 255 for c in color), 1.0]
    colormap = ListedColormap(table)
    low, high = np.percentile(image.array, [1, 99])
    # each row as tall as its slices are at their physical aspect (a 40 mm slab's coronal and
    # sagittal cuts are thin strips, not squares with white space around them)
    shapes = [cut(image.array).shape for _, cut, _ in views]
    heights = [max(rows * aspect / columns, 0.12)
               for (rows, columns), (_, _, aspect) in zip(shapes, views)]
    figure, axes = plt.subplots(3, 2, figsize=(8, 4.0 * sum(heights) + 1.2), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for row, (name, cut, aspect) in enumerate(views):
        for column, (labels, heading) in enumerate(((truth, "reference"),
                                                    (prediction, "prediction"))):
            axis = axes[row, column]
            axis.imshow(cut(image.array), cmap="gray", vmin=low, vmax=high, aspect=aspect,
                        interpolation="nearest")
            overlay = np.ma.masked_equal(cut(labels), 0)
            axis.imshow(overlay, cmap=colormap, vmin=0, vmax=255, alpha=0.45, aspect=aspect,
                        interpolation="nearest")
            axis.set_title(f"{name}: {heading}", fontsize=9)
            axis.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def evaluate(model: LoadedModel, cases: Sequence[EvaluationCase] | Iterator[EvaluationCase],
             out: Path, task_name: str | None = None, crf_settings: Sequence[bool] = (False,),
             qc: bool = True) -> list[dict]:
    """Segment every case (once per CRF setting) and score it; writes ``metrics.csv``,
    ``summary.md``, ``summary.json`` and ``qc/<case>[_crf].png`` under ``out``. Returns the
    CSV rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for case in cases:
        task = model.metadata.task(task_name or case.task)
        truth, scored = _truth_in_model_values(case, task)
        for crf in crf_settings:
            result = segment_volume(case.image, model, SegmentationOptions(task=task.name,
                                                                           crf=crf))
            predicted = result.labels.array
            metrics = organ_metrics(predicted, truth, [s.value for s in scored],
                                    case.image.spacing[::-1])
            confidence = {s.label.value: s.confidence for s in result.statistics}
            for spec in scored:
                rows.append({"case": case.case_id, "task": task.name, "crf": crf,
                             "organ": spec.name, **metrics[spec.value],
                             "confidence": round(confidence.get(spec.value, math.nan), 4),
                             "seconds": round(result.elapsed_s, 2)})
            mean = np.mean([metrics[s.value]["dice"] for s in scored]) if scored else math.nan
            print(f"{case.case_id} ({task.name}{', CRF' if crf else ''}): mean Dice "
                  f"{mean:.4f} in {result.elapsed_s:.1f} s", flush=True)
            if qc:
                colors = {label.value: label.color for label in task.labels}
                save_comparison_png(case.image, truth, predicted, colors,
                                    out / "qc" / f"{case.case_id}{'_crf' if crf else ''}.png",
                                    f"{case.case_id}: {task.title}{' + CRF' if crf else ''}, "
                                    f"mean Dice {mean:.3f}")
    _write_reports(rows, out)
    return rows


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def summarize(rows: list[dict]) -> dict:
    """``{task: {"crf"|"no_crf": {"organs": {organ: {dice, hd95_mm, asd_mm}},
    "mean_dice": x, "cases": n}}}``: means over cases, then over organs."""
    summary: dict = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        for crf in dict.fromkeys(r["crf"] for r in rows if r["task"] == task):
            subset = [r for r in rows if r["task"] == task and r["crf"] == crf]
            organs = {organ: {key: _mean([r[key] for r in subset if r["organ"] == organ])
                              for key in ("dice", "hd95_mm", "asd_mm")}
                      for organ in dict.fromkeys(r["organ"] for r in subset)}
            summary.setdefault(task, {})["crf" if crf else "no_crf"] = {
                "organs": organs, "mean_dice": _mean([o["dice"] for o in organs.values()]),
                "cases": len({r["case"] for r in subset})}
    return summary


#: The files :func:`evaluate` writes into its folder (besides ``qc/``).
REPORT_FILES = ("metrics.csv", "summary.json", "summary.md")


def _write_reports(rows: list[dict], out: Path) -> None:
    fields = ["case", "task", "crf", "organ", "dice", "hd95_mm", "asd_mm", "confidence",
              "seconds"]
    with open(out / "metrics.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fields)
        writer.writeheader()
        writer.writerows(rows)
    summary = summarize(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2).replace("NaN", "null"))
    lines = []
    for task, settings in summary.items():
        for setting, result in settings.items():
            lines += [f"### {task}, {setting.replace('_', ' ')} ({result['cases']} cases)", "",
                      "| organ | Dice | HD95 (mm) | ASD (mm) |", "|---|---|---|---|"]
            for organ, values in result["organs"].items():
                lines.append(f"| {organ} | {values['dice']:.3f} | {values['hd95_mm']:.1f} | "
                             f"{values['asd_mm']:.2f} |")
            lines += [f"| **mean** | **{result['mean_dice']:.3f}** | | |", ""]
    lines += ["### Per case", "", "| case | CRF | organ | Dice | HD95 (mm) | ASD (mm) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {'yes' if r['crf'] else 'no'} | {r['organ']} | {r['dice']:.3f} "
              f"| {r['hd95_mm']:.1f} | {r['asd_mm']:.2f} |" for r in rows]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model file (.safetensors)")
    parser.add_argument("data", help="phantom:KIND:SEEDS, an MSD/nnU-Net folder, a labelled case folder, "
                        "phase:PHASE:FOLDER, or icbm152")
    parser.add_argument("--task", help="model task (default: the phantom kind / data's task)")
    parser.add_argument("--out", default="runs/evaluation", help="output folder")
    parser.add_argument("--crf", choices=("both", "on", "off"), default="both",
                        help="with the dense CRF, without, or both (CRF needs crf.py and CRF "
                             "parameters in the model)")
    parser.add_argument("--no-qc", action="store_true", help="skip the QC PNGs")
    args = parser.parse_args(argv)
    check_outputs_spare_inputs([Path(args.out) / name for name in REPORT_FILES],
                               [args.model, *data_files([args.data])])
    model = load_model(args.model)
    has_crf = bool(model.metadata.crf)
    settings = {"off": (False,), "on": (True,), "both": (False, True)}[args.crf]
    if not has_crf:
        settings = (False,)
        if args.crf != "off":
            print("the model has no CRF parameters (or the engine no CRF): evaluating without")
    evaluate(model, iter_cases(args.data), Path(args.out), args.task, settings,
             qc=not args.no_qc)
    print((Path(args.out) / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
