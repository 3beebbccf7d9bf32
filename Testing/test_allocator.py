"""The command line returns large freed arrays to the operating system (``cli.allocator``)."""

from __future__ import annotations

import sys

import pytest

from DeepOrganSegLib.cli import app
from DeepOrganSegLib.cli.allocator import return_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_mmap_threshold_is_fixed_on_linux_and_may_be_set_again():
    assert return_freed_memory() is True
    assert return_freed_memory() is True


def test_elsewhere_nothing_changes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert return_freed_memory() is False


@pytest.mark.parametrize("command, returns", [
    (["segment", "in.nii.gz", "out.nii.gz"], True),  # peak memory matters
    (["refine", "--probabilities", "p.nrrd", "in", "seg", "strokes", "out"], False),
    (["refine-session", "--probabilities", "p.nrrd", "in"], False)])  # a stroke's latency does
def test_only_the_commands_whose_peak_memory_matters_return_freed_memory(command, returns):
    """The fixed threshold mmaps every large array afresh: a warm refinement of the real CT's
    spleen took 1.2 s with it and 0.6 s without (docs/benchmarks.md, refinement round trip)."""
    args = app.build_parser().parse_args(command)
    assert getattr(args, "return_freed_memory", True) is returns
