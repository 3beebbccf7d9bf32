"""The dense 3D CRF: its filters, its agreement with pydensecrf, and what it does to segmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from DeepOrganSegLib.crf.meanfield import (PROBABILITY_FLOOR, dense_crf, dense_crf_roi,
                                           fuse_side_outputs, keep_found_organs)
from DeepOrganSegLib.crf.parameters import CRFParameters
from DeepOrganSegLib.crf.permutohedral import PermutohedralLattice
from DeepOrganSegLib.errors import Cancelled, InputError
from DeepOrganSegLib.metrics import dice
from DeepOrganSegLib.progress import CancelToken

#: densecrf's NormalizationType values (NO_NORMALIZATION 0, NORMALIZE_BEFORE 1, NORMALIZE_AFTER 2,
#: NORMALIZE_SYMMETRIC 3): a pydensecrf2 built with Cython 3 does not export the enum, so the
#: suite names the value itself instead of depending on how the wheel was built.
DENSECRF_NO_NORMALIZATION = 0

SPACING = (2.0, 1.0, 1.5)  # mm along Z, Y, X: deliberately anisotropic


def crf_case(shape=(24, 40, 40), spacing=SPACING, seed=0, noise=1.5):
    """Two touching ellipsoid 'organs' (labels 1, 2) in background; a noisy image and a noisy,
    over-smoothed 'network prediction'. Returns (labels, image, probabilities)."""
    generator = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(*[torch.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    cz, cy, cx = [n * s / 2 for n, s in zip(shape, spacing)]
    labels = torch.zeros(shape, dtype=torch.long)
    labels[((z - cz) / 14) ** 2 + ((y - cy) / 12) ** 2 + ((x - cx + 9) / 11) ** 2 < 1] = 1
    labels[((z - cz) / 12) ** 2 + ((y - cy) / 10) ** 2 + ((x - cx - 10) / 9) ** 2 < 1] = 2
    image = torch.tensor([0.0, 0.6, 1.0])[labels] + 0.1 * torch.randn(shape, generator=generator)
    logits = 1.5 * torch.nn.functional.one_hot(labels, 3).permute(3, 0, 1, 2).float()
    logits += noise * torch.randn(logits.shape, generator=generator)
    return labels, image, torch.softmax(logits, 0)


def brute_force_filter(features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Symmetrically normalised Gaussian filter, D^-1/2 K D^-1/2 values, with the dense kernel."""
    kernel = torch.exp(-torch.cdist(features.double(), features.double()) ** 2 / 2)
    norm = kernel.sum(1).rsqrt()
    return (norm[:, None] * (kernel @ (norm[:, None] * values.double()))).float()


def grid_features(shape, spacing, width_mm, image=None, intensity_width=1.0):
    axes = [torch.arange(n) * s / width_mm for n, s in zip(shape, spacing)]
    positions = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    if image is None:
        return positions
    return torch.cat([positions, image.reshape(-1, 1) / intensity_width], 1)


# -------------------------------------------------------------------------------- the filters

def test_filter_matches_brute_force_gaussian_on_small_grid():
    """Both kernels, as the CRF normalises them, against the dense N x N Gaussian: the
    smoothness kernel (separable convolution) exactly, the appearance kernel (permutohedral
    lattice) within the lattice's approximation."""
    from DeepOrganSegLib.crf.meanfield import _BilateralKernel, _SpatialKernel

    generator = torch.Generator().manual_seed(1)
    shape = (6, 9, 8)
    image = torch.rand(shape, generator=generator)
    q = torch.rand(3, math.prod(shape), generator=generator)

    spatial = _SpatialKernel(shape, SPACING, 2.5, torch.device("cpu")).filter(q)
    expected = brute_force_filter(grid_features(shape, SPACING, 2.5), q.t()).t()
    torch.testing.assert_close(spatial, expected, rtol=1e-3, atol=1e-3)

    bilateral = _BilateralKernel(image[None], SPACING, 4.0, 0.3).filter(q)
    expected = brute_force_filter(grid_features(shape, SPACING, 4.0, image, 0.3), q.t()).t()
    assert float((bilateral - expected).norm() / expected.norm()) < 0.05


