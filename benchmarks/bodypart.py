"""Benchmark the body-part classifier and task Auto's abdominal slab.

    python benchmarks/bodypart.py [--threads 2] [--model FILE] [--cases 2] [--crf] [--quick]

1. Classification of a 512-slice CT (a whole-body phantom stretched to 512 x 512 x 512 voxels,
   int16 HU, like a CT series read from DICOM): seconds per stage (goal: < 2 s in all on 2 CPU
   cores).
2. The abdominal slab's coverage of the ground truth on whole-body CT phantoms (no
   segmentation model needed): the share of each organ's voxels outside the slab bounds the
   Dice that cropping can cost (a perfect model loses exactly those voxels).
3. The abdominal slab on whole-body CT phantoms: segmentation time and mean organ Dice with
   task ``abdomen-ct`` on the whole volume vs task ``auto`` (DSN on the slab only). Needs a
   segmentation model: ``--model`` or the bundled one.

``--quick``: whole-body phantoms of 64x32x32 voxels of 6 mm (neck to thighs does not fit: the
point is the code path, on a small working grid), a 128-slice CT of 128x128 pixels, one phantom
per part, one repeat.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from _common import add_quick_flag, print_header, print_row
from DeepOrganSegLib.bodypart.classifier import bundled_classifier
from DeepOrganSegLib.bodypart.profile import region_profile, viterbi_profile
from DeepOrganSegLib.bodypart.slices import slice_stack
from DeepOrganSegLib.model import load_model
from DeepOrganSegLib.resources import default_model_path
from DeepOrganSegLib.metrics import dice as dice_of
from DeepOrganSegLib.phantoms import make_phantom
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume import Volume

QUICK_PHANTOMS = {"shape": (64, 32, 32), "spacing": (6.0, 6.0, 6.0)}
"""``make_phantom`` options of the whole-body phantoms with ``--quick``: a small working grid."""


def stretched_ct(slices: int = 512, size: int = 512, seed: int = 9201,
                 phantom_options: dict | None = None) -> Volume:
    """A whole-body CT phantom (``make_phantom`` options ``phantom_options``) resampled to
    ``slices`` x ``size`` x ``size`` int16 voxels."""
    phantom = make_phantom("body-ct", seed, **(phantom_options or {}))
    image = phantom.image.to_sitk()
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    spacing = extent / np.array([size, size, slices])
    resampled = sitk.Resample(image, [size, size, slices], sitk.Transform(), sitk.sitkLinear,
                              image.GetOrigin(), spacing.tolist(), image.GetDirection(), -1024.0,
                              sitk.sitkInt16)
    return Volume.from_sitk(resampled)


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - started


def classification_timing(repeats: int, slices: int, size: int, phantom_options: dict) -> None:
    """Seconds per stage for a CT of ``slices`` x ``size`` x ``size`` voxels stretched from a
    whole-body phantom; the best of ``repeats`` runs."""
    classifier = bundled_classifier()
    volume = stretched_ct(slices, size, phantom_options=phantom_options)
    print(f"\n{slices}-slice CT: {volume.array.shape} {volume.array.dtype}, spacing "
          f"{tuple(round(s, 2) for s in volume.spacing)} mm, {torch.get_num_threads()} threads")
    best: dict[str, float] = {}
    for _ in range(repeats):
        stack, t_slices = timed(slice_stack, volume, classifier.metadata.slices)
        with torch.no_grad():
            images = torch.from_numpy(stack.images).contiguous(memory_format=torch.channels_last)
            (logits, _), t_network = timed(classifier.network, images,
                                           torch.from_numpy(stack.features))
        log_p = torch.log_softmax(logits, 1).numpy()
        _, t_profile = timed(viterbi_profile, log_p[::-1])
        profile, t_total = timed(region_profile, volume, classifier)
        for name, value in (("resample + normalise slices", t_slices),
                            (f"network ({len(stack.images)} slices)", t_network),
                            ("profile (Viterbi)", t_profile), ("region_profile total", t_total)):
            best[name] = min(best.get(name, np.inf), value)
    print_header("stage", "seconds")
    for name, value in best.items():
        print_row(name, f"{value:.3f}")
    print(f"regions: {profile.modality} {'..'.join(profile.names)}")


def slab_coverage(cases: int, phantom_options: dict) -> None:
    """Per whole-body phantom: the slab and the share of ground-truth organ voxels outside it
    (all organs, and all but the thoracic aorta, which the abdominal task does not cover)."""
    from DeepOrganSegLib.bodypart import REGIONS
    from DeepOrganSegLib.bodypart.profile import auto_choice

    classifier = bundled_classifier()
    tasks = ("abdomen-ct", "heart-mr", "brain-mr")
    print(f"\nslab coverage of the truth ({cases} whole-body CT phantoms)")
    print_header("case", "slices", "slab", "kept", "organ voxels outside",
                 "same, w/o thoracic aorta")
    for seed in range(9401, 9401 + cases):
        phantom = make_phantom("body-ct", seed, random_orientation=True, **phantom_options)
        labels = phantom.labels.array
        choice = auto_choice(phantom.image, tasks, classifier)
        # no abdominal slab found (a phantom too small to tell, with --quick): all is kept
        slab = choice.slab if choice and choice.slab else slice(0, labels.shape[0])
        outside = np.ones(labels.shape[0], bool)
        outside[slab] = False
        aorta = next(v for v, n in phantom.label_names.items() if n == "aorta")
        chest = (phantom.slice_regions <= REGIONS.index("chest"))[:, None, None]
        abdominal = (labels > 0) & ~(chest & (labels == aorta))
        share_all = (labels[outside] > 0).sum() / max((labels > 0).sum(), 1)
        share_abdominal = abdominal[outside].sum() / max(abdominal.sum(), 1)
        print_row(seed, labels.shape[0], f"{slab.start}-{slab.stop - 1}",
                  f"{(slab.stop - slab.start) / labels.shape[0]:.0%}", f"{share_all:.2%}",
                  f"{share_abdominal:.2%}")


def dice_per_organ(predicted: np.ndarray, truth: np.ndarray, values: list[int]) -> list[float]:
    """Dice of each label value present in ``truth`` (values absent from it are skipped)."""
    return [dice_of(predicted, truth, value) for value in values if np.any(truth == value)]


def slab_benchmark(model_path: Path, cases: int, crf: bool, phantom_options: dict) -> None:
    """Whole volume vs Auto's slab on whole-body CT phantoms: time, mean organ Dice and liver
    Dice (label value of the task's first organ)."""
    model = load_model(model_path)
    values = [label.value for label in model.metadata.task("abdomen-ct").labels]
    print(f"\nslab: model {model_path.name}, CRF {'on' if crf else 'off'}")
    print_header("case", "slices", "slab", "t full (s)", "t auto (s)", "speed-up", "Dice full",
                 "Dice auto", "liver full", "liver auto")
    rows = []
    for seed in range(9301, 9301 + cases):
        phantom = make_phantom("body-ct", seed, **phantom_options)
        whole, t_whole = timed(segment_volume, phantom.image, model,
                               SegmentationOptions(task="abdomen-ct", crf=crf))
        messages: list[str] = []
        auto = segment_volume(phantom.image, model, SegmentationOptions(task="auto", crf=crf),
                              progress=lambda stage, fraction, message="": messages.append(
                                  message))
        t_auto = auto.elapsed_s
        # (a model with one task, or none that fits, gets no body-part summary: no slab)
        summary = next((m for m in messages if m.startswith("auto:")), "")
        slab = summary.rsplit("slab slices ", 1)[-1] if "slab" in summary else "-"
        truth = phantom.labels.array
        dice_whole = np.mean(dice_per_organ(whole.labels.array, truth, values))
        dice_auto = np.mean(dice_per_organ(auto.labels.array, truth, values))
        liver_whole, = dice_per_organ(whole.labels.array, truth, values[:1])
        liver_auto, = dice_per_organ(auto.labels.array, truth, values[:1])
        rows.append((t_whole, t_auto, dice_whole, dice_auto, liver_whole, liver_auto))
        print_row(seed, truth.shape[0], slab, f"{t_whole:.1f}", f"{t_auto:.1f}",
                  f"{t_whole / t_auto:.2f}x", f"{dice_whole:.3f}", f"{dice_auto:.3f}",
                  f"{liver_whole:.3f}", f"{liver_auto:.3f}")
    t_whole, t_auto, *dice = np.mean(rows, axis=0)
    print_row("mean", "", "", f"{t_whole:.1f}", f"{t_auto:.1f}", f"{t_whole / t_auto:.2f}x",
              *(f"{value:.3f}" for value in dice))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, help="segmentation model; default: the bundled one")
    parser.add_argument("--cases", type=int, default=2, help="whole-body phantoms for the slab")
    parser.add_argument("--crf", action="store_true", help="with the dense CRF (slower)")
    parser.add_argument("--coverage-cases", type=int, default=6)
    parser.add_argument("--skip-slab", action="store_true", help="skip the segmentation runs")
    add_quick_flag(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if bundled_classifier() is None:
        sys.exit("no body-part classifier: run training/train_bodypart.py first")
    if args.quick:
        args.repeats = args.cases = args.coverage_cases = 1
    phantoms = QUICK_PHANTOMS if args.quick else {}
    classification_timing(args.repeats, *((128, 128) if args.quick else (512, 512)), phantoms)
    slab_coverage(args.coverage_cases, phantoms)
    if not args.skip_slab:
        slab_benchmark(args.model or default_model_path(), args.cases, args.crf, phantoms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
