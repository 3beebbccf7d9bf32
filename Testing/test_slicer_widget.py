"""The Slicer panel's Qt wiring (``DeepOrganSegWidget``) against a fake Qt and a fake Logic.

Slicer's Qt cannot be installed here, so ``DeepOrganSeg.py`` is imported with stand-ins for
``qt``, ``slicer.i18n``, ``slicer.parameterNodeWrapper`` and ``slicer.ScriptedLoadableModule``.
What the panel decides lives in ``mrml.panel`` (``test_slicer_panel.py`` calls it directly);
these tests look at what only the Widget does: combo boxes that keep their data, the enum
connector re-adding (and so re-enabling) every device item on ``connectGui``, the GPU probe, the
scene's close, and the cursor over the module's own questions. Every widget a test does not look
at is a :class:`FakeWidget`; the Widget gets a :class:`FakeLogic` as its Logic.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
import unittest
from pathlib import Path
from unittest import mock

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (MRML)")
pytest.importorskip("slicer.util")

from DeepOrganSegLib.crf.parameters import CRFParameters  # noqa: E402
from DeepOrganSegLib.mrml.panel import CRF_FIELDS  # noqa: E402
from DeepOrganSegLib.mrml.runner import RunState  # noqa: E402
from DeepOrganSegLib.progress import ProgressEvent  # noqa: E402
from helpers import fresh_mrml_scene  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[1] / "DeepOrganSeg" / "DeepOrganSeg.py"


class FakeWidget:
    """A widget the panel writes to: properties are kept; any method is a no-op returning
    False."""

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: False


class FakeUi(types.SimpleNamespace):
    """``self.ui``: the widgets given, and a :class:`FakeWidget` for every other name."""

    def __getattr__(self, name: str) -> FakeWidget:
        setattr(self, name, FakeWidget())
        return getattr(self, name)


class FakeComboBox(FakeWidget):
    """``QComboBox`` with (text, data) items, each with an enabled flag and a tooltip."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = [{"text": text, "data": data, "enabled": True, "tip": None}
                      for text, data in items]
        self.currentIndex = 0 if items else -1
        self.count = len(items)

    def findData(self, data) -> int:
        return next((n for n, item in enumerate(self.items) if item["data"] == data), -1)

    def findText(self, text: str) -> int:
        return next((n for n, item in enumerate(self.items) if item["text"] == text), -1)

    def itemData(self, index: int):
        return self.items[index]["data"]

    def setItemData(self, index: int, value, role) -> None:
        self.items[index]["tip"] = value

    def model(self):
        return types.SimpleNamespace(item=lambda index: types.SimpleNamespace(
            setEnabled=lambda enabled: self.items[index].update(enabled=enabled)))


class FakeApp:
    """``slicer.app`` (and ``qt.QApplication``): counts the override cursors set, i.e. whether
    the busy cursor shows; not in testing mode."""

    def __init__(self) -> None:
        self.busy = 0

    def setOverrideCursor(self, cursor) -> None:
        self.busy += 1

    def restoreOverrideCursor(self) -> None:
        self.busy -= 1

    def processEvents(self) -> None:
        pass

    def testingEnabled(self) -> bool:
        return False

    def commandOptions(self):
        return types.SimpleNamespace(testingEnabled=False)


class FakeLogic:
    """The Logic as the panel sees it: runs nothing, records what it was asked."""

    def __init__(self, missing=(), cuda=(False, "PyTorch is not installed yet")) -> None:
        self.missing, self.cuda = list(missing), cuda
        self.isRunning = self.isInstalling = False
        self.requests: list = []
        self.installs: list = []
        self.cancels: list = []
        self.samples: list = []

    def missingRequirements(self) -> list[str]:
        return self.missing

    def installRequirements(self, missing, **callbacks) -> None:
        self.installs.append(missing)

    def process(self, request, **callbacks) -> None:
        self.requests.append(request)

    def loadSample(self, task: str, **callbacks) -> None:
        self.samples.append(task)

    def cudaAvailability(self) -> tuple[bool, str]:
        return self.cuda

    def cancel(self, **options) -> None:
        self.cancels.append(options)


