"""What the torso's organ painters share while they paint one body onto one canvas.

The painters (:mod:`.wall`, :mod:`.abdomen`, :mod:`.vessels`, :mod:`.heart`, :mod:`.thorax`,
:mod:`.head_neck`, :mod:`.skeleton`) are functions of a :class:`TorsoPainter`; :mod:`.torso`
calls them in anatomical order. Two random streams keep a case's anatomy independent of its
grid: ``rng`` makes a fixed number of draws whatever the grid, ``textures`` the grid-sized ones.
"""

from __future__ import annotations

import numpy as np

from .body import Body
from .canvas import Canvas
from .fields import noise_field
from .patient import NO_PATIENT_DETAIL, PatientDetail
from .shapes import View
from .variants import NO_AORTIC_WALL, NO_VARIANTS, AorticWall, Variants


class TorsoPainter:
    """One :class:`~.body.Body` being painted onto a :class:`~.canvas.Canvas`."""

    def __init__(self, body: Body, canvas: Canvas, rng: np.random.Generator,
                 textures: np.random.Generator, variants: Variants = NO_VARIANTS,
                 rng_variants: np.random.Generator | None = None,
                 aortic_wall: AorticWall = NO_AORTIC_WALL,
                 patient: PatientDetail = NO_PATIENT_DETAIL):
        """``rng`` draws the anatomy (a fixed number of draws, whatever the grid); ``textures``
        draws the grid-sized random fields (vessels, bowel gas, pancreatic lobulation);
        ``variants`` says what the case has beyond textbook anatomy, and ``rng_variants`` draws
        their details (cyst positions), so that ``rng``'s draws stay the same with or without
        them; ``aortic_wall`` is the aorta's wall and plaques and ``patient`` what this patient
        shows around the great vessels, the pancreas and the stomach (each drawn on a stream of
        its own)."""
        self.body = body
        self.patient = patient
        self.aortic_wall = aortic_wall
        self.variants = variants
        self.rng_variants = rng_variants
        self.canvas = canvas
        self.rng = rng
        self.textures = textures
        self.fields: dict[str, np.ndarray] = {}
        self.z_dia = np.zeros(canvas.grid.shape, dtype=np.float32)  # set by paint_body_wall()
        self.cavity = np.zeros(canvas.grid.shape, dtype=bool)  # peritoneal: paint_body_wall()
        self.gallbladder_centre = np.zeros(3)  # mm, set by paint_gallbladder() (its fossa)
        self.pancreas_box = (np.zeros(3), np.zeros(3))  # mm, set by paint_pancreas()
        # Calibres of the great vessels (docs/phantoms.md, sources 8-9): the aorta 19-30 mm at the
        # diaphragm (path radii 10.5-11 mm times this factor; it widens with age), the cava
        # 14-25 mm (narrower than the aorta in most scans)
        self.aorta_scale = rng.uniform(0.9, 1.35)
        self.ivc_radius = 11.0 * rng.uniform(0.65, 1.15)  # mm

    def field(self, name: str, correlation_mm: float) -> np.ndarray:
        """A cached unit-SD random field (for bowel loops, vessels and gas)."""
        if name not in self.fields:
            self.fields[name] = noise_field(self.textures, self.canvas.grid, correlation_mm)
        return self.fields[name]

    def under_diaphragm(self, v: View) -> np.ndarray:
        """Below the diaphragm's upper surface, with 5 mm to spare (the upper abdominal organs)."""
        return v.z < self.z_dia[v.box] - 5.0
