"""The mediastinum outside the heart: superior mediastinal fat, trachea and main bronchi, and
the oesophagus down to the stomach (patient mm).

Painted in two passes around :mod:`.heart`: the fat before the abdominal organs and the heart,
the airways and oesophagus after the heart (they cut through what lies in their way).
"""

from __future__ import annotations

import numpy as np

from .painter import TorsoPainter
from .shapes import View, solid, tube


def paint_superior_mediastinum(torso: TorsoPainter) -> None:
    """Fat of the superior mediastinum, between the lungs above the heart."""
    b, c = torso.body, torso.canvas
    z0 = b.vertebrae["T6"][0]
    y_front = float(b.wall_ellipse(np.array([z0]))[2][0] - b.wall_ellipse(np.array([z0]))[1][0])

    def superior(v: View) -> np.ndarray:  # a wedge from the sternum to the trachea
        y_anterior = y_front + b.wall + 4.0
        y_back = b.y_spine(v.z) - 45.0 * b.d
        depth = np.clip((v.y - y_anterior) / (y_back - y_anterior), 0.0, 1.0)
        return (np.abs(v.x - 3.0) < (8.0 + 18.0 * depth) * b.w) & (v.y < y_back) & \
            (v.y > y_anterior)
    lo = [-40, -160, z0]
    hi = [40, 120, b.z_apex + 10]
    c.paint(solid(lo, hi, superior), "fat", within=("lung",))


def paint_airways_and_oesophagus(torso: TorsoPainter) -> None:
    """Trachea and main bronchi (air), oesophagus."""
    b, c = torso.body, torso.canvas
    ys = lambda z: float(b.y_spine(z))  # noqa: E731
    carina = np.array([2 * b.w, ys(250 * b.h) - 22 * b.d, 250 * b.h])
    trachea = [np.array([0, ys(z * b.h) - 30 * b.d, z * b.h]) for z in (520, 420, 330)]
    airway = trachea + [carina]
    c.paint(tube(airway, 10.0), "soft_tissue")
    c.paint(tube(airway, 8.0), "gas")
    for side, dz in ((-1, -15), (1, -25)):
        bronchus = [carina, carina + np.array([40 * side * b.w, 12 * b.d, dz * b.h])]
        c.paint(tube(bronchus, 7.0), "soft_tissue", within=("lung", "fat"))
        c.paint(tube(bronchus, 5.5), "gas")
    oesophagus = [np.array([x * b.w, ys(z * b.h) + dy * b.d, z * b.h]) for z, x, dy in
                  ((520, -2, -16), (300, 2, -18), (180, 10, -22), (110, 25, -35))]
    oesophagus.append(b.p(40, 15, 100, upper_abdomen=True))
    c.paint(tube(oesophagus, 8.0), "soft_tissue", within=("lung", "fat", "muscle"))
