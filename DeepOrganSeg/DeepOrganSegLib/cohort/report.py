"""The cohort's report over every case in a batch's folder, whichever part wrote it:
``DIR/cohort.csv`` (one row per case and organ, one per failed case with its reason) and
``DIR/report.html``, a page to open in any browser, offline: tables that sort on a click, a QC
picture per case with its organs outlined, and what to look at flagged.

Flags: an organ not found; low confidence (the model's review flag: mean confidence below
:data:`~DeepOrganSegLib.postprocess.REVIEW_CONFIDENCE`); a volume beyond the cohort's IQR
fences for that organ (below Q1 - 1.5 IQR or above Q3 + 1.5 IQR of the volumes where it was
found; Tukey's rule, from :data:`MIN_CASES_FOR_FENCES` such cases on).

Everything a file or a model brings (case ids, paths, reasons, organ names) is shown escaped:
control characters by :func:`~DeepOrganSegLib.errors.printable`, markup by :func:`html.escape`;
in the CSV, text that a spreadsheet would run as a formula is quoted. The page loads nothing
from anywhere (its Content-Security-Policy forbids it) but its pictures beside it in ``qc/``.
Parts finishing together write the report one after the other (a lock file), so the last one
sees every case.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import html
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from ..errors import printable
from ..postprocess import REVIEW_CONFIDENCE
from ..volume_io import write_atomically
from .cases import Case
from .folder import OutputFolder, read_json

__all__ = ["MIN_CASES_FOR_FENCES", "IQR_FACTOR", "CaseRecord", "scan_folder", "volume_fences",
           "organ_flags", "cohort_rows", "report_html", "write_report"]

#: Cases with an organ found from which its volume fences are drawn (fewer give no fences).
MIN_CASES_FOR_FENCES = 5
#: Tukey's fence factor: outliers lie beyond Q1 - 1.5 IQR and Q3 + 1.5 IQR.
IQR_FACTOR = 1.5

CSV_COLUMNS = ("case", "status", "task", "organ", "label", "volume_ml", "mean_intensity",
               "confidence", "flags", "reason", "input")


@dataclass
class CaseRecord:
    """One case of the folder: done (with its organs' statistics) or failed (with why)."""

    case: str
    input: str
    done: bool
    task: str = ""
    seconds: float | None = None
    organs: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""


def scan_folder(folder: OutputFolder) -> list[CaseRecord]:
    """Every case in ``folder``: the complete ones (their statistics), then the failed ones
    that have not succeeded since, each sorted by id."""
    done: dict[str, CaseRecord] = {}
    for path in sorted(folder.path.glob("*.json")):
        document = read_json(path)
        if document is None or document.get("case") != path.stem \
                or not isinstance(document.get("labels"), list):
            continue  # not a case's statistics
        done[path.stem] = CaseRecord(
            path.stem, str(document.get("input", "")), True, str(document.get("task", "")),
            document.get("elapsed_s"), [organ for organ in document["labels"]
                                        if isinstance(organ, dict)])
    failed = []
    for path in sorted((folder.path / "failed").glob("*.json")):
        document = read_json(path)
        if document is not None and path.stem not in done:
            failed.append(CaseRecord(path.stem, str(document.get("input", "")), False,
                                     reason=str(document.get("reason", "unknown"))))
    return [*done.values(), *failed]


def volume_fences(volumes: list[float]) -> tuple[float, float] | None:
    """Tukey's fences (mL) of ``volumes``, or None below :data:`MIN_CASES_FOR_FENCES`."""
    if len(volumes) < MIN_CASES_FOR_FENCES:
        return None
    q1, q3 = np.percentile(volumes, [25, 75])
    return float(q1 - IQR_FACTOR * (q3 - q1)), float(q3 + IQR_FACTOR * (q3 - q1))


def _found(organ: dict[str, Any]) -> bool:
    return bool(organ.get("voxels")) and isinstance(organ.get("volume_ml"), (int, float))


def _fences(records: list[CaseRecord]) -> dict[tuple[str, str], tuple[float, float] | None]:
    """Each (task, organ name)'s volume fences over the done cases where it was found."""
    volumes: dict[tuple[str, str], list[float]] = {}
    for record in records:
        for organ in record.organs:
            key = (record.task, str(organ.get("name")))
            volumes.setdefault(key, [])
            if _found(organ):
                volumes[key].append(float(organ["volume_ml"]))
    return {key: volume_fences(values) for key, values in volumes.items()}


def organ_flags(organ: dict[str, Any], fences: tuple[float, float] | None) -> list[str]:
    """What to look at in one organ of one case: not found, low confidence, a volume outside
    the cohort's ``fences``."""
    if not _found(organ):
        return ["not found"]
    flags = ["low confidence"] if organ.get("review") else []
    volume = float(organ["volume_ml"])
    if fences is not None and not fences[0] <= volume <= fences[1]:
        side = "below" if volume < fences[0] else "above"
        flags.append(f"volume {side} the cohort's range ({max(fences[0], 0.0):.1f} to "
                     f"{fences[1]:.1f} mL)")
    return flags


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else ""


def _text(value: Any) -> str:
    """A CSV text cell: printable, and never a formula to a spreadsheet."""
    text = printable(str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def cohort_rows(records: list[CaseRecord]) -> list[dict[str, str]]:
    """``cohort.csv``'s rows: one per done case and organ, one per failed case."""
    fences = _fences(records)
    rows = []
    for record in records:
        base = {"case": _text(record.case), "input": _text(record.input)}
        if not record.done:
            rows.append({**base, "status": "failed", "reason": _text(record.reason)})
            continue
        for organ in record.organs:
            flags = organ_flags(organ, fences[(record.task, str(organ.get("name")))])
            rows.append({**base, "status": "done", "task": _text(record.task),
                         "organ": _text(organ.get("name", "")),
                         "label": _number(organ.get("value"), 0),
                         "volume_ml": _number(organ.get("volume_ml"), 3),
                         "mean_intensity": _number(organ.get("mean_intensity"), 3),
                         "confidence": _number(organ.get("confidence"), 4),
                         "flags": _text("; ".join(flags))})
    return rows


def _escape(value: Any) -> str:
    return html.escape(printable(str(value)), quote=True)


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { font-size: 1.15em; margin: 1.6em 0 .4em; }
table { border-collapse: collapse; margin: .3em 0; }
th, td { border: 1px solid #d0d0d5; padding: .25em .5em; vertical-align: middle; }
th { background: #f0f0f4; position: sticky; top: 0; text-align: left; }
th.sortable { cursor: pointer; } th.sortable::after { content: " \\2195"; color: #888; }
th[aria-sort=ascending]::after { content: " \\2191"; color: #000; }
th[aria-sort=descending]::after { content: " \\2193"; color: #000; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
td.picture img { display: block; width: 300px; height: auto; background: #000; }
.outlier { background: #ffd6d6; } .low { background: #fff0c2; } .missing { background: #e4e4e4; }
.flag { padding: 0 .35em; border-radius: .25em; }
.reason { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-all; }
"""

# Sorting by a column: numbers by their data-sort value, text without case, empty cells last;
# a QC picture that cannot be loaded says so in its cell.
_SCRIPT = """
(function () {
  function key(cell) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    var number = parseFloat(raw);
    return raw === "" ? null : isNaN(number) ? raw.toLowerCase() : number;
  }
  function sort(table, column, head) {
    var ascending = head.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(head.parentNode.cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    head.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[column]), y = key(b.cells[column]);
      if (x === y) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
      return (x < y ? -1 : 1) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (head, column) {
      if (!head.classList.contains("sortable")) return;
      head.tabIndex = 0;
      head.addEventListener("click", function () { sort(table, column, head); });
      head.addEventListener("keydown", function (event) {
        if (event.key === "Enter") sort(table, column, head);
      });
    });
  });
  function missing(image) {
    image.parentNode.parentNode.textContent = "QC picture missing";
  }
  Array.prototype.forEach.call(document.querySelectorAll("td.picture img"), function (image) {
    if (image.complete && image.naturalWidth === 0) missing(image);
    else image.addEventListener("error", function () { missing(image); });
  });
})();
"""


def _case_table(task: str, records: list[CaseRecord], folder: OutputFolder,
                fences: dict[tuple[str, str], tuple[float, float] | None]) -> str:
    """One task's cases: picture, id, flags, time, and each organ's volume (flagged)."""
    organs: dict[str, str] = {}
    for record in records:
        for organ in record.organs:
            organs.setdefault(str(organ.get("name")), str(organ.get("display_name")
                                                          or organ.get("name")))
    heads = ['<th>QC picture</th>', '<th class="sortable">case</th>',
             '<th class="sortable">flags</th>', '<th class="sortable">seconds</th>']
    heads += [f'<th class="sortable">{_escape(title)} (mL)</th>' for title in organs.values()]
    rows = []
    for record in records:
        by_name = {str(organ.get("name")): organ for organ in record.organs}
        cells, notes = [], []
        for name in organs:
            if name not in by_name:
                cells.append('<td class="number" data-sort=""></td>')
                continue
            organ = by_name[name]
            flags = organ_flags(organ, fences[(task, name)])
            notes += [f"{organ.get('display_name') or name}: {flag}" for flag in flags]
            style = ("missing" if "not found" in flags else "outlier" if any(
                flag.startswith("volume") for flag in flags) else "low" if flags else "")
            title = f"confidence {_number(organ.get('confidence'), 2) or 'unknown'}"
            title += "".join(f"; {flag}" for flag in flags)
            volume = _number(organ.get("volume_ml"), 1) if _found(organ) else ""
            cells.append(f'<td class="number {style}" data-sort="{volume}" '
                         f'title="{_escape(title)}">{volume or "not found"}</td>')
        picture = folder.thumbnail(record.case)
        source = _escape(f"qc/{quote(picture.name)}")
        shown = (f'<a href="{source}"><img src="{source}" alt="QC picture of '
                 f'{_escape(record.case)}" loading="lazy"></a>' if picture.is_file()
                 else "no QC picture")
        rows.append(
            f'<tr><td class="picture">{shown}</td><td>{_escape(record.case)}</td>'
            f'<td data-sort="{len(notes)}">{"<br>".join(_escape(n) for n in notes)}</td>'
            f'<td class="number">{_number(record.seconds, 1)}</td>{"".join(cells)}</tr>')
    return (f'<h2>Task {_escape(task)}: {len(records)} case(s)</h2>\n<table class="sortable">'
            f'<thead><tr>{"".join(heads)}</tr></thead>\n<tbody>\n' + "\n".join(rows)
            + "\n</tbody></table>")


def _fence_table(fences: dict[tuple[str, str], tuple[float, float] | None],
                 records: list[CaseRecord]) -> str:
    """Each organ's volumes across the cohort: cases found, median, fences."""
    rows = []
    for (task, name), fence in sorted(fences.items()):
        volumes = [float(organ["volume_ml"]) for record in records if record.task == task
                   for organ in record.organs if str(organ.get("name")) == name and _found(organ)]
        median = _number(float(np.median(volumes)), 1) if volumes else ""
        bounds = (f"{max(fence[0], 0.0):.1f} to {fence[1]:.1f}" if fence is not None
                  else f"fewer than {MIN_CASES_FOR_FENCES} cases")
        rows.append(f'<tr><td>{_escape(task)}</td><td>{_escape(name)}</td>'
                    f'<td class="number">{len(volumes)}</td><td class="number">{median}</td>'
                    f'<td>{bounds}</td></tr>')
    return ('<h2>Organ volumes across the cohort</h2>\n<table class="sortable"><thead><tr>'
            '<th class="sortable">task</th><th class="sortable">organ</th>'
            '<th class="sortable">cases found</th><th class="sortable">median (mL)</th>'
            '<th>normal range (mL, IQR fences)</th></tr></thead>\n<tbody>\n'
            + "\n".join(rows) + "\n</tbody></table>")


def report_html(records: list[CaseRecord], folder: OutputFolder, pending: int) -> str:
    """The report page of ``records`` (``pending``: cases of the batch not yet run)."""
    done = [record for record in records if record.done]
    failed = [record for record in records if not record.done]
    fences = _fences(done)
    made = datetime.datetime.now().isoformat(sep=" ", timespec="minutes")
    parts = [f"{len(done)} segmented", f"{len(failed)} failed"]
    if pending:
        parts.append(f"{pending} not yet run")
    sections = []
    if failed:
        sections.append(
            '<h2>Failed cases</h2>\n<table class="sortable"><thead><tr>'
            '<th class="sortable">case</th><th class="sortable">reason</th>'
            '<th class="sortable">input</th></tr></thead>\n<tbody>\n' + "\n".join(
                f'<tr><td>{_escape(r.case)}</td><td class="reason">{_escape(r.reason)}</td>'
                f'<td>{_escape(r.input)}</td></tr>' for r in failed) + "\n</tbody></table>")
    for task in sorted({record.task for record in done}):
        sections.append(_case_table(task, [r for r in done if r.task == task], folder, fences))
    if done:
        sections.append(_fence_table(fences, done))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DeepOrganSeg cohort report: {_escape(folder.path.name)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>DeepOrganSeg cohort report</h1>
<p>{_escape(folder.path)}: {len(records) + pending} case(s), {", ".join(parts)}; made {made}.
Per case and organ: <code>cohort.csv</code>.</p>
<p>Flags: <span class="flag outlier">volume outlier</span> beyond the cohort's IQR fences
(Q1 &minus; {IQR_FACTOR:g}&nbsp;IQR, Q3 + {IQR_FACTOR:g}&nbsp;IQR of the cases where the organ
was found, from {MIN_CASES_FOR_FENCES} such cases on) &middot; <span class="flag low">low
confidence</span>: mean confidence below {REVIEW_CONFIDENCE:g} &middot; <span class="flag
missing">not found</span>. Click a column head to sort; hover a volume for its confidence.</p>
{chr(10).join(sections)}
<script>{_SCRIPT}</script>
</body>
</html>
"""


@contextlib.contextmanager
def _report_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s report lock: parts that finish together write one after the other."""
    try:
        import fcntl
    except ImportError:  # Windows: one machine, and parts rarely end in the same second
        yield
        return
    with open(folder / ".report.lock", "a") as stream:
        fcntl.flock(stream, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def write_report(folder: OutputFolder, cases: list[Case]) -> tuple[Path, Path]:
    """Write ``DIR/cohort.csv`` and ``DIR/report.html`` over every case in ``folder``
    (``cases``: the whole batch, all parts, to count those not yet run). Returns both paths."""
    with _report_lock(folder.path):
        records = scan_folder(folder)
        seen = {record.case for record in records}
        pending = sum(case.id not in seen for case in cases)
        stream = io.StringIO()
        writer = csv.DictWriter(stream, CSV_COLUMNS, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(cohort_rows(records))
        table = write_atomically(folder.path / "cohort.csv",
                                 lambda tmp: tmp.write_text(stream.getvalue(), encoding="utf-8"))
        page = report_html(records, folder, pending)
        report = write_atomically(folder.path / "report.html",
                                  lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return table, report
