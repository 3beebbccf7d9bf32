"""Findings painted over a finished abdomen: free fluid (ascites) and metal implants (surgical
clips, lumbar pedicle screws with rods), as drawn in :class:`~.variants.Variants`.

Neither is an organ: both replace unlabelled tissue only (the cavity's fat; fat, bowel and
muscle; bone), so a finding changes the image and never the label map (tested). The metal's
streaks are the scanner's doing and are added to the image in :mod:`.artefacts`.
"""

from __future__ import annotations

from typing import cast

import numpy as np
from scipy import ndimage as ndi

from .labels import ORGAN_ID, TISSUE_ID
from .painter import TorsoPainter
from .shapes import capsule
from .skeleton import vertebra_geometry

__all__ = ["paint_ascites", "paint_implants"]

#: Ascites collects in the dependent recesses of a supine patient: around the liver (Morison's
#: pouch included) and the spleen, and along the cavity wall (paracolic gutters, pelvis), where
#: the layer is this fraction of the perihepatic depth.
_WALL_SHARE = 0.6


def paint_ascites(torso: TorsoPainter) -> None:
    """A layer of free fluid ``variants.ascites_mm`` deep (mm) in the peritoneal cavity's fat
    next to the liver and spleen and along the cavity wall. Distances are measured on a grid
    twice as coarse (the layer is at least 4 mm: a 2.5 mm error at most), which keeps a case
    under the generator's time budget."""
    depth = torso.variants.ascites_mm
    if not depth:
        return
    c = torso.canvas
    free = torso.cavity & (c.tissue == TISSUE_ID["fat"])
    if not free.any():
        return
    step = np.asarray(c.grid.spacing[::-1]) * 2  # (k, j, i) mm of the coarse grid
    solid = np.isin(c.organ[::2, ::2, ::2], [ORGAN_ID["liver"], ORGAN_ID["spleen"]])
    from_organs = ndi.distance_transform_edt(~solid, sampling=step) if solid.any() \
        else np.full(solid.shape, np.inf)
    from_wall = ndi.distance_transform_edt(torso.cavity[::2, ::2, ::2], sampling=step)
    fluid_coarse = (from_organs <= depth) | (from_wall <= depth * _WALL_SHARE)
    shape = c.grid.shape
    index = np.ix_(*(np.arange(n) // 2 for n in shape))
    fluid = free & fluid_coarse[index]
    c.tissue[fluid] = TISSUE_ID["ascites"]


def paint_implants(torso: TorsoPainter) -> None:
    """Surgical clips in the gallbladder fossa and pedicle screws with rods, in metal. Their
    details come from ``rng_variants``."""
    variants = torso.variants
    if not (variants.surgical_clips or variants.fixation_levels):
        return
    rng = cast(np.random.Generator, torso.rng_variants)  # drawn variants come with their rng
    b, c = torso.body, torso.canvas
    clip_radius = c.visible_radius_mm(1.0)  # a 1 mm clip, bloomed to about a voxel
    for _ in range(variants.surgical_clips):  # titanium clips, 1 x 7 mm, on the cystic stump
        centre = torso.gallbladder_centre + rng.normal(0, 7, 3)
        direction = rng.normal(0, 1, 3)
        half = direction / max(float(np.linalg.norm(direction)), 1e-6) * 3.5
        c.paint(capsule(centre - half, centre + half, clip_radius, clip_radius), "metal",
                within=("fat", "bowel_wall", "bowel_content", "soft_tissue", "ascites"))
    if not variants.fixation_levels:
        return
    lumbar = [name for name in b.vertebrae if name.startswith("L")]
    first = int(rng.integers(0, len(lumbar) - variants.fixation_levels + 1))
    heads = []
    for name in lumbar[first:first + variants.fixation_levels]:
        zc, yc, rx, ry, canal_y = vertebra_geometry(b, name)
        for side in (-1, 1):  # through the pedicle, converging into the vertebral body
            head = np.array([side * 0.75 * rx + side * 6.0, canal_y + 6.0, zc])
            tip = np.array([side * 0.25 * rx, yc - 0.5 * ry, zc])
            c.paint(capsule(head, tip, 3.0, 2.5), "metal",
                    within=("bone_cortical", "bone_marrow", "muscle", "fat", "disc"))
            heads.append(head)
    for side in (-1, 1):  # the rods joining the screw heads of each side
        ends = [head for head in heads if np.sign(head[0]) == side]
        c.paint(capsule(ends[0], ends[-1], 2.75, 2.75), "metal",
                within=("bone_cortical", "bone_marrow", "muscle", "fat", "disc"))
