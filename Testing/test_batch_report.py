"""The cohort report of ``deeporganseg batch``: Tukey's fences and the flags they give, the CSV a
spreadsheet opens safely, and the page in a real headless browser (Debian's chromium): it loads
offline, without a console message, with its tables and QC pictures.

The cohort is made without a model: each case is an ellipsoid scene whose statistics and QC
picture are written by the same functions a batch uses (``organ_statistics``,
``statistics_document``, ``save_thumbnail``), its volumes and confidences set to what each test
needs."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from helpers import ellipsoid_scene, tiny_metadata
from DeepOrganSegLib.cohort.cases import Case
from DeepOrganSegLib.cohort.folder import OutputFolder
from DeepOrganSegLib.cohort.report import volume_fences, write_report
from DeepOrganSegLib.cohort.thumbnail import outlines, save_thumbnail
from DeepOrganSegLib.postprocess import organ_statistics
from DeepOrganSegLib.result_files import statistics_document
from DeepOrganSegLib.segment import SegmentationResult

#: Liver volumes (mL) of the made-up cohort: case6's is beyond the upper fence.
LIVER_ML = {"case0": 1500.0, "case1": 1520.0, "case2": 1480.0, "case3": 1510.0,
            "case4": 1490.0, "case5": 1505.0, "case6": 3000.0, "=1+1": 1495.0}
HOSTILE_REASON = "\\x1b[31m<script>alert(1)</script>: cannot read image"


def _write_case(folder: OutputFolder, case: str, seed: int, liver_ml: float,
                confidence: float, spleen_found: bool = True) -> None:
    image, labels = ellipsoid_scene(seed)
    if not spleen_found:
        labels = labels.with_array(np.where(labels.array == 2, 0, labels.array).astype(np.uint8))
    task = tiny_metadata().task("abdomen-ct")
    certainty = np.full(labels.array.shape, round(confidence * 255), np.uint8)
    statistics = [replace(organ, volume_ml=liver_ml) if organ.label.name == "liver" else organ
                  for organ in organ_statistics(labels, image, list(task.labels), certainty)]
    result = SegmentationResult(labels, task, statistics, 1.5, "cpu", False)
    save_thumbnail(image, result, folder.thumbnail(case), case)
    folder.statistics(case).write_text(statistics_document(
        result, {"case": case, "input": f"/scans/{case}.nii.gz", "settings": {}}))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[OutputFolder, Path, Path]:
    """Eight done cases (case6 an outlier, case5 of low confidence, case4 without a spleen,
    one whose id a spreadsheet would run), one failed with a hostile reason, one not yet run:
    its folder and its cohort.csv and report.html."""
    folder = OutputFolder(tmp_path_factory.mktemp("report") / "out")
    folder.prepare()
    for seed, (case, liver) in enumerate(LIVER_ML.items()):
        _write_case(folder, case, seed, liver, 0.6 if case == "case5" else 0.97,
                    spleen_found=case != "case4")
    folder.record_failure(Case("broken", Path("/scans/broken.nrrd")), HOSTILE_REASON)
    everyone = [Case(name, Path(f"/scans/{name}.nii.gz")) for name in [*LIVER_ML, "broken",
                                                                       "later"]]
    table, page = write_report(folder, everyone)
    return folder, table, page


def test_tukeys_fences_need_five_cases_and_lie_one_and_a_half_iqr_beyond_the_quartiles():
    assert volume_fences([1.0, 2.0, 3.0, 4.0]) is None
    low, high = volume_fences([10.0, 12.0, 14.0, 16.0, 18.0])
    assert (low, high) == pytest.approx((12.0 - 1.5 * 4.0, 16.0 + 1.5 * 4.0))


def test_outliers_low_confidence_and_missing_organs_are_flagged_per_case_and_organ(report):
    _, table, _ = report
    with open(table, newline="") as stream:
        rows = {(row["case"], row["organ"]): row for row in csv.DictReader(stream)}
    assert "volume above the cohort's range" in rows[("case6", "liver")]["flags"]
    assert rows[("case0", "liver")]["flags"] == ""
    assert "low confidence" in rows[("case5", "liver")]["flags"]
    assert rows[("case4", "spleen")]["flags"] == "not found"
    assert rows[("broken", "")]["status"] == "failed"
    assert rows[("broken", "")]["reason"] == HOSTILE_REASON


def test_the_csv_never_hands_a_spreadsheet_a_formula(report):
    _, table, _ = report
    with open(table, newline="") as stream:
        cases = {row["case"] for row in csv.DictReader(stream)}
    assert "'=1+1" in cases and "=1+1" not in cases


def test_the_page_covers_every_case_in_the_folder_and_counts_those_not_yet_run(report):
    _, _, page = report
    html = page.read_text()
    assert all(f'src="qc/{name}.png"' in html for name in ("case0", "case6"))
    assert 'src="qc/%3D1%2B1.png"' in html
    assert "8 segmented, 1 failed, 1 not yet run" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_outlines_keep_only_the_organ_edges_in_their_own_values():
    _, labels = ellipsoid_scene(0)
    edges = outlines(labels, width_mm=1.0)
    for value in (1, 2):
        organ, edge = labels.array == value, edges.array == value
        assert edge.any() and not (edge & ~organ).any()
        assert edge.sum() < 0.5 * organ.sum()


def _browser() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


def _headless(browser: str, page: Path, profile: Path, *action: str
              ) -> subprocess.CompletedProcess:
    """``page`` in headless chromium, offline (no host name resolves), console to stderr."""
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
         "--window-size=1400,1000", *action, page.as_uri()],
        capture_output=True, text=True, timeout=120)


def test_the_page_loads_offline_in_headless_chromium_with_no_console_message(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium here (Debian: apt-get install chromium); the report page is "
                    "not checked in a browser")
    _, _, page = report
    dom = _headless(browser, page, tmp_path / "profile", "--dump-dom")
    shot = tmp_path / "report.png"
    picture = _headless(browser, page, tmp_path / "profile", f"--screenshot={shot}")
    for run in (dom, picture):
        assert run.returncode == 0, run.stderr[-2000:]
        console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
        assert not console, console
    assert 'tabindex="0"' in dom.stdout, "the sorting script ran"
    assert dom.stdout.count("<img ") == 8, "every QC picture loaded (else its cell says so)"
    assert '<td class="picture">QC picture missing' not in dom.stdout
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1000, 1400) and pixels.std() > 0.05
