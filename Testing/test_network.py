"""The 3D DSN: output shapes, side outputs, configuration checks."""

import pytest
import torch

from DeepOrganSegLib.model.network import DSN3D, DSNConfig, count_parameters

SMALL = DSNConfig(num_classes=4, widths=(4, 8, 16, 32), convs_per_level=(1, 2, 2, 2))


def test_training_mode_returns_main_and_two_full_resolution_side_outputs():
    network = DSN3D(SMALL).train()
    main, sides = network(torch.randn(2, 1, 16, 24, 32))
    assert main.shape == (2, 4, 16, 24, 32)
    assert len(sides) == 2
    assert all(side.shape == main.shape for side in sides)


def test_eval_mode_returns_main_only_unless_side_outputs_requested():
    network = DSN3D(SMALL).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        main = network(x)
        main_again, sides = network(x, return_side_outputs=True)
    assert isinstance(main, torch.Tensor)
    torch.testing.assert_close(main, main_again)
    assert len(sides) == 2


def test_default_configuration_is_the_papers_heart_network():
    config = DSNConfig()
    assert config.widths == (32, 64, 128, 256)
    assert config.convs_per_level == (1, 2, 2, 2)
    assert config.side_output_levels == (1, 2)
    network = DSN3D(config)
    deconvolutions = [m for m in network.decoder.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [d.kernel_size for d in deconvolutions] == [(4, 4, 4)] * 3
    assert [d.stride for d in deconvolutions] == [(2, 2, 2)] * 3


@pytest.mark.parametrize("normalization", ["batch", "instance"])
def test_normalization_is_selectable(normalization):
    network = DSN3D(DSNConfig(num_classes=2, widths=(4, 8, 16), convs_per_level=(1, 1, 1),
                              side_output_levels=(1,), normalization=normalization))
    kind = torch.nn.BatchNorm3d if normalization == "batch" else torch.nn.InstanceNorm3d
    assert any(isinstance(m, kind) for m in network.modules())


def test_plain_fcn_without_skips_has_the_same_parameter_count():
    with_skips = DSN3D(SMALL)
    without = DSN3D(DSNConfig(**{**SMALL.to_dict(), "skip": "none"}))
    assert count_parameters(with_skips) == count_parameters(without)


def test_input_size_not_multiple_of_divisor_is_refused():
    with pytest.raises(ValueError, match="multiple of 8"):
        DSN3D(SMALL).eval()(torch.randn(1, 1, 12, 16, 16))


@pytest.mark.parametrize("bad", [dict(widths=(8,), convs_per_level=(1,)),
                                 dict(side_output_levels=(0,)), dict(normalization="group")])
def test_invalid_configuration_is_refused(bad):
    with pytest.raises(ValueError):
        DSNConfig(**bad)


def test_config_round_trips_through_a_dict():
    assert DSNConfig.from_dict(SMALL.to_dict()) == SMALL


def test_inference_gives_the_training_paths_logits_and_only_the_channels_asked_for():
    """Without autograd the skips are added in place and the classifier computes only the
    task's rows: the same numbers as the training path's full logits, sliced."""
    torch.manual_seed(0)
    net = DSN3D(DSNConfig(in_channels=2, num_classes=5, widths=(4, 8, 16),
                          convs_per_level=(1, 1, 1), side_output_levels=(1,))).eval()
    x = torch.randn(1, 2, 8, 16, 8)
    with torch.enable_grad():
        full = net(x).detach()
    with torch.inference_mode():
        torch.testing.assert_close(net(x), full, rtol=0, atol=0)
        torch.testing.assert_close(net(x, channels=[0, 3, 4]), full[:, [0, 3, 4]],
                                   rtol=1e-6, atol=1e-6)
        main, sides = net(x, return_side_outputs=True, channels=[1, 2])
    torch.testing.assert_close(main, full[:, [1, 2]], rtol=1e-6, atol=1e-6)
    assert sides[0].shape == (1, 5, 8, 16, 8)  # side outputs keep every class
