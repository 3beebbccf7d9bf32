"""The coarse-to-fine cascade (Roth et al. 2018): stage 1 on the whole volume at a coarse spacing,
stage 2 at the task's spacing inside stage 1's organ region, with stage 1's probabilities as
prior channels. Model file contract, geometry, the region rule, and training either stage."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from helpers import TINY_CONFIG, ellipsoid_scene, tiny_metadata
from test_geometry import _flip_axis, _oblique_copy
from DeepOrganSegLib import cascade
from DeepOrganSegLib.errors import InputError, ModelFileError
from DeepOrganSegLib.model import StageSpec, load_model, read_metadata, save_model
from DeepOrganSegLib.inference import Prediction
from DeepOrganSegLib.options import InferenceSettings
from DeepOrganSegLib.model.network import DSN3D
from DeepOrganSegLib.grid import WorkingGrid, working_grid
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from training.config import ConfigError, PriorConfig, TrainConfig
from training.distributed import DistributedContext
from training.export import export_checkpoint
from training.prior import CoarsePrior, perturbed_prior
from training.train import train

ROOT = Path(__file__).resolve().parent.parent
CPU = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
COARSE_MM = (9.0, 9.0, 9.0)


def _cascade_file(tmp_path: Path, margin_mm: float = 20.0, seed: int = 0) -> Path:
    """A cascade of two untrained tiny networks over the tiny two-label task."""
    torch.manual_seed(seed)
    stage1 = DSN3D(TINY_CONFIG).eval()
    stage2 = DSN3D(replace(TINY_CONFIG, in_channels=1 + 2)).eval()  # image + 2 prior channels
    base = tiny_metadata()
    spec = StageSpec(parameters=TINY_CONFIG.to_dict(), patch_size=(16, 16, 16), inputs=("image",),
                     spacing_mm={base.tasks[0].name: COARSE_MM}, margin_mm=margin_mm)
    metadata = replace(base, parameters=stage2.config.to_dict(), inputs=("image", "prior"),
                       stage1=spec)
    return save_model(tmp_path / "cascade.safetensors", stage2, metadata, stage1=stage1)


# ---------------------------------------------------------------------------------------------
# The model file.


def test_a_cascade_model_file_round_trips_both_networks_and_its_stage_metadata(tmp_path):
    path = _cascade_file(tmp_path)
    model = load_model(path)
    assert model.stage1 is not None and model.metadata.stage1.spacing_mm == {
        "abdomen-ct": COARSE_MM}
    assert model.metadata.inputs == ("image", "prior") and model.metadata.input_channels == 3
    again = save_model(tmp_path / "again.safetensors", model.network, model.metadata,
                       stage1=model.stage1)
    reloaded = load_model(again)
    assert reloaded.metadata == model.metadata
    for mine, theirs in ((model.network, reloaded.network), (model.stage1, reloaded.stage1)):
        for (name, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), name


def test_a_prior_input_without_a_stage_1_is_refused_with_the_field_named(tmp_path):
    import json
    import struct

    path = _cascade_file(tmp_path)
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    document = json.loads(header["__metadata__"]["deeporganseg"])
    del document["cascade"]
    header["__metadata__"]["deeporganseg"] = json.dumps(document)
    text = json.dumps(header).encode()
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length:])
    with pytest.raises(ModelFileError, match="'inputs' must include 'prior' exactly when"):
        read_metadata(broken)


def test_a_cascade_file_missing_its_stage_1_weights_is_refused(tmp_path):
    path = _cascade_file(tmp_path)
    model = load_model(path)
    with pytest.raises(ValueError, match="stage-1 network"):
        save_model(tmp_path / "half.safetensors", model.network, model.metadata)


# ---------------------------------------------------------------------------------------------
# Geometry and the stage-2 region.


@pytest.mark.parametrize("change", ["flip", "oblique"])
def test_cascade_output_lies_on_the_exact_input_grid(tmp_path, change):
    image, _ = ellipsoid_scene(seed=2)
    moved = (_flip_axis(image, 0) if change == "flip"
             else _oblique_copy(image, sitk.sitkLinear, degrees=15.0))
    model = load_model(_cascade_file(tmp_path))
    result = segment_volume(moved, model, SegmentationOptions(crf=False))
    labels = result.labels
    assert labels.array.shape == moved.array.shape
    np.testing.assert_allclose(labels.spacing, moved.spacing)
    np.testing.assert_allclose(labels.origin, moved.origin)
    np.testing.assert_allclose(labels.direction, moved.direction)


def test_organ_region_is_stage_1_organ_box_plus_margin_in_millimetres():
    coarse = WorkingGrid((10, 10, 10), (9.0, 9.0, 9.0), (0.0, 0.0, 0.0))
    fine = WorkingGrid((45, 45, 45), (2.0, 2.0, 2.0), (-1.0, -1.0, -1.0))
    probabilities = torch.zeros((3, 10, 10, 10))
    probabilities[0] = 1.0
    probabilities[:, 4:6, 3:5, 2:4] = torch.tensor([0.1, 0.8, 0.1])[:, None, None, None]
    region = cascade.organ_region(probabilities, coarse, fine, margin_mm=10.0)
    for axis, (first, last) in zip(range(3), ((2, 3), (3, 4), (4, 5))):  # i, j, k coarse voxels
        low_mm, high_mm = (first - 0.5) * 9.0 - 10.0, (last + 0.5) * 9.0 + 10.0
        piece = region[2 - axis]
        start_mm, stop_mm = -1.0 + 2.0 * piece.start, -1.0 + 2.0 * (piece.stop - 1)
        assert low_mm - 2.0 <= start_mm <= low_mm + 2.0
        assert high_mm - 2.0 <= stop_mm <= high_mm + 2.0
    assert cascade.organ_region(torch.eye(3)[0][:, None, None, None].expand(3, 2, 2, 2),
                                coarse, fine, 10.0) is None


def test_stage_2_never_runs_outside_the_stage_1_region_plus_margin(tmp_path, monkeypatch):
    image, _ = ellipsoid_scene(seed=2)
    model = load_model(_cascade_file(tmp_path, margin_mm=12.0))
    task = model.metadata.tasks[0]
    grid = working_grid(image, task.spacing_mm)
    calls = []
    real_predict = cascade.predict

    def fake_stage1_then_real(network, tensor, channels, patch, settings, **kwargs):
        calls.append(tuple(tensor.shape))
        if network is model.stage1:  # stage 1 finds one organ in a small corner box
            found = torch.zeros((len(channels), *tensor.shape[1:]))
            found[0] = 1.0
            found[:, 1:3, 2:4, 1:3] = torch.tensor([0.0, 1.0, 0.0])[:, None, None, None]
            return Prediction(found, [], list(channels))
        return real_predict(network, tensor, channels, patch, settings, **kwargs)

    monkeypatch.setattr(cascade, "predict", fake_stage1_then_real)
    output = cascade.network_probabilities(image, model, task, grid, InferenceSettings())
    region = output.region
    assert calls[1][1:] == tuple(r.stop - r.start for r in region)  # stage 2's input is the box
    assert np.prod(calls[1][1:]) < 0.5 * np.prod(grid.shape)
    outside = torch.ones(grid.shape, dtype=torch.bool)
    outside[region] = False
    assert torch.all(output.prediction.main[0][outside] == 1.0)
    assert torch.all(output.prediction.main[1:][:, outside] == 0.0)
    coarse = working_grid(image, COARSE_MM)
    # the box holds the coarse organ voxels (k 1-2, j 2-3, i 1-2) plus 12 mm, not more
    for axis, (first, last) in zip(range(3), ((1, 2), (2, 3), (1, 2))):
        piece = region[2 - axis]
        low = coarse.origin[axis] + (first - 0.5) * COARSE_MM[axis] - 12.0
        high = coarse.origin[axis] + (last + 0.5) * COARSE_MM[axis] + 12.0
        start_mm = grid.origin[axis] + piece.start * grid.spacing[axis]
        stop_mm = grid.origin[axis] + (piece.stop - 1) * grid.spacing[axis]
        assert piece.start == 0 or abs(start_mm - low) <= grid.spacing[axis]
        assert stop_mm <= high + grid.spacing[axis]


def test_a_single_stage_model_still_runs_once_over_the_whole_grid(tiny_model_path, monkeypatch):
    image, _ = ellipsoid_scene(seed=2)
    model = load_model(tiny_model_path)
    task = model.metadata.tasks[0]
    grid = working_grid(image, task.spacing_mm)
    calls = []
    real_predict = cascade.predict
    monkeypatch.setattr(cascade, "predict", lambda *a, **k: calls.append(a[1].shape)
                        or real_predict(*a, **k))
    output = cascade.network_probabilities(image, model, task, grid)
    assert len(calls) == 1 and tuple(calls[0][1:]) == grid.shape
    assert output.region == tuple(slice(0, n) for n in grid.shape)


# ---------------------------------------------------------------------------------------------
# Training either stage.


def test_perturbed_prior_is_the_coarse_truth_without_a_generator_and_drops_organs_with_one():
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[4:16, 6:18, 8:20] = 3
    settings = PriorConfig(stage1_model="x", organ_dropout=0.999)
    clean = perturbed_prior(labels, [3], (2.0, 2.0, 2.0), (3.0, 3.0, 3.0), settings, None)
    assert clean.shape == (1, 24, 24, 24) and 0 <= clean.min() and clean.max() <= 1
    assert clean[0][labels == 3].mean() > 0.8 and clean[0][labels == 0].mean() < 0.1
    dropped = perturbed_prior(labels, [3], (2.0, 2.0, 2.0), (3.0, 3.0, 3.0), settings,
                              np.random.default_rng(0))
    assert dropped.max() == 0.0


@pytest.mark.parametrize("origin", [(0, 0, 0), (3, 5, 2), (-4, 9, -1), (10, 14, 20)])
def test_a_coarse_prior_crop_equals_the_crop_of_the_whole_resampled_prior(origin):
    """Stage 1's priors are held coarse; a crop must read what the whole prior resampled to the
    working grid (as inference resamples it) holds there, zero outside the case (padding)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (2, 5, 7, 9)).astype(np.uint8)
    shape, size = (12, 17, 22), (8, 8, 8)
    whole = torch.nn.functional.interpolate(torch.from_numpy(coarse).float()[None], size=shape,
                                            mode="trilinear", align_corners=False)[0].numpy()
    padded = np.pad(whole, [(0, 0)] + [(8, 8)] * 3)
    expected = padded[(slice(None), *(slice(o + 8, o + 8 + n) for o, n in zip(origin, size)))]
    crop = CoarsePrior(coarse, shape).crop(origin, size)
    assert crop.dtype == np.uint8 and crop.shape == (2, *size)
    assert np.abs(crop.astype(float) - np.round(expected)).max() <= 1


