"""Common variants and findings of adult abdomens: an enlarged spleen or liver, a gallbladder
or a kidney that is not there, simple renal cysts, free fluid (ascites), and metal: surgical
clips after cholecystectomy and lumbar pedicle screws.

A model that has only seen textbook anatomy meets these in the first week of clinical use: after
cholecystectomy the gallbladder fossa is empty, after nephrectomy the renal fossa holds bowel and
fat, and an enlarged spleen reaches below the ribs and towards the midline. The prevalences are
*oversampled* relative to adults in general so that a training set of about a hundred cases
holds several of each:

=====================  ==========  ==============================================================
variant                drawn in    adults (for scale)
=====================  ==========  ==============================================================
splenomegaly           10 %        about 2-5 % in CT series; the phantom spleen grows 1.6-2.1x
                                   in thickness and height, to about 0.45-0.75 L (normal
                                   0.1-0.5 L)
hepatomegaly           10 %        craniocaudal liver span above about 16 cm; here the lobes grow
                                   by 20-40 % and reach lower (volume about x1.5-1.6, to
                                   1.4-2.1 L)
no gallbladder         10 %        cholecystectomy, about 6 % of adults
one kidney             3 %         nephrectomy or agenesis, well under 1 %
simple renal cysts     25 %        about a quarter of adults over 50 (1-3 cysts, 5-25 mm radius,
                                   water density; labelled as the kidney, as lesions are part of
                                   the liver label)
ascites                8 %         free fluid (0-30 HU) around the liver and spleen, in the
                                   paracolic gutters and the pelvis, 4-25 mm deep: cirrhosis,
                                   heart failure, malignancy; common in hospital CT
surgical clips         70 % of     2-5 clips in the gallbladder fossa (laparoscopic
                       no-GB cases cholecystectomy leaves them in most patients)
pedicle screws         3 %         a lumbar fixation over 2-3 levels: two screws per vertebra
                                   and two rods (titanium, with metal streaks in the image)
=====================  ==========  ==============================================================

The variants come from their own random stream and keep every draw of the anatomy's stream:
a case without a variant is the same body as with ``variants=False``, and a variant changes
only its organ and the tissue around it (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Variants", "NO_VARIANTS", "draw_variants", "AorticWall", "NO_AORTIC_WALL",
           "draw_aortic_wall"]

SPLENOMEGALY = 0.10
HEPATOMEGALY = 0.10
NO_GALLBLADDER = 0.10
ONE_KIDNEY = 0.03
RENAL_CYSTS = 0.25
ASCITES = 0.08
CLIPS_AFTER_CHOLECYSTECTOMY = 0.7
SPINAL_FIXATION = 0.03
AORTIC_CALCIFICATION = 0.5


@dataclass(frozen=True)
class Variants:
    """What one case has beyond textbook anatomy (defaults: nothing)."""

    #: Linear factor on the spleen's thickness and height (1: normal; splenomegaly 1.6-2.1).
    spleen_scale: float = 1.0
    #: Linear factor on the liver lobes' semi-axes (1: normal; hepatomegaly 1.2-1.4).
    liver_scale: float = 1.0
    gallbladder: bool = True
    #: The label of the absent kidney ("right_kidney" or "left_kidney"), or "".
    missing_kidney: str = ""
    #: Number of simple renal cysts (spread over the kidneys present).
    renal_cysts: int = 0
    #: Depth (mm) of the free-fluid layer of ascites; 0: none.
    ascites_mm: float = 0.0
    #: Surgical clips in the gallbladder fossa (only without a gallbladder).
    surgical_clips: int = 0
    #: Lumbar levels held by pedicle screws and rods; 0: none.
    fixation_levels: int = 0

    def names(self) -> list[str]:
        """The variants present, for a phantom's ``info["variants"]``."""
        found = []
        if self.spleen_scale > 1.0:
            found.append("splenomegaly")
        if self.liver_scale > 1.0:
            found.append("hepatomegaly")
        if not self.gallbladder:
            found.append("no_gallbladder")
        if self.missing_kidney:
            found.append(f"no_{self.missing_kidney}")
        if self.renal_cysts:
            found.append("renal_cysts")
        if self.ascites_mm:
            found.append("ascites")
        if self.surgical_clips:
            found.append("surgical_clips")
        if self.fixation_levels:
            found.append("spinal_fixation")
        return found


NO_VARIANTS = Variants()


def draw_variants(rng: np.random.Generator) -> Variants:
    """One case's variants at the prevalences above, independently of each other. Always the
    same number of draws, so that the stream stays aligned whatever is drawn."""
    u = rng.random(5)
    spleen = rng.uniform(1.6, 2.1)
    liver = rng.uniform(1.2, 1.4)
    side = ("right_kidney", "left_kidney")[int(rng.integers(2))]
    cysts = int(rng.integers(1, 4))
    u_late = rng.random(3)  # drawn after the first five: their cases keep their draws
    depth = float(rng.uniform(4.0, 25.0))
    clips = int(rng.integers(2, 6))
    levels = int(rng.integers(2, 4))
    gallbladder = bool(u[2] >= NO_GALLBLADDER)
    return Variants(spleen_scale=float(spleen) if u[0] < SPLENOMEGALY else 1.0,
                    liver_scale=float(liver) if u[1] < HEPATOMEGALY else 1.0,
                    gallbladder=gallbladder,
                    missing_kidney=side if u[3] < ONE_KIDNEY else "",
                    renal_cysts=cysts if u[4] < RENAL_CYSTS else 0,
                    ascites_mm=depth if u_late[0] < ASCITES else 0.0,
                    surgical_clips=clips if not gallbladder
                    and u_late[1] < CLIPS_AFTER_CHOLECYSTECTOMY else 0,
                    fixation_levels=levels if u_late[2] < SPINAL_FIXATION else 0)


@dataclass(frozen=True)
class AorticWall:
    """The abdominal aorta's wall around the lumen and the calcified plaques in it."""

    #: Wall thickness (mm) outside the lumen's radius; 0: no wall (the lumen is the aorta).
    thickness_mm: float = 0.0
    #: Calcified plaques: (position along the aorta's centre line from the diaphragm, 0-1;
    #: angle around it, radians; radius, mm).
    plaques: tuple[tuple[float, float, float], ...] = ()


NO_AORTIC_WALL = AorticWall()


def draw_aortic_wall(rng: np.random.Generator, plaques: bool) -> AorticWall:
    """One case's aortic wall, and its plaques if ``plaques`` (a finding: only with variants),
    at the prevalence above. Always the same number of draws."""
    thickness = float(rng.uniform(1.0, 2.5))
    calcified = bool(rng.random() < AORTIC_CALCIFICATION)
    count = int(rng.integers(2, 21))
    drawn = [(float(rng.beta(2.0, 1.2)), float(rng.uniform(0.0, 2 * np.pi)),
              float(rng.uniform(1.0, 2.5))) for _ in range(20)]
    return AorticWall(thickness_mm=thickness,
                      plaques=tuple(drawn[:count]) if plaques and calcified else ())
