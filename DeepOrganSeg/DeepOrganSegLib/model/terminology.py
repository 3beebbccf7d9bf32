"""Standard terminology for every structure the engine can segment.

Each label name maps to a display name, an RGB colour (0-255, close to Slicer's General Anatomy
colours) and SNOMED CT codes (category, type, optional type modifier for laterality), as DICOM SEG
and Slicer's terminology module expect. The model file stores these per label so that a file is
self-describing; this table is where the exporter takes them from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .spec import LabelSpec

__all__ = ["Code", "StructureTerm", "STRUCTURES", "SYNONYMS", "term_for", "canonical_name",
           "DICOM_MASTER_CONTEXT", "DEEPORGANSEG_CONTEXT", "CONTEXT_FILE_NAME", "terminology_entry"]

#: Slicer's terminology context of DICOM's segmentation codes (loaded by every Slicer).
DICOM_MASTER_CONTEXT = "Segmentation category and type - DICOM master list"
#: Our context, for the structures Slicer's list lacks (myocardium); the module loads it from
#: ``Resources/Terminology/<CONTEXT_FILE_NAME>``, as SlicerTotalSegmentator loads its own.
DEEPORGANSEG_CONTEXT = "Segmentation category and type - DeepOrganSeg"
CONTEXT_FILE_NAME = "SegmentationCategoryTypeModifier-DeepOrganSeg.term.json"


@dataclass(frozen=True)
class Code:
    """A coded concept: coding scheme designator, code value, code meaning."""

    scheme: str
    code: str
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "code": self.code, "meaning": self.meaning}


ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
TISSUE = Code("SCT", "85756007", "Tissue")
RIGHT = Code("SCT", "24028007", "Right")
LEFT = Code("SCT", "7771000", "Left")


@dataclass(frozen=True)
class StructureTerm:
    """Display name, colour and SNOMED CT coding of one segmentable structure."""

    display_name: str
    color: tuple[int, int, int]
    category: Code
    type: Code
    type_modifier: Code | None = None
    #: The Slicer terminology context that lists this category/type.
    context: str = DICOM_MASTER_CONTEXT

    def to_dict(self) -> dict[str, Any]:
        return {
            "display_name": self.display_name,
            "color": list(self.color),
            "snomed": {
                "category": self.category.to_dict(),
                "type": self.type.to_dict(),
                "type_modifier": self.type_modifier.to_dict() if self.type_modifier else None,
                "context": self.context,
            },
        }


def _anatomy(display: str, color: tuple[int, int, int], code: str, meaning: str,
             modifier: Code | None = None, context: str = DICOM_MASTER_CONTEXT) -> StructureTerm:
    return StructureTerm(display, color, ANATOMICAL_STRUCTURE, Code("SCT", code, meaning), modifier,
                         context)


STRUCTURES: dict[str, StructureTerm] = {
    # Abdominal CT organs.
    "liver": _anatomy("Liver", (221, 130, 101), "10200004", "Liver"),
    "spleen": _anatomy("Spleen", (157, 108, 162), "78961009", "Spleen"),
    "right_kidney": _anatomy("Right kidney", (185, 102, 83), "64033007", "Kidney", RIGHT),
    "left_kidney": _anatomy("Left kidney", (185, 102, 83), "64033007", "Kidney", LEFT),
    "stomach": _anatomy("Stomach", (216, 132, 105), "69695003", "Stomach"),
    "pancreas": _anatomy("Pancreas", (249, 180, 111), "15776009", "Pancreas"),
    "gallbladder": _anatomy("Gallbladder", (139, 150, 98), "28231008", "Gallbladder"),
    "aorta": _anatomy("Aorta", (224, 97, 76), "15825003", "Aorta"),
    "inferior_vena_cava": _anatomy("Inferior vena cava", (0, 151, 206), "64131007",
                                   "Inferior vena cava"),
    # Whole-heart MR.
    "myocardium": _anatomy("Myocardium", (206, 110, 84), "74281007", "Myocardium",
                           context=DEEPORGANSEG_CONTEXT),  # not in Slicer's DICOM master list
    "left_ventricle": _anatomy("Left ventricle", (255, 99, 71), "87878005", "Left ventricle"),
    "right_ventricle": _anatomy("Right ventricle", (100, 149, 237), "53085002",
                                "Right ventricle"),
    "left_atrium": _anatomy("Left atrium", (255, 160, 122), "82471001", "Left atrium"),
    "right_atrium": _anatomy("Right atrium", (135, 206, 250), "73829009", "Right atrium"),
    "pulmonary_artery": _anatomy("Pulmonary artery", (0, 122, 171), "81040000",
                                 "Pulmonary artery"),
    "blood_pool": StructureTerm("Blood pool", (216, 101, 79), TISSUE,
                                Code("SCT", "87612001", "Blood")),
    # Brain MR tissues: codes and meanings as Slicer's DICOM master list has them (v5.6-v5.12).
    "grey_matter": _anatomy("Grey matter", (188, 143, 143), "389081007", "Gray Matter"),
    "white_matter": _anatomy("White matter", (245, 245, 245), "389080008", "White Matter"),
    "csf": _anatomy("Cerebrospinal fluid", (85, 188, 255), "65216001", "Cerebrospinal Fluid"),
}


#: Label names that public data sets use for our structures (BTCV, AMOS, TotalSegmentator, MSD,
#: MM-WHS), after lower-casing and turning spaces and hyphens into underscores.
SYNONYMS: dict[str, str] = {
    "kidney_right": "right_kidney", "kidney_left": "left_kidney",
    "rkidney": "right_kidney", "lkidney": "left_kidney",
    "gall_bladder": "gallbladder", "ivc": "inferior_vena_cava", "postcava": "inferior_vena_cava",
    "vena_cava_inferior": "inferior_vena_cava",
    "left_ventricle_blood_cavity": "left_ventricle", "lv": "left_ventricle",
    "right_ventricle_blood_cavity": "right_ventricle", "rv": "right_ventricle",
    "left_atrium_blood_cavity": "left_atrium", "la": "left_atrium",
    "right_atrium_blood_cavity": "right_atrium", "ra": "right_atrium",
    "myocardium_of_the_left_ventricle": "myocardium", "myo": "myocardium",
    "gray_matter": "grey_matter", "gm": "grey_matter", "wm": "white_matter",
    "cerebrospinal_fluid": "csf",
}


def canonical_name(name: str) -> str:
    """The engine's label name for a data set's ``name``: lower case, words joined by
    underscores, synonyms of :data:`STRUCTURES` mapped onto them ("Kidney Left" ->
    ``left_kidney``); other names are kept (normalised) as they are."""
    words = "_".join(name.strip().lower().replace("-", " ").split())
    return SYNONYMS.get(words, words)


def term_for(name: str) -> StructureTerm:
    """The terminology entry for ``name``; unknown names get a generic grey tissue entry."""
    if name in STRUCTURES:
        return STRUCTURES[name]
    display = name.replace("_", " ").capitalize()
    return StructureTerm(display, (128, 128, 128), TISSUE, Code("SCT", "85756007", "Tissue"))


def terminology_entry(label: LabelSpec) -> str:
    """Slicer's ``TerminologyEntry`` tag value for ``label`` (SNOMED CT category/type/modifier)."""

    def coded(code: dict | None) -> str:
        return "^".join((code["scheme"], code["code"], code["meaning"])) if code else "^^"

    snomed = label.snomed
    return (f"{snomed.get('context') or DICOM_MASTER_CONTEXT}~"
            f"{coded(snomed['category'])}~{coded(snomed['type'])}~"
            f"{coded(snomed.get('type_modifier'))}~Anatomic codes - DICOM master list~^^~^^")
