"""The 3D deeply supervised network (3D DSN) of Dou et al. (Med Image Anal 2017).

A volume-to-volume 3D FCN: an encoder of 3x3x3 convolutions (normalisation + ReLU) with 2x max
pooling between levels, a decoder of 4x4x4 stride-2 transposed convolutions back to full
resolution, a 1x1x1 classifier, and *side outputs*: auxiliary classifiers on hidden encoder
levels, each upsampled to full resolution by its own chain of transposed convolutions. The side
outputs are deeply supervised during training and fused into the CRF's unary at inference.

With the defaults (widths 32-64-128-256, convolutions 1-2-2-2, side outputs on levels 1 and 2)
this is the heart network of the authors' released code. One addition, on by default:
``skip="add"`` adds each encoder level's features to the decoder at the same resolution (a
U-Net-like shortcut that costs no extra channels); it sharpens boundaries on small training sets.
``skip="none"`` gives the paper's plain FCN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

__all__ = ["DSNConfig", "DSN3D", "count_parameters"]

Normalization = Literal["batch", "instance"]


@dataclass(frozen=True)
class DSNConfig:
    """Hyper-parameters of :class:`DSN3D`; stored verbatim in the model file."""

    in_channels: int = 1
    num_classes: int = 2
    widths: tuple[int, ...] = (32, 64, 128, 256)
    convs_per_level: tuple[int, ...] = (1, 2, 2, 2)
    side_output_levels: tuple[int, ...] = (1, 2)
    normalization: Normalization = "batch"
    skip: Literal["add", "none"] = "add"

    def __post_init__(self) -> None:
        levels = len(self.widths)
        if levels < 2 or len(self.convs_per_level) != levels:
            raise ValueError("widths and convs_per_level must have the same length (at least 2)")
        if any(not 0 < level < levels - 1 for level in self.side_output_levels):
            raise ValueError(f"side output levels must be hidden levels 1..{levels - 2}")
        if self.normalization not in ("batch", "instance"):
            raise ValueError(f"unknown normalization {self.normalization!r}")
        if self.skip not in ("add", "none"):
            raise ValueError(f"unknown skip mode {self.skip!r}")

    @property
    def size_divisor(self) -> int:
        """Input sizes must be multiples of this (one halving per pooling)."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DSNConfig":
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown DSN hyper-parameters {sorted(unknown)}")
        tuples = {k: tuple(v) for k, v in values.items() if isinstance(v, list)}
        return cls(**{**values, **tuples})


def _norm(kind: Normalization, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    return nn.InstanceNorm3d(channels, affine=True)


class ConvBlock(nn.Sequential):
    """``count`` x (3x3x3 convolution, normalisation, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, count: int, norm: Normalization):
        layers: list[nn.Module] = []
        for index in range(count):
            layers += [
                nn.Conv3d(in_channels if index == 0 else out_channels, out_channels, 3,
                          padding=1, bias=False),
                _norm(norm, out_channels),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class UpBlock(nn.Sequential):
    """4x4x4 stride-2 transposed convolution (doubles each spatial size), normalisation, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: Normalization):
        super().__init__(
            nn.ConvTranspose3d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class SideOutput(nn.Sequential):
    """Auxiliary classifier on a hidden level: ``level`` upsamplings, then a 1x1x1 classifier."""

    def __init__(self, widths: tuple[int, ...], level: int, num_classes: int,
                 norm: Normalization):
        layers: list[nn.Module] = [UpBlock(widths[d], widths[d - 1], norm)
                                   for d in range(level, 0, -1)]
        layers.append(nn.Conv3d(widths[0], num_classes, 1))
        super().__init__(*layers)


class DSN3D(nn.Module):
    """3D deeply supervised network.

    ``forward(x)`` takes ``[B, in_channels, D, H, W]`` with D, H, W multiples of
    ``config.size_divisor`` and returns logits ``[B, num_classes, D, H, W]``. In training mode,
    or when ``return_side_outputs=True``, it returns ``(main_logits, [side_logits, ...])``, side
    outputs ordered as ``config.side_output_levels``, each at full resolution.
    """

    def __init__(self, config: DSNConfig = DSNConfig()):
        super().__init__()
        self.config = config
        widths, norm = config.widths, config.normalization
        self.encoder = nn.ModuleList(
            ConvBlock(config.in_channels if level == 0 else widths[level - 1], widths[level],
                      config.convs_per_level[level], norm)
            for level in range(len(widths))
        )
        self.pool = nn.MaxPool3d(2)
        self.decoder = nn.ModuleList(
            UpBlock(widths[level], widths[level - 1], norm)
            for level in range(len(widths) - 1, 0, -1)
        )
        self.classifier = nn.Conv3d(widths[0], config.num_classes, 1)
        self.side_outputs = nn.ModuleList(
            SideOutput(widths, level, config.num_classes, norm)
            for level in config.side_output_levels
        )

    def forward(self, x: Tensor, return_side_outputs: bool | None = None,
                channels: Sequence[int] | None = None) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Logits of every class, or of ``channels`` only (the main output; inference of one
        task of a multi-task network), with the side outputs when asked."""
        if return_side_outputs is None:
            return_side_outputs = self.training
        divisor = self.config.size_divisor
        if any(size % divisor for size in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} is not a multiple of {divisor}")

        features: list[Tensor] = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            features.append(x)

        # without autograd the skip is added in place and each level's features are let go as
        # soon as the decoder has used them: a full-resolution tensor less at the peak
        inference = not torch.is_grad_enabled()
        kept = list(features) if return_side_outputs else features
        y = kept.pop()
        for up in self.decoder:
            y = up(y)
            if self.config.skip == "add":
                skip = kept.pop()
                y = y.add_(skip) if inference else y + skip
        if channels is None:
            main = self.classifier(y)
        else:  # the classifier's rows of those classes only
            rows = torch.as_tensor(list(channels), device=y.device)
            bias = self.classifier.bias
            main = nn.functional.conv3d(y, self.classifier.weight[rows],
                                        None if bias is None else bias[rows])
        if not return_side_outputs:
            return main
        sides = [head(features[level])
                 for head, level in zip(self.side_outputs, self.config.side_output_levels)]
        return main, sides

    def first_layer_weight(self) -> str:
        """The state-dict name of the first convolution's weight, the one tensor whose shape
        the input channels set ([out, in_channels, 3, 3, 3])."""
        return "encoder.0.0.weight"

    def class_layers(self) -> dict[str, nn.Conv3d]:
        """The 1x1x1 convolutions whose output channels are the classes (main classifier and
        each side output's), by module name: the layers a change of label set touches."""
        layers = {"classifier": self.classifier}
        for index, head in enumerate(self.side_outputs):
            head = cast(SideOutput, head)  # __init__ fills side_outputs with SideOutputs
            layers[f"side_outputs.{index}.{len(head) - 1}"] = cast(nn.Conv3d, head[-1])
        return layers


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

