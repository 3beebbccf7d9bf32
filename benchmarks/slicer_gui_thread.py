"""What the Slicer module does on the GUI thread, timed against slicer-core's MRML: exporting
a 512x512x100 volume node for the engine, and importing a 9-organ labelmap as segments.

    python benchmarks/slicer_gui_thread.py
"""
import sys, time, tempfile
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "DeepOrganSeg"), str(ROOT / "DeepOrganSeg" / "Testing" / "Python")]
import numpy as np, slicer
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import write_volume
from DeepOrganSegLib.mrml import nodes as mrml
from DeepOrganSegLib.model import read_metadata
from DeepOrganSegLib.resources import default_model_path
import DeepOrganSegTestBodies as bodies
scene = slicer.vtkMRMLScene(); slicer.mrmlScene = scene
logic = slicer.vtkSlicerSegmentationsModuleLogic(); logic.SetMRMLScene(scene)
shape = (100, 512, 512)
image = Volume(np.random.default_rng(0).normal(0, 50, shape).astype(np.float32), (0.8, 0.8, 2.0))
node = bodies.add_volume_node(scene, image, "CT")
t = time.perf_counter(); v = mrml.volume_from_node(node); folder = Path(tempfile.mkdtemp()); write_volume(v, folder / "in.nrrd", compress=False); export = time.perf_counter() - t
labels = np.zeros(shape, np.uint8)
for value in range(1, 10):
    labels[10 * value: 10 * value + 8, 100:300, 50 * value: 50 * value + 40] = value
specs = [l for l in read_metadata(default_model_path()).task("abdomen-ct").labels]
t = time.perf_counter()
segments = mrml.segments_from_labelmap(labels, mrml.node_ijk_to_ras(node), specs, {})
seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode"); seg.CreateDefaultDisplayNodes()
seg.SetReferenceImageGeometryParameterFromVolumeNode(node)
mrml.merge_segments(seg, segments)
imp = time.perf_counter() - t
print(f"{np.prod(shape)/1e6:.0f} M voxels: export {export:.2f} s, import of 9 segments {imp:.2f} s")