def test_lattice_filter_is_pydensecrfs_lattice():
    """With pydensecrf's unnormalised kernel, one mean-field step exposes its lattice filter:
    log(Q1_0 / Q1_1) - log(P_0 / P_1) = w K (P_0 - P_1). Ours equals it to float rounding."""
    densecrf = pytest.importorskip("pydensecrf.densecrf")
    generator = torch.Generator().manual_seed(2)
    features = 6 * torch.rand(3000, 4, generator=generator)
    p0 = 0.1 + 0.8 * torch.rand(3000, generator=generator)
    probabilities = torch.stack([p0, 1 - p0]).numpy()
    crf = densecrf.DenseCRF(3000, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probabilities)))
    crf.addPairwiseEnergy(np.ascontiguousarray(features.t().numpy()), compat=1.0,
                          normalization=DENSECRF_NO_NORMALIZATION)
    q = np.asarray(crf.inference(1))
    theirs = torch.from_numpy(np.log(q[0] / q[1]) - np.log(probabilities[0] / probabilities[1]))
    ours = PermutohedralLattice(features).filter((2 * p0 - 1)[:, None])[:, 0]
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4)


def test_lattice_rejects_bad_features():
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        PermutohedralLattice(torch.zeros(10))


# ------------------------------------------------------------------------------ the CRF itself

def test_labels_agree_with_pydensecrf_on_99_percent_of_voxels():
    densecrf = pytest.importorskip("pydensecrf.densecrf")
    labels, image, probabilities = crf_case(shape=(48, 64, 64))
    params = CRFParameters()
    ours = dense_crf(probabilities, image, SPACING, params).argmax(0)

    positions = grid_features(labels.shape, SPACING, 1.0).t()
    appearance = torch.cat([positions / params.appearance_spatial_mm,
                            image.reshape(1, -1) / params.appearance_intensity])
    unary = -torch.log(probabilities.reshape(3, -1).clamp(min=PROBABILITY_FLOOR))
    crf = densecrf.DenseCRF(labels.numel(), 3)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.numpy()))
    crf.addPairwiseEnergy(np.ascontiguousarray(appearance.numpy()), compat=params.appearance_weight)
    crf.addPairwiseEnergy(np.ascontiguousarray((positions / params.smoothness_spatial_mm).numpy()),
                          compat=params.smoothness_weight)
    theirs = torch.from_numpy(np.asarray(crf.inference(params.iterations)).argmax(0)).reshape(labels.shape)

    assert float((ours == theirs).float().mean()) >= 0.99


def test_crf_raises_dice_on_noisy_prediction():
    labels, image, probabilities = crf_case()
    refined = dense_crf(probabilities, image, SPACING, CRFParameters())
    for organ in (1, 2):
        before = dice(probabilities.argmax(0).numpy(), labels.numpy(), organ, empty=0.0)
        after = dice(refined.argmax(0).numpy(), labels.numpy(), organ, empty=0.0)
        assert after > before + 0.1, (organ, before, after)
        assert after > 0.9


def test_output_is_a_probability_map_on_the_input_grid():
    labels, image, probabilities = crf_case(shape=(8, 12, 10))
    refined = dense_crf(probabilities.double(), image, SPACING, CRFParameters())
    assert refined.shape == probabilities.shape and refined.dtype == torch.float32
    torch.testing.assert_close(refined.sum(0), torch.ones(labels.shape))


def test_clamped_voxels_keep_their_label():
    labels, image, probabilities = crf_case(shape=(16, 24, 24))
    clamp = torch.full(labels.shape, -1)
    clamp[8, 4:20, 4:20] = 2  # a scribble of label 2 across organ 1, organ 2 and background
    refined = dense_crf(probabilities, image, SPACING, CRFParameters(), clamp=clamp)
    scribble = refined[:, 8, 4:20, 4:20]
    assert torch.equal(scribble, torch.nn.functional.one_hot(torch.full((16, 16), 2), 3).permute(2, 0, 1).float())


