"""DeepOrganSeg: organ segmentation with a 3D deeply supervised network and a dense 3D CRF.

Module, Widget, Logic and Test in the layout of Slicer's scripted-module template. The Widget
wires the panel (``Resources/UI/DeepOrganSeg.ui``) to a Logic it is given or makes; what the
panel shows and asks for is decided by the Qt-free ``DeepOrganSegLib.mrml.panel``. The Logic is
the engine's Qt-free ``DeepOrganSegLib.mrml.logic.EngineLogic`` (its jobs: export ->
``deeporganseg`` subprocess -> import) with Slicer's interpreter, environment and scene, polled
from a ``QTimer`` so that the GUI never freezes. pytest runs those classes and the same test
bodies against the MRML of the PyPI ``slicer-core`` wheel.
"""

from __future__ import annotations

import enum
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

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

from DeepOrganSegLib.model import ModelMetadata
from DeepOrganSegLib.crf.parameters import PANEL_RANGES, CRFParameters
from DeepOrganSegLib.errors import InputError, ModelFileError
from DeepOrganSegLib.mrml.eta import describe_seconds
from DeepOrganSegLib.mrml.install import InstallJob
from DeepOrganSegLib.mrml.job import SegmentationJob, SegmentationRequest
from DeepOrganSegLib.mrml.logic import EngineLogic
from DeepOrganSegLib.mrml.nodes import hand_drawn_matches, load_terminology_context, set_show_3d
from DeepOrganSegLib.mrml.panel import (CRF_FIELDS, ModelEntry, OrganChoice,
                                        OutputFollowsInput, Readiness, added_models,
                                        model_entries, readiness, result_cells)
from DeepOrganSegLib.mrml.refine import RefinementSession, RefineJob, stroke_editor_node
from DeepOrganSegLib.mrml.sample import SampleJob
from DeepOrganSegLib.mrml.server import ServerConnection, load_server, save_server
from DeepOrganSegLib.mrml.uncertainty import show_uncertainty
from DeepOrganSegLib.mrml.runner import EngineCommandJob, RunState, probe_cuda, slicer_python
from DeepOrganSegLib.resources import bundled_models, user_model_folder

#: What each engine stage is called in the status line.
STAGE_NAMES = {
    "starting": _("Starting"), "load": _("Loading"), "preprocess": _("Preprocessing"),
    "inference": _("Network"), "crf": _("CRF refinement"), "postprocess": _("Post-processing"),
    "write": _("Writing"), "done": _("Done"), "import": _("Importing"),
    "cancel": _("Cancelling"), "cancelled": _("Cancelled"), "error": _("Failed"),
}