class FakeParameterNode(types.SimpleNamespace):
    """The wrapped parameter node: plain fields (the module's defaults, ``fields`` on top) and a
    ``connectGui`` that does what Slicer's enum connector does to the device combo box: clear it
    and add every item again, enabled."""

    def __init__(self, module, **fields) -> None:
        super().__init__(inputVolume=None, outputSegmentation=None, model="", task="auto",
                         excludedOrgans=[], device=module.Device.AUTO, useCrf=True,
                         show3D=False, keepForRefinement=True,
                         **{field: getattr(CRFParameters, name)
                            for field, name in CRF_FIELDS.items()})
        self.__dict__.update(fields)

    def connectGui(self, ui) -> str:
        for item in getattr(ui.deviceComboBox, "items", []):
            item["enabled"] = True
        return "gui-tag"

    def disconnectGui(self, tag) -> None:
        pass


@pytest.fixture(scope="module")
def module():
    """``DeepOrganSeg.py`` imported over the fake GUI API (the real engine modules first: they
    stay bound to the real MRML, and in ``sys.modules`` once the fakes are gone)."""
    for name in ("job", "logic", "panel", "refine", "sample", "uncertainty"):
        importlib.import_module(f"DeepOrganSegLib.mrml.{name}")

    class Base:
        def __init__(self, parent=None, *args, **kwargs) -> None:
            self.parent = parent

    class TestBase(unittest.TestCase):
        """``ScriptedLoadableModuleTest``: a TestCase whose ``delayDisplay`` keeps what it
        showed."""

        def delayDisplay(self, message: str, *args, **kwargs) -> None:
            self.__dict__.setdefault("displayed", []).append(message)

    fakes = {
        "qt": fake_qt(FakeApp()),
        "slicer.i18n": types.SimpleNamespace(tr=lambda text: text,
                                             translate=lambda context, text: text),
        "slicer.parameterNodeWrapper": types.SimpleNamespace(
            parameterNodeWrapper=lambda cls: cls, WithinRange=lambda low, high: (low, high)),
        "slicer.ScriptedLoadableModule": types.SimpleNamespace(
            ScriptedLoadableModuleTest=TestBase, **dict.fromkeys(
                ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic",
                 "ScriptedLoadableModuleWidget"), Base)),
    }
    with mock.patch.dict(sys.modules, fakes):  # slicer-core's slicer.util has the mixin
        spec = importlib.util.spec_from_file_location("DeepOrganSegPanelUnderTest", MODULE_FILE)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
    return loaded


def fake_qt(app: FakeApp) -> types.ModuleType:
    """The few ``qt`` names the panel reads; ``QApplication`` is ``app``."""
    qt = types.ModuleType("qt")
    qt.Qt = types.SimpleNamespace(UserRole=32, ToolTipRole=3, Unchecked=0, Checked=2,
                                  ItemIsUserCheckable=16, WaitCursor=3)
    qt.QApplication = app
    qt.QTimer = lambda *args: FakeWidget()
    return qt


@pytest.fixture
def app(module, monkeypatch) -> FakeApp:
    """``slicer.app`` and ``qt.QApplication`` of one test, sharing one override-cursor count
    (Slicer's ``tryWithErrorDisplay`` sets the cursor on the first, ``WaitCursor`` on the
    second)."""
    app = FakeApp()
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setitem(sys.modules, "qt", fake_qt(app))
    monkeypatch.setattr(module.qt, "QApplication", app)
    return app


def bare_widget(module, logic: FakeLogic | None = None, **ui) -> object:
    """A ``DeepOrganSegWidget`` given its Logic, without ``setup()``: the given widgets,
    :class:`FakeWidget` for the rest; observers and model loading stubbed (not what these
    tests look at)."""
    widget = module.DeepOrganSegWidget(logic=logic or FakeLogic())
    widget.ui = FakeUi(**ui)
    widget.strokeEditor = FakeWidget()
    widget.loaded = []
    widget.addObserver = widget.removeObserver = lambda *args: None
    widget._loadModel = widget.loaded.append
    return widget


def models_combo() -> FakeComboBox:
    return FakeComboBox([("DeepOrganSeg-multitask-v7", "/models/v7.safetensors"),
                         ("Add model file...", "")])


def devices_combo(module) -> FakeComboBox:
    return FakeComboBox([(device.label(), device.value) for device in module.Device])


