"""The skeleton and the psoas: vertebrae with discs, arches and spinal canal, the sacrum, ribs
with costal cartilages, sternum, clavicles, scapulae, pelvis and femora.

Painted late, over the soft tissues (bone wins), each bone as cortical shell around marrow.
The vertebral levels (C1-L5) come from the :class:`~.body.Body`; sizes are in millimetres.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .body import Body
from .painter import TorsoPainter
from .shapes import Shape, View, capsule, ellipsoid, solid, tube


def paint_psoas(torso: TorsoPainter) -> None:
    """Psoas, growing down the lumbar spine into the iliopsoas (the back muscles are wall)."""
    b, c = torso.body, torso.canvas
    for side in (-1, 1):
        psoas = []
        for z, x, dy in ((55, 22, 2), (0, 30, 0), (-80, 45, -5), (-170, 62, -45),
                         (-260, 75, -50), (-330, 95, -15)):
            psoas.append(np.array([x * side * b.w, b.y_spine(z * b.h) + dy * b.d, z * b.h]))
        c.paint(tube(psoas, np.array([6, 12, 22, 22, 17, 12]) * torso.rng.uniform(0.8, 1.2)),
                "muscle")


def vertebra_geometry(b: Body, name: str) -> tuple[float, float, float, float, float]:
    """Vertebra ``name``'s body centre height and y, semi-axes (x, y) and spinal canal centre y
    (all mm): what :func:`paint_spine` paints and what implants are placed in."""
    bottom, top, _height = b.vertebrae[name]
    zc = (bottom + top) / 2
    yc = float(b.y_spine(zc))
    rx, ry = {"C": (10.0, 8.0), "T": (15.0, 13.0), "L": (21.0, 16.0)}[name[0]]
    rx, ry = rx * b.w, ry * b.d
    return zc, yc, rx, ry, yc + ry + 10 * b.d


def paint_spine(torso: TorsoPainter) -> None:
    """Vertebral bodies, discs, posterior arches, spinal canal, and the sacrum."""
    b, c = torso.body, torso.canvas
    names = list(b.vertebrae)
    for n, name in enumerate(names):
        bottom, top, height = b.vertebrae[name]
        zc, yc, rx, ry, canal_y = vertebra_geometry(b, name)
        region = name[0]
        c.paint(_cylinder([0, yc], [rx, ry], bottom, top), "bone_cortical")
        c.paint(_cylinder([0, yc], [rx - 2, ry - 2], bottom + 1.5, top - 1.5),
                "bone_marrow")
        if n + 1 < len(names):
            below_top = b.vertebrae[names[n + 1]][1]
            c.paint(_cylinder([0, yc], [rx, ry], below_top, bottom), "disc")
        arch = _cylinder([0, canal_y], [rx * 0.75, 14 * b.d], bottom, top)
        c.paint(arch, "bone_cortical")
        c.paint(_cylinder([0, canal_y], [8 * b.w, 8 * b.d], bottom - 8, top + 8), "csf")
        spinous = capsule(np.array([0, canal_y + 12, zc]),
                          np.array([0, canal_y + 38 * b.d, zc - 12]), 4.0, 3.5)
        c.paint(spinous, "bone_cortical")
        span = {"C": 28, "T": 32, "L": 42}[region] * b.w
        c.paint(capsule(np.array([-span, canal_y, zc]), np.array([span, canal_y, zc]),
                        4.0, 4.0), "bone_cortical", within=("muscle", "fat", "bone_cortical"))
    # sacrum: flattened ellipsoids along its curve
    for z, width, thick in ((-140, 50, 18), (-165, 45, 16), (-190, 36, 13), (-215, 26, 10),
                            (-240, 15, 8)):
        zz = z * b.h
        centre = [0, float(b.y_spine(zz)), zz]
        semi = [width * b.w, thick * b.d, 16]
        c.paint(ellipsoid(centre, semi), "bone_cortical")
        c.paint(ellipsoid(centre, np.array(semi) - 3), "bone_marrow")


def _cylinder(centre_xy: Sequence[float], semi_xy: Sequence[float], z0: float,
              z1: float) -> Shape:
    """An upright elliptic cylinder: centre and semi-axes (x, y) in mm, from z0 to z1."""
    cx, cy = centre_xy
    ax, ay = semi_xy

    def inside(v: View) -> np.ndarray:
        return ((((v.x - cx) / ax) ** 2 + ((v.y - cy) / ay) ** 2) <= 1.0) & \
            (v.z >= z0) & (v.z <= z1)
    return solid([cx - ax, cy - ay, z0], [cx + ax, cy + ay, z1], inside)


def paint_ribs_and_shoulders(torso: TorsoPainter) -> None:
    """Twelve pairs of ribs with costal cartilages, sternum, clavicles and scapulae."""
    b, c = torso.body, torso.canvas
    drops = [25, 40, 60, 70, 80, 85, 90, 90, 80, 60, 25, 10]
    ends = [165, 165, 165, 165, 160, 158, 155, 150, 145, 140, 110, 80]
    cartilage_from = [140, 140, 138, 135, 130, 125, 120, 120, 118, 115, 999, 999]
    for r in range(12):
        bottom, top, _ = b.vertebrae[f"T{r + 1}"]
        z_head = (bottom + top) / 2
        for side in (-1, 1):
            theta = np.radians(np.linspace(20, ends[r], 9))
            z_rib = z_head + 8 - (drops[r] * b.h) * ((theta - theta[0]) /
                                                     (theta[-1] - theta[0])) ** 1.2
            a, bb, yc = b.wall_ellipse(z_rib)
            inset = b.wall * 0.5 + 4
            x = side * (a - inset) * np.sin(theta)
            y = yc + (bb - inset) * np.cos(theta)
            points = [np.array([18 * side * b.w, float(b.y_spine(z_head)) + 6, z_head])]
            points += [np.array(p) for p in zip(x, y, z_rib)]
            radius = 4.0 if r in (0, 10, 11) else 5.0
            bone = [p for p, t in zip(points, [0] + list(np.degrees(theta)))
                    if t <= cartilage_from[r]]
            cart = [p for p, t in zip(points, [0] + list(np.degrees(theta)))
                    if t >= cartilage_from[r] - 15]
            c.paint(tube(bone, radius, 12.0), "bone_cortical")
            c.paint(tube(bone, radius - 2.5, 12.0), "bone_marrow")
            if len(cart) > 1 and r < 10:
                if r < 7:
                    cart.append(np.array([12 * side * b.w, cart[-1][1], cart[-1][2]]))
                c.paint(tube(cart, radius, 12.0), "cartilage")
    # sternum
    a, bb, yc = b.wall_ellipse(np.array([300.0, 120.0]) * b.h)
    sternum = [np.array([0.0, yc[n] - bb[n] + b.wall * 0.6, z])
               for n, z in enumerate((300.0 * b.h, 120.0 * b.h))]
    for t in np.linspace(0, 1, 8):
        p = sternum[0] * (1 - t) + sternum[1] * t
        c.paint(ellipsoid(p, [16 * b.w, 7, 16]), "bone_cortical")
        c.paint(ellipsoid(p, [13 * b.w, 4.5, 16]), "bone_marrow")
    # clavicles and scapulae
    z_cl = b.vertebrae["T1"][1] + 5
    for side in (-1, 1):
        clavicle = [np.array([15 * side * b.w, sternum[0][1] + 5, z_cl]),
                    np.array([70 * side * b.w, sternum[0][1] + 10, z_cl + 8]),
                    np.array([125 * side * b.w, -10 * b.d, z_cl + 12])]
        c.paint(tube(clavicle, 7.0), "bone_cortical")
        c.paint(tube(clavicle, 3.5), "bone_marrow")
        angle = np.radians(25 * side)
        axes = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
        a, bb, yc = b.wall_ellipse(np.array([240.0 * b.h]))
        centre = [95 * side * b.w, float(yc[0] + bb[0]) - 22, 240 * b.h]
        c.paint(ellipsoid(centre, [45 * b.w, 4.5, 70 * b.h], axes), "bone_cortical",
                within=("muscle", "fat"))


def paint_pelvis_and_leg_bones(torso: TorsoPainter) -> None:
    """Iliac wings, pubic and ischial rami, femoral heads and shafts."""
    b, c = torso.body, torso.canvas
    centre = b.p(0, 25, -150)
    semi = np.array([135 * b.w, 100 * b.d, 105 * b.h])

    def wing(v: View, inner: float, outer: float) -> np.ndarray:
        r = (((v.x - centre[0]) / semi[0]) ** 2 + ((v.y - centre[1]) / semi[1]) ** 2
             + ((v.z - centre[2]) / semi[2]) ** 2)
        y_front = (-40.0 - 0.25 * (v.z / b.h + 85.0)) * b.d  # -40 mm at the crest, 0 low
        return ((r <= outer) & (r >= inner) & (v.z <= -85 * b.h) & (v.z >= -230 * b.h)
                & (np.abs(v.x) > 35 * b.w) & (v.y > y_front))
    lo, hi = centre - semi, centre + semi
    c.paint(solid(lo, hi, lambda v: wing(v, 0.8, 0.9)), "bone_cortical")
    c.paint(solid(lo, hi, lambda v: wing(v, 0.82, 0.88)), "bone_marrow")
    for side in (-1, 1):
        head = b.p(92 * side, -5, -245)
        c.paint(ellipsoid(head, [31, 31, 31]), "bone_cortical", within=("muscle", "fat"))
        c.paint(ellipsoid(head, [24, 24, 24]), "bone_cortical")
        c.paint(ellipsoid(head, [20, 20, 20]), "bone_marrow")
        rami = [head, b.p(45 * side, -55, -262), b.p(8 * side, -62, -275)]
        ischium = [head, b.p(70 * side, 20, -285), b.p(55 * side, 25, -305),
                   b.p(30 * side, -40, -295), b.p(8 * side, -60, -280)]
        c.paint(tube(rami, 8.0), "bone_cortical")
        c.paint(tube(ischium, 9.0), "bone_cortical")
        c.paint(tube(ischium, 5.0), "bone_marrow")
        shaft = [head, b.p(132 * side, 5, -268), b.p(125 * side, 5, -300),
                 b.p(100 * side, 5, -460), b.p(85 * side, 10, -700)]
        c.paint(tube(shaft, [22, 18, 15, 14, 14]), "bone_cortical")
        c.paint(tube(shaft[1:], [13, 9, 8, 8]), "bone_marrow")
