"""The torso kinds (abdomen-ct, body-ct, heart-mr): one body, the kind's field of view on it,
and every organ painted in anatomical order.

Order matters: later painters overwrite earlier ones within the tissues they are allowed to
replace, so the wall and cavities come first, then the abdominal organs, the vessels with the
lymph nodes and crura around them, the heart and mediastinum, and the bones; a slim patient's
fat planes close once every structure is in place, and a fatty pancreas's fat lobules and the
fat's small vessels come last (every other painter takes fat for free space). Fields of view
are in millimetres; the abdominal CT starts 15-120 mm above the right diaphragm dome and ends
up to 170 mm below the iliac crest.
"""

from __future__ import annotations

import numpy as np

from .abdomen import (paint_bowel, paint_gallbladder, paint_kidneys, paint_liver, paint_pancreas,
                      paint_pancreatic_fat, paint_pelvic_organs, paint_spleen, paint_stomach)
from .acquisition import Scene, choose_acquisition
from .body import Body
from .canvas import Canvas
from .fields import smooth_displacement
from .findings import paint_ascites, paint_implants
from .head_neck import paint_head, paint_neck
from .heart import paint_heart
from .mesentery import paint_mesenteric_vessels
from .painter import TorsoPainter
from .patient import NO_PATIENT_DETAIL, PatientDetail
from .retroperitoneum import close_fat_planes, paint_crura, paint_lymph_nodes
from .skeleton import paint_pelvis_and_leg_bones, paint_psoas, paint_ribs_and_shoulders, paint_spine
from .thorax import paint_airways_and_oesophagus, paint_superior_mediastinum
from .variants import NO_AORTIC_WALL, NO_VARIANTS, AorticWall, Variants
from .vessels import paint_abdominal_vessels
from .wall import paint_body_wall

_ANATOMICAL_ORDER = (
    paint_body_wall, paint_superior_mediastinum, paint_bowel, paint_liver, paint_gallbladder,
    paint_spleen, paint_stomach, paint_pancreas, paint_kidneys, paint_pelvic_organs,
    paint_abdominal_vessels, paint_lymph_nodes, paint_crura, paint_ascites, paint_heart,
    paint_airways_and_oesophagus, paint_neck, paint_psoas, paint_spine, paint_ribs_and_shoulders,
    paint_pelvis_and_leg_bones, close_fat_planes, paint_implants, paint_pancreatic_fat,
    paint_mesenteric_vessels,
)


def paint_torso(torso: TorsoPainter, with_head: bool) -> None:
    """Paint every system of the body in anatomical order (the head only ``with_head``)."""
    for paint in _ANATOMICAL_ORDER:
        paint(torso)
    if with_head:
        paint_head(torso)


def torso_scene(kind: str, rng_geometry: np.random.Generator, rng_anatomy: np.random.Generator,
                shape: tuple[int, int, int] | None, spacing: tuple[float, float, float] | None,
                fov_cutoff: bool, variants: Variants = NO_VARIANTS,
                rng_variants: np.random.Generator | None = None,
                aortic_wall: AorticWall = NO_AORTIC_WALL,
                patient: PatientDetail = NO_PATIENT_DETAIL) -> Scene:
    """Build one body, choose the kind's field of view on it, and paint it (with
    ``variants``, whose details ``rng_variants`` draws, ``aortic_wall`` and ``patient``)."""
    body = Body(rng_anatomy)
    width = 2 * (150 * body.w + body.fat + body.arm_extent)
    crop = (0.7, 0.95) if fov_cutoff else (1.05, 1.3)
    if kind == "abdomen-ct":
        top = body.z_dome_right + rng_geometry.uniform(15, 120)  # some start in the chest
        bottom = body.z_iliac_crest - rng_geometry.uniform(0, 170)
        fov = ((width * crop[0], width * crop[1]),) * 2 + ((top - bottom, top - bottom),)
        centre = np.array([0.0, 0.0, (top + bottom) / 2])
        # in-plane pixels of at most ~3.2 mm, as scanners reconstruct (wide fields hold the arms)
        pixels = int(np.clip(np.ceil(width * crop[1] / 3.2 / 8) * 8, 128, 176))
        default_shape = (112, pixels, pixels)
        with_head = False
    elif kind == "body-ct":
        with_head = rng_geometry.random() < 0.3
        top = (body.z_skull_base + 200 * body.h) if with_head else \
            body.z_skull_base + rng_geometry.uniform(-40, 20)
        bottom = rng_geometry.uniform(-700, -560) * body.h
        fov = ((width * crop[0], width * crop[1]),) * 2 + ((top - bottom, top - bottom),)
        centre = np.array([0.0, 0.0, (top + bottom) / 2])
        default_shape = (192, 96, 96)
    else:  # heart-mr
        heart = body.p(18, -12, 142) + np.array([15.0, -15.0, -15.0 + 0.4 * body.breath])
        fov_mm = (130, 190) if fov_cutoff else (160, 220)
        fov = (fov_mm, fov_mm, fov_mm)
        centre = heart + rng_geometry.normal(0, 8, 3)
        default_shape = (112, 112, 112)
        with_head = False
    if fov_cutoff:
        centre = centre + rng_geometry.uniform(-0.15, 0.15, 3) * np.array(
            [fov[0][1], fov[1][1], fov[2][1]])
    acquisition = choose_acquisition(rng_geometry, default_shape, fov, centre, shape, spacing)
    render = acquisition.grid.subdivided(acquisition.subslices)
    amplitude = rng_anatomy.uniform(2.0, 7.0)
    deformation = smooth_displacement(rng_anatomy, render, amplitude, 70.0,
                                      (420.0, 420.0, 1200.0))
    textures = np.random.default_rng(rng_anatomy.integers(2 ** 63))  # grid-sized draws
    canvas = Canvas(render, deformation)
    paint_torso(TorsoPainter(body, canvas, rng_anatomy, textures, variants, rng_variants,
                             aortic_wall, patient), with_head)
    return Scene(acquisition, canvas.tissue, canvas.organ, body.region_of,
                 arms_down=body.arms_down)
