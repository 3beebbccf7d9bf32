"""The abdominal and pelvic organs: colon and small bowel, liver, gallbladder, spleen, stomach
(in the patient's state), pancreas (fatty in some patients) with the duodenum, kidneys, bladder
and the pelvic soft tissue.

Each organ is a random primitive placed on the :class:`~.body.Body` (mm), painted *within* the
free abdominal space (fat, bowel) so that it pushes the bowel aside and stops at the organs
painted before it. The upper-abdominal organs move with the breathing shift and stay under the
diaphragm.
"""

from __future__ import annotations

from typing import Callable, cast

import numpy as np
from scipy.special import ndtri

from .geometry import frame, unit
from .labels import ORGAN_ID, TISSUE_ID
from .painter import TorsoPainter
from .patient import StomachState
from .shapes import Shape, View, ellipsoid, random_walk, solid, tube

#: The tissues of the abdominal cavity a solid organ may be painted over: fat, bowel and the
#: other abdominal organs (never muscle, bone or lung).
_ABDOMINAL_SPACE = ("fat", "bowel_wall", "bowel_content", "gas", "liver", "liver_vessel",
                    "liver_lesion", "spleen", "stomach_wall", "gastric_content", "pancreas",
                    "bile", "kidney_cortex", "kidney_medulla", "urine", "soft_tissue",
                    "portal_blood", "caval_blood", "arterial_blood")
#: Level of the unit-SD texture field above which food holds gas bubbles (about 1.4 %).
_FOOD_GAS_LEVEL = 2.2


