"""The torso's outer layers: skin fat, muscle wall, the abdominal and thoracic cavities, the
lungs with their vessels, the thighs, the arms at the sides and the CT table.

Painted first, on whole arrays rather than shapes: every later organ is painted *within* these
layers (mostly within the abdominal fat or the lung). Also computes the diaphragm height map
(mm) that separates the cavities, kept on the painter for the organs above and below it.
"""

from __future__ import annotations

import numpy as np

from .labels import TISSUE_ID
from .painter import TorsoPainter


def paint_body_wall(torso: TorsoPainter) -> None:
    """Skin/subcutaneous fat, muscle, and the abdominal and thoracic cavities."""
    b, c = torso.body, torso.canvas
    z_axis = c.axes[2]
    a, bb, yc = (v[:, None, None].astype(np.float32) for v in b.wall_ellipse(z_axis))
    dy = c.y - yc
    x2 = c.x * c.x

    def ellipse(offset: np.ndarray | float, scale: np.ndarray | float = 1.0,
                back: np.ndarray | float = 0.0) -> np.ndarray:
        """Inside the muscle ellipse grown by ``offset`` mm (``back`` mm less posteriorly)."""
        semi_x = (a + offset) * scale
        semi_y = (bb + offset - back / 2) * scale
        return x2 / (semi_x * semi_x) + ((dy + back / 2) / semi_y) ** 2 <= 1.0

    fat = b.fat * np.interp(z_axis / b.h, [-900, -330, -100, 100, 350, 405, 700],
                            [0.8, 1.0, 1.0, 0.6, 0.5, 0.35, 0.3])[:, None, None]
    trunk = ((z_axis < b.z_skull_base + 20) & (z_axis >= -330 * b.h))[:, None, None]
    body = (ellipse(fat.astype(np.float32), back=0.4 * fat.astype(np.float32)) & trunk) \
        | _legs(torso, b.fat * 0.8, z_axis)
    muscle = (ellipse(0.0) & trunk) | _legs(torso, 0.0, z_axis)
    c.tissue[body] = TISSUE_ID["fat"]
    c.tissue[muscle] = TISSUE_ID["muscle"]

    torso.z_dia = b.diaphragm_map(c.x, c.y, z_axis)
    cav = b.cavity_scale(z_axis)[:, None, None].astype(np.float32)
    gutter = c.y < b.y_spine(z_axis)[:, None, None] + 15.0 * b.d + 0.004 * x2
    abdominal = (ellipse(-b.wall, np.maximum(cav, 1e-3)) & (c.z < torso.z_dia - 4.0)
                 & (cav > 0) & gutter)
    c.tissue[abdominal] = TISSUE_ID["fat"]
    torso.cavity = abdominal

    chest = ellipse(-b.wall - 6.0) & (c.z > torso.z_dia) & _below_apex(torso, c.x, c.y, c.z)
    c.tissue[chest] = TISSUE_ID["lung"]
    _lung_vessels(torso, chest)
    _arms(torso, fat)
    _table(torso)


def _arms(torso: TorsoPainter, fat: np.ndarray) -> None:
    """Upper arms and forearms at the trunk's sides: skin fat, muscle, a long bone."""
    b, c = torso.body, torso.canvas
    if not b.arms_down:
        return
    z_axis = c.axes[2]
    a, _, yc = b.wall_ellipse(z_axis)
    shoulder, wrist = b.z_apex - 30.0, b.z_iliac_crest - 120.0 * b.h
    along = np.clip((z_axis - wrist) / (shoulder - wrist), 0.0, 1.0)
    radius = b.arm_radius * (0.72 + 0.28 * along)  # forearms are thinner
    x_centre = a + fat[:, 0, 0] + b.arm_gap + radius
    y_centre = yc + torso.rng.uniform(-25.0, 25.0) * b.d
    inside_z = (z_axis > wrist) & (z_axis < shoulder)
    skin = np.interp(along, [0, 1], [4.0, 12.0])  # mm of fat under the arm's skin
    bone = np.full_like(radius, 11.0)  # humerus / forearm bones, mm
    layers = (("fat", radius), ("muscle", radius - skin), ("bone_cortical", bone),
              ("bone_marrow", bone - 3.5))
    for side in (-1.0, 1.0):
        dx = c.x - np.float32(side) * x_centre.astype(np.float32)[:, None, None]
        dy = c.y - y_centre.astype(np.float32)[:, None, None]
        r2 = dx * dx + dy * dy
        arm = np.zeros(c.grid.shape, dtype=bool)
        semi: np.ndarray  # each layer's (float64), then as float32
        for tissue, semi in layers:
            semi = semi.astype(np.float32)[:, None, None]
            mask = (r2 <= semi * semi) & inside_z[:, None, None]
            mask &= (c.tissue == TISSUE_ID["air"]) if tissue == "fat" else arm
            arm |= mask
            c.tissue[mask] = TISSUE_ID[tissue]


