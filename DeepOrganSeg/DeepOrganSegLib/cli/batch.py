"""``deeporganseg batch``: a cohort of scans in, per case a labelmap and its statistics out,
resumable, in parts that a scheduler runs (Slurm arrays, Kubernetes indexed Jobs), then the
cohort's report. Exit code 0 when every case of this run is done, 2 when some failed (each
listed with its reason), 3 when cancelled (the cases finished so far stay, none half-written).
The work is :mod:`DeepOrganSegLib.cohort`'s; this module reads the command line and prints."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, EXIT_OK, InputError, printable
from ..progress import CancelToken, JsonProgress, ProgressFunction
from ..resources import default_model_path
from .reporters import add_progress_option
from .segment import add_segmentation_flags

__all__ = ["BatchBar", "add_parser", "make_batch_reporter", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``deeporganseg batch``."""
    from ..cohort.cases import PART_VARIABLES
    from ..cohort.folder import FORMATS

    parser = subparsers.add_parser(
        "batch", help="segment a cohort: many scans, resumable, in parts, with a report",
        description="Segment every case of the inputs into DIR: DIR/<case>.<format> and "
                    "DIR/<case>.json (organ statistics), a QC picture in DIR/qc/, then "
                    "DIR/cohort.csv and DIR/report.html over every case in DIR. A case whose "
                    "outputs are complete is skipped, so re-running finishes an interrupted "
                    "batch; a case that fails is recorded in DIR/failed/ with its reason and "
                    "the others go on.",
        epilog="Exit codes: 0 every case done, 2 some cases failed (listed), 3 cancelled. "
               "Split a batch with --parts N and --part I (0 to N-1; default: "
               f"{' or '.join(PART_VARIABLES)}): parts may run at once into one DIR. See "
               "docs/batch.md.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="volume file, DICOM series folder, folder of either, or a .csv "
                             "(column 'path', optional 'case') or .txt list of paths")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--format", default="nii.gz", choices=FORMATS,
                        help="labelmap format (default nii.gz; seg.nrrd keeps the organ names "
                             "and colours for Slicer)")
    add_segmentation_flags(parser)
    parser.add_argument("--probabilities", action="store_true",
                        help="also write DIR/<case>.probabilities.nrrd (class probabilities)")
    parser.add_argument("--uncertainty", action="store_true",
                        help="also write DIR/<case>.uncertainty.nrrd (normalised entropy, 0-1)")
    parser.add_argument("--parts", type=int, default=1, metavar="N",
                        help="split the sorted cases into N parts (default 1)")
    parser.add_argument("--part", type=int, metavar="I",
                        help="run part I (0 to N-1) of them")
    parser.add_argument("--workers", type=int, default=1, metavar="K",
                        help="cases at once on this machine, each worker process loading the "
                             "model once (default 1: in this process)")
    parser.add_argument("--workers-memory-gb", type=float, metavar="GB",
                        help="memory the workers may plan to use together (default: 80%% of "
                             "what is available, a container's or job's limit included)")
    add_progress_option(parser, default="bar")
    parser.set_defaults(handler=run, reporter=make_batch_reporter)


class BatchBar:
    """A tqdm bar on stderr for the whole batch: overall share, elapsed time and time left,
    the case in progress; every case that ends (or is skipped) gets a line above it."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1000, file=sys.stderr, leave=False,
                        bar_format="{desc:<50} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}")

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if stage in ("case", "skip"):
            self.bar.write(printable(message), file=sys.stderr)
        else:
            self.bar.set_description_str(printable(message)[:50], refresh=False)
        self.bar.update(max(0, int(fraction * 1000) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def make_batch_reporter(kind: str) -> BatchBar | JsonProgress | None:
    """The reporter for ``batch --progress kind``: the batch's bar, JSON lines, or none."""
    return JsonProgress() if kind == "json" else BatchBar() if kind == "bar" else None


def _check_outputs_spare_inputs(out: Path, inputs: list[str], case_inputs: list[Path],
                                outputs: list[Path]) -> None:
    """Refuse, before any work, an output folder inside an input folder (its outputs would
    mix with the scans and be taken for cases by the next run) or an output that is an
    input."""
    sources = {Path(path).resolve() for path in inputs} | {path.resolve() for path in case_inputs}
    folder = out.resolve()
    for source in sources:
        if source.is_dir() and folder.is_relative_to(source):
            raise InputError(f"--out {out}: lies inside the input folder {source}; write the "
                             f"outputs elsewhere")
    for output in outputs:
        if output.resolve() in sources:
            raise InputError(f"--out {out}: the output {output.name} would replace the input "
                             f"{output}; write the outputs elsewhere")


def run(args: argparse.Namespace, progress: ProgressFunction, cancel: CancelToken) -> int:
    """Check everything that can be checked before any work (flags, model, inputs, output
    folder, the folder's earlier settings), run this part's cases, print the outcome."""
    from ..cohort.batch import BatchRun, run_batch
    from ..cohort.cases import find_cases, part_index, part_of
    from ..cohort.folder import OutputFolder, result_settings
    from ..cohort.memory import memory_budget_bytes
    from ..cohort.work import CaseJob
    from ..model import read_metadata
    from ..options import SegmentationOptions

    options = SegmentationOptions.from_args(args)
    if args.workers < 1:
        raise InputError(f"--workers {args.workers}: must be at least 1")
    if args.workers_memory_gb is not None and args.workers_memory_gb <= 0:
        raise InputError("--workers-memory-gb must be positive")
    model_path = Path(args.model) if args.model else default_model_path()
    metadata = read_metadata(model_path)
    task = None if args.task == "auto" else args.task
    if task is not None:
        metadata.selected_labels(task, options.organs)
    if options.crf:
        metadata.crf_parameters(task, options.crf_overrides)
    part, warnings = part_index(args.part, args.parts, os.environ)
    found = find_cases(args.inputs)
    folder = OutputFolder(Path(args.out), args.format, args.probabilities, args.uncertainty)
    outputs = [path for case in found.cases for path in (
        folder.labelmap(case.id), folder.statistics(case.id), *folder.extras(case.id)) if path]
    _check_outputs_spare_inputs(folder.path, args.inputs, [c.input for c in found.cases], outputs)
    for note in found.notes + warnings:
        progress("warning", 0.0, note)
    cases = part_of(found.cases, args.parts, part)
    job = CaseJob(model_path, options, folder,
                  result_settings(model_path, options, args.format, args.probabilities,
                                  args.uncertainty))
    summary = run_batch(BatchRun(cases, found.cases, job, args.workers,
                                 memory_budget_bytes(args.workers_memory_gb)), progress, cancel)
    done = sum(outcome.done for outcome in summary.outcomes)
    where = f" (part {part} of 0-{args.parts - 1}, {len(found.cases)} in all)" \
        if args.parts > 1 else ""
    line = (f"{len(cases)} case(s){where}: {done} segmented, {len(summary.skipped)} complete "
            f"from earlier, {len(summary.failed)} failed")
    assert summary.report is not None  # written at the end of every run
    progress("done", 1.0, line)
    if args.progress != "json":
        print(printable(line))
        print(f"report: {printable(str(summary.report[1]))} (per case and organ: "
              f"{printable(str(summary.report[0]))})")
    for outcome in summary.failed:
        print(printable(f"error: case {outcome.case.id}: {outcome.message}"), file=sys.stderr,
              flush=True)
    return EXIT_BAD_INPUT if summary.failed else EXIT_OK
