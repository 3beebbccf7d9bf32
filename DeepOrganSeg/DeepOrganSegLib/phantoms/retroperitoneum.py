"""What surrounds the great vessels and the pancreas in a patient: the diaphragmatic crura,
lymph nodes, and the missing fat planes of slim patients (:class:`~.patient.PatientDetail`).

Without them an unenhanced aorta is a round thing in fat, which no patient shows: the crura hug
it from the hiatus down to L2-L3 and touch the vertebral bodies, nodes of 5-10 mm lie beside it
and between it and the cava, and a slim patient's organs touch with no fat between them. None is
an organ of the label tables: each replaces unlabelled tissue only (a crus also the liver where
a phantom liver reaches the aorta: in patients the crus lies between them), so the label map
stays the organs' truth (docs/phantoms.md, "Patients where it matters"). Distances in millimetres.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .labels import ORGAN_ID, TISSUE_ID
from .painter import TorsoPainter
from .shapes import View, axial_curve, ellipsoid, solid
from .vessels import aorta_path, ivc_path

__all__ = ["paint_crura", "paint_lymph_nodes", "close_fat_planes"]

#: What a crus may take: unlabelled fat and the bowel that wanders there, and the liver, which
#: the crura keep from the aorta in patients (the caudate lobe and the bare area lie in front
#: of and beside the right crus; a phantom liver, an enlarged one above all, may reach the
#: aorta).
_CRUS_TAKES = ("fat", "bowel_wall", "bowel_content", "gas", "liver", "liver_vessel",
               "liver_lesion")
#: The right crus is the larger (Gray's Anatomy).
_RIGHT_CRUS_SCALE = 1.3
#: Angles (radians, from anterior towards the crus's side) the crura span around the aorta:
#: beside it at their origin, meeting in front of it at the hiatus, back to the vertebra.
_CRUS_FRONT_AT_ORIGIN, _CRUS_BACK = 1.3, 2.5
#: Lower ends are tendinous: a crus thins to this share over its lowest 25 mm.
_CRUS_TAPER = 0.3


def _aorta_surface(torso: TorsoPainter) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """z, x, y of the abdominal aorta's centre line and its outer radius there (wall included),
    ordered by z, for interpolation at any height."""
    points, radii = aorta_path(torso.body)
    z_line, x_line, y_line = axial_curve(points)
    outer = np.interp(z_line, [p[2] for p in points[::-1]], radii[::-1]) * torso.aorta_scale \
        + torso.aortic_wall.thickness_mm
    return z_line, x_line, y_line, outer


def paint_crura(torso: TorsoPainter) -> None:
    """Both diaphragmatic crura as muscle bands ``patient.crus_mm`` thick (the right one 1.3x),
    ``patient.crus_gap_mm`` outside the aorta's wall: from the middle of L3 (right) and L2
    (left), beside the aorta and against the vertebral bodies, up to the hiatus at the top of
    L1, where they meet in front of the aorta, and on to the diaphragm; over fat, bowel and
    the liver (the crura keep it from the aorta), never over another organ."""
    detail, b, c = torso.patient, torso.body, torso.canvas
    if not detail.crus_mm:
        return
    z_line, x_line, y_line, outer = _aorta_surface(torso)
    z_hiatus = b.vertebrae["L1"][1]
    crus_organs = [ORGAN_ID["none"], ORGAN_ID["liver"]]
    reach = outer.max() + detail.crus_gap_mm + _RIGHT_CRUS_SCALE * detail.crus_mm
    for side, origin, scale in ((-1.0, "L3", _RIGHT_CRUS_SCALE), (1.0, "L2", 1.0)):
        z_low = float(np.mean(b.vertebrae[origin][:2]))
        thickness = detail.crus_mm * scale

        def crus(v: View, side: float = side, z_low: float = z_low,
                 thickness: float = thickness) -> np.ndarray:
            dx = v.x - np.interp(v.z, z_line, x_line).astype(np.float32)
            dy = v.y - np.interp(v.z, z_line, y_line).astype(np.float32)
            inner = np.interp(v.z, z_line, outer).astype(np.float32) + detail.crus_gap_mm
            rho = np.sqrt(dx * dx + dy * dy)
            angle = np.arctan2(side * dx, -dy)  # 0 in front of the aorta, pi/2 at the side
            rise = np.clip((v.z - z_low) / (z_hiatus - z_low), 0.0, 1.0)
            taper = np.clip(_CRUS_TAPER + (v.z - z_low) / 25.0, _CRUS_TAPER, 1.0)
            return ((rho >= inner) & (rho <= inner + thickness * taper)
                    & (angle >= _CRUS_FRONT_AT_ORIGIN * (1.0 - rise)) & (angle <= _CRUS_BACK)
                    & (v.z >= z_low) & (v.z < torso.z_dia[v.box])
                    & np.isin(c.organ[v.box], crus_organs))
        lo = [x_line.min() - reach, y_line.min() - reach, z_low]
        hi = [x_line.max() + reach, y_line.max() + reach, max(b.z_dome_left, b.z_dome_right)]
        c.paint(solid(lo, hi, crus), "muscle", within=_CRUS_TAKES)


def _node_centre(torso: TorsoPainter, station: str, along: float, turn: float,
                 short_mm: float) -> np.ndarray:
    """Centre (mm) of a lymph node of ``short_mm`` short axis at ``station``: ``along`` (0-1)
    sets its height in the station, ``turn`` (-1 to 1) its place around the vessel."""
    b = torso.body
    z_line, x_line, y_line, outer = _aorta_surface(torso)

    def beside_aorta(z: float, angle: float, side: float) -> np.ndarray:
        """Just outside the aorta's wall at height z, ``angle`` from anterior towards side."""
        distance = float(np.interp(z, z_line, outer)) + 0.5 * short_mm + 1.0
        return np.array([float(np.interp(z, z_line, x_line)) + side * distance * np.sin(angle),
                         float(np.interp(z, z_line, y_line)) - distance * np.cos(angle), z])
    if station == "para-aortic":  # left of the aorta, from the renal veins to the bifurcation
        return beside_aorta(float(np.interp(along, [0, 1], [-80 * b.h, 14 * b.h])),
                            1.75 + 0.35 * turn, 1.0)
    if station == "retrocrural":  # behind the crura, beside the aorta above the hiatus
        return beside_aorta(b.vertebrae["L1"][1] + 40.0 * along, 2.7 + 0.2 * turn,
                            1.0 if turn > 0 else -1.0)
    if station == "aortocaval":  # between the aorta and the cava, below the renal veins
        z = float(np.interp(along, [0, 1], [-60 * b.h, 5 * b.h]))
        partner = np.array([np.interp(z, z_line, x_line), np.interp(z, z_line, y_line), z])
    else:  # portocaval: between the portal vein (as painted in vessels.py) and the cava
        low, high = b.p(-15, -15, 4), b.p(-35, -12, 30, upper_abdomen=True)
        partner = low + along * (high - low)
    cava_z, cava_x, cava_y = axial_curve(ivc_path(b))
    z = float(partner[2])
    cava = np.array([np.interp(z, cava_z, cava_x), np.interp(z, cava_z, cava_y), z])
    return (partner + cava) / 2 + np.array([0.0, 3.0 * turn - 4.0, 0.0])