def _table(torso: TorsoPainter) -> None:
    """The CT table under the back: two curved carbon-fibre shells around a foam core."""
    b, c = torso.body, torso.canvas
    central = (c.tissue[:, :, np.abs(c.axes[0]) < 60.0] != TISSUE_ID["air"]).any(axis=2)
    filled = central.any(axis=1)
    if not filled.any():
        return
    deepest = central.shape[1] - 1 - np.argmax(central[filled][:, ::-1], axis=1)
    back = float(c.axes[1][int(np.median(deepest))]) + b.table_gap  # the back's skin
    curve = np.float32(5e-4)  # the top rises 20 mm at 200 mm off-centre
    top = np.float32(back) - curve * c.x * c.x
    depth = c.y - top
    width = np.abs(c.x) < np.float32(230.0)
    air = c.tissue == TISSUE_ID["air"]
    for start, end in ((0.0, 5.0), (38.0, 43.0)):
        c.tissue[air & width & (depth >= start) & (depth < end)] = TISSUE_ID["table"]


def _legs(torso: TorsoPainter, offset: float, z_axis: np.ndarray) -> np.ndarray:
    """Both thighs (mm offset outside the muscle boundary), below the crotch."""
    b, c = torso.body, torso.canvas
    inside = np.zeros(c.grid.shape, dtype=bool)
    slab = np.nonzero(z_axis / b.h < -290)[0]
    if slab.size == 0:
        return inside
    zr = z_axis[slab] / b.h
    a: np.ndarray = np.interp(zr, [-900, -650, -450, -300], [48, 52, 70, 80]) * b.w + offset
    bb: np.ndarray = np.interp(zr, [-900, -650, -450, -300], [50, 55, 68, 75]) * b.d + offset
    a, bb = (v[:, None, None].astype(np.float32) for v in (a, bb))
    x, y = c.x[slab[0]:slab[-1] + 1], c.y[slab[0]:slab[-1] + 1]
    yc = np.float32(8.0 * b.d)
    legs = inside[slab[0]:slab[-1] + 1]
    for side in (-1.0, 1.0):
        legs |= (((x - np.float32(side * 95.0 * b.w)) / a) ** 2 + ((y - yc) / bb) ** 2) <= 1.0
    return inside


def _below_apex(torso: TorsoPainter, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Under the two lung apices (rounded domes above the first ribs)."""
    b = torso.body
    r2 = (np.abs(x) - 50.0 * b.w) ** 2 + ((y - 30.0 * b.d) * 1.3) ** 2
    return z < b.z_apex - r2 / 160.0


def _lung_vessels(torso: TorsoPainter, lung: np.ndarray) -> None:
    """Pulmonary vessels: thin sheets of blood through the lung (random-field level sets)."""
    f1, f2 = torso.field("sheets", 9.0), torso.field("texture", 4.0)
    vessels = lung & (np.abs(f1) < 0.12) & (np.abs(f2) < 0.35)
    torso.canvas.tissue[vessels] = TISSUE_ID["right_heart_blood"]
