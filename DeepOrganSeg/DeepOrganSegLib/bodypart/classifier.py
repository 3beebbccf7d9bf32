"""The body-part classifier: its 2D ConvNet (slice regions + modality head) and its model file
(safetensors + JSON metadata, format ``deeporganseg-bodypart``)."""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..container import read_header
from ..schema import check_format, get_field, require
from ..errors import ModelFileError
from ..resources import bundled_file
from ..volume import Volume
from ..volume_io import write_atomically
from . import MODALITIES, REGIONS
from .slices import INTENSITY_FEATURES, SliceGeometry, SliceStack, slice_stack


__all__ = ["FORMAT", "FORMAT_VERSION", "CLASSIFIER_FILE", "BodyPartNet", "ClassifierMetadata",
           "BodyPartClassifier", "save_classifier", "load_classifier", "default_classifier_path",
           "bundled_classifier"]

FORMAT = "deeporganseg-bodypart"
FORMAT_VERSION = 1
CLASSIFIER_FILE = "DeepOrganSeg-bodypart-v1.bodypart"
_METADATA_KEY = "deeporganseg"


def _conv(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class BodyPartNet(nn.Module):
    """One stride-2 conv block per width (a strided 3x3 conv, then a second 3x3 conv except in
    the first, full-resolution block: that is where the cost is), global average pooling and a
    linear head: body region logits per slice. The modality head is a logistic regression on
    the volume's :func:`intensity_features`."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64, 96),
                 regions: int = len(REGIONS)):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(widths):
            layers += _conv(previous, width, stride=2)
            if index > 0:
                layers += _conv(width, width, stride=1)
            previous = width
        self.features = nn.Sequential(*layers)
        self.region = nn.Linear(previous, regions)
        self.modality = nn.Linear(len(INTENSITY_FEATURES), len(MODALITIES))

    def forward(self, x: torch.Tensor, features: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Region logits [n, regions] of slices ``x`` [n, c, h, w]; modality logits [..., 2] of
        intensity ``features`` [..., 4]."""
        return self.region(self.features(x).mean(dim=(2, 3))), self.modality(features)


@dataclass(frozen=True)
class ClassifierMetadata:
    """What a body-part classifier file says about itself, validated."""

    widths: tuple[int, ...]
    regions: tuple[str, ...]
    slices: SliceGeometry
    provenance: dict[str, Any]
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": self.format_version,
                "architecture": {"name": "BodyPartNet", "widths": list(self.widths)},
                "regions": list(self.regions), "modalities": list(MODALITIES),
                "modality_features": list(INTENSITY_FEATURES),
                "slices": self.slices.to_dict(),
                "normalization": {"kind": "percentile", "percentiles":
                                  list(self.slices.percentiles)},
                "provenance": self.provenance}

    @classmethod
    def from_dict(cls, data: Any) -> "ClassifierMetadata":
        version = check_format(data, FORMAT, FORMAT_VERSION, "body-part classifier")
        architecture = get_field(data, "architecture", dict, "")
        require(architecture.get("name") == "BodyPartNet", "architecture.name",
                 "must be 'BodyPartNet'")
        widths = get_field(architecture, "widths", list, "architecture")
        require(0 < len(widths) <= 6 and all(isinstance(w, int) and 0 < w <= 512 for w in widths),
                 "architecture.widths", "must be 1..6 integers in 1..512")
        regions = get_field(data, "regions", list, "")
        require(tuple(regions) == REGIONS, "regions", f"must be {list(REGIONS)}")
        require(data.get("modalities") == list(MODALITIES), "modalities",
                 f"must be {list(MODALITIES)}")
        require(data.get("modality_features") == list(INTENSITY_FEATURES), "modality_features",
                 f"must be {list(INTENSITY_FEATURES)}")
        return cls(tuple(widths), tuple(regions),
                   SliceGeometry.from_dict(get_field(data, "slices", dict, ""), "slices"),
                   data.get("provenance") or {}, version)


