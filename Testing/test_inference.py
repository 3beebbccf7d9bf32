"""Inference: tiles agree with one pass, task restriction, device choice, cancel, progress."""

import numpy as np
import pytest
import torch

from DeepOrganSegLib.errors import Cancelled, InputError
from DeepOrganSegLib.inference import activation_bytes, predict, resolve_device
from DeepOrganSegLib.options import InferenceSettings
from DeepOrganSegLib.model.network import DSN3D, DSNConfig
from DeepOrganSegLib.progress import CancelToken

CONFIG = DSNConfig(num_classes=4, widths=(4, 8, 16), convs_per_level=(1, 1, 1),
                   side_output_levels=(1,))


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    model = DSN3D(CONFIG).train()
    with torch.no_grad():
        model(torch.randn(2, 1, 32, 32, 32) * 2)  # non-trivial BatchNorm statistics
    return model.eval()


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    smooth = torch.nn.functional.avg_pool3d(torch.randn(1, 1, 40, 52, 60), 5, 1, 2)[0, 0]
    return smooth * 4


def test_tiled_probabilities_match_one_pass(network, image):
    whole = predict(network, image, [0, 1, 2, 3], (16, 16, 16), InferenceSettings(device="cpu"))
    budget = activation_bytes(network, 24 * 24 * 24, side_outputs=False)
    tiled = predict(network, image, [0, 1, 2, 3], (16, 16, 16),
                    InferenceSettings(device="cpu", memory_budget_bytes=budget, overlap=0.5))
    assert whole.main.shape == tiled.main.shape == (4, 40, 52, 60)
    agreement = (whole.main.argmax(0) == tiled.main.argmax(0)).float().mean()
    assert agreement >= 0.99
    torch.testing.assert_close(tiled.main.sum(0), torch.ones(40, 52, 60), atol=1e-4, rtol=0)


def test_task_channels_restrict_the_softmax(network, image):
    prediction = predict(network, image, [0, 2], (16, 16, 16), InferenceSettings(device="cpu"))
    assert prediction.main.shape[0] == 2 and prediction.channels == [0, 2]
    torch.testing.assert_close(prediction.main.sum(0), torch.ones(image.shape), atol=1e-5, rtol=0)


def test_side_outputs_are_returned_on_request(network, image):
    prediction = predict(network, image, [0, 1, 2, 3], (16, 16, 16),
                         InferenceSettings(device="cpu", side_outputs=True))
    assert len(prediction.sides) == 1 and prediction.sides[0].shape == prediction.main.shape


def test_progress_reaches_one_and_cancel_stops_between_tiles(network, image):
    seen = []
    budget = activation_bytes(network, 16 ** 3, side_outputs=False)
    settings = InferenceSettings(device="cpu", memory_budget_bytes=budget)
    predict(network, image, [0, 1], (16, 16, 16), settings,
            progress=lambda stage, fraction, message="": seen.append(fraction))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) > 3
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        predict(network, image, [0, 1], (16, 16, 16), settings, cancel=token)


def test_absent_gpu_requested_explicitly_is_an_input_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


def test_memory_estimate_grows_with_voxels(network):
    small = activation_bytes(network, 32 ** 3, side_outputs=False)
    assert activation_bytes(network, 64 ** 3, side_outputs=False) == pytest.approx(8 * small, rel=0.01)
    assert activation_bytes(network, 32 ** 3, side_outputs=True) > small
    assert np.isfinite(small)
