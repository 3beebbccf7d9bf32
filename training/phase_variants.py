"""A real CT re-rendered at another contrast phase, from its reference labels: a phase check.

Each labelled organ's voxels are shifted so that the organ's median lands on a literature value
for the phase (texture, noise and partial volume inside the organ stay the patient's); voxels no
label covers stay as scanned. It is a *proxy*: unlabelled tissue (crura, duodenum, fat, muscle)
keeps the scan's own look, and the organ edges get a step where the scan had a ramp. Use it to
see whether a model leans on one phase's HU ordering, never as a target to tune on.

The medians (HU, 120 kV, rounded) for non-contrast (liver 55, spleen 45, stomach 35, pancreas
40, aorta 40, IVC 38, portal vein 40) and arterial (aorta 380, spleen 170, pancreas 110) are the
literature values issue 34 names; the others are read off the time-enhancement curves of the
aorta, liver, spleen, pancreas and portal vein in Bae KT, Radiology 2010;256:32-61 (delayed =
3-5 min, equilibrium) and lie inside the phantoms' published ranges (docs/phantoms.md).
"""

from __future__ import annotations

import numpy as np

from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.volume import Volume

__all__ = ["PHASE_MEDIANS_HU", "render_phase"]

#: Literature median HU of each labelled organ per phase (see the module docstring). Organs a
#: phase leaves out keep their scanned intensities.
PHASE_MEDIANS_HU: dict[str, dict[str, float]] = {
    "non-contrast": {"liver": 55, "spleen": 45, "stomach": 35, "pancreas": 40, "aorta": 40,
                     "inferior_vena_cava": 38, "portal_vein_and_splenic_vein": 40,
                     "right_kidney": 32, "left_kidney": 32, "gallbladder": 10,
                     "colon": 30, "adrenal_gland_right": 30},
    "arterial": {"liver": 75, "spleen": 170, "stomach": 60, "pancreas": 110, "aorta": 380,
                 "inferior_vena_cava": 80, "portal_vein_and_splenic_vein": 140,
                 "right_kidney": 190, "left_kidney": 190, "gallbladder": 10,
                 "colon": 60, "adrenal_gland_right": 80},
    "delayed": {"liver": 90, "spleen": 100, "stomach": 60, "pancreas": 80, "aorta": 130,
                "inferior_vena_cava": 125, "portal_vein_and_splenic_vein": 125,
                "right_kidney": 150, "left_kidney": 150, "gallbladder": 10,
                "colon": 60, "adrenal_gland_right": 70},
}


def render_phase(image: Volume, labels: Volume, names: dict[int, str], phase: str) -> Volume:
    """``image`` (HU) with every organ of ``labels`` (``{value: name}``) that
    :data:`PHASE_MEDIANS_HU` lists for ``phase`` shifted to that median; same grid."""
    if phase not in PHASE_MEDIANS_HU:
        raise InputError(f"unknown phase {phase!r}; choose one of {', '.join(PHASE_MEDIANS_HU)}")
    targets = PHASE_MEDIANS_HU[phase]
    source = image.array.astype(np.float32)
    rendered = source.copy()
    for value, name in names.items():
        inside = labels.array == value
        if name in targets and inside.any():
            rendered[inside] += targets[name] - float(np.median(source[inside]))
    return image.with_array(rendered)