#: The Segment button's tooltip in each state (``panel.readiness``).
SEGMENT_BUTTON_TIPS = {
    Readiness.INSTALLING: _("Stop installing; nothing further is installed."),
    Readiness.RUNNING: _("Stop the segmentation; the scene stays as it was."),
    Readiness.NO_INPUT: _("Select an input volume."),
    Readiness.NO_MODEL: _("Select a model."),
    Readiness.NO_ORGANS: _("Check at least one organ."),
    Readiness.READY: _("Segment the organs of the input volume."),
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
    """Where the network runs (the value is the engine's ``--device``; SERVER: a
    ``deeporganseg serve`` machine whose URL and token are in Slicer's settings, never in the
    scene)."""

    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"
    SERVER = "server"

    def label(self) -> str:
        return {Device.AUTO: _("Auto"), Device.GPU: _("GPU (CUDA)"), Device.CPU: _("CPU"),
                Device.SERVER: _("Server…")}[self]


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

    def __init__(self, parent=None, logic: DeepOrganSegLogic | None = None) -> None:
        """``logic``: what the panel runs (scripts and tests may give their own); ``setup()``
        makes the module's Logic when none is given. The state comes first: without a parent,
        Slicer's base class calls ``setup()`` from its own ``__init__``."""
        self.logic = logic
        self._parameterNode: DeepOrganSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._metadata: ModelMetadata | None = None
        self._outputFollowsInput = OutputFollowsInput()
        self._uncertaintyNode = None  # of the last run, shown from the results table
        self._afterInstall: Callable[[], None] = self._startSegmentation
        self._resultNode = None
        self._updatingGUI = False
        self._crfToolTip = ""
        self._cudaAvailability: tuple[bool, str] | None = None  # the probe's answer, once known
        self._deviceProbe = None  # a concurrent.futures.Future of the GPU probe
        self._deviceProbeTimer = None
        self._refinement: RefinementSession | None = None  # of the last run, while it lasts
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DeepOrganSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        if self.logic is None:
            self.logic = DeepOrganSegLogic()
        self._crfToolTip = self.ui.crfCheckBox.toolTip
        self._setCrfRanges(uiWidget)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.deviceComboBox.connect("activated(int)", self.onDeviceActivated)
        self.ui.taskComboBox.connect("currentIndexChanged(int)", self.onTaskChanged)
        self.ui.organListWidget.connect("itemChanged(QListWidgetItem*)", self.onOrganToggled)
        self.ui.crfCheckBox.connect("toggled(bool)", self.ui.crfParametersWidget.setEnabled)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3DToggled)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.uncertaintyCheckBox.connect("toggled(bool)", self.onUncertaintyToggled)
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
            if field in CRF_FIELDS:
                widget.minimum, widget.maximum = PANEL_RANGES[CRF_FIELDS[field]]

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
        """A run still going would import into a closed scene: cancel it first. The closed
        scene's input and result go with it: a scene loaded next keeps its own selection."""
        if self.logic is not None:
            self.logic.cancel()
        self._closeRefinement()
        self._outputFollowsInput.forget()
        self._resultNode = None
        self._showUncertaintyChoice(None)
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
            if self._outputFollowsInput.input_changed(parameters.inputVolume):
                parameters.outputSegmentation = None  # a new volume gets a new segmentation
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
        """Segment or Cancel, enabled when a click does something, and the reason as the
        tooltip (``panel.readiness``)."""
        parameters = self._parameterNode
        state = readiness(self.logic.isRunning, self.logic.isInstalling,
                          bool(parameters and parameters.inputVolume),
                          parameters.model if parameters else "", self._organChoice())
        running = state in (Readiness.INSTALLING, Readiness.RUNNING)
        self.ui.segmentButton.text = _("Cancel") if running else _("Segment")
        for section in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                        self.ui.advancedCollapsibleButton):
            section.enabled = not running
        self.ui.segmentButton.enabled = state.clickable
        self.ui.segmentButton.toolTip = SEGMENT_BUTTON_TIPS[state]

    # -- model, task, organs, device -----------------------------------------------------------

    def _populateModels(self) -> None:
        """The model list (``panel.model_entries``), then "Add model file..."."""
        comboBox = self.ui.modelComboBox
        wasBlocked = comboBox.blockSignals(True)
        comboBox.clear()
        for entry in model_entries(self._userModels()):
            comboBox.addItem(entry.title, entry.path)
            comboBox.setItemData(comboBox.count - 1, self._modelToolTip(entry),
                                 qt.Qt.ToolTipRole)
        comboBox.addItem(_("Add model file..."), "")
        comboBox.blockSignals(wasBlocked)
        self._ensureModelSelected()

    @staticmethod
    def _modelToolTip(entry: ModelEntry) -> str:
        if entry.origin == "bundled":
            return _("Bundled model: {path}").format(path=entry.path)
        if entry.origin == "folder":
            return _("Model in {folder}: {path}").format(folder=user_model_folder(),
                                                          path=entry.path)
        return entry.path

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
        return added_models(qt.QSettings().value(USER_MODELS_SETTING))

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

    def _organChoice(self) -> OrganChoice:
        """The model, task and organs chosen in the panel (``panel.OrganChoice``)."""
        parameters = self._parameterNode
        return OrganChoice(self._metadata, parameters.task if parameters else "auto",
                           tuple(parameters.excludedOrgans) if parameters else ())

    def _showCrfDefaults(self) -> None:
        """Put the chosen task's tuned CRF parameters in the Advanced fields."""
        crf = self._organChoice().crf_defaults()
        parameters = self._parameterNode
        wasModified = parameters.StartModify()
        for field, name in CRF_FIELDS.items():
            if name in crf:
                setattr(parameters, field, crf[name])
        parameters.EndModify(wasModified)

    def _fillOrganList(self) -> None:
        """Checkable organs of the chosen task (a subset needs a task: Auto segments all)."""
        listWidget = self.ui.organListWidget
        wasBlocked = listWidget.blockSignals(True)
        listWidget.clear()
        task = self._organChoice().chosen_task
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

    def onOrganToggled(self, item) -> None:
        """Record the choice without rebuilding the list: this runs inside the list's own
        ``itemChanged``, and a rebuild would delete the sender and reset the scrolling."""
        excluded = self._organChoice().toggled(item.data(qt.Qt.UserRole),
                                               item.checkState() != qt.Qt.Unchecked)
        self._updatingGUI = True
        try:
            self._parameterNode.excludedOrgans = excluded
        finally:
            self._updatingGUI = False
        self._updateSegmentButton()

    def _probeDevices(self) -> None:
        """Ask a PythonSlicer child whether PyTorch sees a GPU, on a worker thread: the GUI
        thread neither imports torch nor waits for it (``runner.probe_cuda``); a timer hands
        the answer to :meth:`_collectDeviceProbe`."""
        import concurrent.futures

        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._deviceProbe = executor.submit(self.logic.cudaAvailability)
        executor.shutdown(wait=False)
        if self._deviceProbeTimer is None:
            self._deviceProbeTimer = qt.QTimer(self.parent)
            self._deviceProbeTimer.setInterval(250)
            self._deviceProbeTimer.connect("timeout()", self._collectDeviceProbe)
        self._deviceProbeTimer.start()

    def _collectDeviceProbe(self) -> None:
        """Once the probe has answered, let the GPU choice follow the answer."""
        if self._deviceProbe is None or not self._deviceProbe.done():
            return
        self._deviceProbeTimer.stop()
        try:
            self._cudaAvailability = self._deviceProbe.result()
        except Exception as error:  # a probe that cannot run leaves the choice to the run
            self._cudaAvailability = (False, str(error))
        self._updateDeviceChoices()

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

    def onDeviceActivated(self, index: int) -> None:
        """Choosing "Server…" asks for the server's URL and token (kept in Slicer's settings);
        cancelled with none kept, the choice goes back to Auto."""
        if self._parameterNode is None or self._parameterNode.device is not Device.SERVER:
            return
        if self._askServer() is None and load_server(qt.QSettings()) is None:
            self._parameterNode.device = Device.AUTO

    def _askServer(self) -> ServerConnection | None:
        """Ask for the server's URL, then its token (hidden as typed); keep them in Slicer's
        settings. None when the user cancels; a URL that cannot work is said and not kept."""
        settings = qt.QSettings()
        kept = load_server(settings) or ServerConnection("https://", "")
        url = qt.QInputDialog.getText(
            slicer.util.mainWindow(), _("DeepOrganSeg server"),
            _("URL of the deeporganseg serve machine (for example https://gpu.hospital:8765):"),
            qt.QLineEdit.Normal, kept.url)
        if not url:
            return None
        token = qt.QInputDialog.getText(
            slicer.util.mainWindow(), _("DeepOrganSeg server"),
            _("Token the server's operator gave you (kept in Slicer's settings, never in the "
              "scene; leave empty for a server on this computer without one):"),
            qt.QLineEdit.Password, kept.token)
        server = ServerConnection(str(url).strip(), str(token or "").strip())
        try:
            save_server(settings, server)
        except InputError as error:
            slicer.util.errorDisplay(_("This server cannot be used: {reason}").format(
                reason=error))
            return None
        return server

    # -- running -----------------------------------------------------------------------------

    def onSegmentButton(self) -> None:
        if self.logic.isRunning:
            self.logic.cancel()
            return
        # no busy cursor here: the module's questions come from inside (Slicer 5.8-5.12 keep an
        # override cursor over message boxes); the work after them shows one
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start.")):
            self._withRequirements(self._startSegmentation)
        self._updateSegmentButton()

    def _withRequirements(self, then: Callable[[], None]) -> None:
        """Call ``then`` now, or on first use on a clean Slicer: ask, install the engine's
        packages in the background (the Segment button becomes Cancel, the progress bar follows
        the steps), then call it."""
        missing = self.logic.missingRequirements()
        if not missing:
            then()
            return
        if not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
                _("DeepOrganSeg needs these Python packages in Slicer's Python: {packages}.\n\n"
                  "Install them now? They are downloaded from the internet (PyTorch with GPU "
                  "support: a few GB). Slicer stays usable meanwhile, and Slicer's own packages "
                  "(pip included) stay as they are; the work starts when they are installed."
                  ).format(packages=", ".join(missing)),
                _("Install Python packages")):
            return
        self._afterInstall = then
        self.logic.installRequirements(missing, progressCallback=self._onInstallProgress,
                                       completedCallback=self._onInstalled)

    def _onInstallProgress(self, job: InstallJob) -> None:
        self.ui.progressBar.value = int(round(100 * job.fraction))
        self.ui.statusLabel.text = job.message
        self._updateSegmentButton()

    def _onInstalled(self, job: InstallJob) -> None:
        self._onInstallProgress(job)
        if job.state is not RunState.CANCELLED:  # PyTorch may be there now: ask again
            self._probeDevices()
        if job.state is RunState.DONE:
            with slicer.util.tryWithErrorDisplay(_("Could not start.")):
                self._afterInstall()
            self._updateSegmentButton()
        elif job.state is RunState.FAILED:
            slicer.util.errorDisplay(_("Installing Python packages failed: {message}").format(
                message=job.failure), detailedText=job.details)

    def _startSegmentation(self) -> None:
        """The request from the panel (asking first for the server when "Server…" is chosen
        and none is kept, then whether to replace hand-drawn segments named like an organ),
        then the run, followed by the Logic's timer."""
        parameters = self._parameterNode
        server = None
        if parameters.device is Device.SERVER:
            server = load_server(qt.QSettings()) or self._askServer()
            if server is None:
                return
        choice = self._organChoice()
        mine = hand_drawn_matches(parameters.outputSegmentation, choice.label_specs)
        replaceHandDrawn = bool(mine) and slicer.util.confirmYesNoDisplay(
            _("These segments you made have an organ's name: {names}.\n\nReplace them "
              "with the new result? (No keeps them and adds the new segments beside them.)"
              ).format(names=", ".join(mine)), _("Replace your segments?"))
        options = choice.options(
            Device.AUTO.value if server else parameters.device.value, parameters.useCrf,
            {field: getattr(parameters, field) for field in CRF_FIELDS})
        request = SegmentationRequest(
            input_volume=parameters.inputVolume, model=Path(parameters.model),
            output_segmentation=parameters.outputSegmentation, options=options,
            show_3d=parameters.show3D, replace_hand_drawn=replaceHandDrawn,
            keep_for_refinement=parameters.keepForRefinement, uncertainty=True, server=server)
        self._closeRefinement()
        self._showUncertaintyChoice(None)
        self.ui.resultsTableWidget.setRowCount(0)
        self.ui.elapsedLabel.text = ""
        with slicer.util.WaitCursor():  # writing the input volume: up to a second
            self.logic.process(request, progressCallback=self._onProgress,
                               completedCallback=self._onCompleted)

    def _onProgress(self, job: EngineCommandJob) -> None:
        """The stage, its message and, while the engine runs, the time left."""
        self.ui.progressBar.value = int(round(100 * job.progress.fraction))
        stage = STAGE_NAMES.get(job.progress.stage, job.progress.stage)
        status = f"{stage}: {job.progress.message}" if job.progress.message else stage
        left = None if job.state.finished else job.remaining.seconds_left(time.monotonic())
        if left is not None:
            status += "  " + _("(about {time} left)").format(time=describe_seconds(left))
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
        """Per organ: volume, mean intensity, the network's confidence and the review flag;
        the uncertainty toggle; the elapsed time below."""
        table = self.ui.resultsTableWidget
        table.setRowCount(len(job.outcome.organs))
        for row, organ in enumerate(job.outcome.organs):
            swatch = qt.QPixmap(12, 12)
            swatch.fill(qt.QColor(*organ.color))
            numbers = result_cells(organ.volume_ml, organ.mean_intensity, organ.confidence)
            cells = [qt.QTableWidgetItem(qt.QIcon(swatch), organ.display_name)] + [
                qt.QTableWidgetItem(text)
                for text in (*numbers, _("review") if organ.review else "")]
            for column, item in enumerate(cells):
                if column:
                    item.setTextAlignment(qt.Qt.AlignRight | qt.Qt.AlignVCenter)
                if organ.review:
                    item.setToolTip(_("The network is unsure of this organ: look at it with the "
                                      "uncertainty shown, and correct it with strokes."))
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        outcome = job.outcome
        self._showUncertaintyChoice(outcome.uncertainty_node)
        self.ui.elapsedLabel.text = _(
            "{task} in {elapsed:.1f} s (engine {engine:.1f} s on {device}{crf})").format(
            task=outcome.task, elapsed=job.elapsed_s, engine=outcome.engine_seconds,
            device=outcome.device, crf=_(", with CRF") if outcome.crf else "")

    def onShow3DToggled(self, show: bool) -> None:
        if self._resultNode is not None and self._resultNode.GetScene() is not None:
            set_show_3d(self._resultNode, show)

    def _showUncertaintyChoice(self, node) -> None:
        """Offer the uncertainty of the last run (``node``; None: there is none), unchecked."""
        self._uncertaintyNode = node
        checkBox = self.ui.uncertaintyCheckBox
        wasBlocked = checkBox.blockSignals(True)
        checkBox.checked = False
        checkBox.blockSignals(wasBlocked)
        checkBox.enabled = node is not None

    def onUncertaintyToggled(self, show: bool) -> None:
        """Show the last run's uncertainty over the input, with its colour bar, or hide it."""
        node = self._uncertaintyNode
        if node is not None and node.GetScene() is not None:
            show_uncertainty(node, show)

    # -- sample data ---------------------------------------------------------------------------

    def onLoadSample(self) -> None:
        """A phantom of the chosen task (Auto: the model's first) made by the engine and
        loaded as the input volume."""
        if self.logic.isRunning:
            return
        parameters = self._parameterNode
        task = parameters.task
        if task == "auto":
            task = self._metadata.tasks[0].name if self._metadata else "abdomen-ct"
        with slicer.util.tryWithErrorDisplay(_("Cannot load a sample.")):
            self._withRequirements(lambda: self.logic.loadSample(
                task, progressCallback=self._onProgress, completedCallback=self._onSampleLoaded))
        self._updateSegmentButton()

    def _onSampleLoaded(self, job: SampleJob) -> None:
        self._onProgress(job)
        if job.state is RunState.DONE:
            self._parameterNode.inputVolume = job.volume_node
            slicer.util.setSliceViewerLayers(background=job.volume_node, fit=True)
        elif job.state is RunState.FAILED:
            slicer.util.errorDisplay(_("Could not make the sample: {message}").format(
                message=job.failure.message), detailedText=job.failure.details)

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

    def _openRefinement(self, session: RefinementSession | None) -> None:
        self._refinement = session
        self.ui.refineOrganComboBox.clear()
        if session is not None:
            for name, (spec, _segment) in session.organ_segments.items():
                self.ui.refineOrganComboBox.addItem(spec.display_name, name)
            self.logic.warmUp(session)  # a stroke's round trip without starting the engine
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
            self.strokeEditor.setMRMLSegmentEditorNode(stroke_editor_node(slicer.mrmlScene))
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


