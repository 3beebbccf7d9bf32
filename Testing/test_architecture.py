"""The house rules of the engine's imports, walked over every module of ``DeepOrganSegLib``
(imports inside functions included, ``if TYPE_CHECKING:`` blocks excluded):

* no circles between engine modules;
* core modules (the segmentation pipeline, model files, CRF, body-part classifier) import
  neither the command line, the Slicer side (``mrml*``) nor the phantom generator;
* only the Slicer side's MRML modules (``mrml.nodes``, ``mrml.job``, ``mrml.refine``) import
  ``slicer`` or ``vtk`` (``mrml.runner`` and ``mrml.install`` load without MRML); no engine
  module imports Qt or CTK;
* the engine never imports ``training`` (training imports the engine, not the reverse);
* the torch-free modules the Slicer module loads into Slicer's own process stay torch-free,
  and import, with ``import torch`` failing, under the interpreter running the tests (CI runs this
  file under Python 3.9 too: Slicer 5.8's);
* every module belongs to one layer of ``docs/architecture.md``'s table and imports only what
  its layer may import (:data:`LAYERS`);
* each name has one import home: a module's ``__all__`` lists only what the module defines
  (a package's ``__init__`` may gather its modules' entry points).
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[1] / "DeepOrganSeg" / "DeepOrganSegLib"

#: Modules that are applications of the core, not part of it.
APPLICATIONS = {"__main__", "demo"}
#: Packages that are applications as a whole: the package and every module in it.
APPLICATION_PACKAGES = {"cli", "phantoms", "mrml", "server", "cohort"}
#: The modules that may import ``slicer`` and ``vtk`` (they need MRML: the slicer-core wheel).
SLICER_SIDE = {"mrml.nodes", "mrml.job", "mrml.refine", "mrml.uncertainty", "mrml.sample",
               "mrml.logic"}
#: Imported by the Slicer module inside Slicer's process: must not load PyTorch.
TORCH_FREE = {"model", "model.file", "model.spec", "schema", "container", "model.terminology",
              "errors", "mrml", "mrml.nodes", "mrml.job", "mrml.refine", "mrml.runner",
              "mrml.install", "mrml.panel", "mrml.eta", "mrml.uncertainty", "mrml.sample",
              "mrml.logic", "resources", "options", "progress", "strokes", "grid", "outputs",
              "volume", "volume_io", "validation", "crf", "crf.parameters", "bodypart", "metrics",
              "remote", "remote.protocol", "remote.client"}

#: The layers of docs/architecture.md's table: a module (or every module of a package) -> its
#: layer, and each layer -> the layers it may import (its own included).
LAYER_OF = {
    **dict.fromkeys(("errors", "devices", "progress", "resources", "options"), "foundation"),
    **dict.fromkeys(("volume", "volume_io", "validation", "metrics", "grid", "strokes", "outputs",
                     "container", "schema"), "data"),
    **dict.fromkeys(("model", "crf"), "model"),
    "bodypart": "bodypart",
    **dict.fromkeys(("preprocess", "inference", "cascade", "postprocess", "segment", "refine",
                     "geodesic", "qc", "labelmap_io", "input_grid", "result_files"), "pipeline"),
    **dict.fromkeys(("__main__", "demo", "cli", "phantoms", "cohort"), "applications"),
    "remote": "remote",
    "server": "applications",
    "mrml": "slicer",
}
LAYERS = {
    "foundation": {"foundation"},
    "data": {"foundation", "data"},
    "model": {"foundation", "data", "model"},
    "bodypart": {"foundation", "data", "bodypart"},
    "pipeline": {"foundation", "data", "model", "bodypart", "pipeline"},
    "remote": {"foundation", "data", "remote"},
    "applications": {"foundation", "data", "model", "bodypart", "pipeline", "remote",
                     "applications"},
    "slicer": {"foundation", "data", "model", "remote", "slicer"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ENGINE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path, at_import: bool = False) -> tuple[set[str], set[str]]:
    """(engine modules, other top-level packages) that ``path`` imports at run time, or with
    ``at_import`` only those imported when the module itself is imported (not in functions)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    engine, other = set(), set()

    def visit(node: ast.AST) -> None:
        if at_import and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("DeepOrganSegLib."):
                    engine.add(alias.name.split(".", 1)[1])
                else:
                    other.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [] if node.module else [alias.name for alias in node.names]
                for candidate in [target] if not names else [f"{target}.{n}".strip(".")
                                                              for n in names]:
                    engine.add(candidate)
            elif node.module.startswith("DeepOrganSegLib"):
                engine.add(node.module.partition(".")[2] or "__init__")
            else:
                other.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    modules = _modules()
    resolved = set()
    for target in engine:  # "crf.parameters.CRFParameters" -> "crf.parameters"
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved, other


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ENGINE.rglob("*.py")
            if "__pycache__" not in path.parts and path.name != "__init__.py"
            or path.parent != ENGINE and path.name == "__init__.py"}


