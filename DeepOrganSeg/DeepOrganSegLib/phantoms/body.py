"""The parametric adult behind the torso kinds (abdomen-ct, body-ct, heart-mr).

One random :class:`Body` fixes the sizes (left-right, antero-posterior and cranio-caudal
scales), the subcutaneous fat and abdominal wall, the breathing phase (diaphragm shift) and the
position of the arms, and derives the landmarks every organ painter uses: the vertebral levels,
the spine's centre line, the body-wall ellipse per height, the diaphragm's two domes, and the
body region (:data:`~DeepOrganSegLib.bodypart.REGIONS`) of each axial slice.

Units: patient LPS millimetres. The reference anatomy below is written for a 1.75 m adult with
z = 0 near the L1/L2 disc; :meth:`Body.p` maps a reference point onto the drawn body.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..bodypart import REGIONS

_Y_SPINE = np.array([  # z (mm, reference body), y of the vertebral body centre (mm)
    (620, 30), (490, 30), (370, 40), (300, 52), (200, 56), (100, 50), (30, 42), (-60, 36),
    (-120, 48), (-170, 70), (-230, 88), (-300, 90)])
_BODY_PROFILE = np.array([  # z, semi-axis x, semi-axis y, centre y of the muscle boundary (mm)
    (700, 55, 52, 20), (480, 55, 55, 22), (405, 60, 58, 24), (385, 125, 80, 10),
    (350, 148, 92, 6),
    (250, 150, 98, 4), (120, 148, 100, 4), (0, 138, 100, 6), (-100, 145, 100, 6),
    (-220, 155, 98, 6), (-330, 150, 92, 6), (-900, 150, 92, 6)])
_CAVITY_SCALE = np.array([  # z, abdominal cavity size relative to the inner wall (pelvic funnel)
    (-100, 1.0), (-180, 0.65), (-250, 0.42), (-300, 0.22), (-320, 0.0)])
# Vertebrae from C1 down to L5: (name, body height mm, disc below mm).
_VERTEBRAE = ([(f"C{n}", 14.0, 5.0) for n in range(1, 8)]
              + [(f"T{n}", 17.0 + 0.5 * n, 5.5) for n in range(1, 13)]
              + [(f"L{n}", 28.0, 10.0) for n in range(1, 6)])
_Z_S1_TOP = -135.0  # top of the sacrum, reference body (mm); z = 0 is near the L1/L2 disc


class Body:
    """One random adult: sizes, fat, breathing, and the landmarks derived from them (mm, LPS).

    The reference anatomy is written in millimetres for a 1.75 m adult (x to the patient's left,
    y posterior, z superior, z = 0 near the L1/L2 disc); :meth:`p` maps a reference point onto
    this body.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.w = rng.uniform(0.88, 1.12)  # left-right scale
        self.d = rng.uniform(0.88, 1.15)  # antero-posterior scale
        self.h = rng.uniform(0.92, 1.08)  # cranio-caudal scale
        self.fat = rng.uniform(5.0, 40.0)  # subcutaneous fat, mm
        self.wall = rng.uniform(7.0, 14.0)  # abdominal wall muscle, mm
        self.breath = rng.uniform(-15.0, 15.0)  # diaphragm shift, mm (negative = inspiration)
        self.vertebrae = self._stack_vertebrae()
        self.z_dome_right = self.h * 118.0 + self.breath + rng.normal(0, 5)
        self.z_dome_left = self.h * 102.0 + self.breath + rng.normal(0, 5)
        # how far (mm) the lung's lower border reaches below its dome: about two vertebrae in
        # quiet breathing (behind, the lung ends at T10 and the pleura at T12: the recess
        # between holds no lung), deeper in inspiration, when the lung descends into the
        # recess; tied to the breath rather than drawn, so that no later draw moves
        self.lung_reach = 55.0 - 1.3 * self.breath
        self.z_apex = self.vertebrae["T1"][1] + 15.0
        self.z_skull_base = self.vertebrae["C1"][1] + 5.0
        self.z_iliac_crest = self.h * -85.0
        self.z_ischium = self.h * -305.0
        # arms: at the sides (as in most abdominal CT of the sick) or raised out of the field
        self.arms_down = rng.random() < 0.55
        self.arm_radius = rng.uniform(42.0, 60.0) * self.w  # mm, skin to skin
        self.arm_gap = rng.uniform(3.0, 45.0)  # mm between the trunk's skin and the arm
        self.table_gap = rng.uniform(0.0, 8.0)  # mm between the back's skin and the table
        # how far (mm) both kidneys and their hila sit below the reference height: the left
        # kidney's upper pole meets the lower part of the spleen (its renal impression), not
        # the spleen's top under the diaphragm, and kidneys lie a vertebra higher or lower
        # from patient to patient and with the breath (docs/phantoms.md, "Spleen and kidney")
        self.kidney_drop = rng.uniform(10.0, 40.0)

    @property
    def arm_extent(self) -> float:
        """How far (mm) the arms reach beyond the trunk's skin on each side (0 when raised)."""
        return self.arm_gap + 2 * self.arm_radius if self.arms_down else 0.0

    # --------------------------------------------------------------------------- reference mapping
    def p(self, x: float, y: float, z: float, jitter: float = 0.0, upper_abdomen: bool = False
          ) -> np.ndarray:
        """A reference point (mm) mapped onto this body, with optional random jitter (SD, mm)."""
        point = np.array([x * self.w, y * self.d, z * self.h])
        if upper_abdomen:
            point[2] += self.breath
        if jitter:
            point += self.rng.normal(0.0, jitter, 3)
        return point

    def scale(self, semi: Sequence[float], variability: float = 0.12) -> np.ndarray:
        """Semi-axes (mm) scaled to this body and varied by +-``variability`` each."""
        s = np.asarray(semi, dtype=float) * np.array([self.w, self.d, self.h])
        return s * self.rng.uniform(1 - variability, 1 + variability, 3)

    def _stack_vertebrae(self) -> dict[str, tuple[float, float, float]]:
        """name -> (bottom z, top z, body height) of each vertebral body, stacked up from S1."""
        z = _Z_S1_TOP * self.h
        levels = {}
        for name, height, disc in reversed(_VERTEBRAE):
            z += disc * self.h
            levels[name] = (z, z + height * self.h, height * self.h)
            z += height * self.h
        return levels

    # --------------------------------------------------------------------------- profiles
    def y_spine(self, z: np.ndarray | float) -> np.ndarray:
        """y (mm) of the vertebral-body centre line at height z."""
        return np.interp(np.asarray(z) / self.h, _Y_SPINE[::-1, 0], _Y_SPINE[::-1, 1]) * self.d

    def wall_ellipse(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Semi-axes (a, b) and centre y of the outer muscle boundary at heights z (mm)."""
        zr = np.asarray(z) / self.h
        ref = _BODY_PROFILE[::-1]
        a = np.interp(zr, ref[:, 0], ref[:, 1]) * self.w
        b = np.interp(zr, ref[:, 0], ref[:, 2]) * self.d
        yc = np.interp(zr, ref[:, 0], ref[:, 3]) * self.d
        return a, b, yc

    def cavity_scale(self, z: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(z) / self.h, _CAVITY_SCALE[::-1, 0], _CAVITY_SCALE[::-1, 1])

    def z_diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm's upper surface, where the lung ends: two domes and the
        central tendon, and no lower than the lung's lower border (``lung_reach`` below each
        dome; docs/phantoms.md, "What fills the gutter")."""
        y0 = np.float32(-5.0 * self.d)
        dy = (y - y0) * np.where(y > y0, np.float32(1 / (90.0 * self.d)),
                                 np.float32(1 / (130.0 * self.d)))
        dy *= dy
        depth = np.float32(75.0)
        wx = np.float32(1 / (75.0 * self.w))
        right = self.z_dome_right - depth * (((x + np.float32(70.0 * self.w)) * wx) ** 2 + dy)
        left = self.z_dome_left - depth * (((x - np.float32(70.0 * self.w)) * wx) ** 2 + dy)
        centre = self.z_dome_left - 12.0 - depth * ((x * np.float32(1 / (70.0 * self.w))) ** 2 + dy)
        # the lung's lower border: below it the costodiaphragmatic recess holds no lung, and
        # the organs under the diaphragm lie against the chest wall
        floor = np.where(x < 0, np.float32(self.z_dome_right - self.lung_reach),
                         np.float32(self.z_dome_left - self.lung_reach))
        return np.maximum(np.maximum(np.maximum(right, left), centre), floor).astype(np.float32)

    def diaphragm_map(self, x: np.ndarray, y: np.ndarray, z_axis: np.ndarray) -> np.ndarray:
        """:meth:`z_diaphragm` on a grid, computed only for the slices it can cross (mm)."""
        z_map = np.empty(x.shape, dtype=np.float32)
        top = max(self.z_dome_right, self.z_dome_left) + 10.0
        below = z_axis < top - 200.0
        above = z_axis > top
        z_map[below] = 1e4  # far below the domes: all abdomen
        z_map[above] = -1e4  # above them: all thorax
        slab = ~(below | above)
        if slab.any():
            z_map[slab] = self.z_diaphragm(x[slab], y[slab])
        return z_map

    def region_of(self, z: float) -> int:
        """Index into REGIONS of an axial slice at height z (mm, body coordinates)."""
        if z > self.z_skull_base:
            return REGIONS.index("head")
        if z > self.z_apex:
            return REGIONS.index("neck")
        if z > self.z_dome_right:
            return REGIONS.index("chest")
        if z > self.z_iliac_crest:
            return REGIONS.index("abdomen")
        if z > self.z_ischium:
            return REGIONS.index("pelvis")
        return REGIONS.index("legs")