class DeepOrganSegLogic(ScriptedLoadableModuleLogic, EngineLogic):
    """Runs segmentations, refinements, samples and installs without a GUI:
    ``process(request, waitForCompletion=True)`` in scripts and tests, or followed by a
    ``QTimer`` with progress/completion callbacks from the panel. The work is
    ``mrml.logic.EngineLogic``'s; this class gives it Slicer's interpreter, environment,
    temporary folder, scene and pip-in-progress flag, and the timer."""

    POLL_INTERVAL_MS = 200
    #: The engine's Python packages besides PyTorch, with their version ranges.
    REQUIREMENTS_PATH = Path(__file__).parent / "Resources" / "requirements.txt"

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        EngineLogic.__init__(
            self, lambda: slicer_python(slicer.app.applicationDirPath()), self.REQUIREMENTS_PATH,
            environment=slicer.util.startupEnvironment,
            temporary_root=lambda: slicer.app.temporaryPath, scene=lambda: slicer.mrmlScene,
            busy=_pipInstallInProgress)
        self._timer: qt.QTimer | None = None
        if hasattr(slicer.modules, "terminologies"):  # our context: segments Slicer's list lacks
            load_terminology_context(slicer.modules.terminologies.logic(),
                                     Path(__file__).parent / "Resources" / "Terminology")

    def getParameterNode(self) -> DeepOrganSegParameterNode:
        return DeepOrganSegParameterNode(super().getParameterNode())

    def cudaAvailability(self) -> tuple[bool, str]:
        """Whether the GPU choice can work, and a tooltip saying so: asked of a PythonSlicer
        child (seconds; call it off the GUI thread), never by importing torch into Slicer."""
        answer = probe_cuda(self.pythonExecutable())
        if answer is None:
            return False, _("PyTorch is not installed yet; it is installed on the first run.")
        if answer["available"]:
            return True, _("Run on {gpu}.").format(gpu=answer["device"])
        return False, _("PyTorch {version} sees no CUDA GPU on this computer.").format(
            version=answer["torch"])

    def _start_polling(self) -> None:
        if self._timer is None:  # one timer for all jobs: a completion callback may start the
            self._timer = qt.QTimer()  # next job (install, then segment) from inside its slot
            self._timer.setInterval(self.POLL_INTERVAL_MS)
            self._timer.connect("timeout()", self.poll)
        self._timer.start()

    def _stop_polling(self) -> None:
        if self._timer is not None:
            self._timer.stop()


