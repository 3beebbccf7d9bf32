"""Render the DeepOrganSeg panel (``DeepOrganSeg/Resources/UI/DeepOrganSeg.ui``) to a PNG:
the panel while a run goes (Cancel, the stage and the time left) beside the panel after it
(results with confidence and review flags, the uncertainty toggle, the Refine section).

Slicer itself cannot run here, so the .ui is loaded with PySide6's ``QUiLoader`` after mapping
Slicer's and CTK's widgets to their plain Qt look-alikes (node selectors -> combo boxes,
collapsible buttons -> group boxes, slider widgets -> spin boxes; the embedded Segment Editor
of the Refine section is drawn as a framed note). The panels are filled the way the module fills
them: tasks and organs from a model file's metadata; the results table from the ``--stats`` JSON
of a real ``deeporganseg segment`` run; the run in progress from that run's own ``--progress
json`` lines (``--events``: each line prefixed with its arrival time in seconds), the time left
estimated by the module's ``mrml.eta.RemainingTime`` with the same run as the earlier one (as
for a second run in a session) and the stage named as the module names it.

    pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen PYTHONPATH=DeepOrganSeg python docs/render_panel.py \\
        --model MODEL.safetensors --stats STATS.json --events EVENTS.txt \\
        --volume "Abdomen CT" --output docs/images/slicer_panel.png
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
MODULE_FILE = REPOSITORY / "DeepOrganSeg" / "DeepOrganSeg.py"
UI_FILE = REPOSITORY / "DeepOrganSeg" / "Resources" / "UI" / "DeepOrganSeg.ui"

#: Slicer/CTK class -> the plain Qt class drawn in its place.
STAND_INS = {"qMRMLWidget": "QWidget", "qMRMLNodeComboBox": "QComboBox",
             "ctkCollapsibleButton": "QGroupBox", "ctkSliderWidget": "QDoubleSpinBox"}
#: Properties that only the Slicer/CTK classes have.
SLICER_ONLY_PROPERTIES = {"nodeTypes", "showChildNodeTypes", "addEnabled", "removeEnabled",
                          "noneEnabled", "noneDisplay", "renameEnabled", "collapsed"}


def plain_qt_ui(path: Path) -> bytes:
    """The .ui with Slicer/CTK widgets replaced by plain Qt ones, loadable by QUiLoader."""
    root = ElementTree.parse(path).getroot()
    for widget in root.iter("widget"):
        original = widget.get("class")
        widget.set("class", STAND_INS.get(original, original))
        for prop in list(widget.findall("property")):
            if prop.get("name") in SLICER_ONLY_PROPERTIES:
                widget.remove(prop)
            elif original == "ctkCollapsibleButton" and prop.get("name") == "text":
                prop.set("name", "title")
    for section in ("customwidgets", "connections"):
        for element in root.findall(section):
            root.remove(element)
    return ElementTree.tostring(root)


def bound_parameters(path: Path) -> dict[str, str]:
    """Widget name -> the parameter-node field it is bound to (``SlicerParameterName``)."""
    return {widget.get("name"): widget.findtext("property[@name='SlicerParameterName']/string")
            for widget in ElementTree.parse(path).iter("widget")
            if widget.find("property[@name='SlicerParameterName']") is not None}


def module_stage_names() -> dict[str, str]:
    """The module's ``STAGE_NAMES`` (stage -> the English text of its ``_("...")``), read from
    ``DeepOrganSeg.py`` (which cannot be imported without Slicer)."""
    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", "") == "STAGE_NAMES")
    return {key.value: value.args[0].value for key, value in zip(table.keys, table.values)}


def timed_events(path: Path) -> list[tuple[float, object]]:
    """The ``--events`` file: (seconds, progress event) per line ``SECONDS JSON``."""
    from DeepOrganSegLib.progress import parse_progress_line

    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        seconds, _, text = line.partition(" ")
        event = parse_progress_line(text)
        if event is not None and event.stage not in ("warning", "error"):
            events.append((float(seconds), event))
    return events


def running_status(events: list[tuple[float, object]], at: float) -> tuple[float, str]:
    """The progress bar's fraction and the status line when the run is ``at`` (0-1) of its
    time through, as the module shows them."""
    from DeepOrganSegLib.mrml.eta import RemainingTime, describe_seconds

    earlier = RemainingTime()
    for seconds, event in events:
        earlier.observe(event.stage, event.fraction, seconds)
    now = RemainingTime(earlier.profile())
    until = events[0][0] + at * (events[-1][0] - events[0][0])
    seen = [(seconds, event) for seconds, event in events if seconds <= until]
    for seconds, event in seen:
        now.observe(event.stage, event.fraction, seconds)
    event = seen[-1][1]
    stage = module_stage_names().get(event.stage, event.stage)
    status = f"{stage}: {event.message}" if event.message else stage
    left = now.seconds_left(until)
    if left is not None:
        status += f"  (about {describe_seconds(left)} left)"
    return event.fraction, status


def load_panel(loader):
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice

    data = QByteArray(plain_qt_ui(UI_FILE))  # QBuffer only points at it: keep it alive
    buffer = QBuffer(data)
    buffer.open(QIODevice.ReadOnly)
    return loader.load(buffer)


def fill_inputs(panel, model: Path, metadata, task_name: str, volume_name: str) -> None:
    """The Inputs, Outputs and Advanced sections as the module fills them."""
    from DeepOrganSegLib.crf.parameters import CRFParameters
    from DeepOrganSegLib.mrml.panel import CRF_FIELDS
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QListWidget,
                                   QListWidgetItem, QSpinBox, QWidget)

    panel.findChild(QComboBox, "inputVolumeSelector").addItem(volume_name)
    task = next(t for t in metadata.tasks if t.name == task_name)
    tasks = panel.findChild(QComboBox, "taskComboBox")
    tasks.addItem("Auto")
    for each in metadata.tasks:
        tasks.addItem(each.title)
    tasks.setCurrentIndex(1 + metadata.tasks.index(task))
    organs = panel.findChild(QListWidget, "organListWidget")
    for label in task.labels:
        item = QListWidgetItem(swatch(label.color), label.display_name)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked)
        organs.addItem(item)
    panel.findChild(QComboBox, "modelComboBox").addItems([model.stem, "Add model file..."])
    panel.findChild(QComboBox, "deviceComboBox").addItems(["Auto", "GPU (CUDA)", "CPU"])
    panel.findChild(QComboBox, "outputSegmentationSelector").addItem(
        f"{volume_name} segmentation")
    panel.findChild(QCheckBox, "crfCheckBox").setChecked(bool(metadata.crf))
    panel.findChild(QCheckBox, "crfCheckBox").setEnabled(bool(metadata.crf))  # as the module
    panel.findChild(QWidget, "crfParametersWidget").setEnabled(bool(metadata.crf))
    crf = CRFParameters.from_dict(metadata.crf).to_dict()  # what the module loads from the model
    for name, field in bound_parameters(UI_FILE).items():
        if field in CRF_FIELDS:
            panel.findChild(QSpinBox if name.endswith("SpinBox") else QDoubleSpinBox,
                            name).setValue(crf[CRF_FIELDS[field]])
    panel.findChild(QCheckBox, "show3DCheckBox").setChecked(True)


def swatch(color):
    from PySide6.QtGui import QColor, QIcon, QPixmap

    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)


def stroke_editor_stand_in(panel) -> None:
    """Where the embedded Segment Editor (Paint, Erase) sits in Slicer."""
    from PySide6.QtWidgets import QFrame, QLabel, QWidget

    note = QLabel("Segment Editor (Paint, Erase): the organ's add and remove strokes")
    note.setFrameShape(QFrame.StyledPanel)
    note.setMinimumHeight(44)
    note.setWordWrap(True)
    panel.findChild(QWidget, "strokeEditorPlaceholder").layout().addWidget(note)


def fill_running(panel, fraction: float, status: str) -> None:
    """A run in progress: the Segment button is Cancel, the sections are disabled."""
    from PySide6.QtWidgets import QGroupBox, QLabel, QProgressBar, QPushButton

    for name in ("inputsCollapsibleButton", "outputsCollapsibleButton",
                 "advancedCollapsibleButton"):
        panel.findChild(QGroupBox, name).setEnabled(False)
    panel.findChild(QPushButton, "segmentButton").setText("Cancel")
    panel.findChild(QProgressBar, "progressBar").setValue(round(100 * fraction))
    panel.findChild(QLabel, "statusLabel").setText(status)
    for name in ("resultsCollapsibleButton", "refineCollapsibleButton"):
        panel.findChild(QGroupBox, name).hide()


def fill_done(panel, stats: dict) -> None:
    """After the run: the results table, the uncertainty toggle, the Refine section."""
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import (QCheckBox, QComboBox, QLabel, QProgressBar, QPushButton,
                                   QTableWidget, QTableWidgetItem)

    panel.findChild(QPushButton, "segmentButton").setEnabled(True)
    panel.findChild(QProgressBar, "progressBar").setValue(100)
    rows = stats["labels"]
    table = panel.findChild(QTableWidget, "resultsTableWidget")
    table.setRowCount(len(rows))
    for row, organ in enumerate(rows):
        mean, confidence = organ.get("mean_intensity"), organ.get("confidence")
        texts = (organ["display_name"], f"{organ['volume_ml']:.1f}",
                 "" if mean is None else f"{mean:.1f}",
                 "" if confidence is None else f"{confidence:.2f}",
                 "review" if organ.get("review") else "")
        for column, text in enumerate(texts):
            item = QTableWidgetItem(text)
            if column == 0:
                item.setIcon(swatch(organ["color"]))
            else:
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            table.setItem(row, column, item)
    table.resizeColumnsToContents()
    table.resizeRowsToContents()
    table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # the picture shows every row
    table.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
    table.setMinimumHeight(table.horizontalHeader().sizeHint().height() + 2 * table.frameWidth()
                           + sum(table.rowHeight(row) for row in range(len(rows))))
    uncertainty = panel.findChild(QCheckBox, "uncertaintyCheckBox")
    uncertainty.setEnabled(True)
    uncertainty.setChecked(True)
    panel.findChild(QLabel, "statusLabel").setText(
        f"Done: {len(rows)} organs in {stats['elapsed_s']:.1f} s")
    panel.findChild(QLabel, "elapsedLabel").setText(
        f"{stats['task']} (engine {stats['elapsed_s']:.1f} s on {stats['device']}"
        f"{', with CRF' if stats.get('crf') else ''})")
    organs = panel.findChild(QComboBox, "refineOrganComboBox")
    for organ in rows:
        organs.addItem(organ["display_name"])
    flagged = next((organ for organ in rows if organ.get("review")), rows[0])
    organs.setCurrentIndex(rows.index(flagged))
    panel.findChild(QCheckBox, "keepForRefinementCheckBox").setChecked(True)  # the default
    stroke_editor_stand_in(panel)
    panel.findChild(QPushButton, "undoRefineButton").setEnabled(False)
    panel.findChild(QLabel, "refineStatusLabel").setText(
        "Paint in the slice views, then click Refine.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model file whose tasks and organs to show")
    parser.add_argument("--stats", required=True, help="--stats JSON of a segment run")
    parser.add_argument("--events", required=True,
                        help="that run's --progress json lines, each prefixed by its time (s)")
    parser.add_argument("--at", type=float, default=0.5,
                        help="how far through the run (0-1) the left panel shows it")
    parser.add_argument("--volume", default="Abdomen CT", help="name of the input volume")
    parser.add_argument("--width", type=int, default=470)
    parser.add_argument("--output",
                        default=str(REPOSITORY / "docs" / "images" / "slicer_panel.png"))
    args = parser.parse_args()

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from DeepOrganSegLib.model import read_metadata
    from PySide6.QtGui import QColor, QPainter, QPixmap
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication

    application = QApplication([])
    application.setStyle("Fusion")
    loader = QUiLoader()
    metadata = read_metadata(args.model)
    stats = json.loads(Path(args.stats).read_text(encoding="utf-8"))
    fraction, status = running_status(timed_events(Path(args.events)), args.at)
    pictures = []
    for state in ("running", "done"):
        panel = load_panel(loader)
        fill_inputs(panel, Path(args.model), metadata, stats["task"], args.volume)
        if state == "running":
            fill_running(panel, fraction, status)
        else:
            fill_done(panel, stats)
        panel.resize(args.width, panel.sizeHint().height())
        panel.adjustSize()
        panel.resize(args.width, panel.height())
        pictures.append(panel.grab())
    gap = 16
    picture = QPixmap(sum(p.width() for p in pictures) + gap,
                      max(p.height() for p in pictures))
    picture.fill(QColor(255, 255, 255))
    painter = QPainter(picture)
    painter.drawPixmap(0, 0, pictures[0])
    painter.drawPixmap(pictures[0].width() + gap, 0, pictures[1])
    painter.end()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.output)
    print(f"wrote {args.output} ({picture.width()}x{picture.height()}); running: {status!r}")
    application.quit()


if __name__ == "__main__":
    main()
