"""The heart and the great vessels of the chest (the heart-mr kind's anatomy, also in the CT
kinds): four chambers, ventricular myocardium, ascending aorta and arch, pulmonary trunk and
arteries, pulmonary veins, superior vena cava and the intrathoracic inferior vena cava.

The heart is built in its own frame (long axis from the base to the apex, random tilt and size)
above the diaphragm, on which its inferior surface rests; the arch joins the descending aorta
of :mod:`.vessels`. Distances in millimetres.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .geometry import frame, unit
from .painter import TorsoPainter
from .shapes import Shape, View, ellipsoid, tube
from .vessels import aorta_path, ivc_path


def paint_heart(torso: TorsoPainter) -> None:
    """Four chambers, ventricular myocardium, aorta and pulmonary arteries (patient mm)."""
    b, c, rng = torso.body, torso.canvas, torso.rng

    def paint(shape: Shape | list[Shape], tissue: str, organ: str = "none",
              within: Sequence[str] | None = None) -> None:
        """Paint above the diaphragm only: the heart's inferior surface rests on it."""
        parts = [shape] if isinstance(shape, Shape) else shape
        c.paint([part.where(lambda v: v.z > torso.z_dia[v.box] + 1.0) for part in parts],
                tissue, organ, within)
    base = b.p(18, -12, 142, 5)
    base[2] += 0.4 * b.breath
    u = unit(unit([0.55, -0.55, -0.62]) + rng.normal(0, 0.08, 3))
    axes = frame(u, [-0.6, -0.7, -0.2])  # long axis, towards the RV, third axis
    e_rv = axes[:, 1]
    size = rng.uniform(0.85, 1.2)
    length = 80.0 * size
    r_lv = 23.0 * rng.uniform(0.85, 1.2) * size
    t_lv = 10.0 * rng.uniform(0.8, 1.25)

    def off(x: float, y: float, z: float) -> np.ndarray:
        return base + np.array([x, y, z]) * size

    def beyond_base(margin: float) -> Callable[[View], np.ndarray]:
        def test(v: View) -> np.ndarray:
            return ((v.x - base[0]) * u[0] + (v.y - base[1]) * u[1]
                    + (v.z - base[2]) * u[2]) >= -margin
        return test

    lv_centre = base + u * length / 2
    rv_centre = base + u * length * 0.38 + e_rv * (r_lv + t_lv + 4)
    rv_semi = np.array([length * 0.42, (r_lv + t_lv) * 0.85, r_lv + t_lv + 8])
    heart_outline = ellipsoid(base + u * length * 0.45 + e_rv * 12,
                              [length * 0.58, r_lv + t_lv + 20, r_lv + t_lv + 8], axes)
    paint(heart_outline, "fat", within=("lung", "fat", "muscle"))

    # intrathoracic IVC, from the liver up into the right atrium (which is painted over it)
    ivc = ivc_path(b)
    c.paint(tube([ivc[-1], off(-40, 12, -25), off(-46, 8, -5)], torso.ivc_radius),
            "caval_blood", "inferior_vena_cava")
    la = ellipsoid(off(-2, 24, 14), np.array([30, 15, 22]) * size)
    ra = ellipsoid(off(-46, 8, 6), np.array([24, 24, 30]) * size)
    for shape, organ, blood in ((la, "left_atrium", "arterial_blood"),
                                (ra, "right_atrium", "right_heart_blood")):
        paint(ellipsoid((shape.lo + shape.hi) / 2, (shape.hi - shape.lo) / 2 + 2.5),
              "myocardium")
        paint(shape, blood, organ)
    for side in (-1, 1):
        for dz in (-10, 10):
            paint(tube([off(18 * side, 30, 14 + dz), off(48 * side, 42, 14 + dz * 1.4)],
                       6.5), "arterial_blood", within=("lung", "fat", "muscle"))
    paint(tube([off(-2, 30, 10), base + u * 8], 14 * size), "arterial_blood", "left_atrium")
    paint(tube([off(-46, 10, 30), off(-38, 16, 110)], 9.0), "right_heart_blood")
    paint(tube([off(-46, 8, 6), rv_centre - u * 10], 13 * size), "right_heart_blood",
          "right_atrium")

    paint(ellipsoid(rv_centre, rv_semi + 4, axes).where(beyond_base(8)), "myocardium",
          "myocardium")
    paint(ellipsoid(rv_centre, rv_semi, axes).where(beyond_base(8)), "right_heart_blood",
          "right_ventricle")
    pulmonary_valve = off(10, -34, 30)
    rvot = [rv_centre - u * 5 + e_rv * 5, pulmonary_valve]
    paint(tube(rvot, 15 * size), "myocardium", "myocardium",
          within=("lung", "fat", "muscle", "myocardium", "arterial_blood"))
    paint(tube(rvot, 12 * size), "right_heart_blood", "right_ventricle")

    paint(ellipsoid(lv_centre, [length / 2 + 8, r_lv + t_lv, r_lv + t_lv], axes)
          .where(beyond_base(0)), "myocardium", "myocardium")
    paint(ellipsoid(lv_centre, [length / 2, r_lv, r_lv], axes).where(beyond_base(0)),
          "arterial_blood", "left_ventricle")
    aortic_valve = off(-6, -6, 10)
    paint(tube([base + u * 15, aortic_valve], 11 * size), "arterial_blood",
          "left_ventricle")

    descending, radii = aorta_path(b)
    ascending = [aortic_valve, off(-16, -14, 40), off(-14, -8, 72), off(-4, 14, 95),
                 off(14, 38, 92), off(20, 52, 70)]
    arch = ascending + [p for p in descending if p[2] < ascending[-1][2] - 20]
    arch_r = [14, 15, 14, 13, 12, 11.5] + [r for p, r in zip(descending, radii)
                                           if p[2] < ascending[-1][2] - 20]
    paint(tube(arch, np.array(arch_r) * torso.aorta_scale * size ** 0.5), "arterial_blood",
          "aorta")
    bifurcation = off(8, 2, 64)
    paint(tube([pulmonary_valve, off(14, -18, 52), bifurcation], 13 * size),
          "right_heart_blood", "pulmonary_artery")
    paint(tube([bifurcation, off(38, 18, 66), off(62, 30, 58)], [10, 9, 8]),
          "right_heart_blood", "pulmonary_artery")
    paint(tube([bifurcation, off(-20, 14, 62), off(-58, 18, 55)], [10, 9, 8]),
          "right_heart_blood", "pulmonary_artery")
    # head and arm vessels from the arch
    for dx in (-20, 0, 18):
        top = off(dx * 1.4, 20, 200)
        paint(tube([off(dx * 0.6, 10, 96), off(dx, 15, 130), top], 5.0), "arterial_blood")
