"""One options object from the Slicer panel to the engine: ``SegmentationOptions`` renders the
``deeporganseg segment`` flags (``to_argv``) that the command's own parser reads back into the
same object (``from_args``), so no default, name or range is written twice."""

from __future__ import annotations

import re

import pytest

from DeepOrganSegLib.cli.app import build_parser
from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.options import InferenceSettings, SegmentationOptions


def parsed(options: SegmentationOptions, *extra: str) -> SegmentationOptions:
    args = build_parser().parse_args(["segment", "in.nrrd", "out.nrrd", *options.to_argv(),
                                      *extra])
    return SegmentationOptions.from_args(args)


@pytest.mark.parametrize("options", [
    SegmentationOptions(),
    SegmentationOptions(task="abdomen-ct", organs=("liver", "spleen"),
                        crf_overrides={"iterations": 3, "appearance_spatial_mm": 12.5,
                                       "side_output_weights": [0.1, 0.05]}),
    SegmentationOptions(task="heart-mr", crf=False, largest_component=False, fill_holes=False),
    SegmentationOptions(inference=InferenceSettings(device="cpu", overlap=0.5,
                                                    memory_budget_bytes=3_141_592_653)),
    SegmentationOptions(crf_overrides={"appearance_intensity": 0.1 + 0.2}),  # 0.30000000000000004
], ids=["defaults", "organs-and-crf", "no-crf-no-cleanup", "inference", "float-exact"])
def test_options_survive_the_command_line_unchanged(options):
    assert parsed(options) == options


def test_the_panels_defaults_are_the_command_lines_defaults():
    args = build_parser().parse_args(["segment", "in.nrrd", "out.nrrd"])
    assert SegmentationOptions.from_args(args) == SegmentationOptions()


def test_crf_overrides_are_dropped_with_the_crf_itself():
    argv = SegmentationOptions(crf=False, crf_overrides={"iterations": 3}).to_argv()
    assert "--no-crf" in argv and "--crf-param" not in argv


def test_probabilities_are_asked_for_by_naming_their_file():
    assert parsed(SegmentationOptions(), "--probabilities", "p.nrrd").keep_probabilities


def test_the_uncertainty_is_asked_for_by_naming_its_file_without_keeping_every_class():
    options = parsed(SegmentationOptions(), "--uncertainty", "u.nrrd")
    assert options.keep_uncertainty and not options.keep_probabilities


@pytest.mark.parametrize("options", [
    SegmentationOptions(largest_component=False),
    SegmentationOptions(inference=InferenceSettings(amp="fp16")),
    SegmentationOptions(inference=InferenceSettings(side_outputs=True)),
    SegmentationOptions(max_working_voxels=10),
])
def test_what_the_command_line_cannot_say_is_refused_not_dropped(options):
    with pytest.raises(ValueError, match="not expressible"):
        options.to_argv()


@pytest.mark.parametrize("flags, message", [
    (["--overlap", "1"], "--overlap 1.0: must be in [0, 1)"),
    (["--memory-budget-gb", "0"], "--memory-budget-gb must be positive"),
    (["--crf-param", "iterations"], "--crf-param iterations: expected NAME=VALUE"),
    (["--crf-param", "iterations=three"], "value is not a number or list"),
])
def test_out_of_range_flags_are_one_line_input_errors(flags, message):
    args = build_parser().parse_args(["segment", "in.nrrd", "out.nrrd", *flags])
    with pytest.raises(InputError, match=re.escape(message)):
        SegmentationOptions.from_args(args)