#
# DeepOrganSegTest
#


class DeepOrganSegTest(ScriptedLoadableModuleTest):
    """Runs the checks of ``Testing/Python/DeepOrganSegTestBodies.py`` -- the same functions
    pytest runs against slicer-core -- through this module's Logic and the bundled model, on a
    synthetic abdominal CT phantom with an oblique orientation.

    Installs nothing (as Slicer's ``pip_ensure`` in testing mode): on a Slicer without the
    engine's packages (a fresh one, or one offline) the checks that need only MRML run on a
    NumPy-made volume and the others are reported skipped with the reason."""

    #: Large organs of the phantom whose Dice is held to ``MIN_DICE``.
    CHECKED_ORGANS = ("liver", "spleen", "right_kidney", "left_kidney")
    MIN_DICE = 0.7

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_DeepOrganSeg()

    def test_DeepOrganSeg(self) -> None:
        bodies = self._testBodies()
        logic = DeepOrganSegLogic()
        missing = logic.missingRequirements()
        context = self._context(bodies, logic, missing)
        skipped = bodies.run_checks(context, missing, self.delayDisplay)
        if skipped:
            logging.warning("DeepOrganSeg self-test: %d checks skipped: %s", len(skipped),
                            next(iter(skipped.values())))
        self.delayDisplay(f"Test passed: {context.measurements}")

    @staticmethod
    def _testBodies():
        testingPath = str(Path(__file__).parent / "Testing" / "Python")
        if testingPath not in sys.path:
            sys.path.append(testingPath)
        import DeepOrganSegTestBodies

        return DeepOrganSegTestBodies

    def _context(self, bodies, logic: DeepOrganSegLogic, missing: list[str]):
        """The bundled model on an oblique abdominal phantom, or, without the engine's
        packages (the phantom generator needs SciPy), on a NumPy-made oblique volume."""
        models = bundled_models()
        self.assertTrue(models, "no bundled model in Resources/Models")
        if missing:
            case = bodies.plain_case(models[0], "abdomen-ct")
        else:
            from DeepOrganSegLib.phantoms import make_phantom

            phantom = next(case for case in (
                make_phantom("abdomen-ct", seed, shape=(64, 112, 112), random_orientation=True)
                for seed in range(50)) if _isOblique(case.image.direction))
            organs = {value: name for value, name in phantom.label_names.items()
                      if name in self.CHECKED_ORGANS}
            case = bodies.Case(image=phantom.image, truth=phantom.labels, organs=organs,
                               model=models[0], task="abdomen-ct")
        return bodies.Context(
            scene=slicer.mrmlScene, case=case,
            run=lambda request: logic.process(request, waitForCompletion=True),
            start=lambda request: logic.process(request),
            python=logic.pythonExecutable(), workdir=Path(slicer.app.temporaryPath),
            min_dice=self.MIN_DICE)


def _pipInstallInProgress() -> bool:
    """Whether another pip run of Slicer's is under way (Slicer 5.12's
    ``slicer.packaging.isPipInstallInProgress``; earlier versions have no such flag)."""
    try:
        from slicer.packaging import isPipInstallInProgress
    except ImportError:
        return False
    return isPipInstallInProgress()


def _isOblique(direction) -> bool:
    return any(0.01 < abs(value) < 0.99 for row in direction for value in row)
