"""The great vessels of the abdomen, pelvis and legs: aorta and inferior vena cava with their
renal, coeliac, mesenteric and iliac branches, and the splenic-portal venous system.

The aorta's and the cava's centre lines (:func:`aorta_path`, :func:`ivc_path`) follow the spine
of the :class:`~.body.Body` (mm); :mod:`.heart` continues both into the chest.
"""

from __future__ import annotations

import numpy as np

from .body import Body
from .painter import TorsoPainter
from .shapes import centre_line, ellipsoid, flattened_tube, tube


def aorta_path(b: Body) -> tuple[list[np.ndarray], list[float]]:
    """Descending and abdominal aorta down to the bifurcation (points, radii in mm)."""
    points, radii = [], []
    for z, x, dy, r in ((230, 24, -18, 11.5), (160, 22, -20, 11), (110, 16, -24, 10.5),
                        (40, 12, -28, 10), (-40, 10, -30, 9), (-85, 6, -28, 8)):
        zz = z * b.h
        points.append(np.array([x * b.w, b.y_spine(zz) + dy * b.d, zz]))
        radii.append(r)
    return points, radii


def ivc_path(b: Body) -> list[np.ndarray]:
    """Inferior vena cava from the iliac confluence up to the liver (points in mm)."""
    points = []
    for z, x, dy in ((-90, -16, -20), (-30, -22, -25), (30, -24, -28), (75, -28, -38)):
        zz = z * b.h
        points.append(np.array([x * b.w, b.y_spine(zz) + dy * b.d, zz]))
    return points


def _paint_aorta(torso: TorsoPainter, path: list[np.ndarray], lumen_mm: np.ndarray) -> None:
    """The aorta: its wall (soft tissue, as thick as ``torso.aortic_wall`` says), the lumen
    inside it, and calcified plaques in the wall, all labelled as the aorta (reference
    segmentations outline the outer wall, plaques included)."""
    c, wall = torso.canvas, torso.aortic_wall
    if wall.thickness_mm > 0:
        c.paint(tube(path, lumen_mm + wall.thickness_mm), "muscle", "aorta")
    c.paint(tube(path, lumen_mm), "arterial_blood", "aorta")
    if not wall.plaques:
        return
    centre, radius = centre_line(path, lumen_mm, 2.0)
    for along, angle, size in wall.plaques:
        at = min(int(round(along * (len(centre) - 1))), len(centre) - 2)
        tangent = centre[at + 1] - centre[at]
        tangent /= max(float(np.linalg.norm(tangent)), 1e-6)
        across = np.cross(tangent, [0.0, 1.0, 0.0])
        across /= max(float(np.linalg.norm(across)), 1e-6)
        other = np.cross(tangent, across)
        offset = radius[at] + 0.5 * wall.thickness_mm
        position = centre[at] + offset * (np.cos(angle) * across + np.sin(angle) * other)
        c.paint(ellipsoid(position, [c.visible_radius_mm(size)] * 3), "bone_cortical", "aorta",
                within=("muscle", "arterial_blood"))


def _paint_cava(torso: TorsoPainter, path: list[np.ndarray]) -> None:
    """The abdominal IVC: a round tube of ``torso.ivc_radius`` (mm) or, when the patient's cava
    is flattened (``patient.cava_flatness``, its depth over its width, < 1), an elliptic one of
    that ratio turned by ``patient.cava_angle``, whose area shrinks as the ratio's fourth root
    (a flat cava holds less blood, but is wide: about 22-40 mm by 7-12 mm when flattest)."""
    ratio, radius = torso.patient.cava_flatness, torso.ivc_radius
    cava = tube(path, radius) if ratio >= 1.0 else flattened_tube(
        path, radius * ratio ** -0.375, radius * ratio ** 0.625, torso.patient.cava_angle)
    torso.canvas.paint(cava, "caval_blood", "inferior_vena_cava")


def paint_abdominal_vessels(torso: TorsoPainter) -> None:
    """Aorta and IVC with their main branches, portal and splenic veins, iliac vessels."""
    b, c = torso.body, torso.canvas
    aorta, radii = aorta_path(b)
    _paint_aorta(torso, aorta, np.array(radii) * torso.aorta_scale)
    ivc = ivc_path(b)
    _paint_cava(torso, ivc)
    ys = lambda z: float(b.y_spine(z * b.h))  # noqa: E731 - tiny local helper
    for side in (-1, 1):
        artery = [aorta[-1], b.p(40 * side, 0, -150), b.p(70 * side, -25, -225),
                  b.p(85 * side, -40, -300), b.p(80 * side, -25, -480),
                  b.p(68 * side, 0, -700)]
        vein = [ivc[0], b.p(45 * side, 10, -155), b.p(72 * side, -12, -228),
                b.p(90 * side, -28, -300), b.p(88 * side, -15, -480),
                b.p(76 * side, 10, -700)]
        c.paint(tube(vein, 7.0), "caval_blood")
        c.paint(tube(artery, 5.5), "arterial_blood")
    # renal veins and arteries, at the kidneys' hila
    drop = b.kidney_drop
    for side, z in ((-1, 2.0 - drop), (1, 18.0 - drop)):
        hilum = b.p(40 * side, 0, z)
        hilum[1] = ys(z) + 0 * b.d
        c.paint(tube([np.array([-20 * b.w, ys(z) - 28 * b.d, z * b.h]), hilum], 5.5),
                "caval_blood")
        c.paint(tube([np.array([10 * b.w, ys(z) - 30 * b.d, z * b.h + 8]), hilum], 3.0),
                "arterial_blood")
    # left renal vein passes between the aorta and the SMA
    z_cross, z_hilum = 14.0 - drop, 16.0 - drop
    c.paint(tube([np.array([-20 * b.w, ys(z_cross) - 28 * b.d, z_cross * b.h]),
                  np.array([10 * b.w, ys(z_cross) - 46 * b.d, z_cross * b.h]),
                  np.array([45 * b.w, ys(z_hilum) + 0 * b.d, z_hilum * b.h])], 5.0),
            "caval_blood")
    # coeliac trunk and superior mesenteric artery
    c.paint(tube([np.array([12 * b.w, ys(32) - 36 * b.d, 32 * b.h]), b.p(10, -12, 36)], 3.5),
            "arterial_blood")
    c.paint(tube([np.array([12 * b.w, ys(18) - 36 * b.d, 18 * b.h]), b.p(6, -40, 5),
                  b.p(4, -45, -80)], 4.0), "arterial_blood")
    # splenic vein -> portal confluence -> portal vein into the liver hilum; SMV
    up = dict(upper_abdomen=True)
    portal = [b.p(80, 32, 42, **up), b.p(40, 0, 22), b.p(5, -12, 8), b.p(-15, -15, 4),
              b.p(-35, -12, 30, **up), b.p(-55, -5, 48, **up)]
    c.paint(tube(portal, [5, 5, 6, 8, 8, 7]), "portal_blood")
    c.paint(tube([b.p(-12, -30, -80), b.p(-14, -25, -20), b.p(-15, -15, 4)], 5.5),
            "portal_blood")
