"""Head and neck of the whole-body CT: thyroid, carotid arteries, jugular veins, and (for the
cases whose field of view includes it) a simple head: scalp, skull, CSF rim and brain.

Distances are in millimetres in patient space; the body-ct head is a plain ellipsoid, not the
brain-mr anatomy.
"""

from __future__ import annotations

import numpy as np

from .painter import TorsoPainter
from .shapes import ellipsoid, tube


def paint_neck(torso: TorsoPainter) -> None:
    """Thyroid, carotid arteries and jugular veins."""
    b, c = torso.body, torso.canvas
    z0 = b.vertebrae["C6"][1]
    y_tr = float(b.y_spine(z0)) - 30 * b.d
    for side in (-1, 1):
        c.paint(ellipsoid([18 * side * b.w, y_tr - 2, z0], [9, 11, 22]), "thyroid")
        c.paint(tube([np.array([28 * side * b.w, y_tr + 8, z]) for z in
                      (b.z_apex - 60, b.z_skull_base + 20)], 4.0), "arterial_blood")
        c.paint(tube([np.array([40 * side * b.w, y_tr + 10, z]) for z in
                      (b.z_apex - 60, b.z_skull_base + 20)], 6.5), "caval_blood")


def paint_head(torso: TorsoPainter) -> None:
    """An egg-shaped head above the skull base: scalp, skull, CSF rim and brain."""
    b, c = torso.body, torso.canvas
    centre = np.array([0, 10 * b.d, b.z_skull_base + 70 * b.h])
    semi = np.array([72 * b.w, 92 * b.d, 100 * b.h])
    c.paint(ellipsoid(centre, semi + 7), "fat")
    c.paint(ellipsoid(centre, semi), "bone_cortical")
    c.paint(ellipsoid(centre, semi - 2.5), "bone_marrow")
    c.paint(ellipsoid(centre, semi - 5), "bone_cortical")
    c.paint(ellipsoid(centre, semi - 7), "csf")
    c.paint(ellipsoid(centre, semi - 10), "brain")
