"""Render the DeepOrganSeg panel (``DeepOrganSeg/Resources/UI/DeepOrganSeg.ui``) to a PNG.

Slicer itself cannot run here, so the .ui is loaded with PySide6's ``QUiLoader`` after mapping
Slicer's and CTK's widgets to their plain Qt look-alikes (node selectors -> combo boxes,
collapsible buttons -> group boxes, slider widgets -> spin boxes). The panel is filled the way
the module fills it: tasks and organs from a model file's metadata, the results table from the
``--stats`` JSON of a real ``deeporganseg segment`` run.

    pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen PYTHONPATH=DeepOrganSeg python docs/render_panel.py \\
        --model MODEL.safetensors --stats STATS.json --volume "Abdomen CT" \\
        --output docs/images/slicer_panel.png
"""

from __future__ import annotations

import argparse
import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
UI_FILE = REPOSITORY / "DeepOrganSeg" / "Resources" / "UI" / "DeepOrganSeg.ui"

#: Slicer/CTK class -> the plain Qt class drawn in its place.
STAND_INS = {"qMRMLWidget": "QWidget", "qMRMLNodeComboBox": "QComboBox",
             "ctkCollapsibleButton": "QGroupBox", "ctkSliderWidget": "QDoubleSpinBox"}
#: CRF widgets of the panel -> the engine's CRF parameter names.
CRF_WIDGETS = {"crfIterationsSpinBox": "iterations",
               "crfAppearanceWeightSlider": "appearance_weight",
               "crfAppearanceSpatialSlider": "appearance_spatial_mm",
               "crfAppearanceIntensitySlider": "appearance_intensity",
               "crfSmoothnessWeightSlider": "smoothness_weight",
               "crfSmoothnessSpatialSlider": "smoothness_spatial_mm"}
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


def fill(panel, model: Path, metadata, stats: dict | None, volume_name: str) -> None:
    """Put what the module shows after a run into the stand-in widgets."""
    from DeepOrganSegLib.crf.parameters import CRFParameters
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QColor, QIcon, QPixmap
    from PySide6.QtWidgets import (
        QCheckBox,
        QComboBox,
        QDoubleSpinBox,
        QLabel,
        QListWidget,
        QListWidgetItem,
        QProgressBar,
        QPushButton,
        QSpinBox,
        QTableWidget,
        QTableWidgetItem,
        QWidget,
    )

    def child(kind, name):
        return panel.findChild(kind, name)

    def swatch(color) -> QIcon:
        pixmap = QPixmap(12, 12)
        pixmap.fill(QColor(*color))
        return QIcon(pixmap)

    child(QComboBox, "inputVolumeSelector").addItem(volume_name)
    task_name = stats["task"] if stats else metadata.tasks[0].name
    task = next(t for t in metadata.tasks if t.name == task_name)
    tasks = child(QComboBox, "taskComboBox")
    tasks.addItem("Auto")
    for each in metadata.tasks:
        tasks.addItem(each.title)
    tasks.setCurrentIndex(1 + metadata.tasks.index(task))
    organs = child(QListWidget, "organListWidget")
    for label in task.labels:
        item = QListWidgetItem(swatch(label.color), label.display_name)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked)
        organs.addItem(item)
    child(QComboBox, "modelComboBox").addItems([model.stem, "Add model file..."])
    device = child(QComboBox, "deviceComboBox")
    device.addItems(["Auto", "GPU (CUDA)", "CPU"])
    child(QComboBox, "outputSegmentationSelector").addItem(f"{volume_name} segmentation")
    child(QCheckBox, "crfCheckBox").setChecked(bool(metadata.crf))
    child(QCheckBox, "crfCheckBox").setEnabled(bool(metadata.crf))  # as the module does
    panel.findChild(QWidget, "crfParametersWidget").setEnabled(bool(metadata.crf))
    crf = CRFParameters.from_dict(metadata.crf).to_dict()  # what the module loads from the model
    for name, parameter in CRF_WIDGETS.items():
        panel.findChild(QSpinBox if name.endswith("SpinBox") else QDoubleSpinBox, name).setValue(
            crf[parameter])
    child(QCheckBox, "show3DCheckBox").setChecked(True)
    child(QPushButton, "segmentButton").setEnabled(True)
    progress = child(QProgressBar, "progressBar")
    progress.setValue(100)
    table = child(QTableWidget, "resultsTableWidget")
    rows = stats["labels"] if stats else []
    table.setRowCount(len(rows))
    for row, organ in enumerate(rows):
        mean = organ.get("mean_intensity")
        for column, text in enumerate((organ["display_name"], f"{organ['volume_ml']:.1f}",
                                       "" if mean is None else f"{mean:.1f}")):
            item = QTableWidgetItem(text)
            if column == 0:
                item.setIcon(swatch(organ["color"]))
            else:
                item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
            table.setItem(row, column, item)
    table.resizeColumnsToContents()
    table.setMinimumHeight(28 + 26 * max(1, len(rows)))
    if stats:
        child(QLabel, "statusLabel").setText(f"Done: {len(rows)} organs")
        child(QLabel, "elapsedLabel").setText(
            f"{stats['task']} (engine {stats['elapsed_s']:.1f} s on {stats['device']}"
            f"{', with CRF' if stats.get('crf') else ''})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model file whose tasks and organs to show")
    parser.add_argument("--stats", help="--stats JSON of a segment run, for the results table")
    parser.add_argument("--volume", default="Abdomen CT", help="name of the input volume")
    parser.add_argument("--width", type=int, default=400)
    parser.add_argument("--output",
                        default=str(REPOSITORY / "docs" / "images" / "slicer_panel.png"))
    args = parser.parse_args()

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from DeepOrganSegLib.model import read_metadata
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QApplication

    application = QApplication([])
    application.setStyle("Fusion")
    data = QByteArray(plain_qt_ui(UI_FILE))  # QBuffer only points at it: keep it alive
    buffer = QBuffer(data)
    buffer.open(QIODevice.ReadOnly)
    loader = QUiLoader()
    panel = loader.load(buffer)
    metadata = read_metadata(args.model)
    stats = json.loads(Path(args.stats).read_text()) if args.stats else None
    fill(panel, Path(args.model), metadata, stats, args.volume)
    panel.resize(args.width, panel.sizeHint().height())
    panel.adjustSize()
    panel.resize(args.width, panel.height())
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    panel.grab().save(args.output)
    print(f"wrote {args.output} ({panel.width()}x{panel.height()})")
    application.quit()


if __name__ == "__main__":
    main()
