"""DeepOrganSeg: organ segmentation with a 3D deeply supervised network and a dense 3D CRF.

Module, Widget, Logic and Test in the layout of Slicer's scripted-module template. The Widget
wires the panel to the Logic; the Logic is a thin layer over the engine's Qt-free
``DeepOrganSegLib.mrml.SegmentationJob`` (export -> ``deeporganseg segment`` subprocess ->
import), which it polls from a ``QTimer`` so that the GUI never freezes. pytest runs that same
job class and the same test bodies against the MRML of the PyPI ``slicer-core`` wheel.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest,
                                           ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from DeepOrganSegLib.model import ModelMetadata, read_metadata
from DeepOrganSegLib.crf.parameters import PANEL_RANGES, CRFParameters
from DeepOrganSegLib.errors import ModelFileError
from DeepOrganSegLib.mrml.install import (TORCH_REQUIREMENT, InstallJob,
                                          install_steps, missing_requirements, read_requirements)
from DeepOrganSegLib.mrml.job import SegmentationJob, SegmentationRequest, run_segmentation
from DeepOrganSegLib.mrml.nodes import hand_drawn_matches, load_terminology_context, set_show_3d
from DeepOrganSegLib.mrml.refine import RefinementSession, RefineJob
from DeepOrganSegLib.mrml.runner import (TERMINATE_GRACE_S, EngineJob, RunState, probe_cuda,
                                         slicer_python)
from DeepOrganSegLib.options import InferenceSettings, SegmentationOptions
from DeepOrganSegLib.resources import bundled_models, user_model_folder, user_models

#: A job the Logic follows (``DeepOrganSegLogic._follow``): handed back to its callbacks as is.
JobT = TypeVar("JobT", bound=EngineJob)

#: Parameter-node fields of the CRF section -> the engine's CRF parameter names.
CRF_PARAMETERS = {
    "crfIterations": "iterations",
    "crfAppearanceWeight": "appearance_weight",
    "crfAppearanceSpatialMm": "appearance_spatial_mm",
    "crfAppearanceIntensity": "appearance_intensity",
    "crfSmoothnessWeight": "smoothness_weight",
    "crfSmoothnessSpatialMm": "smoothness_spatial_mm",
}

#: What each engine stage is called in the status line.
STAGE_NAMES = {
    "starting": _("Starting"), "load": _("Loading"), "preprocess": _("Preprocessing"),
    "inference": _("Network"), "crf": _("CRF refinement"), "postprocess": _("Post-processing"),
    "write": _("Writing"), "done": _("Done"), "import": _("Importing"),
    "cancel": _("Cancelling"), "cancelled": _("Cancelled"), "error": _("Failed"),
}

#: Model files the user added with "Add model file..." (kept across sessions).
USER_MODELS_SETTING = "DeepOrganSeg/UserModels"


#
# DeepOrganSeg
#


class DeepOrganSeg(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DeepOrganSeg")
        # the context Slicer translates its own categories in: one "Segmentation" entry in
        # every language, ours inside it
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["DeepOrganSeg developers"]
        self.parent.helpText = _("""