def test_clamped_label_spreads_to_similar_free_neighbours():
    shape = (5, 5, 5)
    probabilities = torch.full((2, *shape), 0.5)
    clamp = torch.full(shape, -1)
    clamp[2, 2, 2] = 1
    refined = dense_crf(probabilities, torch.zeros(shape), (1.0, 1.0, 1.0), CRFParameters(), clamp=clamp)
    assert float(refined[1, 2, 2, 3]) > float(refined[1, 0, 0, 0]) > 0.5


@pytest.mark.parametrize("kernel", ["smoothness", "appearance"])
def test_anisotropic_spacing_is_respected(kernel):
    """A clamped voxel pulls its neighbours towards its label; one voxel away along X (1 mm)
    the pull is stronger than one voxel away along Z (4 mm), and equal along Y when Y is also
    1 mm."""
    shape = (9, 9, 9)
    other = {"smoothness": "appearance", "appearance": "smoothness"}[kernel]
    params = CRFParameters(**{f"{kernel}_weight": 3.0, f"{other}_weight": 0.0},
                           smoothness_spatial_mm=2.0, appearance_spatial_mm=2.0)
    probabilities = torch.full((2, *shape), 0.5)
    clamp = torch.full(shape, -1)
    clamp[4, 4, 4] = 1
    refined = dense_crf(probabilities, torch.zeros(shape), (4.0, 1.0, 1.0), params, clamp=clamp)[1]
    along_z, along_y, along_x = float(refined[5, 4, 4]), float(refined[4, 5, 4]), float(refined[4, 4, 5])
    assert along_x > along_z + 0.02
    assert along_y == pytest.approx(along_x, abs=0.02 if kernel == "appearance" else 1e-5)


def test_potts_default_equals_the_potts_compatibility_matrix():
    _, image, probabilities = crf_case(shape=(8, 12, 10))
    potts = 1.0 - torch.eye(3)
    default = dense_crf(probabilities, image, SPACING, CRFParameters())
    explicit = dense_crf(probabilities, image, SPACING, CRFParameters(), compatibility=potts)
    torch.testing.assert_close(default, explicit, rtol=1e-4, atol=1e-5)


def test_multichannel_image_is_accepted():
    _, image, probabilities = crf_case(shape=(12, 16, 16))
    two_channels = torch.stack([image, 1.0 - image])
    refined = dense_crf(probabilities, two_channels, SPACING, CRFParameters())
    assert refined.shape == probabilities.shape


def test_mismatched_inputs_are_refused():
    _, image, probabilities = crf_case(shape=(8, 12, 10))
    with pytest.raises(ValueError, match="does not match"):
        dense_crf(probabilities, image[:, :-1], SPACING, CRFParameters())
    with pytest.raises(ValueError, match="compatibility"):
        dense_crf(probabilities, image, SPACING, CRFParameters(), compatibility=torch.eye(2))
    with pytest.raises(ValueError, match="labels"):
        dense_crf(probabilities, image, SPACING, CRFParameters(), clamp=torch.full(image.shape, 3))


def test_progress_is_reported_and_cancel_stops_between_iterations():
    _, image, probabilities = crf_case(shape=(8, 12, 10))
    token = CancelToken()
    reports = []

    def progress(stage, fraction, message=""):
        reports.append(fraction)
        if fraction >= 0.4:
            token.cancel()

    with pytest.raises(Cancelled):
        dense_crf(probabilities, image, SPACING, CRFParameters(iterations=5), progress=progress,
                  cancel=token)
    assert reports == [0.0, 0.2, 0.4]


# ---------------------------------------------------------------------------------- ROI mode

