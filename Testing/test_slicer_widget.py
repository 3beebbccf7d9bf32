"""The Slicer panel's own logic (``DeepOrganSegWidget``) against a fake Qt and Slicer GUI API.

Slicer's Qt cannot be installed here, so ``DeepOrganSeg.py`` is imported with stand-ins for
``qt``, ``slicer.i18n``, ``slicer.parameterNodeWrapper`` and ``slicer.ScriptedLoadableModule``
that behave as Slicer's do where these tests look: a combo box whose items keep their data, an
enum connector that re-adds (and so re-enables) every item on ``connectGui``, a list widget that
counts its rebuilds. The engine modules it imports are the real ones over ``slicer-core``'s MRML.
Each test is one defect of the Slicer review (issue 13) that the panel had.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="needs the slicer-core wheel (MRML)")

MODULE_FILE = Path(__file__).resolve().parents[1] / "DeepOrganSeg" / "DeepOrganSeg.py"


class FakeQt(types.ModuleType):
    """The few ``qt`` names the panel's logic reads."""

    class Qt:
        UserRole, ToolTipRole = 32, 3
        Unchecked, Checked = 0, 2
        ItemIsUserCheckable = 16


class FakeItem:
    """``QStandardItem`` of a combo box: only its enabled flag."""

    def __init__(self) -> None:
        self.enabled = True

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = enabled