def gpu_item(module, combo: FakeComboBox) -> dict:
    return combo.items[combo.findText(module.Device.GPU.label())]


def collect_probe(widget) -> None:
    """Wait for the GPU probe's worker thread, then let the panel take its answer."""
    widget._deviceProbe.result(timeout=10)
    widget._collectDeviceProbe()


def test_an_empty_model_never_selects_the_add_model_file_entry(module):
    combo = models_combo()
    module.DeepOrganSegWidget._selectComboData(combo, "")
    assert combo.currentIndex == 0


@pytest.mark.parametrize("saved_model", ["", "/elsewhere/deleted.safetensors"])
def test_a_new_or_loaded_scene_without_a_usable_model_gets_the_first_listed(module, saved_model):
    widget = bare_widget(module, modelComboBox=models_combo(), deviceComboBox=devices_combo(module))
    node = FakeParameterNode(module, model=saved_model)
    widget.setParameterNode(node)
    assert node.model == "/models/v7.safetensors"
    assert widget.loaded == ["/models/v7.safetensors"]  # tasks and organs from this model


def test_gpu_choice_stays_disabled_after_the_module_is_entered_again(module):
    widget = bare_widget(module, modelComboBox=models_combo(), deviceComboBox=devices_combo(module))
    widget._cudaAvailability = (False, "PyTorch sees no CUDA device")
    node = FakeParameterNode(module, model="/models/v7.safetensors", device=module.Device.GPU)
    for _entered in range(2):  # enter(), exit(), enter(): connectGui re-adds every item
        widget.setParameterNode(node)
        assert not gpu_item(module, widget.ui.deviceComboBox)["enabled"]
        assert gpu_item(module, widget.ui.deviceComboBox)["tip"] == "PyTorch sees no CUDA device"
    assert node.device is module.Device.AUTO


def test_the_gpu_choice_follows_a_probe_run_again_after_the_first_install(module, app):
    """Issue 32, defect 4: on a clean Slicer the probe finds no PyTorch; once the packages are
    installed the GPU choice must not stay disabled until the module is reloaded."""
    logic = FakeLogic(missing=["torch>=2.2"], cuda=(False, "PyTorch is not installed yet"))
    widget = bare_widget(module, logic, modelComboBox=models_combo(),
                         deviceComboBox=devices_combo(module))
    widget.setParameterNode(FakeParameterNode(module, model="/models/v7.safetensors"))
    widget._probeDevices()
    collect_probe(widget)
    assert not gpu_item(module, widget.ui.deviceComboBox)["enabled"]

    logic.missing, logic.cuda = [], (True, "Run on NVIDIA H100.")
    widget._onInstalled(types.SimpleNamespace(state=RunState.DONE, fraction=1.0, message="done"))
    collect_probe(widget)
    assert gpu_item(module, widget.ui.deviceComboBox) == {
        "text": module.Device.GPU.label(), "data": "cuda", "enabled": True,
        "tip": "Run on NVIDIA H100."}
    assert len(logic.requests) == 1  # and the segmentation the install was for started


def test_unchecking_an_organ_records_it_without_rebuilding_the_list(module):
    widget = bare_widget(module)
    widget.ui.organListWidget.clear = lambda: pytest.fail("the list was rebuilt")
    widget._parameterNode = FakeParameterNode(module, excludedOrgans=["pancreas"])
    item = types.SimpleNamespace(data=lambda role: "spleen", checkState=lambda: 0)
    widget.onOrganToggled(item)
    assert widget._parameterNode.excludedOrgans == ["pancreas", "spleen"]
    assert widget._updatingGUI is False


def test_closing_the_scene_cancels_a_running_segmentation(module):
    widget = bare_widget(module)
    widget.onSceneStartClose(None, None)
    assert widget.logic.cancels == [{}]