def paint_lymph_nodes(torso: TorsoPainter) -> None:
    """``patient.lymph_nodes``: oval soft-tissue nodes, long axis cranio-caudal, in the fat
    beside the aorta, between it and the cava, between the cava and the portal vein, and
    behind the crura (painted before the crura, which wrap around them)."""
    for station, along, turn, short_mm, elongation in torso.patient.lymph_nodes:
        centre = _node_centre(torso, station, along, turn, short_mm)
        semi = 0.5 * short_mm * np.array([1.0, 1.0, elongation])
        torso.canvas.paint(ellipsoid(centre, semi), "soft_tissue", within=("fat",))


def close_fat_planes(torso: TorsoPainter) -> None:
    """A slim patient: unlabelled fat in the abdominal cavity narrower than
    ``patient.fat_plane_mm`` between two structures (organs, vessels, bowel, muscle) becomes
    soft tissue, so they touch with no fat plane (a morphological closing by a box about that
    wide, in whole voxels; fat in a narrow concavity of one structure closes alike). Only in
    the upper abdomen, from below the kidneys to the diaphragm, where the organs the network
    must tell apart lie."""
    width, b, c = torso.patient.fat_plane_mm, torso.body, torso.canvas
    if not width:
        return
    lo = np.array([-140.0 * b.w, float(b.y_spine(0.0)) - 170.0 * b.d, -110.0 * b.h])
    hi = np.array([140.0 * b.w, float(b.y_spine(0.0)) + 40.0 * b.d, b.z_dome_right])
    box = c.box(lo, hi)
    if box is None:
        return
    size = [1 + 2 * round(0.5 * width / step) for step in c.grid.spacing[::-1]]
    if max(size) == 1:
        return
    fat = c.tissue[box] == TISSUE_ID["fat"]
    structure = (~fat & (c.tissue[box] != TISSUE_ID["air"])).view(np.uint8)
    closed = ndi.minimum_filter(ndi.maximum_filter(structure, size), size).astype(bool)
    gaps = closed & fat & torso.cavity[box] & (c.organ[box] == 0)
    c.tissue[box][gaps] = TISSUE_ID["soft_tissue"]
