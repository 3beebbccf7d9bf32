"""Stroke -> updated segments as the Slicer panel sees it: a cold ``deeporganseg refine`` per
stroke beside the warm engine the panel keeps while its Refine section is open.

    python benchmarks/refine_round_trip.py [--real ../shared/data/real-ct-upper-abdomen]
                                           [--model FILE] [--repeats 10]

The Logic's own code against the real MRML of ``slicer-core``: the scan is a volume node, the
bundled model segments it keeping the probabilities (``keep_for_refinement``), and then, for
each repeat, one "add" stroke (``benchmarks/refine.py``'s 4 mm disc at the spleen's deepest
point) is painted by the Segment Editor's logic and refined with a :class:`DeepOrganSegLib.mrml.refine.RefineJob`,
polled every 10 ms as the panel's timer does, until the segments are updated (DONE); then the
change is undone so that every repeat refines the same thing. Prints the median and worst
round trip, cold and warm, and the warm engine's start-up (once, in the background while the
user paints).

``--quick``: the tiny model on a small ellipsoid scene, two repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "DeepOrganSeg"), str(ROOT / "Testing")]

import numpy as np  # noqa: E402

from _common import (add_quick_flag, installed, print_header, print_row,  # noqa: E402
                     report_skipped)
from refine import STROKE_RADIUS_MM, disc_at_deepest  # noqa: E402

POLL_S = 0.01


def _round_trip(session, organ: str, stroke: np.ndarray) -> tuple[float, bool, float | None]:
    """Paint ``stroke`` into the organ's add segment, refine as the panel does (polled), undo;
    the seconds from Refine to updated segments, whether the warm engine did it, and the warm
    engine's own seconds (None when cold)."""
    from DeepOrganSegLib.mrml.refine import RefineJob
    from DeepOrganSegLib.mrml.runner import RunState
    from helpers import paint_stroke

    add, _ = session.scribble_segments(organ)
    paint_stroke(session, add, stroke)
    started = time.perf_counter()
    job = RefineJob(session, organ, sys.executable)
    job.start()
    while not job.poll().finished:
        time.sleep(POLL_S)
    seconds = time.perf_counter() - started
    if job.state is not RunState.DONE:
        raise RuntimeError(f"the refinement ended {job.state.value}: {job.failure}")
    session.undo()
    return seconds, job.warm, job.engine_seconds


def measure(image, model_path: Path, task: str, organ: str, repeats: int) -> None:
    """The scan segmented once in a fresh scene, then cold and warm round trips."""

    from DeepOrganSegLib.mrml.job import SegmentationRequest, run_segmentation
    from DeepOrganSegLib.mrml.nodes import add_volume_node
    from DeepOrganSegLib.mrml.refine import RefinementSession
    from DeepOrganSegLib.options import SegmentationOptions
    from helpers import fresh_mrml_scene

    scenes = fresh_mrml_scene()
    scene = next(scenes)
    try:
        with tempfile.TemporaryDirectory() as folder:
            volume = add_volume_node(scene, image, "scan")
            job = run_segmentation(SegmentationRequest(
                volume, model_path, options=SegmentationOptions(task=task),
                keep_for_refinement=True), sys.executable, temporary_root=folder)
            session = RefinementSession.of(job)
            assert session is not None
            spacing = tuple(image.spacing[::-1])
            organ_mask = session.labelmap() == session.spec(organ).value
            if not organ_mask.any():
                raise RuntimeError(f"the model found no {organ} to stroke")
            stroke = disc_at_deepest(organ_mask, spacing)
            cold = [_round_trip(session, organ, stroke)[0] for _ in range(repeats)]
            started = time.perf_counter()
            session.warm_up(sys.executable)
            while session.warm_engine() is None:
                if session.warm is None:
                    raise RuntimeError("the warm engine ended before it was ready")
                time.sleep(POLL_S)
            ready_s = time.perf_counter() - started
            warm, engine = [], []
            for _ in range(repeats):
                seconds, was_warm, engine_seconds = _round_trip(session, organ, stroke)
                assert was_warm and engine_seconds is not None, \
                    "the warm engine did not take the refinement"
                warm.append(seconds)
                engine.append(engine_seconds)
            session.close()
    finally:
        next(scenes, None)
    print_header("path", "round trips", "median s", "worst s", "start-up s",
                 "engine's own s, median")
    print_row("cold: `deeporganseg refine` per stroke", len(cold),
              f"{statistics.median(cold):.2f}", f"{max(cold):.2f}", "—", "—")
    print_row("warm: the panel's `refine-session`", len(warm),
              f"{statistics.median(warm):.2f}", f"{max(warm):.2f}", f"{ready_s:.2f}",
              f"{statistics.median(engine):.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path,
                        default=ROOT.parent / "shared" / "data" / "real-ct-upper-abdomen")
    parser.add_argument("--model", type=Path, help="default: the bundled model")
    parser.add_argument("--organ", default="spleen")
    parser.add_argument("--repeats", type=int, default=10)
    add_quick_flag(parser)
    args = parser.parse_args()
    if not installed("slicer"):
        report_skipped("the panel's refinement round trip", "needs the slicer-core wheel")
        return 0
    if args.quick:
        from helpers import ellipsoid_scene, tiny_model_cache, train_tiny_model

        model = tiny_model_cache()  # the tests' tiny model (trained once per machine)
        if not model.exists():
            model.parent.mkdir(parents=True, exist_ok=True)
            train_tiny_model(model)
        measure(ellipsoid_scene(seed=5)[0], model, "abdomen-ct", args.organ, 2)
        return 0
    from DeepOrganSegLib.resources import default_model_path
    from training.evaluate import labelled_folder_case

    if not (args.real / "reference_labels.json").is_file():
        parser.error(f"--real {args.real}: not a labelled scan folder (no reference_labels.json)")
    case = labelled_folder_case(args.real)
    print(f"{case.case_id}: {case.image.size} voxels of "
          f"{tuple(round(s, 2) for s in case.image.spacing)} mm; stroke: a "
          f"{STROKE_RADIUS_MM:.0f} mm disc in the {args.organ}", flush=True)
    measure(case.image, args.model or default_model_path(), "abdomen-ct", args.organ,
            args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
