"""Draw docs/images/architecture.png: the engine's modules in layers, from the import graph
that Testing/test_architecture.py checks (one walker for both).

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

from test_architecture import (APPLICATION_PACKAGES, APPLICATIONS, SLICER_SIDE,  # noqa: E402
                               _imports, _modules)

OUT = ROOT / "docs" / "images" / "architecture.png"


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


def layers(graph: dict[str, set[str]]) -> dict[str, int]:
    """Each node's depth: 0 for modules that import no engine module, else 1 + the deepest."""
    depth: dict[str, int] = {}

    def visit(node: str) -> int:
        if node not in depth:
            depth[node] = 1 + max((visit(t) for t in graph[node]), default=-1)
        return depth[node]

    for node in graph:
        visit(node)
    return depth


def main() -> int:
    graph = package_graph()
    depth = layers(graph)
    rows: dict[int, list[str]] = {}
    for node, level in sorted(depth.items()):
        rows.setdefault(level, []).append(node)
    position = {node: (column - (len(row) - 1) / 2, level)
                for level, row in rows.items() for column, node in enumerate(row)}
    figure, axes = plt.subplots(figsize=(13, 8))
    for node, targets in graph.items():
        for target in targets:
            (x0, y0), (x1, y1) = position[node], position[target]
            axes.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                          arrowprops=dict(arrowstyle="->", color="#9aa5b1", lw=0.7,
                                          shrinkA=2, shrinkB=2))
    slicer_side = {name.split(".")[0] for name in SLICER_SIDE}
    applications = ({name.split(".")[0] for name in APPLICATIONS} | APPLICATION_PACKAGES
                    ) - slicer_side
    packages = {name.split(".")[0] for name in _modules() if "." in name}
    for node, (x, y) in position.items():
        colour = ("#f6c7a8" if node in slicer_side else "#f3e3a1" if node in applications
                  else "#b9d7f0" if node in packages else "#dde7d3")
        axes.text(x, y, node + ("/" if node in packages else ""), ha="center",
                  va="center", fontsize=10,
                  bbox=dict(boxstyle="round,pad=0.35", facecolor=colour, edgecolor="#52606d"))
    axes.set_xlim(min(x for x, _ in position.values()) - 1,
                  max(x for x, _ in position.values()) + 1)
    axes.set_ylim(-0.7, max(depth.values()) + 0.7)
    axes.axis("off")
    axes.set_title("DeepOrganSegLib: modules and packages by import depth (arrows: imports; "
                   "green core modules, blue core packages, yellow applications, orange the "
                   "Slicer side)", fontsize=11)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(OUT, dpi=110, bbox_inches="tight")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