@pytest.fixture(scope="module")
def graph() -> dict[str, tuple[set[str], set[str]]]:
    return {name: _imports(path) for name, path in _modules().items()}


def _layer(name: str) -> str:
    return LAYER_OF.get(name) or LAYER_OF[name.split(".")[0]]


def test_every_engine_module_has_a_layer():
    unplaced = sorted(name for name in _modules()
                      if name not in LAYER_OF and name.split(".")[0] not in LAYER_OF)
    assert not unplaced, f"add {unplaced} to LAYER_OF and to docs/architecture.md's table"


def test_each_layer_imports_only_what_the_table_allows(graph):
    breaches = [f"{name} ({_layer(name)}) imports {target} ({_layer(target)})"
                for name, (engine, _) in sorted(graph.items()) for target in sorted(engine)
                if _layer(target) not in LAYERS[_layer(name)]]
    assert not breaches, "\n".join(breaches)


def test_a_modules_all_lists_only_what_it_defines():
    """One import home per name: ``__all__`` of a module names what the module defines, never
    a name it imports to pass on; a package's ``__init__`` may gather its own modules' names
    (``model.load_model``), not names from outside the package."""
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        exported: list[str] = []
        defined: set[str] = set()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            if isinstance(node, ast.ImportFrom) and node.level == 1 \
                    and path.name == "__init__.py":
                defined.update(alias.asname or alias.name for alias in node.names)
            targets = (node.targets if isinstance(node, ast.Assign) else
                       [node.target] if isinstance(node, ast.AnnAssign) else [])
            for target in targets:
                if isinstance(target, ast.Name):
                    defined.add(target.id)
                    if target.id == "__all__" and isinstance(node.value, (ast.List, ast.Tuple)):
                        exported = [element.value for element in node.value.elts
                                    if isinstance(element, ast.Constant)]
        passed_on = sorted(set(exported) - defined)
        assert not passed_on, f"{name}.__all__ passes on {passed_on}: import them from their home"


def test_engine_modules_import_each_other_without_circles(graph):
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "visiting"
        for target in sorted(graph[name][0]):
            if state.get(target) == "visiting":
                raise AssertionError("import circle: " + " -> ".join(trail + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def _is_application(name: str) -> bool:
    """Whether ``name`` is an application module; every module of the command-line and the
    phantom packages is."""
    return name in APPLICATIONS or name.split(".")[0] in APPLICATION_PACKAGES


def test_core_modules_import_neither_the_cli_the_slicer_side_nor_the_phantoms(graph):
    for name, (engine, _) in graph.items():
        if _is_application(name):
            continue
        forbidden = {target for target in engine if _is_application(target)}
        assert not forbidden, f"{name} imports {sorted(forbidden)}"


def test_only_the_slicer_side_imports_slicer_and_no_module_imports_qt(graph):
    for name, (_, other) in graph.items():
        assert not other & {"qt", "ctk", "PythonQt"}, name
        if name not in SLICER_SIDE:
            assert not other & {"slicer", "vtk"}, name


def test_the_engine_never_imports_training(graph):
    for name, (_, other) in graph.items():
        assert "training" not in other, name


def test_modules_loaded_into_slicers_process_never_load_torch():
    at_import = {name: _imports(path, at_import=True) for name, path in _modules().items()}

    def reachable(name: str, seen: set[str]) -> set[str]:
        for target in at_import[name][0]:
            if target not in seen:
                seen.add(target)
                reachable(target, seen)
        return seen

    for name in TORCH_FREE:
        for module in {name} | reachable(name, set()):
            assert "torch" not in at_import[module][1], \
                f"importing {name} imports {module}, which imports torch"


def test_modules_loaded_into_slicers_process_import_where_torch_cannot():
    """The check above, at run time: a fresh interpreter (this one, so also the CI's Python 3.9,
    Slicer 5.8's) in which ``import torch`` fails imports every torch-free module, which catches
    what only running the module shows (a ``X | Y`` evaluated before Python 3.10, say). The Slicer
    side needs MRML (the ``slicer-core`` wheel) and is left out where it is missing."""
    have_mrml = importlib.util.find_spec("slicer") is not None
    names = sorted(name for name in TORCH_FREE if have_mrml or name not in SLICER_SIDE)
    code = "import sys\nsys.modules['torch'] = None\n" + "".join(
        f"import DeepOrganSegLib.{name}\n" for name in names)
    result = subprocess.run([sys.executable, "-c", code], cwd=ENGINE.parent, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_engine_package_is_installed_by_pyproject():
    """A package missing from ``[tool.setuptools] packages`` works in the source tree and in an
    editable install, and is absent from a wheel: the command line would fail on import."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((ENGINE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {".".join(("DeepOrganSegLib", *path.parent.relative_to(ENGINE).parts))
               for path in ENGINE.rglob("__init__.py") if "__pycache__" not in path.parts}
    assert listed == on_disk
