"""What a patient shows where a phantom-trained network looks: the tissue that touches the aorta,
the cava, the pancreas and the stomach, the stomach's state, and a fatty pancreas.

A network trained on phantoms whose unenhanced aorta is a round thing in fat, whose cava is a
round tube inside the liver and whose pancreas lies in clean fat loses all three on patients
(docs/phantoms.md, "What the cascade's stage 2 relies on"). Patients show otherwise, and each
case here draws, independently and at its own share:

=====================  =======  =================================================================
detail                 drawn    what (sources: docs/phantoms.md, "Patients where it matters")
=====================  =======  =================================================================
diaphragmatic crura    90 %     muscle bands 3-8 mm thick (the right one 1.3x) hugging the aorta
                                from the hiatus down to L2 (left) and L3 (right), touching the
                                vertebral bodies; always there in patients, left out in a few
                                cases so that the old look stays covered
flattened cava         60 %     the IVC's axial section an ellipse 1.2-3.3x wider than deep
lymph nodes            60 %     1-6 oval nodes of 5-10 mm short axis (retrocrural 3-6 mm), para-
                                aortic, aortocaval, portocaval, retrocrural
slim patient           30 %     fat planes up to 2-6 mm wide closed by soft tissue: organs,
                                vessels and bowel touch with no fat between them
stomach state          75 %     collapsed (thick rugal wall, 25 %), food-filled (25 %), distended
                                with water and an air-fluid level (25 %); else as drawn before
fatty pancreas         25 %     15-55 % of the gland fat, partly as lobules between the acini,
                                partly mixed into its attenuation (down to about -35 HU unenhanced)
mesenteric vessels     85 %     1-4 mm veins and arteries through the abdominal fat (the
                                gastroepiploic, short gastric and mesenteric arcades), so that fat
                                is mottled as in patients, not clean (:mod:`.mesentery`)
=====================  =======  =================================================================

None of these changes what an organ is: crura, nodes, fat vessels and closed fat planes replace unlabelled
tissue only (a crus also the liver's edge where a phantom liver reaches the aorta); a collapsed,
full or distended stomach is still the stomach (wall, folds, contents and gas), a fatty
pancreas still the pancreas (its fat lobules inside the gland's outline, as annotators draw
it); a flattened cava is the cava. The details come from their own random stream with a fixed
number of draws, so the anatomy's stream and every earlier draw of a case stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

__all__ = ["PatientDetail", "NO_PATIENT_DETAIL", "draw_patient_detail", "STOMACH_STATES",
           "LYMPH_NODE_STATIONS"]

CRURA = 0.9
FLAT_CAVA = 0.6
LYMPH_NODES = 0.6
SLIM = 0.3
FATTY_PANCREAS = 0.25
MESENTERIC_VESSELS = 0.85
#: Stomach states and their shares; "resting" is the stomach as drawn before (4 mm wall,
#: 0.6-1.15x the reference calibre, contents as :func:`.appearance.tissue_means` draws them).
STOMACH_STATES = {"resting": 0.25, "collapsed": 0.25, "food": 0.25, "distended": 0.25}
#: Lymph node stations around the great vessels: (share of nodes, largest normal short axis in
#: mm; Dorfman et al. 1991: retrocrural 6, upper para-aortic 9, portocaval 10, lower para-aortic
#: 11 mm, so 10 mm for the para-aortic and aortocaval nodes here).
LYMPH_NODE_STATIONS = {"para-aortic": (0.35, 10.0), "aortocaval": (0.25, 10.0),
                       "portocaval": (0.25, 10.0), "retrocrural": (0.15, 6.0)}
_MAX_NODES = 6


@dataclass(frozen=True)
class StomachState:
    """The stomach's state: calibre factor on the drawn one, wall thickness (mm), and what fills
    it."""

    name: str = "resting"
    #: Factor on the drawn lumen calibre (collapsed < 1 < distended).
    calibre: float = 1.0
    wall_mm: float = 4.0
    #: Collapsed: share of the small lumen filled by rugal folds; food: share of the contents
    #: that is solid food (mottled, with gas bubbles and fat flecks).
    filling: float = 0.0
    #: Distended: how deep (share of the diameter) the gas above the air-fluid level reaches.
    gas_depth: float = 0.0


@dataclass(frozen=True)
class PatientDetail:
    """One case's details around the great vessels, the pancreas and the stomach (defaults:
    none, the phantom as drawn before them)."""

    #: Thickness (mm) of the left crus (the right one is 1.3x); 0: no crura.
    crus_mm: float = 0.0
    #: Fat (mm) between the aorta's wall and the crura; 0: they touch.
    crus_gap_mm: float = 0.0
    #: The cava's depth over its width (1: round).
    cava_flatness: float = 1.0
    #: Angle (radians) of the flattened cava's long axis from left-right.
    cava_angle: float = 0.0
    #: Lymph nodes: (station, position along it 0-1, angle around the vessel in radians,
    #: short axis mm, long axis over short axis).
    lymph_nodes: tuple[tuple[str, float, float, float, float], ...] = ()
    #: Fat planes narrower than this (mm) are closed by soft tissue; 0: fat as painted.
    fat_plane_mm: float = 0.0
    stomach: StomachState = StomachState()
    #: Share of the pancreas that is fat (0: none): ``pancreas_lobules`` of its voxels as fat
    #: lobules, the rest mixed into the parenchyma's attenuation.
    pancreas_fat: float = 0.0
    pancreas_lobules: float = 0.0
    #: Unit-normal level below which the pancreas's texture field is a fat lobule.
    pancreas_lobule_level: float = float("-inf")
    #: Water (HU) a distended stomach was filled with.
    water_hu: float = 0.0
    #: Half-width (unit SD) of the bands around the two fields' zero sheets whose crossings are
    #: the fat's small vessels (:mod:`.mesentery`); 0: clean fat.
    mesenteric_vessels: float = 0.0

    @property
    def pancreas_parenchyma_fat(self) -> float:
        """Fat share mixed into the parenchyma outside the lobules, so that the gland's mean is
        (1 - pancreas_fat) x parenchyma + pancreas_fat x fat."""
        if self.pancreas_lobules >= 1.0:
            return 0.0
        return (self.pancreas_fat - self.pancreas_lobules) / (1.0 - self.pancreas_lobules)

    def names(self) -> list[str]:
        """The details present, for a phantom's ``info["patient"]``."""
        found = []
        if self.crus_mm:
            found.append("crura")
        if self.cava_flatness < 1.0:
            found.append("flat_cava")
        if self.lymph_nodes:
            found.append("lymph_nodes")
        if self.fat_plane_mm:
            found.append("slim")
        if self.stomach.name != "resting":
            found.append(f"stomach_{self.stomach.name}")
        if self.pancreas_fat:
            found.append("fatty_pancreas")
        if self.mesenteric_vessels:
            found.append("mesenteric_vessels")
        return found


