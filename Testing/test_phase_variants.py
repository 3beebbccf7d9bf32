"""The phase check re-renders a labelled CT at another contrast phase: each labelled organ's
median moves to the phase's literature value, with its own texture, and nothing else moves."""

from __future__ import annotations

import numpy as np
import pytest

from DeepOrganSegLib.volume import Volume
from training.phase_variants import PHASE_MEDIANS_HU, render_phase


@pytest.fixture
def labelled_ct() -> tuple[Volume, Volume, dict[int, str]]:
    rng = np.random.default_rng(0)
    image = rng.normal(60.0, 15.0, (8, 16, 16)).astype(np.float32)
    labels = np.zeros((8, 16, 16), np.uint8)
    labels[2:6, 2:8, 2:8] = 1
    labels[2:6, 10:13, 10:13] = 2
    image[labels == 2] += 120.0  # an enhanced aorta
    labels[0, 0, 0] = 3  # a structure no phase lists keeps its intensities
    return Volume(image), Volume(image).with_array(labels), {1: "liver", 2: "aorta", 3: "rib"}


@pytest.mark.parametrize("phase", sorted(PHASE_MEDIANS_HU))
def test_each_labelled_organ_lands_on_the_phase_median_with_its_own_texture(labelled_ct, phase):
    image, labels, names = labelled_ct
    rendered = render_phase(image, labels, names, phase).array
    for value, name in ((1, "liver"), (2, "aorta")):
        inside = labels.array == value
        assert np.median(rendered[inside]) == pytest.approx(PHASE_MEDIANS_HU[phase][name],
                                                            abs=1e-3)
        np.testing.assert_allclose(rendered[inside].std(), image.array[inside].std(), rtol=1e-5)
    unlisted = (labels.array == 0) | (labels.array == 3)
    np.testing.assert_array_equal(rendered[unlisted], image.array[unlisted])


def test_an_unknown_phase_is_refused(labelled_ct):
    with pytest.raises(ValueError, match="unknown phase"):
        render_phase(*labelled_ct, "venous-ish")
