"""What the Slicer module does on the GUI thread, timed against slicer-core's MRML: exporting
a 512x512x100 volume node for the engine, and importing a 9-organ labelmap as segments.

    python benchmarks/slicer_gui_thread.py [--quick]

``--quick``: a 128x128x10 volume. Needs the ``slicer-core`` wheel (MRML without Slicer's GUI);
without it the benchmark says so and measures nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, add_quick_flag, installed, print_header, print_row, report_skipped

sys.path[:0] = [str(ROOT / "DeepOrganSeg"), str(ROOT / "DeepOrganSeg" / "Testing" / "Python")]

ORGANS = 9


def export_seconds(node, folder: Path) -> float:
    """Seconds to turn a volume node into the engine's input file, as the Logic does at
    *Segment*: the node's voxels and geometry, written as uncompressed NRRD."""
    from DeepOrganSegLib.mrml import nodes as mrml
    from DeepOrganSegLib.volume_io import write_volume

    started = time.perf_counter()
    write_volume(mrml.volume_from_node(node), folder / "in.nrrd", compress=False)
    return time.perf_counter() - started


def import_seconds(scene, node, shape: tuple[int, int, int]) -> float:
    """Seconds to import a labelmap of :data:`ORGANS` box-shaped organs as segments of a new
    segmentation node, as the Logic does when the engine has finished."""
    from DeepOrganSegLib.model import read_metadata
    from DeepOrganSegLib.mrml import nodes as mrml
    from DeepOrganSegLib.resources import default_model_path

    depth, rows, columns = shape
    labels = np.zeros(shape, np.uint8)
    for value in range(1, ORGANS + 1):  # disjoint boxes, one per organ, spread over the volume
        k = slice((value - 1) * depth // ORGANS, value * depth // ORGANS)
        i = slice((value - 1) * columns // ORGANS, value * columns // ORGANS)
        labels[k, rows // 5: 3 * rows // 5, i] = value
    specs = list(read_metadata(default_model_path()).task("abdomen-ct").labels)
    started = time.perf_counter()
    segments = mrml.segments_from_labelmap(labels, mrml.node_ijk_to_ras(node), specs, {})
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)
    mrml.merge_segments(segmentation, segments)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_quick_flag(parser)
    args = parser.parse_args()
    if not installed("slicer"):
        report_skipped("the MRML round trip", "slicer-core is not installed")
        return 0
    import slicer

    import DeepOrganSegTestBodies as bodies
    from DeepOrganSegLib.volume import Volume

    shape = (10, 128, 128) if args.quick else (100, 512, 512)
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    image = Volume(np.random.default_rng(0).normal(0, 50, shape).astype(np.float32),
                   (0.8, 0.8, 2.0))
    node = bodies.add_volume_node(scene, image, "CT")
    with tempfile.TemporaryDirectory() as folder:
        export = export_seconds(node, Path(folder))
    print_header("volume (voxels)", "export for the engine (s)",
                 f"import of {ORGANS} segments (s)")
    print_row(f"{'x'.join(map(str, shape[::-1]))} ({np.prod(shape) / 1e6:.1f} M)",
              f"{export:.2f}", f"{import_seconds(scene, node, shape):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