def test_a_scene_loaded_after_a_close_keeps_its_output_segmentation(module):
    """Issue 32, defect 5: the input of the closed scene is forgotten with it, so a saved scene
    loaded next keeps the segmentation it was saved with; a volume changed after that still
    gets a new segmentation."""
    widget = bare_widget(module, modelComboBox=models_combo(), taskComboBox=FakeComboBox([]),
                         deviceComboBox=devices_combo(module))
    closed = FakeParameterNode(module, inputVolume="CT 1", outputSegmentation="CT 1 segmentation")
    widget.setParameterNode(closed)
    widget.onSceneStartClose(None, None)
    loaded = FakeParameterNode(module, inputVolume="CT 2", outputSegmentation="CT 2 segmentation")
    widget.setParameterNode(loaded)
    assert loaded.outputSegmentation == "CT 2 segmentation"
    loaded.inputVolume = "CT 3"
    widget._updateGUIFromParameterNode()
    assert loaded.outputSegmentation is None


def test_the_install_question_comes_with_the_normal_cursor(module, app, monkeypatch):
    """Issue 32, defect 6: Slicer 5.8-5.12 leave an override cursor over message boxes, so a
    question asked inside ``tryWithErrorDisplay(..., waitCursor=True)`` shows a busy cursor."""
    cursors = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda *args, **kwargs: cursors.append(app.busy) or False)
    widget = bare_widget(module, FakeLogic(missing=["torch>=2.2"]))
    widget.onSegmentButton()
    assert cursors == [0]
    assert widget.logic.installs == [] and app.busy == 0  # declined: nothing installed


def test_the_replace_question_comes_with_the_normal_cursor(module, app, monkeypatch):
    cursors = []
    monkeypatch.setattr(slicer.util, "confirmYesNoDisplay",
                        lambda *args, **kwargs: cursors.append(app.busy) or False)
    monkeypatch.setattr(module, "hand_drawn_matches", lambda node, specs: ["Liver"])
    widget = bare_widget(module)
    widget._parameterNode = FakeParameterNode(module, inputVolume="CT",
                                              model="/models/v7.safetensors")
    widget.onSegmentButton()
    assert cursors == [0]
    (request,) = widget.logic.requests
    assert request.replace_hand_drawn is False and app.busy == 0


def test_the_self_test_offline_runs_the_mrml_checks_and_skips_the_rest_with_the_reason(
        module, app, monkeypatch, tmp_path):
    """Issue 32, defect 2: a fresh Slicer without internet. The self-test installs nothing (as
    Slicer's own ``pip_ensure`` in testing mode), runs the checks that need only MRML, and says
    for each other check that it was skipped and why; it passes."""
    (tmp_path / "bin").mkdir()
    os.symlink(sys.executable, tmp_path / "bin" / "PythonSlicer")
    app.temporaryPath = str(tmp_path)
    app.applicationDirPath = lambda: str(tmp_path)
    app.startupEnvironment = lambda: types.SimpleNamespace(keys=lambda: list(os.environ),
                                                           value=os.environ.get)
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    missing = ["torch>=2.2", "scipy<2,>=1.10"]
    monkeypatch.setattr(module.DeepOrganSegLogic, "missingRequirements", lambda self: missing)
    monkeypatch.setattr(module.DeepOrganSegLogic, "installRequirements", lambda *args, **kwargs:
                        pytest.fail("the self-test installed packages (offline: pip fails)"))
    scenes = fresh_mrml_scene()
    next(scenes)
    try:
        test = module.DeepOrganSegTest()
        test.runTest()
    finally:
        next(scenes, None)
    shown = "\n".join(test.displayed)
    for check in ("test_volume_node_keeps_oblique_geometry",
                  "test_bad_requests_are_refused_before_any_work"):
        assert check in shown and f"skipped {check}" not in shown
    for check in ("segment_phantom", "test_dice_against_truth_is_at_least_the_cli",
                  "test_cancelled_run_leaves_scene_unchanged"):
        assert f"skipped {check}: needs torch>=2.2, scipy<2,>=1.10" in shown


def test_the_status_line_says_the_stage_its_message_and_the_time_left(module):
    widget = bare_widget(module)
    job = types.SimpleNamespace(progress=ProgressEvent("inference", 0.5, "tile 4/8"),
                                notes=["auto: CT, task abdomen-ct"], state=RunState.RUNNING,
                                remaining=types.SimpleNamespace(seconds_left=lambda now: 42.0))
    widget._onProgress(job)
    assert widget.ui.progressBar.value == 50
    assert widget.ui.statusLabel.text == ("auto: CT, task abdomen-ct\n"
                                          "Network: tile 4/8  (about 40 s left)")
    job.remaining = types.SimpleNamespace(seconds_left=lambda now: None)  # too early to say
    widget._onProgress(job)
    assert widget.ui.statusLabel.text.endswith("Network: tile 4/8")


