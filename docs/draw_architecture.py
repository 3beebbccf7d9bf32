"""Draw docs/images/architecture.png: the engine's modules and packages in the layers of
docs/architecture.md's table, with their imports, from the import graph and the layer table that
Testing/test_architecture.py checks (one walker and one table for both).

    python docs/draw_architecture.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "Testing"))

from test_architecture import LAYERS, _imports, _layer, _modules  # noqa: E402

OUT = ROOT / "docs" / "images" / "architecture.png"
#: Bottom to top: each layer imports only layers below it (and itself).
ORDER = ("foundation", "data", "model", "bodypart", "pipeline", "remote", "applications",
         "slicer")
COLOURS = {"foundation": "#e4e7eb", "data": "#dde7d3", "model": "#b9d7f0", "bodypart": "#c9c3ef",
           "pipeline": "#a8d8c8", "remote": "#d6ecb0", "applications": "#f3e3a1",
           "slicer": "#f6c7a8"}


def package_graph() -> dict[str, set[str]]:
    """Imports between packages and top-level modules (``crf.meanfield`` counts as ``crf``)."""
    graph: dict[str, set[str]] = {}
    for name, path in _modules().items():
        if name == "__main__":
            continue
        node = name.split(".")[0]
        targets = {target.split(".")[0] for target in _imports(path)[0]} - {node, "__main__"}
        graph.setdefault(node, set()).update(targets)
    return graph


def main() -> int:
    assert set(ORDER) == set(LAYERS)
    graph = package_graph()
    rows: dict[int, list[str]] = {}
    for node in sorted(graph):
        rows.setdefault(ORDER.index(_layer(node)), []).append(node)
    width = max(len(row) for row in rows.values())
    position = {node: ((column - (len(row) - 1) / 2) * width / max(len(row), 1) * 0.9, level)
                for level, row in rows.items() for column, node in enumerate(row)}
    figure, axes = plt.subplots(figsize=(14, 8))
    for node, targets in graph.items():
        for target in targets:
            (x0, y0), (x1, y1) = position[node], position[target]
            axes.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                          arrowprops=dict(arrowstyle="->", color="#9aa5b1", lw=0.7,
                                          shrinkA=2, shrinkB=2))
    packages = {name.split(".")[0] for name in _modules() if "." in name}
    for node, (x, y) in position.items():
        axes.text(x, y, node + ("/" if node in packages else ""), ha="center", va="center",
                  fontsize=10, bbox=dict(boxstyle="round,pad=0.35",
                                         facecolor=COLOURS[_layer(node)], edgecolor="#52606d"))
    left = min(x for x, _ in position.values()) - 1.6
    for level, layer in enumerate(ORDER):
        axes.text(left, level, layer, ha="left", va="center", fontsize=10, style="italic",
                  color="#3e4c59")
    axes.set_xlim(left - 0.2, max(x for x, _ in position.values()) + 1)
    axes.set_ylim(-0.7, len(ORDER) - 0.3)
    axes.axis("off")
    axes.set_title("DeepOrganSegLib: layers (bottom to top, as in docs/architecture.md's table) "
                   "and imports (arrows point at what is imported)", fontsize=11)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
