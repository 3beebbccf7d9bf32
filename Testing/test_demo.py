"""``deeporganseg demo``: phantom -> bundled (or given) model -> labelmap, QC, volumes, Dice."""

from __future__ import annotations

import json

import pytest

from DeepOrganSegLib.cli import default_model_path, main
from DeepOrganSegLib.errors import InputError

pytest.importorskip("DeepOrganSegLib.phantoms")

#: Held-out brain phantom mean Dice of the bundled model is 0.77 (docs/model-card.md);
#: the test leaves a margin for case-to-case variation.
BUNDLED_BRAIN_MEAN_DICE = 0.6


def _run_demo(tmp_path, capsys, *extra: str) -> tuple[dict, str]:
    code = main(["demo", "--out", str(tmp_path), "--no-crf", *extra])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for name in ("image.nii.gz", "truth.nii.gz", "labels.nii.gz", "labels.seg.nrrd", "qc.png",
                 "stats.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    return json.loads((tmp_path / "stats.json").read_text(encoding="utf-8")), printed


def test_demo_with_a_given_model_writes_everything_and_prints_dice(tmp_path, capsys,
                                                                   tiny_model_path):
    stats, printed = _run_demo(tmp_path, capsys, "--model", str(tiny_model_path), "--seed", "3",
                               "--kind", "abdomen-ct")
    assert [o["name"] for o in stats["organs"]] == ["liver", "spleen"]
    assert stats["task"] == "abdomen-ct" and stats["crf"] is False
    assert all(0 <= o["dice"] <= 1 for o in stats["organs"])
    assert "mean Dice" in printed and "Liver" in printed


def test_demo_with_the_bundled_model_segments_the_brain_phantom(tmp_path, capsys):
    """The bundled model's best task (see docs/model-card.md for every task's numbers)."""
    try:
        default_model_path()
    except InputError:
        pytest.skip("no bundled model in Resources/Models")
    stats, _ = _run_demo(tmp_path, capsys, "--kind", "brain-mr")
    assert [o["name"] for o in stats["organs"]] == ["csf", "grey_matter", "white_matter"]
    assert stats["mean_dice"] > BUNDLED_BRAIN_MEAN_DICE, stats