def paint_bowel(torso: TorsoPainter) -> None:
    """Colon along its frame, then small-bowel loops as random walks through the free space."""
    b, c, rng = torso.body, torso.canvas, torso.rng
    up = dict(upper_abdomen=True)
    colon = [b.p(-90, 0, -130), b.p(-102, 15, -60), b.p(-98, -5, 5, **up),
             b.p(-60, -55, 0, **up), b.p(0, -72, -25), b.p(55, -55, 15, **up),
             b.p(95, 15, 50, **up), b.p(105, 35, 0), b.p(102, 30, -100),
             b.p(70, 0, -150), b.p(35, 20, -185), b.p(5, 55, -215), b.p(0, 62, -265),
             b.p(0, 50, -305)]
    radius = rng.uniform(17, 26) * np.ones(len(colon))
    radius[-3:] *= 0.8
    c.paint(tube(colon, radius + 2.5), "bowel_wall", within=("fat",))
    c.paint(tube(colon, radius), "bowel_content", within=("bowel_wall",))
    texture = torso.field("texture", 4.0)
    bubbles = rng.uniform(0.6, 1.6)
    y_gas = b.p(0, -50, 0)[1] + rng.uniform(-20, 40)
    lo, hi = np.min(colon, axis=0) - 30, np.max(colon, axis=0) + 30
    c.paint(solid(lo, hi, lambda v: (texture[v.box] > bubbles) | (v.y < y_gas)), "gas",
            within=("bowel_content",))

    centre = b.p(-5, -30, -95)
    semi = np.array([85 * b.w, 55 * b.d, 80 * b.h])
    for _ in range(int(rng.integers(14, 20))):
        path = random_walk(rng, centre + rng.uniform(-0.8, 0.8, 3) * semi, centre, semi,
                           steps=int(rng.integers(30, 50)), step_mm=10.0)
        r = rng.uniform(9.0, 14.0)
        c.paint(tube(path, r + 2.5, 10.0), "bowel_wall", within=("fat",))
        c.paint(tube(path, r, 10.0), "bowel_content", within=("bowel_wall",))
        if rng.random() < 0.2:
            c.paint(tube(path[: len(path) // 3], r, 10.0), "gas", within=("bowel_content",))


def paint_liver(torso: TorsoPainter) -> None:
    """Right lobe, left lobe and caudate lobe, with vessels and occasional lesions; in
    hepatomegaly every lobe grows by ``variants.liver_scale``."""
    b, c = torso.body, torso.canvas
    up = dict(upper_abdomen=True)
    grow = torso.variants.liver_scale
    lobes = [
        ellipsoid(b.p(-72, -5, 55, 6, **up), b.scale([74, 88, 86]) * grow),
        ellipsoid(b.p(15, -48, 78, 6, **up), b.scale([60, 38, 34], 0.2) * grow),
        ellipsoid(b.p(-15, 22, 62, 4, **up), b.scale([18, 22, 30]) * grow),
    ]
    space = ("fat", "bowel_wall", "bowel_content", "gas")
    tip = b.p(-130, 0, -30 - 150 * (grow - 1), upper_abdomen=True)  # a big liver reaches lower
    slope = torso.rng.uniform(0.45, 0.75)

    bend = torso.rng.uniform(0.002, 0.006)

    def wedge(v: View) -> np.ndarray:
        """Above the visceral surface, which rises to the left and sags posteriorly."""
        floor = tip[2] + slope * (v.x - tip[0]) - bend * (v.y - tip[1]) ** 2
        return torso.under_diaphragm(v) & (v.z > floor)
    for lobe in lobes:
        c.paint(lobe.where(wedge), "liver", "liver", within=space)
    box = c.box(np.array([-250, -250, -150.0]), np.array([150, 150, 250.0]))
    if box is not None:
        liver = c.tissue[box] == TISSUE_ID["liver"]
        f1 = torso.field("sheets", 9.0)[box]
        f2 = torso.field("texture", 4.0)[box]
        vessel = liver & (np.abs(f1) < 0.15) & (np.abs(f2) < 0.45)
        c.tissue[box][vessel] = TISSUE_ID["liver_vessel"]
    for _ in range(torso.rng.poisson(1.5) if torso.rng.random() < 0.35 else 0):
        centre = b.p(-70, -10, 50, 30, **up)
        c.paint(ellipsoid(centre, [torso.rng.uniform(5, 20)] * 3), "liver_lesion", "liver",
                within=("liver", "liver_vessel"))


def paint_gallbladder(torso: TorsoPainter) -> None:
    """A tilted ellipsoid under the liver: a 2 mm wall around bile (none after
    cholecystectomy: the fossa keeps its fat and bowel)."""
    b, c = torso.body, torso.canvas
    axes = frame(unit([0.15, -0.45, -0.88]) + torso.rng.normal(0, 0.1, 3), [1, 0, 0])
    size = torso.rng.uniform(0.75, 1.25)
    centre = b.p(-45, -50, 10, 6, upper_abdomen=True)
    semi = np.array([38, 15, 15]) * size
    torso.gallbladder_centre = centre
    if not torso.variants.gallbladder:  # drawn anyway: the anatomy stream stays aligned
        return
    c.paint(ellipsoid(centre, semi, axes), "bowel_wall", "gallbladder",
            within=_ABDOMINAL_SPACE)
    c.paint(ellipsoid(centre, semi - 2.0, axes), "bile", "gallbladder",
            within=("bowel_wall",))


def _bulky_back(w: np.ndarray) -> np.ndarray:
    """Position along the spleen's arc (0 its anterior end, 1 its posterior one) as the
    thickness profile ``sin(pi w)`` reads it: the front half rises as before, the thickest part
    holds from the middle to 70 % of the way back, and only the last 30 % tapers. The posterior
    extremity is the bulky one and reaches to about 4 cm from the midline at T10 (*Gray's
    Anatomy*, 41st ed., the spleen; docs/phantoms.md, "What fills the gutter")."""
    return np.where(w <= 0.5, w, np.where(w <= 0.7, 0.5, 0.5 + (w - 0.7) / 0.6))


def paint_spleen(torso: TorsoPainter) -> None:
    """A crescent against the left posterolateral ribs (not an ellipsoid): a shell under the
    inner abdominal wall whose thickness (mm) peaks over the back half of its arc and in the
    upper half, with a concave visceral surface facing the stomach and, below, the left kidney.
    Its long axis follows the ribs: the bulky upper pole lies posterior, the tapering lower pole
    further forward. Adult volumes 0.1-0.5 L (tested), spanning about T10-L1 under the left
    diaphragm dome; in splenomegaly thicker and taller by ``variants.spleen_scale``, reaching
    further below the ribs."""
    b, c, rng = torso.body, torso.canvas, torso.rng
    grow = torso.variants.spleen_scale
    thickness = rng.uniform(35.0, 65.0) * b.w * grow  # mm, at the thickest point
    height = rng.uniform(85.0, 135.0) * b.h * grow  # cranio-caudal extent, mm
    z_mid = b.z_dome_left - 0.48 * height + rng.normal(0, 6)
    z_low, z_high = z_mid - height / 2, z_mid + height / 2
    # arc of the crescent, angles in the axial plane from the patient's left (+x) towards
    # posterior (+y), in degrees
    arc_low = rng.uniform(-35.0, -10.0)
    arc_high = rng.uniform(55.0, 80.0)
    twist = rng.uniform(0.0, 0.3)  # degrees of arc per mm of height: the upper pole posterior
    peak = rng.uniform(0.55, 0.75)  # height (0 bottom, 1 top) of the thickest level
    gap = rng.uniform(1.0, 6.0)  # mm between the inner wall and the splenic capsule

    def crescent(v: View) -> np.ndarray:
        a, bb, yc = b.wall_ellipse(v.z)
        cav = np.maximum(b.cavity_scale(v.z), 1e-3)
        semi_x, semi_y = (a - b.wall) * cav, (bb - b.wall) * cav
        dy = v.y - yc
        rho = np.sqrt(v.x * v.x + dy * dy) + 1e-3
        r = np.sqrt((v.x / semi_x) ** 2 + (dy / semi_y) ** 2)
        depth = rho * (1.0 / np.maximum(r, 1e-3) - 1.0) - gap  # mm inside the inner wall
        angle = np.degrees(np.arctan2(dy, v.x)) - twist * (v.z - z_mid)
        u = np.clip((v.z - z_low) / height, 0.0, 1.0) ** (np.log(0.5) / np.log(peak))
        w = _bulky_back(np.clip((angle - arc_low) / (arc_high - arc_low), 0.0, 1.0))
        profile = (np.clip(np.sin(np.pi * u), 0.0, None) ** 0.7
                   * np.clip(np.sin(np.pi * w), 0.0, None) ** 0.6)
        return (depth > 0) & (depth < thickness * profile) & (v.x > 0)
    lo = [0.0, -160.0 * b.d, z_low]
    hi = [260.0 * b.w, 200.0 * b.d, z_high]
    c.paint(solid(lo, hi, crescent).where(torso.under_diaphragm), "spleen", "spleen",
            within=_ABDOMINAL_SPACE)


def paint_stomach(torso: TorsoPainter) -> None:
    """J-shaped tube from the fundus to the pylorus: wall, contents, and a gas cap under an
    air-fluid level, in the patient's state (``patient.stomach``): collapsed (narrow, thick
    rugal folds filling most of the lumen), food-filled (mottled food with gas bubbles and fat
    flecks) or distended (wide, thin wall, deeper gas). All of it is the stomach."""
    b, c = torso.body, torso.canvas
    state = torso.patient.stomach
    up = dict(upper_abdomen=True)
    path = [b.p(45, 25, 108, 5, **up), b.p(60, 5, 85, 5, **up), b.p(62, -30, 52, 5, **up),
            b.p(45, -55, 20, 5, **up), b.p(15, -65, 4, 5, **up), b.p(-15, -58, 10, 4, **up),
            b.p(-32, -45, 15, 3, **up)]
    radius = np.array([36, 38, 34, 28, 20, 14, 10]) * torso.rng.uniform(0.6, 1.15) \
        * state.calibre
    wall = [s.where(torso.under_diaphragm) for s in tube(path, radius + state.wall_mm)]
    beside_spleen = tuple(t for t in _ABDOMINAL_SPACE if t != "spleen")  # it fills the gap
    c.paint(wall, "stomach_wall", "stomach", within=beside_spleen)
    c.paint(tube(path, radius), "gastric_content", "stomach", within=("stomach_wall",))
    depth = max(torso.rng.uniform(0.0, 0.35), state.gas_depth)
    lo, hi = np.array(path).min(0) - 45, np.array(path).max(0) + 45
    for y_level, z_low, z_high in _gas_levels(path, radius, depth):
        c.paint(solid(lo, hi, _in_front_of(y_level, z_low, z_high)), "gas", "stomach",
                within=("gastric_content",))
    if state.name in ("collapsed", "food"):
        _fill_stomach(torso, state, lo, hi)


def _gas_levels(path: list[np.ndarray], radius: np.ndarray, depth: float
                ) -> list[tuple[float, float, float]]:
    """The supine stomach's gas: swallowed air rises to the front of the fundus-and-body and
    of the antrum, each above its own air-fluid level, ``depth`` of its mean diameter behind
    its most anterior wall (y grows backwards). One level for the whole J would put gas in the
    antrum only, the most anterior part; a patient's body holds its own gas at the levels of
    the spleen. Returns (y level, lowest z, highest z) per part (mm); the parts meet halfway
    between the body's last point and the antrum's first."""
    split = 3  # path[:3]: fundus and body; path[3:]: antrum and pylorus
    z_split = 0.5 * (path[split - 1][2] + path[split][2])
    levels = []
    for part, z_low, z_high in ((slice(0, split), z_split, np.inf),
                                (slice(split, None), -np.inf, z_split)):
        points, radii = path[part], radius[part]
        front = min(p[1] - r for p, r in zip(points, radii))
        levels.append((float(front + depth * 2 * radii.mean()), float(z_low), float(z_high)))
    return levels


def _in_front_of(y_level: float, z_low: float, z_high: float) -> Callable[[View], np.ndarray]:
    """The voxels in front of ``y_level`` (y grows backwards) between ``z_low`` and ``z_high``
    (mm)."""
    return lambda v: (v.y < y_level) & (v.z >= z_low) & (v.z < z_high)


def _fill_stomach(torso: TorsoPainter, state: StomachState, lo: np.ndarray, hi: np.ndarray
                  ) -> None:
    """Collapsed: rugal folds (wall) over ``state.filling`` of the lumen, leaving slits of
    contents and gas. Food: mottled solid food (chyme, the bowel contents' density) over
    ``state.filling`` of the contents, with gas bubbles in it. Levels of the unit-SD texture
    field set the shares; only the stomach's voxels change, and they stay the stomach."""
    c = torso.canvas
    texture = torso.field("texture", 4.0)
    stomach = ORGAN_ID["stomach"]

    def where(low: float, high: float) -> Shape:
        return solid(lo, hi, lambda v: (c.organ[v.box] == stomach) & (texture[v.box] > low)
                     & (texture[v.box] < high))
    if state.name == "collapsed":
        c.paint(where(-np.inf, float(ndtri(state.filling))), "stomach_wall", "stomach",
                within=("gastric_content", "gas"))
        return
    c.paint(where(float(ndtri(1.0 - state.filling)), np.inf), "bowel_content", "stomach",
            within=("gastric_content",))
    c.paint(where(_FOOD_GAS_LEVEL, np.inf), "gas", "stomach", within=("bowel_content",))


def paint_pancreas(torso: TorsoPainter) -> None:
    """Head to tail along the splenic vein, with fatty clefts between the lobules, and the
    duodenal C-loop around the head."""
    b, c = torso.body, torso.canvas
    path = [b.p(-38, -5, -12, 4), b.p(-20, -22, 0, 3), b.p(5, -28, 8, 3),
            b.p(40, -12, 20, 4), b.p(68, 12, 30, 4), b.p(84, 26, 38, 4)]
    radius = np.array([18, 14, 12, 11, 10, 8]) * torso.rng.uniform(0.8, 1.2)
    c.paint(tube(path, radius, 6.0), "pancreas", "pancreas", within=_ABDOMINAL_SPACE)
    # fatty clefts between the lobules
    lo = np.array(path).min(0) - 30
    hi = np.array(path).max(0) + 30
    torso.pancreas_box = (lo, hi)
    texture = torso.field("texture", 4.0)
    level = torso.rng.uniform(1.0, 2.0)
    c.paint(solid(lo, hi, lambda v: texture[v.box] > level), "fat", "none",
            within=("pancreas",))
    # duodenal C-loop around the head
    duodenum = [b.p(-32, -45, 15), b.p(-52, -25, 5), b.p(-55, -8, -28), b.p(-32, 0, -48),
                b.p(0, -8, -48), b.p(22, -18, -35)]
    c.paint(tube(duodenum, 13.0), "bowel_wall", within=("fat", "bowel_wall", "bowel_content"))
    c.paint(tube(duodenum, 10.0), "bowel_content", within=("bowel_wall",))


def paint_pancreatic_fat(torso: TorsoPainter) -> None:
    """A fatty pancreas's fat lobules (``patient.pancreas_lobule_level`` of the texture field):
    fat inside the gland's outline, so labelled as the pancreas. Painted last, as every other
    painter takes fat for free space."""
    level = torso.patient.pancreas_lobule_level
    if level == -np.inf:
        return
    texture = torso.field("texture", 4.0)
    torso.canvas.paint(solid(*torso.pancreas_box, lambda v: texture[v.box] < level), "fat",
                       "pancreas", within=("pancreas",))


def paint_kidneys(torso: TorsoPainter) -> None:
    """Retroperitoneal kidneys beside the spine: perirenal fat, cortex, medulla, sinus; the
    variants may remove one (its fossa keeps fat and bowel) and add simple cysts."""
    b, c = torso.body, torso.canvas
    present = []
    for side, organ, z in ((-1, "right_kidney", 0.0), (1, "left_kidney", 18.0)):
        centre = b.p(62 * side, 0, z - b.kidney_drop, 5, upper_abdomen=False)
        centre[1] = b.y_spine(centre[2]) + 12.0 * b.d + torso.rng.normal(0, 4)
        centre[2] += 0.5 * b.breath
        long_axis = unit([-0.25 * side, 0.3, 1.0]) + torso.rng.normal(0, 0.08, 3)
        hilum = np.array([-0.75 * side, -0.65, 0.0])
        axes = frame(long_axis, hilum)
        semi = b.scale([55, 27, 25], 0.12)
        if organ == torso.variants.missing_kidney:  # drawn anyway: the stream stays aligned
            continue
        present.append((organ, centre, semi, axes))
        c.paint(ellipsoid(centre, semi + 10.0, axes), "fat",
                within=("fat", "bowel_wall", "bowel_content", "gas"))
        c.paint(ellipsoid(centre, semi, axes), "kidney_cortex", organ)
        c.paint(ellipsoid(centre, semi * [0.8, 0.62, 0.62], axes), "kidney_medulla",
                organ)
        sinus = centre + axes[:, 1] * semi[1] * 0.75
        c.paint(ellipsoid(sinus, semi * [0.45, 0.45, 0.4], axes), "fat")
        c.paint(ellipsoid(sinus - axes[:, 1] * 4, semi * [0.3, 0.22, 0.22], axes),
                "urine")
    _paint_renal_cysts(torso, present)


def _paint_renal_cysts(torso: TorsoPainter, kidneys: list) -> None:
    """``variants.renal_cysts`` simple cysts (water density, 5-25 mm radius) centred in the
    cortex of a kidney present, bulging out of it when large (exophytic), labelled as that
    kidney. Their details come from ``rng_variants``."""
    rng = cast(np.random.Generator, torso.rng_variants)  # drawn variants come with their rng
    for _ in range(torso.variants.renal_cysts if kidneys else 0):
        organ, centre, semi, axes = kidneys[int(rng.integers(len(kidneys)))]
        direction = unit(rng.normal(0, 1, 3))
        radius = float(rng.uniform(5.0, 25.0))
        at = centre + axes @ (direction * semi * 0.85)  # near the surface, inside the cortex
        torso.canvas.paint(ellipsoid(at, [radius] * 3), "urine", organ,
                           within=("kidney_cortex", "kidney_medulla", "fat", "urine"))


def paint_pelvic_organs(torso: TorsoPainter) -> None:
    """The bladder (filled to a random degree) and the soft tissue of the pelvic floor."""
    b, c = torso.body, torso.canvas
    fill = torso.rng.uniform(0.4, 1.3)
    bladder = ellipsoid(b.p(0, -50, -245 + 15 * fill, 5), b.scale([45, 35, 32]) * fill)
    c.paint(bladder, "urine", within=_ABDOMINAL_SPACE)
    c.paint(ellipsoid(b.p(0, 5, -285, 4), b.scale([22, 20, 22])), "soft_tissue",
            within=_ABDOMINAL_SPACE)
