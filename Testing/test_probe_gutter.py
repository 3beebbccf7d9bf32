"""training/probe_gutter.py reads what fills the box 10-60 mm left of and behind the aorta."""

import numpy as np
import pytest

pytest.importorskip("monai")  # training/ imports it
from training.entry import run_script  # noqa: E402
from training.probe_gutter import gutter_shares, main  # noqa: E402

SPLEEN, KIDNEY, AORTA = 2, 4, 8


def test_the_gutter_box_lies_left_of_and_behind_the_aorta_and_its_shares_are_counted():
    labels = np.zeros((2, 100, 100), np.uint8)
    image = np.full(labels.shape, 40.0)
    labels[:, 18:23, 18:23] = AORTA  # centre (y, x) = (20, 20) at 1 mm
    labels[0, 30:55, 30:80] = SPLEEN  # the box is y 30-79, x 30-79: half of it on slice 0
    labels[1, 30:80, 30:80] = KIDNEY  # all of it on slice 1
    image[1, 0:10, 0:10] = -800.0  # air outside the box is not counted
    spleen, kidney, air = gutter_shares(image, labels, (1.0, 1.0, 1.0), [0, 1], SPLEEN, KIDNEY,
                                        AORTA)
    assert spleen == pytest.approx(0.25) and kidney == pytest.approx(0.5) and air == 0.0


def test_a_slice_without_the_aorta_is_left_out():
    labels = np.zeros((1, 60, 60), np.uint8)
    assert gutter_shares(np.zeros(labels.shape), labels, (1.0, 1.0, 1.0), [0], SPLEEN, KIDNEY,
                         AORTA) == (0.0, 0.0, 0.0)


def test_bad_seeds_are_refused_in_one_line_before_any_table(capsys):
    assert run_script(lambda: main(["--seeds", "10001-x"])) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "error: phantom seeds must look like 10001-10003 or 1,4,7, got '10001-x'"]