def test_roi_mode_refines_the_foreground_box_and_keeps_the_rest():
    _, image, probabilities = crf_case(shape=(24, 40, 40))
    padded = torch.zeros(3, 40, 60, 60)
    padded[0] = 1.0
    padded[:, 8:32, 10:50, 10:50] = probabilities
    padded_image = torch.zeros(40, 60, 60)
    padded_image[8:32, 10:50, 10:50] = image
    params = CRFParameters()
    refined = dense_crf_roi(padded, padded_image, SPACING, params, margin_mm=4.0)

    foreground = (probabilities.argmax(0) > 0).nonzero()
    low = foreground.min(0).values + torch.tensor([8, 10, 10])
    high = foreground.max(0).values + torch.tensor([8, 10, 10]) + 1
    margin = [math.ceil(4.0 / s) for s in SPACING]
    box = tuple(slice(int(lo) - m, int(hi) + m) for lo, hi, m in zip(low, high, margin))
    expected = dense_crf(padded[(slice(None), *box)], padded_image[box], SPACING, params)
    torch.testing.assert_close(refined[(slice(None), *box)], expected)
    outside = torch.ones(padded.shape[1:], dtype=torch.bool)
    outside[box] = False
    assert torch.equal(refined[:, outside], padded[:, outside])


def test_roi_mode_without_foreground_returns_the_input():
    probabilities = torch.zeros(3, 6, 6, 6)
    probabilities[0] = 1.0
    refined = dense_crf_roi(probabilities, torch.zeros(6, 6, 6), SPACING, CRFParameters())
    assert torch.equal(refined, probabilities)


# ---------------------------------------------------------------- parameters and fusion

def test_parameters_round_trip_through_a_dictionary():
    params = CRFParameters(iterations=3, appearance_weight=4.0, side_output_weights=(0.2, 0.1))
    data = params.to_dict()
    assert data["side_output_weights"] == [0.2, 0.1]
    assert CRFParameters.from_dict(data) == params
    assert CRFParameters.from_dict({}) == CRFParameters()
    assert CRFParameters.from_dict({"iterations": 7.0, "smoothness_weight": 2}).iterations == 7


@pytest.mark.parametrize("bad, message", [
    ({"iterations": 0}, "iterations"),
    ({"iterations": 2.5}, "iterations"),
    ({"iterations": float("inf")}, "iterations"),
    ({"appearance_spatial_mm": 0}, "appearance_spatial_mm"),
    ({"smoothness_weight": -1}, "smoothness_weight"),
    ({"appearance_intensity": "wide"}, "appearance_intensity"),
    ({"side_output_weights": [0.7, 0.6]}, "sum to at most 1"),
    ({"theta": 3}, "unknown CRF parameter"),
    ({"min_organ_share": 1.5}, "min_organ_share"),
    ({"min_organ_share": -0.1}, "min_organ_share"),
])
def test_invalid_parameters_are_refused_with_a_one_line_message(bad, message):
    with pytest.raises(InputError, match=message) as error:
        CRFParameters.from_dict(bad)
    assert isinstance(error.value, ValueError)
    assert "\n" not in str(error.value)


def test_side_outputs_are_fused_with_their_weights():
    main, side1, side2 = torch.full((2, 3), 0.2), torch.full((2, 3), 0.6), torch.full((2, 3), 1.0)
    fused = fuse_side_outputs(main, [side1, side2], [0.25, 0.25])
    torch.testing.assert_close(fused, torch.full((2, 3), 0.5 * 0.2 + 0.25 * 0.6 + 0.25 * 1.0))
    with pytest.raises(ValueError, match="side-output weights"):
        fuse_side_outputs(main, [side1], [0.5, 0.5])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_labels():
    _, image, probabilities = crf_case()
    cpu = dense_crf(probabilities, image, SPACING, CRFParameters()).argmax(0)
    gpu = dense_crf(probabilities.cuda(), image.cuda(), SPACING, CRFParameters()).argmax(0).cpu()
    assert float((cpu == gpu).float().mean()) > 0.999


