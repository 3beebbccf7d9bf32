"""Which cases a batch runs, under which ids, and which part of them one job takes: files,
DICOM series folders, folders of either and case lists in; ids safe as file names, clashes
resolved and said; parts that split the sorted cases between a scheduler's jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from DeepOrganSegLib.cohort.cases import case_id, find_cases, part_index, part_of
from DeepOrganSegLib.errors import InputError


def _touch(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_a_case_id_is_the_name_without_its_volume_suffix_and_safe_as_a_file_name():
    assert case_id("ct_001.nii.gz") == "ct_001" and case_id("pat.01.NRRD") == "pat.01"
    assert case_id("series_7") == "series_7" and case_id("slice.dcm") == "slice"
    assert case_id("a\x1b[31m\nb<script>.mha") == "a_x1b[31m_nb_script_"
    assert case_id(".hidden.nii") == "hidden" and case_id("..") == "case"


def test_a_folder_gives_its_volumes_and_series_folders_and_says_what_it_left_out(tmp_path):
    _touch(tmp_path / "b.nii.gz", tmp_path / "a.nrrd", tmp_path / "scan.mhd", tmp_path / "scan.raw",
           tmp_path / "series" / "1.dcm", tmp_path / "notes.txt", tmp_path / ".DS_Store")
    found = find_cases([str(tmp_path)])
    assert [(case.id, case.input.name) for case in found.cases] == [
        ("a", "a.nrrd"), ("b", "b.nii.gz"), ("scan", "scan.mhd"), ("series", "series")]
    assert found.notes == [f"{tmp_path}: 1 file(s) that are not volumes left out (notes.txt)"]


def test_a_folder_of_files_only_is_one_dicom_series(tmp_path):
    _touch(*(tmp_path / "CT_0042" / f"IM{n}" for n in range(3)))
    assert [(c.id, c.input) for c in find_cases([str(tmp_path / "CT_0042")]).cases] == [
        ("CT_0042", tmp_path / "CT_0042")]


def test_lists_name_cases_relative_to_their_folder_and_a_csv_may_give_ids(tmp_path):
    _touch(tmp_path / "data" / "x.nii.gz", tmp_path / "data" / "y.nii.gz")
    (tmp_path / "cases.txt").write_text("# the cohort\ndata/x.nii.gz\n\n  data/y.nii.gz  \n")
    (tmp_path / "cases.csv").write_text("Case,Path\nP1,data/x.nii.gz\n,data/y.nii.gz\n")
    assert [c.id for c in find_cases([str(tmp_path / "cases.txt")]).cases] == ["x", "y"]
    cases = find_cases([str(tmp_path / "cases.csv")]).cases
    assert [(c.id, c.input) for c in cases] == [("P1", tmp_path / "data" / "x.nii.gz"),
                                                ("y", tmp_path / "data" / "y.nii.gz")]


def test_clashing_ids_take_their_parent_folders_names_and_the_clash_is_said(tmp_path):
    _touch(tmp_path / "siteA" / "day1" / "ct.nii.gz", tmp_path / "siteB" / "day1" / "CT.nrrd",
           tmp_path / "siteA" / "day1" / "ct.mha")
    found = find_cases([str(tmp_path / "siteA" / "day1" / "ct.nii.gz"),
                        str(tmp_path / "siteB" / "day1" / "CT.nrrd"),
                        str(tmp_path / "siteA" / "day1" / "ct.mha")])
    assert {case.input.name: case.id for case in found.cases} == {  # siteA's two: numbered
        "ct.mha": "ct-1", "ct.nii.gz": "ct-2", "CT.nrrd": "CT-3"}
    assert found.notes and "3 inputs have the case id 'ct'" in found.notes[0]
    two = find_cases([str(tmp_path / "siteA" / "day1" / "ct.nii.gz"),
                      str(tmp_path / "siteB" / "day1" / "CT.nrrd")])
    assert sorted(case.id for case in two.cases) == ["siteA_day1_ct", "siteB_day1_CT"]


def test_an_input_given_twice_is_one_case_and_a_missing_one_is_refused(tmp_path):
    _touch(tmp_path / "a.nii.gz")
    found = find_cases([str(tmp_path / "a.nii.gz"), str(tmp_path)])
    assert [case.id for case in found.cases] == ["a"] and "given twice" in found.notes[0]
    with pytest.raises(InputError, match="nope.nii.gz: no such file or folder"):
        find_cases([str(tmp_path / "nope.nii.gz")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="folder is empty"):
        find_cases([str(tmp_path / "empty")])
    (tmp_path / "bad.csv").write_text("file\nx.nii.gz\n")
    with pytest.raises(InputError, match="has no 'path' column"):
        find_cases([str(tmp_path / "bad.csv")])


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_the_parts_take_every_case_exactly_once(parts):
    cases = list(range(20))
    taken = [case for part in range(parts) for case in part_of(cases, parts, part)]
    assert sorted(taken) == cases
    assert max(len(part_of(cases, parts, p)) for p in range(parts)) - min(
        len(part_of(cases, parts, p)) for p in range(parts)) <= 1


def test_the_part_comes_from_the_flag_or_the_schedulers_index():
    assert part_index(2, 4, {}) == (2, [])
    assert part_index(None, 4, {"SLURM_ARRAY_TASK_ID": "3"}) == (3, [])
    assert part_index(None, 4, {"JOB_COMPLETION_INDEX": "1"}) == (1, [])
    assert part_index(1, 4, {"SLURM_ARRAY_TASK_ID": "3"}) == (1, [])  # the flag wins
    part, warnings = part_index(None, 1, {"SLURM_ARRAY_TASK_ID": "5"})
    assert part == 0 and "give --parts N" in warnings[0]


@pytest.mark.parametrize("part, parts, environment, message", [
    (None, 4, {}, "--parts 4 needs --part I (0 to 3)"),
    (4, 4, {}, "--part 4: must be 0 to 3 for --parts 4 (a Slurm array for it is --array=0-3)"),
    (None, 4, {"SLURM_ARRAY_TASK_ID": "4"}, "SLURM_ARRAY_TASK_ID 4: must be 0 to 3"),
    (None, 2, {"JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX=x: not a part number"),
    (0, 0, {}, "--parts 0: must be at least 1"),
])
def test_a_part_out_of_range_is_refused_in_one_line(part, parts, environment, message):
    with pytest.raises(InputError) as refused:
        part_index(part, parts, environment)
    assert message in str(refused.value) and "\n" not in str(refused.value)
