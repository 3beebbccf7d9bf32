"""The small vessels of the mesentery and the omentum: what makes a patient's abdominal fat
mottled (:class:`~.patient.PatientDetail` ``mesenteric_vessels``).

A phantom's abdominal fat was clean, a patient's is not: the gastroepiploic arcades along the
stomach's curvatures, the short gastric and splenic hilar branches between the stomach and the
spleen, the mesenteric arcades and the veins that drain them run through it as 1-4 mm vessels,
enhancing with the phase. A network that has only seen clean fat takes the first mottled
fat-and-soft-tissue it meets for the one mottled thing it knows beside the stomach, a
food-filled stomach: v11 and v12 called 33 k voxels of vessel-laden fat between the stomach and
the spleen "stomach" on the real CT (docs/phantoms.md, "The stomach that grew into the fat").

The vessels are the tubes where two independent smooth fields are both near zero (each zero set
a sheet, the two sheets meet in curves), in unlabelled fat of the peritoneal cavity only, so no
organ's label changes. Three in four are veins (portal blood), the rest arteries.
"""

from __future__ import annotations

from .labels import TISSUE_ID
from .painter import TorsoPainter

__all__ = ["paint_mesenteric_vessels"]

#: Correlation lengths (mm) of the two fields whose zero sheets cross in the vessels: about a
#: vessel every centimetre or two, as mesenteric arcades branch.
_SHEET_MM = (12.0, 7.0)
#: Correlation (mm) and level of the field that makes a stretch of vessel an artery (about a
#: quarter of the length, as unit-normal values above 0.67 are).
_ARTERY_MM, _ARTERY_LEVEL = 25.0, 0.67


def paint_mesenteric_vessels(torso: TorsoPainter) -> None:
    """Small veins and arteries through the cavity's unlabelled fat, where both sheet fields
    lie within ``patient.mesenteric_vessels`` (unit SD) of zero; none without the detail."""
    width = torso.patient.mesenteric_vessels
    if not width:
        return
    c = torso.canvas
    first, second = (torso.field(f"mesentery_{k}", mm) for k, mm in enumerate(_SHEET_MM))
    vessel = ((abs(first) < width) & (abs(second) < width) & torso.cavity
              & (c.tissue == TISSUE_ID["fat"]) & (c.organ == 0))
    artery = torso.field("mesentery_artery", _ARTERY_MM) > _ARTERY_LEVEL
    c.tissue[vessel & artery] = TISSUE_ID["arterial_blood"]
    c.tissue[vessel & ~artery] = TISSUE_ID["portal_blood"]