NO_PATIENT_DETAIL = PatientDetail()


def _stomach_state(rng: np.random.Generator) -> StomachState:
    """One stomach state at the shares of :data:`STOMACH_STATES`; always six draws. Calibres and
    walls: a collapsed stomach has a 6-12 mm folded wall, a distended one a 2-3 mm wall
    (docs/phantoms.md)."""
    u = [float(v) for v in rng.random(5)]
    name = str(rng.choice(list(STOMACH_STATES), p=list(STOMACH_STATES.values())))
    if name == "collapsed":
        return StomachState(name, 0.35 + 0.2 * u[0], 6.0 + 6.0 * u[1], 0.4 + 0.4 * u[2])
    if name == "food":
        return StomachState(name, 0.9 + 0.3 * u[0], 3.0 + 2.0 * u[1], 0.35 + 0.45 * u[3])
    if name == "distended":
        return StomachState(name, 1.2 + 0.25 * u[0], 2.0 + 1.0 * u[1], gas_depth=0.2 + 0.6 * u[4])
    return StomachState()


def _lymph_nodes(rng: np.random.Generator) -> tuple[tuple[str, float, float, float, float], ...]:
    """1 to :data:`_MAX_NODES` nodes over the stations; always the same number of draws."""
    count = int(rng.integers(1, _MAX_NODES + 1))
    stations = list(LYMPH_NODE_STATIONS)
    shares = [share for share, _ in LYMPH_NODE_STATIONS.values()]
    nodes = []
    for _ in range(_MAX_NODES):
        station = stations[int(rng.choice(len(stations), p=shares))]
        largest = LYMPH_NODE_STATIONS[station][1]
        short = float(rng.uniform(0.5 * largest, largest)) if station == "retrocrural" \
            else float(rng.uniform(5.0, largest))
        nodes.append((station, float(rng.random()), float(rng.uniform(-1.0, 1.0)), short,
                      float(rng.uniform(1.2, 2.0))))
    return tuple(nodes[:count])


def draw_patient_detail(rng: np.random.Generator) -> PatientDetail:
    """One case's details at the shares above, independently of each other. Always the same
    number of draws, so that the stream stays aligned whatever is drawn."""
    u = rng.random(5)
    crus, gap = float(rng.uniform(3.0, 8.0)), float(rng.uniform(0.0, 2.0))
    flatness, angle = float(rng.uniform(0.3, 0.85)), float(rng.uniform(-0.35, 0.35))
    nodes = _lymph_nodes(rng)
    fat_plane = float(rng.uniform(2.0, 6.0))
    stomach = _stomach_state(rng)
    fat = float(rng.uniform(0.15, 0.55))
    lobules = fat * float(rng.uniform(0.3, 0.7))
    water = float(rng.uniform(-5.0, 15.0))
    fatty = bool(u[4] < FATTY_PANCREAS)
    # drawn after every earlier detail, so that those stay as they were drawn before it
    fat_vessels, vessel_width = float(rng.random()), float(rng.uniform(0.18, 0.35))
    return PatientDetail(
        crus_mm=crus if u[0] < CRURA else 0.0, crus_gap_mm=gap,
        cava_flatness=flatness if u[1] < FLAT_CAVA else 1.0, cava_angle=angle,
        lymph_nodes=nodes if u[2] < LYMPH_NODES else (),
        fat_plane_mm=fat_plane if u[3] < SLIM else 0.0, stomach=stomach,
        pancreas_fat=fat if fatty else 0.0, pancreas_lobules=lobules if fatty else 0.0,
        pancreas_lobule_level=float(ndtri(lobules)) if fatty else float("-inf"),
        water_hu=water,
        mesenteric_vessels=vessel_width if fat_vessels < MESENTERIC_VESSELS else 0.0)
