"""What the Slicer panel shows and asks for, without Qt (``DeepOrganSegLib.mrml.panel``): the
model list, the organ choice, the CRF fields passed on, the options of a run, which input the
output selection belongs to, whether Segment can run, and the results table's numbers. The
Widget only copies between its widgets and these objects."""

from __future__ import annotations

import pytest

from DeepOrganSegLib.model import read_metadata
from DeepOrganSegLib.mrml.panel import (CRF_FIELDS, OrganChoice, OutputFollowsInput,
                                        Readiness, added_models, model_entries, readiness,
                                        result_cells)
from DeepOrganSegLib.resources import bundled_models


@pytest.fixture(scope="module")
def metadata():
    """The bundled model: three tasks, each with CRF values of its own."""
    return read_metadata(bundled_models()[0])


def crf_fields(choice: OrganChoice, **changed: float) -> dict[str, float]:
    """The panel's CRF fields as the model sets them, with some changed by the user."""
    names = {name: field for field, name in CRF_FIELDS.items()}
    fields = {names[name]: value for name, value in choice.crf_defaults().items()}
    fields.update({names[name]: value for name, value in changed.items()})
    return fields


def test_a_task_segments_its_checked_organs_in_the_tasks_order(metadata):
    choice = OrganChoice(metadata, "abdomen-ct", excluded=("pancreas", "liver"))
    assert choice.chosen_task.name == "abdomen-ct"
    assert choice.organs == ("spleen", "right_kidney", "left_kidney", "stomach", "gallbladder",
                             "aorta", "inferior_vena_cava")
    assert choice.organ_subset == choice.organs
    assert [label.name for label in choice.label_specs] == list(choice.organs)


def test_all_organs_checked_sends_no_subset_and_auto_may_produce_every_tasks_labels(metadata):
    assert OrganChoice(metadata, "heart-mr").organ_subset is None
    auto = OrganChoice(metadata, "auto")
    assert auto.chosen_task is None and auto.organs == () and auto.organ_subset is None
    assert len(auto.label_specs) == sum(len(task.labels) for task in metadata.tasks)
    assert OrganChoice(None, "abdomen-ct").label_specs == []
    assert OrganChoice(metadata, "no-such-task").chosen_task is None


def test_a_checkbox_toggles_one_organ_and_keeps_the_others_unchecked(metadata):
    choice = OrganChoice(metadata, "abdomen-ct", excluded=("pancreas",))
    assert choice.toggled("spleen", checked=False) == ["pancreas", "spleen"]
    assert choice.toggled("pancreas", checked=True) == []
    assert choice.toggled("pancreas", checked=False) == ["pancreas"]


def test_the_crf_fields_show_the_chosen_tasks_tuned_values(metadata):
    heart = OrganChoice(metadata, "heart-mr").crf_defaults()
    auto = OrganChoice(metadata, "auto").crf_defaults()
    assert heart["appearance_spatial_mm"] == 3.0 and auto["appearance_spatial_mm"] == 5.0
    assert set(heart) == set(CRF_FIELDS.values())
    assert OrganChoice(None).crf_defaults() == {}


def test_only_the_crf_values_the_user_changed_are_passed_on(metadata):
    """With Auto the engine must still use the tuned values of the task it picks: an untouched
    field sends nothing."""
    choice = OrganChoice(metadata, "auto")
    assert choice.crf_changes(crf_fields(choice)) == {}
    assert choice.crf_changes(crf_fields(choice, iterations=3)) == {"iterations": 3}


def test_the_options_of_a_run_are_the_panels_choices(metadata):
    choice = OrganChoice(metadata, "abdomen-ct", excluded=("liver",))
    options = choice.options("cpu", True, crf_fields(choice, smoothness_weight=2.0))
    assert options.task == "abdomen-ct" and options.inference.device == "cpu"
    assert options.crf and options.crf_overrides == {"smoothness_weight": 2.0}
    assert options.organs == choice.organs and "liver" not in options.organs
    assert not OrganChoice(metadata, "auto").options("auto", False, crf_fields(choice)).crf


def test_the_model_list_is_bundled_then_added_each_file_once_and_only_existing_ones(tmp_path):
    mine, gone = tmp_path / "mine.safetensors", tmp_path / "gone.safetensors"
    mine.write_bytes(b"")
    bundled = str(bundled_models()[0])
    assert added_models([str(mine), str(gone)]) == [str(mine)]
    assert added_models(str(mine)) == [str(mine)]  # QSettings gives one value as a string
    assert added_models(None) == []
    entries = model_entries([bundled, str(mine)])
    assert [(entry.path, entry.origin) for entry in entries][0] == (bundled, "bundled")
    assert [entry.path for entry in entries].count(bundled) == 1
    assert (entries[-1].path, entries[-1].origin, entries[-1].title) == (str(mine), "added",
                                                                         "mine")


def test_a_new_input_volume_clears_the_output_selection_and_the_first_does_not():
    follows = OutputFollowsInput()
    first, second = object(), object()
    assert not follows.input_changed(first)  # a loaded scene's own selection stays
    assert not follows.input_changed(first)
    assert follows.input_changed(second)
    follows.forget()  # the scene closed
    assert not follows.input_changed(first)  # the next scene's own selection stays


def test_segment_waits_for_an_input_a_model_and_one_organ_and_cancels_work_under_way(metadata):
    every = OrganChoice(metadata, "abdomen-ct")
    none_checked = OrganChoice(metadata, "abdomen-ct",
                               excluded=[spec.name for spec in every.label_specs])
    model = str(bundled_models()[0])
    assert readiness(False, False, True, model, every) is Readiness.READY
    assert readiness(False, False, False, model, every) is Readiness.NO_INPUT
    assert readiness(False, False, True, "", every) is Readiness.NO_MODEL
    assert readiness(False, False, True, model, none_checked) is Readiness.NO_ORGANS
    # Auto segments every organ of the task the engine picks: nothing to check
    assert readiness(False, False, True, model, OrganChoice(metadata, "auto")) is Readiness.READY
    # work under way: the button cancels it, whatever else is missing
    assert readiness(True, True, False, "", none_checked) is Readiness.INSTALLING
    assert readiness(True, False, False, "", none_checked) is Readiness.RUNNING
    assert [state for state in Readiness if state.clickable] == [
        Readiness.INSTALLING, Readiness.RUNNING, Readiness.READY]


def test_the_results_table_gives_one_decimal_for_volumes_and_two_for_confidence():
    assert result_cells(1523.456, -12.34, 0.9071) == ("1523.5", "-12.3", "0.91")
    assert result_cells(0.0, None, None) == ("0.0", "", "")  # the engine gave no value
