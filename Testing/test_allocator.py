"""The command line returns large freed arrays to the operating system (``cli.allocator``)."""

from __future__ import annotations

import sys

import pytest

from DeepOrganSegLib.cli.allocator import return_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_mmap_threshold_is_fixed_on_linux_and_may_be_set_again():
    assert return_freed_memory() is True
    assert return_freed_memory() is True


def test_elsewhere_nothing_changes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert return_freed_memory() is False
