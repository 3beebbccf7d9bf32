"""Helpers the tests share: simple known-label scenes, a tiny model trained in seconds, and a
fresh MRML scene. Plain functions and constants; the fixtures that use them are in conftest.py.

The tiny model is trained here, with plain torch, on ellipsoid "organs" in CT-like noise; it is
good enough (Dice > 0.9) to test the whole path (model file -> CLI/Logic -> labelmap) without a
bundled model or the training package.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from DeepOrganSegLib.model import LabelSpec, ModelMetadata, Normalization, TaskSpec, save_model
from DeepOrganSegLib.grid import resample_to_grid, working_grid
from DeepOrganSegLib.model.network import DSN3D, DSNConfig
from DeepOrganSegLib.preprocess import prepare_image
from DeepOrganSegLib.model.terminology import term_for
from DeepOrganSegLib.volume import Volume

TINY_SPACING_MM = (3.0, 3.0, 3.0)
TINY_LABELS = {1: "liver", 2: "spleen"}
CT_NORMALIZATION = Normalization("ct", clip_hu=(-1000.0, 1000.0), center_hu=40.0, scale_hu=350.0)


def ellipsoid_scene(seed: int, shape=(40, 56, 64), spacing=(2.5, 2.5, 3.0)) -> tuple[Volume, Volume]:
    """A CT-like scene in HU: a body of fat and muscle with a 'liver' ellipsoid on the patient's
    right (low i in LPS) and a 'spleen' ellipsoid on the left, labels 1 and 2. Organ contrasts
    are exaggerated so that a tiny model learns them in seconds."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    depth, rows, columns = shape
    body = ((i - columns / 2) / (0.46 * columns)) ** 2 + ((j - rows / 2) / (0.44 * rows)) ** 2 < 1
    image = np.full(shape, -1000.0, np.float32)
    image[body] = -100.0
    image[body & (((i - columns / 2) / (0.38 * columns)) ** 2
                  + ((j - rows / 2) / (0.36 * rows)) ** 2 < 1)] = 45.0
    labels = np.zeros(shape, np.uint8)
    jitter = rng.uniform(-0.04, 0.04, size=6)
    liver = (((i - (0.33 + jitter[0]) * columns) / (0.17 * columns)) ** 2
             + ((j - (0.45 + jitter[1]) * rows) / (0.2 * rows)) ** 2
             + ((k - (0.5 + jitter[2]) * depth) / (0.3 * depth)) ** 2) < 1
    spleen = (((i - (0.7 + jitter[3]) * columns) / (0.11 * columns)) ** 2
              + ((j - (0.55 + jitter[4]) * rows) / (0.14 * rows)) ** 2
              + ((k - (0.45 + jitter[5]) * depth) / (0.25 * depth)) ** 2) < 1
    labels[liver] = 1
    labels[spleen] = 2
    image[liver] = 160.0
    image[spleen] = 260.0
    image += rng.normal(0, 12, size=shape).astype(np.float32)
    image = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(image), 0.7))
    geometry = dict(spacing=(spacing[2], spacing[1], spacing[0]),
                    origin=(-80.0, -70.0, -60.0))
    return Volume(image.astype(np.float32), **geometry), Volume(labels, **geometry)


def tiny_metadata(crf: dict | None = None) -> ModelMetadata:
    labels = tuple(LabelSpec(value=value, name=name, **{
        k: v for k, v in term_for(name).to_dict().items() if k in ("display_name", "snomed")},
        color=term_for(name).color) for value, name in TINY_LABELS.items())
    task = TaskSpec("abdomen-ct", "Abdominal organs (CT)", "CT", TINY_SPACING_MM,
                    CT_NORMALIZATION, labels)
    return ModelMetadata("DSN3D", TINY_CONFIG.to_dict(), (32, 32, 32), (task,), crf or {},
                         {"data": "ellipsoid scenes (Testing/helpers.py)"})


TINY_CONFIG = DSNConfig(num_classes=3, widths=(8, 16, 32), convs_per_level=(1, 1, 1),
                        side_output_levels=(1,))