def test_load_sample_makes_the_chosen_tasks_phantom_and_with_auto_the_models_first(module, app):
    widget = bare_widget(module)
    widget._metadata = types.SimpleNamespace(tasks=[types.SimpleNamespace(name="heart-mr"),
                                                    types.SimpleNamespace(name="brain-mr")])
    widget._parameterNode = FakeParameterNode(module, task="auto")
    widget.onLoadSample()
    widget._parameterNode.task = "brain-mr"
    widget.onLoadSample()
    assert widget.logic.samples == ["heart-mr", "brain-mr"]


class FakeSettings(dict):
    """``QSettings``: ``value(key, default)`` and ``setValue(key, value)`` over a dict."""

    def value(self, key: str, default=None):
        return self.get(key, default)

    def setValue(self, key: str, value) -> None:
        self[key] = value


@pytest.fixture
def asked(module, monkeypatch) -> tuple[FakeSettings, list, list]:
    """Slicer's settings, the answers the next questions get (URL, then token; "" is Cancel),
    and the questions' echo modes and the errors shown, as the panel asked them."""
    settings, answers, shown = FakeSettings(), [], []
    monkeypatch.setattr(module.qt, "QSettings", lambda: settings, raising=False)
    monkeypatch.setattr(module.qt, "QLineEdit", types.SimpleNamespace(Normal=0, Password=2),
                        raising=False)
    monkeypatch.setattr(module.qt, "QInputDialog", types.SimpleNamespace(
        getText=lambda parent, title, label, echo, text: shown.append(echo) or answers.pop(0)),
        raising=False)
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: shown.append(text))
    return settings, answers, shown


def test_choosing_server_asks_url_and_hidden_token_and_keeps_them_in_slicers_settings(
        module, app, asked):
    """Issue 33: the token lives in Slicer's settings, typed hidden; the scene's parameter node
    has no field for the URL or the token (a saved scene carries no secret)."""
    settings, answers, shown = asked
    widget = bare_widget(module)
    widget._parameterNode = FakeParameterNode(module, device=module.Device.SERVER,
                                              inputVolume="CT", model="/models/v7.safetensors")
    answers += ["https://gpu.hospital:8765", "s3cret"]
    widget.onDeviceActivated(3)
    assert shown == [0, 2]  # URL as typed, token hidden
    assert settings == {"DeepOrganSeg/ServerURL": "https://gpu.hospital:8765",
                        "DeepOrganSeg/ServerToken": "s3cret"}
    fields = " ".join(module.DeepOrganSegParameterNode.__annotations__).lower()
    assert "token" not in fields and "url" not in fields and "server" not in fields

    widget.onSegmentButton()  # the kept server, without asking again
    (request,) = widget.logic.requests
    assert request.server == module.ServerConnection("https://gpu.hospital:8765", "s3cret")
    assert request.options.inference.device == "auto" and shown == [0, 2]


def test_a_server_question_cancelled_with_none_kept_goes_back_to_auto_and_runs_nothing(
        module, app, asked):
    settings, answers, _shown = asked
    widget = bare_widget(module)
    widget._parameterNode = FakeParameterNode(module, device=module.Device.SERVER,
                                              inputVolume="CT", model="/models/v7.safetensors")
    answers.append("")
    widget.onSegmentButton()  # asked on Segment: cancelled
    assert widget.logic.requests == [] and settings == {}
    answers.append("")
    widget.onDeviceActivated(3)
    assert widget._parameterNode.device is module.Device.AUTO


def test_a_server_url_that_cannot_work_is_said_and_not_kept(module, app, asked):
    settings, answers, shown = asked
    widget = bare_widget(module)
    widget._parameterNode = FakeParameterNode(module, device=module.Device.SERVER)
    answers += ["gpu.hospital:8765", ""]
    widget.onDeviceActivated(3)
    assert settings == {} and widget._parameterNode.device is module.Device.AUTO
    assert "is not http(s)://host:port" in shown[-1]