@dataclass
class BodyPartClassifier:
    """A loaded classifier: network in eval mode plus its metadata."""

    network: BodyPartNet
    metadata: ClassifierMetadata
    path: Path | None = None

    @torch.no_grad()
    def predict(self, volume: Volume, batch: int = 256
                ) -> tuple[SliceStack, np.ndarray, np.ndarray]:
        """Per-slice region log-probabilities [n, regions] and the volume's modality
        log-probabilities [2], with the slices they came from. Slices cut by the field of view
        (wedges of an oblique input) carry no evidence: uniform probabilities."""
        stack = slice_stack(volume, self.metadata.slices)
        images = torch.from_numpy(stack.images).contiguous(memory_format=torch.channels_last)
        features = torch.from_numpy(stack.features)
        region_logits = [self.network(images[start:start + batch], features)[0]
                         for start in range(0, len(images), batch)]
        regions = torch.log_softmax(torch.cat(region_logits), dim=1).numpy()
        regions[_partial(stack.coverage)] = -math.log(regions.shape[1])
        modality = torch.log_softmax(self.network.modality(features), dim=0).numpy()
        return stack, regions, modality


def _partial(coverage: np.ndarray) -> np.ndarray:
    """Slices with less than half the field-of-view coverage of the typical (median) slice."""
    return coverage < 0.5 * float(np.median(coverage))


def save_classifier(path: str | os.PathLike, network: BodyPartNet,
                    metadata: ClassifierMetadata) -> Path:
    """Write weights (float32) and metadata as a safetensors file, atomically."""
    from safetensors.torch import save_file

    document = metadata.to_dict()
    ClassifierMetadata.from_dict(json.loads(json.dumps(document)))  # refuse to write a bad file
    tensors = {name: tensor.detach().cpu().contiguous()
               for name, tensor in network.state_dict().items()}
    return write_atomically(path, lambda tmp: save_file(
        tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(document)}))


def load_classifier(path: str | os.PathLike) -> BodyPartClassifier:
    """Load and validate a classifier file (never executes code: JSON header + raw tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_tensors

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such body-part classifier file")
    header, _ = read_header(path)
    raw = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    if not isinstance(raw, str):
        raise ModelFileError(f"{path}: safetensors file without DeepOrganSeg metadata")
    try:
        metadata = ClassifierMetadata.from_dict(json.loads(raw))
    except json.JSONDecodeError:
        raise ModelFileError(f"{path}: body-part metadata is not valid JSON") from None
    except ModelFileError as error:
        raise ModelFileError(f"{path}: {error}") from None
    network = BodyPartNet(metadata.slices.channels, metadata.widths)
    try:
        tensors = load_tensors(path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as error:
        first_line = str(error).splitlines()[0]
        raise ModelFileError(f"{path}: weights are corrupt ({first_line})") from None
    expected = network.state_dict()
    if set(tensors) != set(expected) or any(tensors[n].shape != expected[n].shape
                                            for n in expected):
        raise ModelFileError(f"{path}: weights do not match BodyPartNet{list(metadata.widths)}")
    if not all(torch.isfinite(t.float()).all() for t in tensors.values()):
        raise ModelFileError(f"{path}: weights hold NaN or Inf values")
    network.load_state_dict(tensors)
    return BodyPartClassifier(network.eval(), metadata, path)


def default_classifier_path() -> Path | None:
    """The bundled classifier beside the bundled segmentation model, or None."""
    return bundled_file(CLASSIFIER_FILE)


@functools.lru_cache(maxsize=2)
def _cached_classifier(path: Path, modified_ns: int) -> BodyPartClassifier:
    return load_classifier(path)


def bundled_classifier() -> BodyPartClassifier | None:
    """The bundled classifier (loaded once per file version), or None when it is absent."""
    path = default_classifier_path()
    return None if path is None else _cached_classifier(path, path.stat().st_mtime_ns)