def test_a_prior_input_needs_its_stage_1_model_file():
    raw = yaml.safe_load((ROOT / "training" / "configs" / "tiny.yaml").read_text())
    raw["inputs"] = ["image", "prior"]
    with pytest.raises(ConfigError, match="prior.stage1_model"):
        TrainConfig.from_dict(raw)


def _tiny_raw(tmp_path: Path, name: str, spacing_mm: float) -> dict:
    raw = yaml.safe_load((ROOT / "training" / "configs" / "tiny.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["tasks"] = raw["tasks"][:1]
    raw["labels"] = raw["tasks"][0]["labels"]
    raw["tasks"][0]["spacing_mm"] = [spacing_mm] * 3
    raw["schedule"]["steps"] = 3
    raw["data"]["cache_dir"] = str(tmp_path / "cache")
    raw["output_dir"] = str(tmp_path / name)
    return raw


def test_train_and_export_a_cascade_from_two_configs_then_segment_with_it(tmp_path):
    stage1_raw = _tiny_raw(tmp_path, "stage1", 14.0)
    stage1_raw["network"] = {"widths": [8, 16], "convs_per_level": [1, 1],
                             "side_output_levels": [], "normalization": "batch", "skip": "add"}
    stage1_raw["schedule"]["side_weights"] = []
    stage1_config = TrainConfig.from_dict(stage1_raw)
    train(stage1_config, CPU, show_progress=False)
    stage1_file = export_checkpoint(tmp_path / "stage1" / "last.pt",
                                    tmp_path / "stage1.safetensors")

    stage2_raw = _tiny_raw(tmp_path, "stage2", 7.0)
    stage2_raw["inputs"] = ["image", "position", "prior"]
    stage2_raw["prior"] = {"stage1_model": str(stage1_file), "margin_mm": 21.0,
                           "stage1_share": 0.5}  # half the patches: stage 1's own prediction
    stage2_config = TrainConfig.from_dict(stage2_raw)
    train(stage2_config, CPU, show_progress=False)
    cascade_file = export_checkpoint(tmp_path / "stage2" / "last.pt",
                                     tmp_path / "cascade.safetensors")

    before = stage1_file.read_bytes()
    with pytest.raises(InputError, match="destroy the input"):  # the stage-1 file is an input
        export_checkpoint(tmp_path / "stage2" / "last.pt", stage1_file)
    assert stage1_file.read_bytes() == before
    model = load_model(cascade_file)
    assert model.metadata.stage1.spacing_mm == {"abdomen-ct": (14.0, 14.0, 14.0)}
    assert model.metadata.stage1.margin_mm == 21.0
    assert model.metadata.input_channels == 1 + 2 + 9  # image, position, one prior per label
    assert model.metadata.provenance["stage1"]["file"] == "stage1.safetensors"
    from DeepOrganSegLib.phantoms import make_phantom

    case = make_phantom("abdomen-ct", 5, shape=(40, 48, 48), spacing=(7.0, 7.0, 7.0))
    result = segment_volume(case.image, model, SegmentationOptions(crf=False))
    assert result.labels.array.shape == case.image.array.shape

    # Retraining stage 2 over the cascade's own stage 1: the cascade stands in for its stage-1 file
    retrain_raw = copy.deepcopy(stage2_raw)
    retrain_raw["prior"]["stage1_model"] = str(cascade_file)
    retrain_raw["output_dir"] = str(tmp_path / "retrained")
    train(TrainConfig.from_dict(retrain_raw), CPU, show_progress=False)
    retrained = load_model(export_checkpoint(tmp_path / "retrained" / "last.pt",
                                             tmp_path / "retrained.safetensors"))
    assert retrained.metadata.stage1 == model.metadata.stage1
    assert retrained.metadata.provenance["stage1"]["command"] == \
        model.metadata.provenance["stage1"]["command"]
    for name, weight in model.stage1.state_dict().items():
        assert torch.equal(retrained.stage1.state_dict()[name], weight)

    # A stage 1 retrained after its stage 2 joins that stage 2 at export (export.py --stage1)
    from DeepOrganSegLib.model.file import save_model

    newer = load_model(stage1_file)
    with torch.no_grad():
        for weight in newer.network.parameters():
            weight.add_(0.01)
    newer_file = save_model(tmp_path / "stage1-newer.safetensors", newer.network, newer.metadata)
    joined = load_model(export_checkpoint(tmp_path / "stage2" / "last.pt",
                                          tmp_path / "joined.safetensors",
                                          stage1_model=newer_file))
    assert joined.metadata.provenance["stage1"]["file"] == "stage1-newer.safetensors"
    for name, weight in newer.network.state_dict().items():
        assert torch.equal(joined.stage1.state_dict()[name], weight)
    for name, weight in model.network.state_dict().items():  # the same stage 2
        assert torch.equal(joined.network.state_dict()[name], weight)
    with pytest.raises(InputError, match="not a cascade's stage 2"):
        export_checkpoint(tmp_path / "stage1" / "last.pt", tmp_path / "no.safetensors",
                          stage1_model=newer_file)
    assert not (tmp_path / "no.safetensors").exists()


def test_info_shows_both_stages_of_a_cascade(tmp_path, capsys):
    from DeepOrganSegLib.cli import main

    assert main(["info", str(_cascade_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "cascade of 2 stages" in out
    assert "stage 1 (whole volume, coarse)" in out and "abdomen-ct [9.0, 9.0, 9.0] mm" in out
    assert "stage 2 (organ region + 20.0 mm)" in out and "image + prior (3 channels)" in out


def test_warm_start_from_a_cascade_as_a_single_stage_drops_the_prior_and_keeps_the_rest(tmp_path):
    from training.train import initial_weights

    cascade_path = _cascade_file(tmp_path)
    raw = yaml.safe_load((ROOT / "training" / "configs" / "tiny.yaml").read_text())
    raw["tasks"] = raw["tasks"][:1]
    raw["labels"] = raw["tasks"][0]["labels"] = ["liver", "spleen"]
    config = TrainConfig.from_dict(raw)  # inputs: image only
    network = DSN3D(config.dsn_config())
    assert initial_weights(network, config, str(cascade_path)) == []
    source = load_model(cascade_path).network
    image = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():  # the cascade's stage 2 with an empty prior computes the same
        expected = source(torch.cat([image, torch.zeros(1, 2, 16, 16, 16)], dim=1))
        torch.testing.assert_close(network.eval()(image), expected)
