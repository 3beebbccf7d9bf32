"""Tier 3: what can be checked about the Slicer module without Slicer.

Slicer's GUI cannot run here, so these tests read the module's files instead: the panel (.ui)
has every widget the code uses, of a class that has what the code uses; widgets bound to the
parameter node have a parameter of a fitting type; CMakeLists lists every module file and
nothing that is missing; the module's self-test runs the same test bodies as pytest; the
Python requirements leave Slicer's own packages alone.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
MODULE = REPOSITORY / "DeepOrganSeg"
MODULE_SCRIPT = MODULE / "DeepOrganSeg.py"
UI_FILE = MODULE / "Resources" / "UI" / "DeepOrganSeg.ui"
BODIES = MODULE / "Testing" / "Python" / "DeepOrganSegTestBodies.py"
PYTEST_LOGIC = REPOSITORY / "Testing" / "test_slicer_logic.py"

#: Base classes of the Slicer/CTK widgets the panel uses (as their C++ classes derive).
CUSTOM_BASES = {
    "qMRMLWidget": "QWidget",
    "qMRMLNodeComboBox": "QWidget",
    "ctkCollapsibleButton": "QAbstractButton",
    "ctkSliderWidget": "QWidget",
}
QT_BASES = {
    "QPushButton": "QAbstractButton", "QCheckBox": "QAbstractButton",
    "QAbstractButton": "QWidget", "QComboBox": "QWidget", "QListWidget": "QWidget",
    "QTableWidget": "QWidget", "QLabel": "QWidget", "QProgressBar": "QWidget",
    "QSpinBox": "QWidget", "QDoubleSpinBox": "QWidget", "QWidget": None,
}

#: What the module may use on a widget -> the classes that have it (the class or a base).
MEMBERS = {
    # any widget
    "enabled": {"QWidget"}, "layout": {"QWidget"}, "toolTip": {"QWidget"}, "setEnabled": {"QWidget"},
    "blockSignals": {"QWidget"},
    # buttons and labels
    "text": {"QAbstractButton", "QLabel"},
    "clicked(bool)": {"QAbstractButton"}, "toggled(bool)": {"QAbstractButton"},
    "checked": {"QAbstractButton"},
    # combo boxes
    "activated(int)": {"QComboBox"}, "currentIndexChanged(int)": {"QComboBox"},
    "addItem": {"QComboBox", "QListWidget"}, "clear": {"QComboBox", "QListWidget"},
    "count": {"QComboBox", "QListWidget"}, "currentIndex": {"QComboBox"},
    "findData": {"QComboBox"}, "findText": {"QComboBox"}, "itemData": {"QComboBox"},
    "setItemData": {"QComboBox"}, "model": {"QComboBox"},
    # lists and tables
    "itemChanged(QListWidgetItem*)": {"QListWidget"},
    "setRowCount": {"QTableWidget"}, "setItem": {"QTableWidget"},
    "resizeColumnsToContents": {"QTableWidget"},
    # progress
    "value": {"QProgressBar", "QSpinBox", "QDoubleSpinBox", "ctkSliderWidget"},
}

#: Parameter types -> widget classes that parameterNodeWrapper can bind them to.
BINDINGS = {
    "bool": {"QCheckBox"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"ctkSliderWidget", "QDoubleSpinBox"},
    "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"},
    "vtkMRMLSegmentationNode": {"qMRMLNodeComboBox"},
    "Device": {"QComboBox"},  # an enum: QComboBoxToEnumConnector
}


# ---------------------------------------------------------------------------------------------
# Reading the files.


def ui_widgets() -> dict[str, ElementTree.Element]:
    return {widget.get("name"): widget for widget in ElementTree.parse(UI_FILE).iter("widget")}


def ancestors(class_name: str) -> set[str]:
    """The class and all its bases."""
    names = set()
    while class_name:
        names.add(class_name)
        class_name = CUSTOM_BASES.get(class_name) or QT_BASES.get(class_name)
    return names


def _ui_name(node: ast.AST) -> str | None:
    """'X' for the expression ``self.ui.X``."""
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"):
        return node.attr
    return None


def _aliases(tree: ast.Module) -> dict[ast.FunctionDef, dict[str, set[str]]]:
    """Per method, local names that stand for ``self.ui`` widgets: ``name = self.ui.X``,
    ``for name in (self.ui.X, self.ui.Y)``, and parameters of methods called with them."""
    methods = {node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    aliases: dict[ast.FunctionDef, dict[str, set[str]]] = {m: {} for m in methods.values()}
    for method in methods.values():
        for node in ast.walk(method):
            if isinstance(node, ast.Assign) and _ui_name(node.value):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        aliases[method].setdefault(target.id, set()).add(_ui_name(node.value))
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(
                    node.iter, ast.Tuple):
                names = {_ui_name(element) for element in node.iter.elts} - {None}
                aliases[method].setdefault(node.target.id, set()).update(names)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"
                    and node.func.attr in methods):
                callee = methods[node.func.attr]
                static = any(getattr(d, "id", "") == "staticmethod" for d in callee.decorator_list)
                parameters = [a.arg for a in callee.args.args][0 if static else 1:]
                for parameter, argument in zip(parameters, node.args):
                    if _ui_name(argument):
                        aliases[callee].setdefault(parameter, set()).add(_ui_name(argument))
    return aliases


def ui_usages() -> dict[str, set[str]]:
    """What the module uses of each panel widget: ``<widget>.<member>`` (directly on
    ``self.ui.X`` or through a local alias) and the signals it ``connect``s to."""
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    usages: dict[str, set[str]] = {}
    for method, names in _aliases(tree).items():
        for node in ast.walk(method):
            if not isinstance(node, ast.Attribute):
                continue
            widgets = ({_ui_name(node.value)} if _ui_name(node.value) else
                       names.get(node.value.id, set()) if isinstance(node.value, ast.Name)
                       else set())
            for widget in widgets:
                usages.setdefault(widget, set()).add(node.attr)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "connect" and _ui_name(node.func.value)):
            usages[_ui_name(node.func.value)].add(node.args[0].value)
    for members in usages.values():
        members.discard("connect")
    return usages


def ui_widget_names_used() -> set[str]:
    return {match for match in re.findall(r"self\.ui\.(\w+)", MODULE_SCRIPT.read_text(encoding="utf-8"))}


def parameter_node_fields() -> dict[str, str]:
    """Field name -> type name of the module's ``@parameterNodeWrapper`` class."""
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    wrapper = next(node for node in tree.body if isinstance(node, ast.ClassDef) and any(
        isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list))
    fields = {}
    for statement in wrapper.body:
        if isinstance(statement, ast.AnnAssign):
            annotation = statement.annotation
            if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == \
                    "Annotated":
                annotation = annotation.slice.elts[0]
            fields[statement.target.id] = ast.unparse(annotation)
    return fields