def _training_pair(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A scene on the working grid with random air margins, so that the network cannot learn
    where organs are from the distance to the field-of-view border."""
    image, labels = ellipsoid_scene(seed)
    grid = working_grid(image, TINY_SPACING_MM)
    x = prepare_image(image, tiny_metadata().task("abdomen-ct"), grid)[0]  # as inference does
    y = resample_to_grid(labels, grid, interpolator=sitk.sitkNearestNeighbor, default_value=0)
    margins = np.random.default_rng(seed).integers(0, 9, size=(3, 2))
    x = np.pad(x, margins, constant_values=float(x.min()))
    y = np.pad(y, margins)
    crop = tuple(slice(0, (n // 4) * 4) for n in x.shape)
    return torch.from_numpy(x[crop])[None], torch.from_numpy(y[crop]).long()


def _dice_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice over the foreground classes (small organs need the Dice)."""
    probabilities = torch.softmax(logits, 1)[:, 1:]
    one_hot = torch.nn.functional.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:]
    overlap = (probabilities * one_hot).sum((0, 2, 3, 4))
    total = probabilities.sum((0, 2, 3, 4)) + one_hot.sum((0, 2, 3, 4))
    soft_dice = 1 - ((2 * overlap + 1) / (total + 1)).mean()
    return torch.nn.functional.cross_entropy(logits, target) + soft_dice


def train_tiny_model(path: Path, steps: int = 150, seed: int = 0) -> Path:
    """Train :data:`TINY_CONFIG` on ellipsoid scenes for ``steps`` Adam steps; save to ``path``."""
    torch.manual_seed(seed)
    network = DSN3D(TINY_CONFIG)
    pairs = [_training_pair(s) for s in range(4)]
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    network.train()
    for step in range(steps):
        x, y = pairs[step % len(pairs)]
        x, y = x[None], y[None]
        main, sides = network(x)
        loss = _dice_ce(main, y) + 0.3 * sum(_dice_ce(side, y) for side in sides)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # BatchNorm's running statistics lag the weights at this learning rate with batches of one:
    # on some CPUs (an AVX2 EPYC) the eval-mode model then missed whole organs (liver Dice
    # 0.05) although the training loss was as low as elsewhere. Recompute them at the final
    # weights, as an equal average over the training scenes.
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        for x, _ in pairs:
            network(x[None])
    network.eval()
    return save_model(path, network, tiny_metadata())


def tiny_model_cache() -> Path:
    """Where the tiny model is kept between test sessions on one machine: training is
    deterministic, so the file is keyed by the source of everything that shapes it (this file,
    which defines the tiny model and its training data, and the engine code it goes through)."""
    import hashlib

    import DeepOrganSegLib

    engine = Path(DeepOrganSegLib.__file__).parent
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for name in ("model/network.py", "model/spec.py", "model/file.py", "preprocess.py",
                 "grid.py", "model/terminology.py"):
        digest.update((engine / name).read_bytes())
    digest.update(torch.__version__.encode())
    return Path(tempfile.gettempdir()) / "deeporganseg-test-cache" / f"tiny-{digest.hexdigest()[:16]}.safetensors"


def fresh_mrml_scene() -> Iterator:
    """A fresh MRML scene as ``slicer.mrmlScene``, with the segmentations logic attached (which
    registers the labelmap <-> closed surface converters); cleared afterwards. For the
    ``mrml_scene`` fixtures of the tier-2 tests (needs the ``slicer-core`` wheel)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    yield scene
    logic.SetMRMLScene(None)
    scene.Clear(True)


def paint_stroke(session, segment_id: str, mask: np.ndarray) -> None:
    """A stroke of the panel's Paint: ``mask`` [k, j, i] on the input's grid added to the
    stroke segment ``segment_id`` of a ``mrml.refine.RefinementSession`` by the Segment
    Editor's own logic (``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap``, what the Paint
    effect calls from Slicer 5.10 on), with the stroke editor's parameter node, overwrite mode
    included (needs the ``slicer-core`` wheel)."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    from DeepOrganSegLib.mrml.nodes import node_ijk_to_ras
    from DeepOrganSegLib.mrml.refine import stroke_editor_node

    node = session.segmentation_node
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(node.GetScene())
    editor.SetSegmentEditorNode(stroke_editor_node(node.GetScene()))
    editor.SetSegmentationNode(node)
    editor.SetSourceVolumeNode(session.input_volume)
    editor.SetCurrentSegmentID(segment_id)
    stroke = slicer.vtkOrientedImageData()
    stroke.SetDimensions(*mask.shape[::-1])
    stroke.SetImageToWorldMatrix(node_ijk_to_ras(session.input_volume))
    stroke.GetPointData().SetScalars(numpy_support.numpy_to_vtk(
        np.ascontiguousarray(mask, np.uint8).ravel(), deep=True,
        array_type=vtk.VTK_UNSIGNED_CHAR))
    editor.ModifySegmentByLabelmap(node, segment_id, stroke, editor.ModificationModeAdd,
                                   True, False)