class FakeComboBox:
    """``QComboBox`` with (text, data) items, as ``ctkComboBox`` behaves in Slicer."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = [[text, data, FakeItem(), None] for text, data in items]
        self.currentIndex = 0 if items else -1
        self.signalsBlocked = False

    @property
    def count(self) -> int:
        return len(self.items)

    def findData(self, data) -> int:
        return next((n for n, item in enumerate(self.items) if item[1] == data), -1)

    def findText(self, text: str) -> int:
        return next((n for n, item in enumerate(self.items) if item[0] == text), -1)

    def itemData(self, index: int):
        return self.items[index][1]

    def setItemData(self, index: int, value, role) -> None:
        self.items[index][3] = value

    def model(self):
        combo = self
        return types.SimpleNamespace(item=lambda index: combo.items[index][2])

    def blockSignals(self, block: bool) -> bool:
        was, self.signalsBlocked = self.signalsBlocked, block
        return was


class FakeListItem:
    """``QListWidgetItem`` of the organ list."""

    def __init__(self, name: str, checked: bool) -> None:
        self.name, self.checked = name, checked

    def data(self, role):
        return self.name

    def checkState(self):
        return FakeQt.Qt.Checked if self.checked else FakeQt.Qt.Unchecked


class FakeListWidget:
    """The organ list: counts how often it is rebuilt."""

    def __init__(self) -> None:
        self.clears = 0

    def clear(self) -> None:
        self.clears += 1


class FakeParameterNode:
    """The wrapped parameter node: plain fields, and a ``connectGui`` that does what Slicer's
    enum connector does to the device combo box: clear it and add every item again, enabled."""

    def __init__(self, ui, **fields) -> None:
        self.ui = ui
        self.model, self.task, self.excludedOrgans = "", "auto", []
        self.device = None
        self.__dict__.update(fields)

    def connectGui(self, ui):
        for item in ui.deviceComboBox.items:
            item[2] = FakeItem()
        return "gui-tag"

    def disconnectGui(self, tag) -> None:
        pass


@pytest.fixture(scope="module")
def module():
    """``DeepOrganSeg.py`` imported over the fake GUI API (the real engine modules first)."""
    import slicer
    import slicer.util

    import DeepOrganSegLib.mrml.install  # noqa: F401  (bound to the real MRML, not the fakes)
    import DeepOrganSegLib.mrml.job  # noqa: F401
    import DeepOrganSegLib.mrml.nodes  # noqa: F401
    import DeepOrganSegLib.mrml.refine  # noqa: F401

    def identity(value, *args, **kwargs):
        return value

    class Base:
        def __init__(self, *args, **kwargs) -> None:
            pass

    fakes = {
        "qt": FakeQt("qt"),
        "slicer.i18n": types.SimpleNamespace(tr=identity, translate=lambda context, text: text),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=identity, WithinRange=lambda low, high: (low, high)),
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModule=Base, ScriptedLoadableModuleLogic=Base,
            ScriptedLoadableModuleTest=Base, ScriptedLoadableModuleWidget=Base),
    }
    saved = {name: sys.modules.get(name) for name in fakes}
    hadMixin = hasattr(slicer.util, "VTKObservationMixin")
    sys.modules.update(fakes)
    if not hadMixin:
        slicer.util.VTKObservationMixin = Base
    try:
        spec = importlib.util.spec_from_file_location("DeepOrganSegPanelUnderTest", MODULE_FILE)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    finally:
        for name, value in saved.items():
            if value is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = value
        if not hadMixin:
            del slicer.util.VTKObservationMixin
    return loaded


def bare_widget(module, **ui):
    """A ``DeepOrganSegWidget`` without ``setup()``: the given fake widgets, observers and the
    GUI refresh stubbed (they are not what these tests look at)."""
    widget = module.DeepOrganSegWidget.__new__(module.DeepOrganSegWidget)
    widget.ui = types.SimpleNamespace(**ui)
    widget._parameterNode = None
    widget._parameterNodeGuiTag = None
    widget._cudaAvailability = None
    widget._updatingGUI = False
    widget.loaded, widget.segmentButtonUpdates = [], 0
    widget.addObserver = widget.removeObserver = lambda *args: None
    widget._loadModel = widget.loaded.append
    widget._updateGUIFromParameterNode = lambda *args: None

    def count_button_updates() -> None:
        widget.segmentButtonUpdates += 1
    widget._updateSegmentButton = count_button_updates
    return widget


def models_combo() -> FakeComboBox:
    return FakeComboBox([("DeepOrganSeg-multitask-v7", "/models/v6.safetensors"),
                         ("Add model file...", "")])


def devices_combo(module) -> FakeComboBox:
    return FakeComboBox([(device.label(), device.value) for device in module.Device])


def test_an_empty_model_never_selects_the_add_model_file_entry(module):
    combo = models_combo()
    module.DeepOrganSegWidget._selectComboData(combo, "")
    assert combo.currentIndex == 0


def test_a_new_scenes_parameter_node_gets_the_first_model_and_reloads_its_tasks(module):
    widget = bare_widget(module, modelComboBox=models_combo(), deviceComboBox=devices_combo(module))
    closedSceneNode = FakeParameterNode(widget.ui, model="")
    widget.setParameterNode(closedSceneNode)
    assert closedSceneNode.model == "/models/v6.safetensors"
    assert widget.loaded == ["/models/v6.safetensors"]  # tasks and organs from this model


def test_a_loaded_scenes_model_that_is_gone_is_replaced_by_the_first_listed(module):
    widget = bare_widget(module, modelComboBox=models_combo(), deviceComboBox=devices_combo(module))
    loadedSceneNode = FakeParameterNode(widget.ui, model="/elsewhere/deleted.safetensors")
    widget.setParameterNode(loadedSceneNode)
    assert loadedSceneNode.model == "/models/v6.safetensors"
    assert widget.loaded == ["/models/v6.safetensors"]


def test_gpu_choice_stays_disabled_after_the_module_is_entered_again(module):
    widget = bare_widget(module, modelComboBox=models_combo(), deviceComboBox=devices_combo(module))
    widget._cudaAvailability = (False, "PyTorch sees no CUDA device")
    combo = widget.ui.deviceComboBox
    gpu = combo.findText(module.Device.GPU.label())
    node = FakeParameterNode(widget.ui, model="/models/v6.safetensors", device=module.Device.GPU)
    for _entered in range(2):  # enter(), exit(), enter(): connectGui re-adds every item
        widget.setParameterNode(node)
        assert not combo.model().item(gpu).enabled
        assert combo.items[gpu][3] == "PyTorch sees no CUDA device"  # the tooltip says why
    assert node.device is module.Device.AUTO


def test_gpu_choice_stays_enabled_when_cuda_is_available(module):
    widget = bare_widget(module, modelComboBox=models_combo(), deviceComboBox=devices_combo(module))
    widget._cudaAvailability = (True, "NVIDIA H200")
    node = FakeParameterNode(widget.ui, model="/models/v6.safetensors", device=module.Device.GPU)
    widget.setParameterNode(node)
    combo = widget.ui.deviceComboBox
    assert combo.model().item(combo.findText(module.Device.GPU.label())).enabled
    assert node.device is module.Device.GPU


def test_unchecking_an_organ_records_it_without_rebuilding_the_list(module):
    organs = FakeListWidget()
    widget = bare_widget(module, organListWidget=organs)
    widget._parameterNode = FakeParameterNode(widget.ui, excludedOrgans=["pancreas"])
    widget.onOrganToggled(FakeListItem("spleen", checked=False))
    assert widget._parameterNode.excludedOrgans == ["pancreas", "spleen"]
    widget.onOrganToggled(FakeListItem("pancreas", checked=True))
    assert widget._parameterNode.excludedOrgans == ["spleen"]
    assert organs.clears == 0  # the sender item still exists, the scrolling stays
    assert widget.segmentButtonUpdates == 2  # "check at least one organ" is re-evaluated
    assert widget._updatingGUI is False


def test_closing_the_scene_cancels_a_running_segmentation(module):
    cancelled = []
    widget = bare_widget(module)
    widget.logic = types.SimpleNamespace(cancel=lambda **kwargs: cancelled.append(kwargs))
    widget._closeRefinement = lambda: None
    widget.strokeEditor = types.SimpleNamespace(mrmlSegmentEditorNode=lambda: None)
    widget.setParameterNode = lambda node: None
    widget.onSceneStartClose(None, None)
    assert cancelled == [{}]