def parameter_node_defaults() -> dict[str, object]:
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    wrapper = next(node for node in tree.body if isinstance(node, ast.ClassDef)
                   and node.name.endswith("ParameterNode"))
    return {statement.target.id: ast.literal_eval(statement.value) for statement in wrapper.body
            if isinstance(statement, ast.AnnAssign) and statement.value is not None
            and isinstance(statement.value, ast.Constant)}


def cmake_list(name: str) -> list[str]:
    """Entries of ``set(<name> ...)`` in DeepOrganSeg/CMakeLists.txt, variables expanded."""
    text = "\n".join(line.split("#")[0] for line in
                     (MODULE / "CMakeLists.txt").read_text(encoding="utf-8").splitlines())
    body = re.search(rf"set\({name}\b(.*?)\)", text, re.DOTALL).group(1)
    return [entry.replace("${MODULE_NAME}", "DeepOrganSeg") for entry in body.split()]


# ---------------------------------------------------------------------------------------------
# The panel.


def test_ui_file_is_a_qt_designer_panel_rooted_in_qmrmlwidget():
    root = ElementTree.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.find("widget").get("class") == "qMRMLWidget"
    names = [widget.get("name") for widget in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    declared = {custom.findtext("class") for custom in root.iter("customwidget")}
    used = {widget.get("class") for widget in root.iter("widget")}
    assert used - set(QT_BASES) <= declared, "every Slicer/CTK widget needs a <customwidget>"
    assert declared <= set(CUSTOM_BASES), "a custom widget class this test does not know"


def test_every_ui_name_the_code_uses_exists_in_the_ui():
    missing = ui_widget_names_used() - set(ui_widgets())
    assert not missing, f"self.ui names missing from {UI_FILE.name}: {sorted(missing)}"


def test_widgets_have_what_the_code_uses_of_them():
    widgets = ui_widgets()
    problems = []
    for name, members in sorted(ui_usages().items()):
        classes = ancestors(widgets[name].get("class"))
        for member in sorted(members):
            assert member in MEMBERS, f"self.ui.{name}.{member}: add '{member}' to MEMBERS"
            if not MEMBERS[member] & classes:
                problems.append(f"{name} ({widgets[name].get('class')}) has no {member}")
    assert not problems, problems


def test_bound_widgets_fit_their_parameter_types():
    fields = parameter_node_fields()
    bound = {widget.get("name"): widget for widget in ui_widgets().values()
             if widget.find("property[@name='SlicerParameterName']") is not None}
    assert bound, "no widget is bound to the parameter node"
    for name, widget in bound.items():
        parameter = widget.find("property[@name='SlicerParameterName']/string").text
        assert parameter in fields, f"{name} is bound to unknown parameter {parameter}"
        assert widget.get("class") in BINDINGS[fields[parameter]], \
            f"{name} ({widget.get('class')}) cannot show a {fields[parameter]}"
        if widget.get("class") == "qMRMLNodeComboBox":
            node_types = [s.text for s in widget.iter("string")
                          if s.text and s.text.startswith("vtkMRML")]
            assert node_types == [fields[parameter]], name


def test_node_selectors_get_the_scene():
    root = ElementTree.parse(UI_FILE).getroot()
    receivers = {connection.findtext("receiver") for connection in root.iter("connection")
                 if connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {widget.get("name") for widget in root.iter("widget")
                 if widget.get("class") == "qMRMLNodeComboBox"}
    assert selectors == receivers


def test_panel_layout_is_as_specified():
    """Segment button, progress bar, status line, results table, Show 3D toggle; the CRF and
    its parameters in an Advanced section that starts collapsed; output new by default."""
    widgets = ui_widgets()
    expected = {"segmentButton": "QPushButton", "progressBar": "QProgressBar",
                "statusLabel": "QLabel", "resultsTableWidget": "QTableWidget",
                "show3DCheckBox": "QCheckBox", "crfCheckBox": "QCheckBox",
                "organListWidget": "QListWidget", "taskComboBox": "QComboBox",
                "modelComboBox": "QComboBox", "deviceComboBox": "QComboBox",
                "inputVolumeSelector": "qMRMLNodeComboBox",
                "outputSegmentationSelector": "qMRMLNodeComboBox",
                "advancedCollapsibleButton": "ctkCollapsibleButton"}
    for name, class_name in expected.items():
        assert widgets[name].get("class") == class_name, name
    advanced = widgets["advancedCollapsibleButton"]
    assert advanced.find("property[@name='collapsed']/bool").text == "true"
    inside_advanced = {widget.get("name") for widget in advanced.iter("widget")}
    assert {"crfCheckBox", "crfIterationsSpinBox", "crfAppearanceWeightSlider"} <= inside_advanced
    output = widgets["outputSegmentationSelector"]
    assert output.find("property[@name='noneEnabled']/bool").text == "true"
    assert output.find("property[@name='addEnabled']/bool").text == "false"


def test_crf_fields_take_their_defaults_and_bounds_from_the_engine():
    """One place for each fact: every CRF field of the parameter node defaults to
    ``CRFParameters.<name>`` and is bounded by ``PANEL_RANGES[<name>]`` (the .ui file sets no
    range of its own; the widget gets it in ``setup``), the engine accepts both ends of every
    range, and every value the CRF tuner may put in a model file lies inside it."""
    from DeepOrganSegLib.crf.parameters import PANEL_RANGES, CRFParameters
    from DeepOrganSegLib.mrml.panel import CRF_FIELDS as mapping

    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    wrapper = next(node for node in tree.body if isinstance(node, ast.ClassDef)
                   and node.name.endswith("ParameterNode"))
    fields = {statement.target.id: statement for statement in wrapper.body
              if isinstance(statement, ast.AnnAssign)}
    for field, name in mapping.items():
        default, annotation = fields[field].value, ast.unparse(fields[field].annotation)
        assert ast.unparse(default) == f"CRFParameters.{name}", field
        assert f"WithinRange(*PANEL_RANGES['{name}'])" in annotation, field
        low, high = PANEL_RANGES[name]
        assert low <= getattr(CRFParameters(), name) <= high, name
        CRFParameters.from_dict({name: low})
        CRFParameters.from_dict({name: high})
    for widget in ui_widgets().values():
        parameter = widget.find("property[@name='SlicerParameterName']/string")
        if parameter is not None and parameter.text in mapping:
            assert widget.find("property[@name='minimum']") is None, widget.get("name")
            assert widget.find("property[@name='maximum']") is None, widget.get("name")
    pytest.importorskip("torch")
    from training.tune_crf import parameter_grid

    for modality in ("CT", "MR"):
        for parameters in parameter_grid(modality):
            for name, (low, high) in PANEL_RANGES.items():
                assert low <= getattr(parameters, name) <= high, (modality, name)


# ---------------------------------------------------------------------------------------------
# Build files and resources.


def test_every_module_python_file_is_listed_in_cmake():
    listed = set(cmake_list("MODULE_PYTHON_SCRIPTS"))
    on_disk = {str(path.relative_to(MODULE)) for path in MODULE.rglob("*.py")
               if "__pycache__" not in path.parts}
    assert on_disk - listed == set(), f"add to MODULE_PYTHON_SCRIPTS: {sorted(on_disk - listed)}"
    assert listed - on_disk == set(), f"listed but missing: {sorted(listed - on_disk)}"


def test_every_module_resource_is_listed_in_cmake():
    listed = set(cmake_list("MODULE_PYTHON_RESOURCES"))
    on_disk = {str(path.relative_to(MODULE)) for path in (MODULE / "Resources").rglob("*")
               if path.is_file()}
    assert on_disk == listed, (sorted(on_disk - listed), sorted(listed - on_disk))


def test_every_bundled_model_file_is_installed_with_the_module():
    """Network models, the body-part classifier and the model card all go with the module."""
    listed = set(cmake_list("MODULE_MODEL_FILES"))
    on_disk = {path.name for path in (REPOSITORY / "Resources" / "Models").iterdir()
               if path.is_file() and not path.name.startswith(".")}
    assert on_disk == listed, (sorted(on_disk - listed), sorted(listed - on_disk))


def test_extension_metadata_is_complete():
    text = (REPOSITORY / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({variable} "[^"]+"\)', text), variable
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "add_subdirectory(DeepOrganSeg)" in text
    module_cmake = (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in module_cmake
    assert "add_subdirectory(Python)" in (MODULE / "Testing" / "CMakeLists.txt").read_text(encoding="utf-8")


def test_icons_are_128_pixel_pngs():
    image = pytest.importorskip("PIL.Image")
    for path in (REPOSITORY / "Resources" / "Icons" / "DeepOrganSeg.png",
                 MODULE / "Resources" / "Icons" / "DeepOrganSeg.png"):
        with image.open(path) as icon:
            assert icon.format == "PNG" and icon.size == (128, 128), path


def test_requirements_leave_slicers_own_packages_alone():
    """numpy and SimpleITK are Slicer's; torch comes from the PyTorch extension; the rest is
    pinned to a range."""
    lines = [line.strip() for line in (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8")
             .splitlines() if line.strip() and not line.lstrip().startswith("#")]
    names = {re.split(r"[<>=!~ \[]", line)[0].lower() for line in lines}
    assert not names & {"numpy", "simpleitk", "torch", "vtk"}
    for line in lines:
        assert ">=" in line and "<" in line.replace("<=", ""), f"{line}: pin a range"


# ---------------------------------------------------------------------------------------------
# The self-test and pytest share their checks.


def test_every_test_body_is_registered_once():
    tree = ast.parse(BODIES.read_text(encoding="utf-8"))
    bodies = {node.name for node in tree.body
              if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    registered = []
    for node in tree.body:
        if isinstance(node, (ast.AnnAssign, ast.Assign)) and isinstance(node.value, ast.Tuple):
            registered += [element.id for element in node.value.elts]
    assert sorted(registered) == sorted(bodies)


def test_pytest_calls_every_test_body():
    bodies = {node.name for node in ast.parse(BODIES.read_text(encoding="utf-8")).body
              if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    called = set(re.findall(r"bodies\.(test_\w+)\(", PYTEST_LOGIC.read_text(encoding="utf-8")))
    assert called == bodies


def test_module_self_test_runs_the_shared_bodies():
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    test_class = next(node for node in tree.body
                      if isinstance(node, ast.ClassDef) and node.name == "DeepOrganSegTest")
    source = ast.unparse(test_class)
    assert "import DeepOrganSegTestBodies" in source
    assert "bodies.run_checks(" in source, "the self-test runs the shared checks in their order"
    assert "waitForCompletion=True" in source, "the self-test runs the Logic, waiting"
    assert "installRequirements" not in source, "a self-test installs nothing"


def test_module_reload_reloads_the_engine():
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    widget = next(node for node in tree.body
                  if isinstance(node, ast.ClassDef) and node.name == "DeepOrganSegWidget")
    reload = next(node for node in widget.body
                  if isinstance(node, ast.FunctionDef) and node.name == "onReload")
    source = ast.unparse(reload)
    assert "sys.modules" in source and "DeepOrganSegLib" in source and "onReload()" in source


def test_engine_imports_no_gui_and_mrml_only_what_slicer_core_has():
    """Only the mrml package touches Slicer, and not its application or Qt (slicer-core lacks
    them)."""
    for path in (MODULE / "DeepOrganSegLib").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
        assert not imported & {"qt", "ctk", "PythonQt"}, path.name
        if path.parent.name != "mrml":
            assert not imported & {"slicer", "vtk"}, path.name
    for path in (MODULE / "DeepOrganSegLib" / "mrml").glob("*.py"):
        mrml = ast.parse(path.read_text(encoding="utf-8"))
        used = {ast.unparse(node) for node in ast.walk(mrml) if isinstance(node, ast.Attribute)}
        assert not used & {"slicer.app", "slicer.modules"}, path.name


def test_the_module_never_imports_torch_into_slicers_process():
    """Importing torch (and with it the CUDA libraries) on Slicer's GUI thread freezes the
    panel for seconds; the module asks a PythonSlicer child instead (runner.probe_cuda)."""
    tree = ast.parse((MODULE / "DeepOrganSeg.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert "torch" not in imported


def test_the_module_never_installs_packages_on_the_gui_thread():
    """``slicer.util.pip_install``, ``slicer.packaging.pip_ensure`` and PyTorchUtils'
    ``installTorch`` wait for pip on the calling (GUI) thread for minutes; the module installs
    through its Logic (``mrml.logic``), whose ``mrml.install.InstallJob`` children its timer
    polls instead."""
    def called(path: Path) -> set[str]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        return {ast.unparse(node.func).rsplit(".", 1)[-1] for node in ast.walk(tree)
                if isinstance(node, ast.Call)}

    module, logic = called(MODULE_SCRIPT), called(MODULE / "DeepOrganSegLib" / "mrml" / "logic.py")
    forbidden = {"pip_install", "pip_ensure", "installTorch", "_executePythonModule"}
    assert not (module | logic) & forbidden
    assert "installRequirements" in module and "InstallJob" in logic


def test_module_category_is_translated_in_slicers_own_category_context():
    """Slicer translates category names in the ``qSlicerAbstractCoreModule`` context (e.g.
    v5.8.0 SegmentStatistics.py); a module-local ``tr`` would make a second, untranslated
    "Segmentation" category in a translated Slicer."""
    tree = ast.parse(MODULE_SCRIPT.read_text(encoding="utf-8"))
    assignments = [node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and any(isinstance(t, ast.Attribute) and t.attr == "categories"
                           for t in node.targets)]
    assert len(assignments) == 1
    (call,) = assignments[0].value.elts
    assert isinstance(call, ast.Call) and call.func.id == "translate"
    assert [arg.value for arg in call.args] == ["qSlicerAbstractCoreModule", "Segmentation"]
