"""Every segment resolves in a terminology context that Slicer 5.6-5.12 loads: Slicer's DICOM
master list for the codes it has (verified against its sources at v5.8.0 and v5.12.0), and our
own context file, which the module loads, for the rest (the myocardium)."""

import json
from pathlib import Path

import pytest

from DeepOrganSegLib.model.terminology import (CONTEXT_FILE_NAME, DEEPORGANSEG_CONTEXT,
                                         DICOM_MASTER_CONTEXT, STRUCTURES)

ROOT = Path(__file__).resolve().parent.parent
CONTEXT_FILE = ROOT / "DeepOrganSeg" / "Resources" / "Terminology" / CONTEXT_FILE_NAME

#: (category code, type code) -> type meaning in Slicer's
#: Modules/Loadable/Terminologies/Resources/SegmentationCategoryTypeModifier-DICOM-Master.json,
#: read at tags v5.8.0 and v5.12.0 (identical for these codes).
SLICER_DICOM_MASTER = {
    ("123037004", "10200004"): "Liver", ("123037004", "78961009"): "Spleen",
    ("123037004", "64033007"): "Kidney", ("123037004", "69695003"): "Stomach",
    ("123037004", "15776009"): "Pancreas", ("123037004", "28231008"): "Gallbladder",
    ("123037004", "15825003"): "Aorta", ("123037004", "64131007"): "Inferior vena cava",
    ("123037004", "87878005"): "Left ventricle", ("123037004", "53085002"): "Right ventricle",
    ("123037004", "82471001"): "Left atrium", ("123037004", "73829009"): "Right atrium",
    ("123037004", "81040000"): "Pulmonary artery", ("85756007", "87612001"): "Blood",
    ("123037004", "389081007"): "Gray Matter", ("123037004", "389080008"): "White Matter",
    ("123037004", "65216001"): "Cerebrospinal Fluid",
}


def _our_context_types() -> dict[tuple[str, str], str]:
    document = json.loads(CONTEXT_FILE.read_text(encoding="utf-8"))
    assert document["SegmentationCategoryTypeContextName"] == DEEPORGANSEG_CONTEXT
    return {(category["CodeValue"], kind["CodeValue"]): kind["CodeMeaning"]
            for category in document["SegmentationCodes"]["Category"]
            for kind in category["Type"]}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_every_structure_resolves_in_the_context_it_names(name):
    term = STRUCTURES[name]
    key = (term.category.code, term.type.code)
    listed = SLICER_DICOM_MASTER if term.context == DICOM_MASTER_CONTEXT else _our_context_types()
    assert term.context in (DICOM_MASTER_CONTEXT, DEEPORGANSEG_CONTEXT)
    assert listed.get(key) == term.type.meaning, f"{name}: {key} not in {term.context}"


def test_brain_tissues_use_slicers_anatomical_codes_not_the_retired_tissue_ones():
    for name, code in (("grey_matter", "389081007"), ("white_matter", "389080008"),
                       ("csf", "65216001")):
        assert STRUCTURES[name].type.code == code
        assert STRUCTURES[name].category.code == "123037004"  # Anatomical Structure


def test_the_segment_tag_names_the_context_of_its_structure():
    from DeepOrganSegLib.model import LabelSpec
    from DeepOrganSegLib.model.terminology import terminology_entry

    for name, context in (("myocardium", DEEPORGANSEG_CONTEXT), ("liver", DICOM_MASTER_CONTEXT)):
        term = STRUCTURES[name].to_dict()
        spec = LabelSpec(1, name, term["display_name"], tuple(term["color"]), term["snomed"])
        assert terminology_entry(spec).startswith(context + "~")


def test_slicers_terminology_logic_loads_our_context_once():
    slicer = pytest.importorskip("slicer")
    from DeepOrganSegLib.mrml.nodes import load_terminology_context

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    assert load_terminology_context(logic, CONTEXT_FILE.parent) == DEEPORGANSEG_CONTEXT
    assert load_terminology_context(logic, CONTEXT_FILE.parent) == DEEPORGANSEG_CONTEXT
    category = slicer.vtkSlicerTerminologyCategory()
    assert logic.GetNthCategoryInTerminology(DEEPORGANSEG_CONTEXT, 0, category)
    kind = slicer.vtkSlicerTerminologyType()
    assert logic.GetNthTypeInTerminologyCategory(DEEPORGANSEG_CONTEXT, category, 0, kind)
    assert kind.GetCodeValue() == "74281007"


def test_terminology_tags_are_read_on_an_instance_as_slicer_5_8_requires():
    """Until Slicer 5.10 DeserializeTerminologyEntry is an instance method: the test bodies
    call it on an instance, which a class with such a method accepts (a class call would not)."""
    pytest.importorskip("slicer")
    from Testing.Python import DeepOrganSegTestBodies as bodies

    calls = []

    class InstanceMethodLogic:  # Slicer 5.6/5.8's binding
        def DeserializeTerminologyEntry(self, serialized, entry):
            calls.append(serialized)
            return True

    with pytest.raises(TypeError):
        InstanceMethodLogic.DeserializeTerminologyEntry("tag", object())
    assert bodies.deserialize_terminology_entry("tag", InstanceMethodLogic) is not None
    assert calls == ["tag"]