def _found_and_refined() -> tuple[torch.Tensor, torch.Tensor]:
    """Network probabilities with a large organ 1 and a thin organ 2, and a CRF result that
    kept organ 1 and pulled three quarters of organ 2 into the background."""
    network = torch.zeros(3, 8, 8, 8)
    network[0] = 0.9
    network[1, :4] = 0.9
    network[0, :4] = 0.1
    network[2, 6, 2, :] = 0.8
    network[0, 6, 2, :] = 0.2
    refined = network.clone()
    refined[2, 6, 2, 2:] = 0.1
    refined[0, 6, 2, 2:] = 0.9
    return network, refined


def test_an_organ_the_crf_shrinks_below_the_share_keeps_the_networks_voxels():
    network, refined = _found_and_refined()
    kept = keep_found_organs(network, refined.clone(), min_share=0.5).argmax(0)
    assert torch.equal(kept == 2, network.argmax(0) == 2)
    assert torch.equal(kept == 1, refined.argmax(0) == 1)  # the organ that held is the CRF's


def test_without_a_share_the_crf_result_stands():
    network, refined = _found_and_refined()
    assert torch.equal(keep_found_organs(network, refined.clone(), 0.0), refined)
    assert torch.equal(keep_found_organs(network, refined.clone(), 0.2).argmax(0),
                       refined.argmax(0))  # organ 2 kept a quarter: above a fifth


def test_the_model_the_task_and_the_user_meet_in_one_crf():
    from helpers import tiny_metadata

    metadata = tiny_metadata({"appearance_weight": 4.0, "iterations": 3})
    crf = metadata.crf_parameters("abdomen-ct", {"iterations": 7, "min_organ_share": 0.5})
    assert (crf.appearance_weight, crf.iterations, crf.min_organ_share) == (4.0, 7, 0.5)
    assert crf.smoothness_weight == CRFParameters().smoothness_weight  # the engine's default
    assert metadata.crf_parameters(None) == CRFParameters(appearance_weight=4.0, iterations=3)
    assert tiny_metadata({}).crf_parameters("abdomen-ct") is None  # a model without a CRF
    with pytest.raises(InputError, match="unknown CRF parameter"):
        metadata.crf_parameters("abdomen-ct", {"theta": 1})
    assert not CRFParameters(appearance_weight=0.0, smoothness_weight=0.0).has_weight


def test_the_network_outputs_are_released_before_the_crf_builds_its_lattice(tiny_model_path,
                                                                            monkeypatch):
    """The CRF's lattice is the largest thing a segmentation holds; beside it, the network's
    main and side outputs (each C channels of the working grid) would only add to the peak
    once the CRF's unary has been fused from them."""
    import dataclasses
    import gc
    import weakref

    from helpers import ellipsoid_scene

    import DeepOrganSegLib.cascade as cascade
    import DeepOrganSegLib.crf.meanfield as meanfield
    from DeepOrganSegLib.model import load_model
    from DeepOrganSegLib.segment import segment_volume

    model = load_model(tiny_model_path)
    model = dataclasses.replace(model, metadata=dataclasses.replace(
        model.metadata, crf={"iterations": 1, "side_output_weights": [0.3]}))
    outputs: list[weakref.ref] = []
    network_probabilities = cascade.network_probabilities

    def watched(*args, **kwargs):
        output = network_probabilities(*args, **kwargs)
        outputs.extend(weakref.ref(t) for t in [output.prediction.main, *output.prediction.sides])
        return output

    alive_at_crf: list[int] = []
    crf_roi = meanfield.dense_crf_roi

    def crf_watching(*args, **kwargs):
        gc.collect()
        alive_at_crf.append(sum(ref() is not None for ref in outputs))
        return crf_roi(*args, **kwargs)

    monkeypatch.setattr("DeepOrganSegLib.segment.network_probabilities", watched)
    monkeypatch.setattr(meanfield, "dense_crf_roi", crf_watching)
    image, _ = ellipsoid_scene(1)
    result = segment_volume(image, model)
    assert result.crf_applied and len(outputs) == 2  # the main output and one side output
    assert alive_at_crf == [0]