Fully automatic organ segmentation of CT and MR volumes: abdominal organs (CT), the whole heart
(MR) and brain tissues (MR), by a 3D deeply supervised network refined by a dense 3D CRF. Each
organ becomes a named, coloured segment coded with SNOMED CT terminology.
See the <a href="https://github.com/deeporganseg/DeepOrganSeg/blob/main/docs/slicer.md">module
documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Built on the 3D deeply supervised network of Dou et al. (Medical Image Analysis, 2017) and the
fully connected CRF of Krähenbühl and Koltun (NeurIPS, 2011).
""")


#
# DeepOrganSegParameterNode
#


class Device(enum.Enum):
    """Where the network runs (the value is the engine's ``--device``)."""

    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"

    def label(self) -> str:
        return {Device.AUTO: _("Auto"), Device.GPU: _("GPU (CUDA)"), Device.CPU: _("CPU")}[self]


@parameterNodeWrapper
class DeepOrganSegParameterNode:
    """The panel's state, saved with the scene.

    model: path of the model file; task: a task name of the model, or "auto";
    excludedOrgans: organs of the task the user unchecked; outputSegmentation: None means a
    new segmentation is made; the crf* values are loaded from the model when it is chosen.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    model: str = ""
    task: str = "auto"
    excludedOrgans: list[str]
    device: Device = Device.AUTO
    useCrf: bool = True
    crfIterations: Annotated[int, WithinRange(*PANEL_RANGES["iterations"])] = \
        CRFParameters.iterations
    crfAppearanceWeight: Annotated[float, WithinRange(*PANEL_RANGES["appearance_weight"])] = \
        CRFParameters.appearance_weight
    crfAppearanceSpatialMm: Annotated[
        float, WithinRange(*PANEL_RANGES["appearance_spatial_mm"])] = \
        CRFParameters.appearance_spatial_mm
    crfAppearanceIntensity: Annotated[
        float, WithinRange(*PANEL_RANGES["appearance_intensity"])] = \
        CRFParameters.appearance_intensity
    crfSmoothnessWeight: Annotated[float, WithinRange(*PANEL_RANGES["smoothness_weight"])] = \
        CRFParameters.smoothness_weight
    crfSmoothnessSpatialMm: Annotated[
        float, WithinRange(*PANEL_RANGES["smoothness_spatial_mm"])] = \
        CRFParameters.smoothness_spatial_mm
    show3D: bool = False
    #: Keep the run's probabilities so that its organs can be refined with strokes.
    keepForRefinement: bool = True


#
# DeepOrganSegWidget
#


class DeepOrganSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: input, task, organs, model, device, output, CRF; Segment/Cancel; results."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: DeepOrganSegLogic | None = None
        self._parameterNode: DeepOrganSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._metadata: ModelMetadata | None = None
        self._lastInputVolume = None
        self._resultNode = None
        self._updatingGUI = False
        self._crfToolTip = ""
        self._cudaAvailability: tuple[bool, str] | None = None  # the probe's answer, once known
        self._deviceProbe = None
        self._refinement: RefinementSession | None = None  # of the last run, while it lasts

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepOrganSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DeepOrganSegLogic()
        self._crfToolTip = self.ui.crfCheckBox.toolTip
        self._setCrfRanges(uiWidget)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.taskComboBox.connect("currentIndexChanged(int)", self.onTaskChanged)
        self.ui.organListWidget.connect("itemChanged(QListWidgetItem*)", self.onOrganToggled)
        self.ui.crfCheckBox.connect("toggled(bool)", self.ui.crfParametersWidget.setEnabled)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3DToggled)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self._buildRefineSection()

        self.initializeParameterNode()
        self._populateModels()
        self._probeDevices()

    @staticmethod
    def _setCrfRanges(uiWidget) -> None:
        """Bound each CRF field by the engine's ``PANEL_RANGES`` (the .ui file sets none), before
        the parameter node is connected, so that no value is clamped by a stale range."""
        for widget in slicer.util.findChildren(uiWidget):
            field = widget.property("SlicerParameterName")
            if field in CRF_PARAMETERS:
                widget.minimum, widget.maximum = PANEL_RANGES[CRF_PARAMETERS[field]]

    def cleanup(self) -> None:
        """Called when the application closes or the module is reloaded: stop a running job,
        drop the refinement data."""
        if self.logic is not None:
            self.logic.cancel(wait=True)
        self._closeRefinement()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.strokeEditor.setActiveEffect(None)  # painting stops with the module
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self._updateGUIFromParameterNode)

    def onReload(self) -> None:
        """Reload the engine too: drop ``DeepOrganSegLib`` (and the shared test bodies) from
        ``sys.modules`` so that the module's fresh import executes the edited files."""
        for name in [name for name in sys.modules
                     if name.split(".")[0] in ("DeepOrganSegLib", "DeepOrganSegTestBodies")]:
            del sys.modules[name]
        super().onReload()

    def onSceneStartClose(self, caller, event) -> None:
        """A run still going would import into a closed scene: cancel it first."""
        if self.logic is not None:
            self.logic.cancel()
        self._closeRefinement()
        if self.strokeEditor.mrmlSegmentEditorNode() is not None:
            self.strokeEditor.setSegmentationNode(None)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ----------------------------------------------------------------------

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: DeepOrganSegParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                                self._updateGUIFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets with a "SlicerParameterName" property in the .ui are connected here; the
            # model, task and organ choices depend on the model file and are synced by hand.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent,
                             self._updateGUIFromParameterNode)
            if self.ui.modelComboBox.count:  # every new node (scene closed or loaded)
                self._ensureModelSelected()
            self._updateDeviceChoices()
            self._updateGUIFromParameterNode()

    def _updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        parameters = self._parameterNode
        if parameters is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            if parameters.inputVolume is not self._lastInputVolume:
                if self._lastInputVolume is not None:
                    parameters.outputSegmentation = None  # a new volume gets a new segmentation
                self._lastInputVolume = parameters.inputVolume
            self._selectComboData(self.ui.modelComboBox, parameters.model)
            self._selectComboData(self.ui.taskComboBox, parameters.task)
            self._fillOrganList()
            self.ui.crfParametersWidget.enabled = parameters.useCrf
            self._updateSegmentButton()
        finally:
            self._updatingGUI = False

    @staticmethod
    def _selectComboData(comboBox, data: str) -> None:
        index = comboBox.findData(data) if data else -1  # "" is "Add model file...", not a model
        if index >= 0 and comboBox.currentIndex != index:
            wasBlocked = comboBox.blockSignals(True)
            comboBox.currentIndex = index
            comboBox.blockSignals(wasBlocked)

    def _updateSegmentButton(self) -> None:
        running = self.logic.isRunning
        self.ui.segmentButton.text = _("Cancel") if running else _("Segment")
        for section in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                        self.ui.advancedCollapsibleButton):
            section.enabled = not running
        parameters = self._parameterNode
        if running:
            self.ui.segmentButton.enabled = True
            self.ui.segmentButton.toolTip = (
                _("Stop installing; nothing further is installed.") if self.logic.isInstalling
                else _("Stop the segmentation; the scene stays as it was."))
        elif not parameters or not parameters.inputVolume:
            self.ui.segmentButton.enabled = False
            self.ui.segmentButton.toolTip = _("Select an input volume.")
        elif not parameters.model:
            self.ui.segmentButton.enabled = False
            self.ui.segmentButton.toolTip = _("Select a model.")
        elif self._metadata and not self._selectedOrgans() and parameters.task != "auto":
            self.ui.segmentButton.enabled = False
            self.ui.segmentButton.toolTip = _("Check at least one organ.")
        else:
            self.ui.segmentButton.enabled = True
            self.ui.segmentButton.toolTip = _("Segment the organs of the input volume.")

    # -- model, task, organs, device -----------------------------------------------------------

    def _populateModels(self) -> None:
        """Bundled models, the models in the user's model folder, the user's added models,
        then "Add model file..."."""
        comboBox = self.ui.modelComboBox
        wasBlocked = comboBox.blockSignals(True)
        comboBox.clear()
        for path in bundled_models():
            comboBox.addItem(path.stem, str(path))
            comboBox.setItemData(comboBox.count - 1, _("Bundled model: {path}").format(path=path),
                                 qt.Qt.ToolTipRole)
        for path in user_models():
            comboBox.addItem(path.stem, str(path))
            comboBox.setItemData(comboBox.count - 1, _("Model in {folder}: {path}").format(
                folder=user_model_folder(), path=path), qt.Qt.ToolTipRole)
        for path in self._userModels():
            comboBox.addItem(Path(path).stem, path)
            comboBox.setItemData(comboBox.count - 1, path, qt.Qt.ToolTipRole)
        comboBox.addItem(_("Add model file..."), "")
        comboBox.blockSignals(wasBlocked)
        self._ensureModelSelected()

    def _ensureModelSelected(self) -> None:
        """A parameter node without a usable model (a new or closed scene: model "") gets the
        first listed one, and the model's tasks and organs are (re)loaded: "" must never match
        the "Add model file..." entry and leave Segment disabled."""
        comboBox, parameters = self.ui.modelComboBox, self._parameterNode
        if parameters and comboBox.count > 1 and (
                not parameters.model or comboBox.findData(parameters.model) < 0):
            parameters.model = comboBox.itemData(0)
        self._loadModel(parameters.model if parameters else "")

    @staticmethod
    def _userModels() -> list[str]:
        value = qt.QSettings().value(USER_MODELS_SETTING) or []
        paths = [value] if isinstance(value, str) else list(value)
        return [path for path in paths if Path(path).is_file()]

    def onModelActivated(self, index: int) -> None:
        path = self.ui.modelComboBox.itemData(index)
        if not path:
            path = self._addModelFile()
        if path:
            self._parameterNode.model = path
            self._loadModel(path)
        self._selectComboData(self.ui.modelComboBox, self._parameterNode.model)

    def _addModelFile(self) -> str:
        """Ask for a model file, validate it (metadata only, nothing executed) and remember it."""
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Add a DeepOrganSeg model file"), "",
            _("DeepOrganSeg model (*.safetensors)"))
        if not path:
            return ""
        try:
            self.logic.readModel(path)
        except ModelFileError as error:
            slicer.util.errorDisplay(_("Not a usable DeepOrganSeg model: {reason}").format(
                reason=error))
            return ""
        userModels = [model for model in self._userModels() if model != path] + [path]
        qt.QSettings().setValue(USER_MODELS_SETTING, userModels)
        self._populateModels()
        return path

    def _loadModel(self, path: str) -> None:
        """Read the model's metadata: fill the tasks and the model's CRF defaults."""
        self._metadata = None
        if path:
            try:
                self._metadata = self.logic.readModel(path)
            except ModelFileError as error:
                slicer.util.errorDisplay(_("Cannot use the model: {reason}").format(reason=error))
        comboBox = self.ui.taskComboBox
        wasBlocked = comboBox.blockSignals(True)
        comboBox.clear()
        comboBox.addItem(_("Auto"), "auto")
        comboBox.setItemData(0, _("The task is chosen from the image (modality, body region)."),
                             qt.Qt.ToolTipRole)
        for task in self._metadata.tasks if self._metadata else ():
            comboBox.addItem(task.title, task.name)
            organs = ", ".join(label.display_name for label in task.labels)
            comboBox.setItemData(comboBox.count - 1, _("{modality}: {organs}").format(
                modality=task.modality, organs=organs), qt.Qt.ToolTipRole)
        comboBox.blockSignals(wasBlocked)
        parameters = self._parameterNode
        if parameters is None:
            return
        if comboBox.findData(parameters.task) < 0:
            parameters.task = "auto"
        self._showCrfDefaults()
        hasCrf = bool(self._metadata and self._metadata.crf)
        self.ui.crfCheckBox.enabled = hasCrf
        self.ui.crfCheckBox.toolTip = (self._crfToolTip if hasCrf else
                                       _("This model carries no tuned CRF parameters."))
        self._updateGUIFromParameterNode()

    def onTaskChanged(self, index: int) -> None:
        if self._parameterNode and not self._updatingGUI:
            self._parameterNode.task = self.ui.taskComboBox.itemData(index)
            self._parameterNode.excludedOrgans = []
            self._showCrfDefaults()

    def _crfDefaults(self) -> dict[str, float]:
        """The model's CRF parameters for the chosen task (the model-wide ones for Auto)."""
        if not self._metadata:
            return {}
        task = self._chosenTask()
        return self.logic.crfDefaults(self._metadata, task.name if task else None)

    def _showCrfDefaults(self) -> None:
        """Put the chosen task's tuned CRF parameters in the Advanced fields."""
        crf = self._crfDefaults()
        parameters = self._parameterNode
        wasModified = parameters.StartModify()
        for field, name in CRF_PARAMETERS.items():
            if name in crf:
                setattr(parameters, field, crf[name])
        parameters.EndModify(wasModified)

    def _crfChanges(self) -> dict[str, float]:
        """The CRF fields the user changed from the model's values: only those are passed on,
        so that with Auto the engine still uses the tuned parameters of the task it picks."""
        crf = self._crfDefaults()
        values = {name: getattr(self._parameterNode, field)
                  for field, name in CRF_PARAMETERS.items()}
        return {name: value for name, value in values.items()
                if name not in crf or abs(float(crf[name]) - float(value)) > 1e-9}

    def _fillOrganList(self) -> None:
        """Checkable organs of the chosen task (a subset needs a task: Auto segments all)."""
        listWidget = self.ui.organListWidget
        wasBlocked = listWidget.blockSignals(True)
        listWidget.clear()
        task = self._chosenTask()
        for label in task.labels if task else ():
            item = qt.QListWidgetItem(label.display_name)
            item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
            item.setCheckState(qt.Qt.Unchecked if label.name in self._parameterNode.excludedOrgans
                               else qt.Qt.Checked)
            item.setData(qt.Qt.UserRole, label.name)
            swatch = qt.QPixmap(12, 12)
            swatch.fill(qt.QColor(*label.color))
            item.setIcon(qt.QIcon(swatch))
            listWidget.addItem(item)
        listWidget.enabled = task is not None
        listWidget.toolTip = (_("Uncheck organs you do not need.") if task else
                              _("Choose a task to segment a subset of its organs."))
        listWidget.blockSignals(wasBlocked)

    def _chosenTask(self):
        if not self._metadata or not self._parameterNode or self._parameterNode.task == "auto":
            return None
        return next((task for task in self._metadata.tasks
                     if task.name == self._parameterNode.task), None)

    def _selectedOrgans(self) -> tuple[str, ...]:
        """The organs to segment; empty means all organs of the task."""
        task = self._chosenTask()
        if task is None or not self._parameterNode.excludedOrgans:
            return tuple(label.name for label in task.labels) if task else ()
        return tuple(label.name for label in task.labels
                     if label.name not in self._parameterNode.excludedOrgans)

    def onOrganToggled(self, item) -> None:
        """Record the choice without rebuilding the list: this runs inside the list's own
        ``itemChanged``, and a rebuild would delete the sender and reset the scrolling."""
        name = item.data(qt.Qt.UserRole)
        excluded = [organ for organ in self._parameterNode.excludedOrgans if organ != name]
        if item.checkState() == qt.Qt.Unchecked:
            excluded.append(name)
        self._updatingGUI = True
        try:
            self._parameterNode.excludedOrgans = excluded
        finally:
            self._updatingGUI = False
        self._updateSegmentButton()

    def _probeDevices(self) -> None:
        """Ask a PythonSlicer child whether PyTorch sees a GPU, on a worker thread: the GUI
        thread neither imports torch nor waits for it (``runner.probe_cuda``)."""
        import concurrent.futures

        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._deviceProbe = executor.submit(self.logic.cudaAvailability)
        executor.shutdown(wait=False)
        timer = qt.QTimer(self.parent)
        timer.setInterval(250)

        def collect() -> None:
            if not self._deviceProbe.done():
                return
            timer.stop()
            try:
                self._cudaAvailability = self._deviceProbe.result()
            except Exception as error:  # a probe that cannot run leaves the choice to the run
                self._cudaAvailability = (False, str(error))
            self._updateDeviceChoices()

        timer.connect("timeout()", collect)
        timer.start()

    def _updateDeviceChoices(self) -> None:
        """Disable the GPU choice (and say why) when PyTorch sees no CUDA device. Called when
        the probe answers and after every ``connectGui`` (which rebuilds the combo box's
        items, enabling them all again)."""
        if self._cudaAvailability is None:
            return
        available, reason = self._cudaAvailability
        comboBox = self.ui.deviceComboBox
        index = comboBox.findText(Device.GPU.label())
        comboBox.model().item(index).setEnabled(available)
        comboBox.setItemData(index, reason, qt.Qt.ToolTipRole)
        if not available and self._parameterNode and self._parameterNode.device is Device.GPU:
            self._parameterNode.device = Device.AUTO

    # -- running -----------------------------------------------------------------------------

    def onSegmentButton(self) -> None:
        if self.logic.isRunning:
            self.logic.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            missing = self.logic.missingRequirements()
            if missing:
                self._installThenSegment(missing)
            else:
                self._startSegmentation()
        self._updateSegmentButton()

    def _installThenSegment(self, missing: list[str]) -> None:
        """First use on a clean Slicer: ask, install in the background (the Segment button
        becomes Cancel, the progress bar follows the steps), then segment."""
        if not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
                _("DeepOrganSeg needs these Python packages in Slicer's Python: {packages}.\n\n"
                  "Install them now? They are downloaded from the internet (PyTorch with GPU "
                  "support: a few GB). Slicer stays usable meanwhile; the segmentation starts "
                  "when they are installed.").format(packages=", ".join(missing)),
                _("Install Python packages")):
            return
        self.logic.installRequirements(missing, progressCallback=self._onInstallProgress,
                                       completedCallback=self._onInstalled)

    def _onInstallProgress(self, job: InstallJob) -> None:
        self.ui.progressBar.value = int(round(100 * job.fraction))
        self.ui.statusLabel.text = job.message
        self._updateSegmentButton()

    def _onInstalled(self, job: InstallJob) -> None:
        self._onInstallProgress(job)
        if job.state is RunState.DONE:
            with slicer.util.tryWithErrorDisplay(_("Segmentation could not start.")):
                self._startSegmentation()
            self._updateSegmentButton()
        elif job.state is RunState.FAILED:
            slicer.util.errorDisplay(_("Installing Python packages failed: {message}").format(
                message=job.failure), detailedText=job.details)

    def _startSegmentation(self) -> None:
        """The request from the panel (asking first whether to replace hand-drawn segments
        named like an organ), then the run, followed by the Logic's timer."""
        parameters = self._parameterNode
        task = self._chosenTask()
        organs = self._selectedOrgans()
        specs = [label for t in ([task] if task else self._metadata.tasks if self._metadata
                                 else []) for label in t.labels
                 if not organs or label.name in organs]
        mine = hand_drawn_matches(parameters.outputSegmentation, specs)
        replaceHandDrawn = bool(mine) and slicer.util.confirmYesNoDisplay(
            _("These segments you made have an organ's name: {names}.\n\nReplace them "
              "with the new result? (No keeps them and adds the new segments beside them.)"
              ).format(names=", ".join(mine)), _("Replace your segments?"))
        options = SegmentationOptions(
            task=parameters.task, inference=InferenceSettings(device=parameters.device.value),
            crf=parameters.useCrf, crf_overrides=self._crfChanges(),
            organs=organs if task and len(organs) < len(task.labels) else None)
        request = SegmentationRequest(
            input_volume=parameters.inputVolume, model=Path(parameters.model),
            output_segmentation=parameters.outputSegmentation, options=options,
            show_3d=parameters.show3D, replace_hand_drawn=replaceHandDrawn,
            keep_for_refinement=parameters.keepForRefinement)
        self._closeRefinement()
        self.ui.resultsTableWidget.setRowCount(0)
        self.ui.elapsedLabel.text = ""
        self.logic.process(request, progressCallback=self._onProgress,
                           completedCallback=self._onCompleted)

    def _onProgress(self, job: SegmentationJob) -> None:
        self.ui.progressBar.value = int(round(100 * job.progress.fraction))
        stage = STAGE_NAMES.get(job.progress.stage, job.progress.stage)
        status = f"{stage}: {job.progress.message}" if job.progress.message else stage
        self.ui.statusLabel.text = "\n".join([*job.notes, status])
        self._updateSegmentButton()

    def _onCompleted(self, job: SegmentationJob) -> None:
        self._onProgress(job)
        if job.state is RunState.DONE:
            outcome = job.outcome
            self._resultNode = outcome.segmentation_node
            self._parameterNode.outputSegmentation = outcome.segmentation_node
            self._showResults(job)
            self._openRefinement(RefinementSession.of(job))
        elif job.state is RunState.FAILED:
            slicer.util.errorDisplay(
                _("Segmentation failed: {message}").format(message=job.failure.message),
                detailedText=job.failure.details)

    def _showResults(self, job: SegmentationJob) -> None:
        """Organ volumes and mean intensities in the table; the elapsed time below it."""
        table = self.ui.resultsTableWidget
        table.setRowCount(len(job.outcome.organs))
        for row, organ in enumerate(job.outcome.organs):
            swatch = qt.QPixmap(12, 12)
            swatch.fill(qt.QColor(*organ.color))
            name = qt.QTableWidgetItem(qt.QIcon(swatch), organ.display_name)
            volume = qt.QTableWidgetItem(f"{organ.volume_ml:.1f}")
            mean = qt.QTableWidgetItem("" if organ.mean_intensity is None
                                       else f"{organ.mean_intensity:.1f}")
            for column, item in enumerate((name, volume, mean)):
                if column:
                    item.setTextAlignment(qt.Qt.AlignRight | qt.Qt.AlignVCenter)
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        outcome = job.outcome
        self.ui.elapsedLabel.text = _(
            "{task} in {elapsed:.1f} s (engine {engine:.1f} s on {device}{crf})").format(
            task=outcome.task, elapsed=job.elapsed_s, engine=outcome.engine_seconds,
            device=outcome.device, crf=_(", with CRF") if outcome.crf else "")

    def onShow3DToggled(self, show: bool) -> None:
        if self._resultNode is not None and self._resultNode.GetScene() is not None:
            set_show_3d(self._resultNode, show)

    # -- refinement with strokes ---------------------------------------------------------------

    def _buildRefineSection(self) -> None:
        """The Refine section's stroke editor (an embedded Segment Editor limited to Paint and
        Erase) and its buttons."""
        self.strokeEditor = slicer.qMRMLSegmentEditorWidget()
        self.strokeEditor.setMRMLScene(slicer.mrmlScene)
        self.strokeEditor.setEffectNameOrder(["Paint", "Erase"])
        self.strokeEditor.unorderedEffectsVisible = False
        for visible in ("segmentationNodeSelectorVisible", "sourceVolumeNodeSelectorVisible",
                        "maskingSectionVisible", "addRemoveSegmentButtonsVisible",
                        "switchToSegmentationsButtonVisible", "specifyGeometryButtonVisible",
                        "show3DButtonVisible"):
            setattr(self.strokeEditor, visible, False)
        self.ui.strokeEditorPlaceholder.layout().addWidget(self.strokeEditor)
        self.ui.addStrokesButton.connect("clicked(bool)", lambda: self.onPaintStrokes("add"))
        self.ui.removeStrokesButton.connect("clicked(bool)",
                                            lambda: self.onPaintStrokes("remove"))
        self.ui.refineButton.connect("clicked(bool)", self.onRefineButton)
        self.ui.undoRefineButton.connect("clicked(bool)", self.onUndoRefine)
        self._updateRefineSection()

    def _strokeEditorNode(self):
        """The stroke editor's parameter node (a singleton of its own: the Segment Editor
        module's choices stay as they were)."""
        tag = "DeepOrganSegStrokes"
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node = slicer.mrmlScene.AddNode(node)
        return node

    def _openRefinement(self, session: RefinementSession | None) -> None:
        self._refinement = session
        self.ui.refineOrganComboBox.clear()
        if session is not None:
            for name, (spec, _segment) in session.organ_segments.items():
                self.ui.refineOrganComboBox.addItem(spec.display_name, name)
        self._updateRefineSection()

    def _closeRefinement(self) -> None:
        if self._refinement is not None:
            self.strokeEditor.setActiveEffect(None)
            self._refinement.close()
            self._refinement = None
        self.ui.refineOrganComboBox.clear()
        self._updateRefineSection()

    def _updateRefineSection(self) -> None:
        session = self._refinement
        ready = session is not None and session.is_open and not self.logic.isRunning
        for widget in (self.ui.refineOrganComboBox, self.ui.addStrokesButton,
                       self.ui.removeStrokesButton, self.ui.refineButton):
            widget.enabled = ready
        self.ui.undoRefineButton.enabled = ready and session.can_undo
        self.strokeEditor.enabled = ready
        if session is None:
            self.ui.refineStatusLabel.text = _("Segment first (with the probabilities kept); "
                                            "then paint strokes for one organ and click Refine.")

    def onPaintStrokes(self, kind: str) -> None:
        """Select the organ's add/remove stroke segment in the embedded editor, with Paint."""
        session, organ = self._refinement, self.ui.refineOrganComboBox.itemData(
            self.ui.refineOrganComboBox.currentIndex)
        with slicer.util.tryWithErrorDisplay(_("Cannot paint strokes."), waitCursor=True):
            add, remove = session.scribble_segments(organ)
            self.strokeEditor.setMRMLSegmentEditorNode(self._strokeEditorNode())
            self.strokeEditor.setSegmentationNode(session.segmentation_node)
            self.strokeEditor.setSourceVolumeNode(session.input_volume)
            self.strokeEditor.setCurrentSegmentID(add if kind == "add" else remove)
            self.strokeEditor.setActiveEffectByName("Paint")
            self.ui.refineStatusLabel.text = _("Paint in the slice views, then click Refine.")

    def onRefineButton(self) -> None:
        if self.logic.isRunning:
            self.logic.cancel()
            return
        organ = self.ui.refineOrganComboBox.itemData(
            self.ui.refineOrganComboBox.currentIndex)
        with slicer.util.tryWithErrorDisplay(_("Refinement could not start."), waitCursor=True):
            self.strokeEditor.setActiveEffect(None)
            self.logic.refine(self._refinement, organ, progressCallback=self._onRefineProgress,
                              completedCallback=self._onRefineCompleted)
        self._updateRefineSection()
        self._updateSegmentButton()

    def _onRefineProgress(self, job: RefineJob) -> None:
        self.ui.refineStatusLabel.text = job.progress.message
        self.ui.refineButton.text = _("Cancel") if not job.state.finished else _("Refine")
        self.ui.refineButton.enabled = True

    def _onRefineCompleted(self, job: RefineJob) -> None:
        self._onRefineProgress(job)
        if job.state is RunState.FAILED:
            slicer.util.errorDisplay(
                _("Refinement failed: {message}").format(message=job.failure.message),
                detailedText=job.failure.details)
        self._updateRefineSection()
        self._updateSegmentButton()

    def onUndoRefine(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Undo failed."), waitCursor=True):
            restored = self._refinement.undo()
            self.ui.refineStatusLabel.text = _("Restored {count} segment(s).").format(
                count=len(restored))
        self._updateRefineSection()


#
# DeepOrganSegLogic
#


class DeepOrganSegLogic(ScriptedLoadableModuleLogic):
    """Runs segmentations without a GUI: ``process(request, waitForCompletion=True)`` in scripts
    and tests, or followed by a ``QTimer`` with progress/completion callbacks from the panel."""

    POLL_INTERVAL_MS = 200

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._job: EngineJob | None = None
        self._timer: qt.QTimer | None = None
        # called with the followed job, as its own type (segmentation, refinement or install)
        self._progressCallback: Callable[[Any], None] | None = None
        self._completedCallback: Callable[[Any], None] | None = None
        if hasattr(slicer.modules, "terminologies"):  # our context: segments Slicer's list lacks
            load_terminology_context(slicer.modules.terminologies.logic(),
                                     Path(__file__).parent / "Resources" / "Terminology")

    def getParameterNode(self) -> DeepOrganSegParameterNode:
        return DeepOrganSegParameterNode(super().getParameterNode())

    # -- models and devices --------------------------------------------------------------------

    @staticmethod
    def bundledModels() -> list[Path]:
        """The model files shipped with the module, for scripts (``docs/slicer.md``)."""
        return bundled_models()

    @staticmethod
    def readModel(path: str | os.PathLike) -> ModelMetadata:
        """A model file's metadata; raises ``ModelFileError`` with a one-line reason. Reading
        never executes anything from the file."""
        return read_metadata(path)

    @staticmethod
    def crfDefaults(metadata: ModelMetadata, task: str | None = None) -> dict[str, float]:
        """The CRF parameters the model runs with (those the GUI shows), for ``task`` when
        given (a task may carry its own), else the model-wide ones; {} without a CRF."""
        crf = metadata.crf_parameters(task)
        return {} if crf is None else {name: getattr(crf, name) for name in CRF_PARAMETERS.values()}

    @classmethod
    def cudaAvailability(cls) -> tuple[bool, str]:
        """Whether the GPU choice can work, and a tooltip saying so: asked of a PythonSlicer
        child (seconds; call it off the GUI thread), never by importing torch into Slicer."""
        answer = probe_cuda(cls.pythonExecutable())
        if answer is None:
            return False, _("PyTorch is not installed yet; it is installed on the first run.")
        if answer["available"]:
            return True, _("Run on {gpu}.").format(gpu=answer["device"])
        return False, _("PyTorch {version} sees no CUDA GPU on this computer.").format(
            version=answer["torch"])

    # -- dependencies --------------------------------------------------------------------------

    #: The engine's Python packages besides PyTorch, with their version ranges.
    REQUIREMENTS_PATH = Path(__file__).parent / "Resources" / "requirements.txt"

    def missingRequirements(self) -> list[str]:
        """What the engine needs that Slicer's Python lacks: PyTorch and the lines of
        ``Resources/requirements.txt`` (package metadata only: milliseconds)."""
        return missing_requirements([TORCH_REQUIREMENT, *read_requirements(self.REQUIREMENTS_PATH)])

    def installRequirements(self, missing: list[str], waitForCompletion: bool = False,
                            progressCallback: Callable[[InstallJob], None] | None = None,
                            completedCallback: Callable[[InstallJob], None] | None = None
                            ) -> InstallJob:
        """Install ``missing`` into Slicer's Python in ``PythonSlicer`` child processes
        (``mrml.install``): PyTorch with light-the-torch, which picks the build for this
        computer's GPU, then the rest with pip. Followed like ``process``, so the GUI stays
        responsive for the minutes a PyTorch download takes; no restart is needed afterwards
        (Slicer's own process never imports them). Ask the user before calling this."""
        if self.isRunning:
            raise RuntimeError(_("A segmentation is already running."))
        job = InstallJob(install_steps(self.pythonExecutable(), missing),
                         environment=slicer.util.startupEnvironment())
        if waitForCompletion:
            job.start()
            job.wait()
            return job
        return self._follow(job, progressCallback, completedCallback)

    # -- running -------------------------------------------------------------------------------

    @property
    def isRunning(self) -> bool:
        """A segmentation, refinement or package install is under way."""
        return self._job is not None and not self._job.state.finished

    @property
    def isInstalling(self) -> bool:
        return self.isRunning and isinstance(self._job, InstallJob)

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's ``PythonSlicer`` (it sets up the interpreter's environment); inside Slicer
        ``sys.executable`` is the application itself (``runner.slicer_python``)."""
        return slicer_python(slicer.app.applicationDirPath())

    def process(self, request: SegmentationRequest, waitForCompletion: bool = False,
                progressCallback: Callable[[SegmentationJob], None] | None = None,
                completedCallback: Callable[[SegmentationJob], None] | None = None
                ) -> SegmentationJob:
        """Segment ``request.input_volume``.

        With ``waitForCompletion`` the call returns the finished job and raises
        ``SegmentationFailed`` unless it succeeded. Otherwise it returns the started job at once;
        a QTimer polls it, calling ``progressCallback(job)`` on each poll and
        ``completedCallback(job)`` once it is DONE, FAILED or CANCELLED. Raises ``InputError``
        (nothing started) for a request that cannot run."""
        if self.isRunning:
            raise RuntimeError(_("A segmentation is already running."))
        options = dict(environment=slicer.util.startupEnvironment(),
                       temporary_root=slicer.app.temporaryPath)
        if waitForCompletion:
            return run_segmentation(request, self.pythonExecutable(), **options)
        return self._follow(SegmentationJob(request, self.pythonExecutable(), **options),
                            progressCallback, completedCallback)

    def refine(self, session: RefinementSession, organ: str,
               progressCallback: Callable[[RefineJob], None] | None = None,
               completedCallback: Callable[[RefineJob], None] | None = None) -> RefineJob:
        """Correct ``organ`` of the run ``session`` belongs to from the strokes painted into
        its stroke segments; the engine runs in a subprocess, followed like ``process``."""
        if self.isRunning:
            raise RuntimeError(_("A segmentation is already running."))
        job = RefineJob(session, organ, self.pythonExecutable(),
                        environment=slicer.util.startupEnvironment())
        return self._follow(job, progressCallback, completedCallback)

    def _follow(self, job: JobT, progressCallback: Callable[[JobT], None] | None,
                completedCallback: Callable[[JobT], None] | None) -> JobT:
        """Start ``job`` (a segmentation, refinement or install) and poll it from a QTimer,
        calling back on progress and completion; returns it."""
        self._job = job
        self._progressCallback, self._completedCallback = progressCallback, completedCallback
        job.start()
        if self._timer is None:  # one timer for all jobs: a completion callback may start the
            self._timer = qt.QTimer()  # next job (install, then segment) from inside its slot
            self._timer.setInterval(self.POLL_INTERVAL_MS)
            self._timer.connect("timeout()", self._onTimer)
        self._timer.start()
        return job

    def _onTimer(self) -> None:
        job = self._job
        state = job.poll()
        if self._progressCallback:
            self._progressCallback(job)
        if state.finished:
            self._timer.stop()
            logging.info("DeepOrganSeg: %s in %.1f s", state.value, job.elapsed_s)
            if self._completedCallback:
                self._completedCallback(job)

    def cancel(self, wait: bool = False) -> None:
        """Cancel the running job (kills the engine's process tree; the scene is unchanged)."""
        if self.isRunning:
            self._job.cancel()
            if wait:  # the engine gets TERMINATE_GRACE_S on SIGTERM, then it is killed
                self._job.wait(timeout=TERMINATE_GRACE_S + 1.0)
                self._timer.stop()


#
# DeepOrganSegTest
#


class DeepOrganSegTest(ScriptedLoadableModuleTest):
    """Runs the checks of ``Testing/Python/DeepOrganSegTestBodies.py`` -- the same functions
    pytest runs against slicer-core -- on a synthetic abdominal CT phantom with an oblique
    orientation, through this module's Logic and the bundled model."""

    #: Large organs of the phantom whose Dice is held to ``MIN_DICE``.
    CHECKED_ORGANS = ("liver", "spleen", "right_kidney", "left_kidney")
    MIN_DICE = 0.7

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_DeepOrganSeg()

    def test_DeepOrganSeg(self) -> None:
        # a clean Slicer has no torch/safetensors/tqdm yet: install them as a first Segment
        # would (without asking in testing mode), and say why if that fails
        logic = DeepOrganSegLogic()
        missing = logic.missingRequirements()
        if missing:
            self.delayDisplay(f"installing {', '.join(missing)}")
            install = logic.installRequirements(missing, waitForCompletion=True)
            self.assertIs(install.state, RunState.DONE, install.failure)
        bodies = self._testBodies()
        context = self._context(bodies)
        for check in bodies.TESTS_ON_CONTEXT:
            self.delayDisplay(check.__name__)
            check(context)
        self.delayDisplay("segment_phantom")
        run = bodies.segment_phantom(context)
        for check in bodies.TESTS_ON_PHANTOM_RUN:
            self.delayDisplay(check.__name__)
            check(context, run)
        self.delayDisplay(f"Test passed: {context.measurements}")

    @staticmethod
    def _testBodies():
        testingPath = str(Path(__file__).parent / "Testing" / "Python")
        if testingPath not in sys.path:
            sys.path.append(testingPath)
        import DeepOrganSegTestBodies

        return DeepOrganSegTestBodies

    def _context(self, bodies):
        from DeepOrganSegLib.phantoms import make_phantom

        models = bundled_models()
        self.assertTrue(models, "no bundled model in Resources/Models")
        phantom = next(case for case in (
            make_phantom("abdomen-ct", seed, shape=(64, 112, 112), random_orientation=True)
            for seed in range(50)) if _isOblique(case.image.direction))
        organs = {value: name for value, name in phantom.label_names.items()
                  if name in self.CHECKED_ORGANS}
        case = bodies.Case(image=phantom.image, truth=phantom.labels, organs=organs,
                           model=models[0], task="abdomen-ct")
        logic = DeepOrganSegLogic()
        return bodies.Context(
            scene=slicer.mrmlScene, case=case,
            run=lambda request: logic.process(request, waitForCompletion=True),
            start=lambda request: logic.process(request),
            python=logic.pythonExecutable(), workdir=Path(slicer.app.temporaryPath),
            min_dice=self.MIN_DICE)


def _isOblique(direction) -> bool:
    return any(0.01 < abs(value) < 0.99 for row in direction for value in row)
