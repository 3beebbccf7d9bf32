"""Body-part recognition on axial slices: which body regions a volume shows, and in which modality.

After Roth et al. 2015 (arXiv 1504.04003): a small 2D ConvNet classifies every axial slice into
one of :data:`REGIONS` (head, neck, chest, abdomen, pelvis, legs); a second, tiny head tells CT
from MR from the volume's intensity statistics (:func:`intensity_features`). The per-slice
probabilities become a *region profile* along the patient's superior-inferior axis: the
labelling that is contiguous and ordered (head above neck above chest ...), found exactly by
dynamic programming (Viterbi). Task **Auto** uses the profile to pick the task
(:func:`choose_auto_task`) and, for abdominal CT, the slab of input slices worth segmenting
(:func:`abdomen_slab`).

Input of the network, whatever the input's direction matrix: the volume resampled onto the
canonical axis-aligned LPS grid (:func:`DeepOrganSegLib.preprocess.working_grid`) at
:attr:`SliceGeometry.pixel_mm` in-plane and :attr:`SliceGeometry.slice_mm` between slices,
centred on the body, padded/cropped to ``size`` x ``size`` pixels, 2.5D (each slice with its
neighbours as channels). Intensities are normalised the same way for CT and MR: the
``percentiles`` of the voxels above the image minimum (padding, MR background) map to [0, 1].
This keeps one network for both modalities. The modality head, by contrast, sees the absolute
intensities: CT is calibrated (air at -1000 HU) and MR is not, which transfers to real scans,
whereas an appearance-based modality head trained on phantoms took the real head CT of
``invesalius-examples`` for MR (p = 0.975).

The classifier lives in its own small model file beside the segmentation model
(:data:`CLASSIFIER_FILE`, safetensors + JSON metadata, format ``deeporganseg-bodypart``). Its
suffix is not ``.safetensors`` on purpose: model lists glob ``*.safetensors`` for segmentation
models.
"""

from __future__ import annotations

import argparse
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

from .bundle import _get, _numbers, _read_header, _require, check_format
from .errors import InputError, ModelFileError
from .phantoms import REGIONS
from .preprocess import WorkingGrid, resample_to_grid, working_grid
from .resources import bundled_file
from .volume import Volume, write_atomically

__all__ = [
    "REGIONS", "MODALITIES", "CLASSIFIER_FILE", "FORMAT", "SliceGeometry", "SliceStack",
    "BodyPartNet", "ClassifierMetadata", "BodyPartClassifier", "RegionRange", "RegionProfile",
    "AutoChoice", "slice_stack", "viterbi_profile", "region_profile", "choose_auto_task",
    "abdomen_slab", "auto_choice", "load_classifier", "save_classifier",
    "default_classifier_path", "add_regions_command",
]

MODALITIES = ("CT", "MR")
FORMAT = "deeporganseg-bodypart"
FORMAT_VERSION = 1
CLASSIFIER_FILE = "DeepOrganSeg-bodypart-v1.bodypart"
_METADATA_KEY = "deeporganseg"

#: Slab margins for the abdominal task (mm). Above the lung bases (the chest/abdomen boundary
#: is the right diaphragm dome): abdominal CTs, and the phantoms the abdominal task is trained
#: on, start up to 60 mm above the dome (liver dome, lower mediastinum, aorta), plus one
#: classifier slice of uncertainty. Below the pelvis boundary: one classifier slice and more.
SLAB_MARGIN_ABOVE_MM = 80.0
SLAB_MARGIN_BELOW_MM = 20.0
#: Regions shown over less than this (mm; e.g. one edge slice) do not count for the task choice.
MIN_REGION_MM = 20.0


# ============================================================================ slices


@dataclass(frozen=True)
class SliceGeometry:
    """How slices are sampled: ``size`` x ``size`` pixels of ``pixel_mm`` mm, ``slice_mm`` mm
    apart, each with ``context`` neighbours on either side as extra channels."""

    size: int = 64
    pixel_mm: float = 6.0
    slice_mm: float = 8.0
    context: int = 1
    percentiles: tuple[float, float] = (0.5, 99.5)

    @property
    def channels(self) -> int:
        return 2 * self.context + 1

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "pixel_mm": self.pixel_mm, "slice_mm": self.slice_mm,
                "context": self.context, "percentiles": list(self.percentiles)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "slices") -> "SliceGeometry":
        size = _get(data, "size", int, where)
        context = _get(data, "context", int, where)
        _require(8 <= size <= 512, f"{where}.size", "must be in 8..512")
        _require(0 <= context <= 4, f"{where}.context", "must be in 0..4")
        pixel, slice_mm = _numbers([data.get("pixel_mm"), data.get("slice_mm")], 2,
                                   f"{where}.pixel_mm/slice_mm", positive=True)
        low, high = _numbers(data.get("percentiles"), 2, f"{where}.percentiles")
        _require(0 <= low < high <= 100, f"{where}.percentiles", "must be 0 <= low < high <= 100")
        return cls(size, pixel, slice_mm, context, (low, high))


@dataclass
class SliceStack:
    """The network input for one volume: ``images`` [n, channels, size, size] float32, slice
    ``n`` at patient height ``z_mm[n]`` (LPS z, superior positive; increasing with n), the
    volume's :func:`intensity_features` and each slice's field-of-view coverage."""

    images: np.ndarray
    z_mm: np.ndarray
    grid: WorkingGrid
    features: np.ndarray
    coverage: np.ndarray  # [n]: share of each slice's window inside the input's field of view


#: Names of :func:`intensity_features`, in order.
INTENSITY_FEATURES = ("share_below_-500", "share_-1100_to_-900", "p1_per_1000", "p50_per_1000")


def intensity_features(array: np.ndarray) -> np.ndarray:
    """Modality evidence from raw intensities (float32 [4]): the shares of voxels below -500
    and within -1100..-900 (air in HU), and the 1st and 50th percentiles / 1000 (clipped to
    +-3)."""
    low, median = np.percentile(array, (1, 50))
    return np.array([(array < -500).mean(), ((array > -1100) & (array < -900)).mean(),
                     np.clip(low / 1000, -3, 3), np.clip(median / 1000, -3, 3)], np.float32)


def _decimated(volume: Volume, finest_mm: float) -> Volume:
    """A strided view of ``volume`` with voxels at most ``finest_mm`` / 2 apart (no copy of the
    full array), so that resampling a 512^3 CT to the coarse slice grid stays cheap."""
    strides = [max(1, int(finest_mm / (2 * s))) for s in volume.spacing]  # (i, j, k)
    if strides == [1, 1, 1]:
        return volume
    array = volume.array[::strides[2], ::strides[1], ::strides[0]]
    origin = volume.index_to_physical(np.zeros(3))
    spacing = tuple(s * n for s, n in zip(volume.spacing, strides))
    return Volume(np.ascontiguousarray(array), spacing, tuple(origin), volume.direction)


def _normalised(array: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Map the ``percentiles`` of the voxels above the minimum to [0, 1] (clipped)."""
    floor = float(array.min())
    foreground = array[array > floor]
    if foreground.size == 0:
        raise InputError("the image is constant; cannot tell which body part it shows")
    low, high = np.percentile(foreground, percentiles)
    out = (array - low) / max(float(high - low), 1e-6)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32)


def _body_centre(array: np.ndarray) -> tuple[int, int]:
    """In-plane (j, i) centre of the body (normalised voxels above 0.1) over all slices."""
    body = array > 0.1
    _, rows, columns = array.shape
    if not body.any():
        return rows // 2, columns // 2
    return (int(round(np.nonzero(body.any(axis=(0, 2)))[0].mean())),
            int(round(np.nonzero(body.any(axis=(0, 1)))[0].mean())))


def _window(array: np.ndarray, centre: tuple[int, int], size: int) -> np.ndarray:
    """[k, j, i] -> [k, size, size] around ``centre`` (j, i), padded with 0."""
    _, rows, columns = array.shape
    out = np.zeros((array.shape[0], size, size), np.float32)
    j0, i0 = centre[0] - size // 2, centre[1] - size // 2
    src_j = slice(max(j0, 0), min(j0 + size, rows))
    src_i = slice(max(i0, 0), min(i0 + size, columns))
    out[:, src_j.start - j0:src_j.stop - j0, src_i.start - i0:src_i.stop - i0] = \
        array[:, src_j, src_i]
    return out


def _with_neighbours(array: np.ndarray, context: int) -> np.ndarray:
    """[n, h, w] -> [n, 2 * context + 1, h, w]: each slice with its neighbours (edges repeated)."""
    n = array.shape[0]
    index = np.clip(np.arange(n)[:, None] + np.arange(-context, context + 1)[None], 0, n - 1)
    return array[index]


def _inside_input(volume: Volume, grid: WorkingGrid) -> np.ndarray:
    """[k, j, i] float32 mask of the ``grid`` voxel centres that lie within ``volume``'s field
    of view (oblique inputs leave wedges of the axis-aligned grid empty)."""
    k, j, i = (np.arange(n, dtype=np.float64) for n in grid.shape)
    points = np.stack(np.meshgrid(i, j, k, indexing="ij"), -1) * grid.spacing + grid.origin
    to_index = np.linalg.inv(volume.direction * np.asarray(volume.spacing)[None, :])
    index = (points - np.asarray(volume.origin)) @ to_index.T
    upper = np.asarray(volume.size, dtype=np.float64) - 0.5
    inside = np.all((index >= -0.5) & (index <= upper), axis=-1)
    return inside.transpose(2, 1, 0).astype(np.float32)


def slice_stack(volume: Volume, geometry: SliceGeometry = SliceGeometry()) -> SliceStack:
    """Resample ``volume`` (any orientation) to the classifier's canonical axial slices."""
    spacing = (geometry.pixel_mm, geometry.pixel_mm, geometry.slice_mm)
    coarse = _decimated(volume, min(spacing))
    grid = working_grid(coarse, spacing)
    array = resample_to_grid(coarse, grid, default_value=float(coarse.array.min()))
    if not np.isfinite(array).all():
        raise InputError("the image holds NaN or Inf voxels; fix or mask them first")
    features = intensity_features(array)
    normalised = _normalised(array, geometry.percentiles)
    centre = _body_centre(normalised)
    images = _window(normalised, centre, geometry.size)
    coverage = _window(_inside_input(coarse, grid), centre, geometry.size).mean(axis=(1, 2))
    z = grid.origin[2] + np.arange(grid.size[2]) * grid.spacing[2]
    return SliceStack(_with_neighbours(images, geometry.context), z, grid, features, coverage)


# ============================================================================ network


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


# ============================================================================ model file


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
        architecture = _get(data, "architecture", dict, "")
        _require(architecture.get("name") == "BodyPartNet", "architecture.name",
                 "must be 'BodyPartNet'")
        widths = _get(architecture, "widths", list, "architecture")
        _require(0 < len(widths) <= 6 and all(isinstance(w, int) and 0 < w <= 512 for w in widths),
                 "architecture.widths", "must be 1..6 integers in 1..512")
        regions = _get(data, "regions", list, "")
        _require(tuple(regions) == REGIONS, "regions", f"must be {list(REGIONS)}")
        _require(data.get("modalities") == list(MODALITIES), "modalities",
                 f"must be {list(MODALITIES)}")
        _require(data.get("modality_features") == list(INTENSITY_FEATURES), "modality_features",
                 f"must be {list(INTENSITY_FEATURES)}")
        return cls(tuple(widths), tuple(regions),
                   SliceGeometry.from_dict(_get(data, "slices", dict, ""), "slices"),
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
    header, _ = _read_header(path)
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


# ============================================================================ region profile


def viterbi_profile(log_probabilities: np.ndarray) -> np.ndarray:
    """The most likely ordered, contiguous labelling of slices given top (superior) first.

    ``log_probabilities`` [n, R]: per-slice log-probabilities of regions in anatomical order.
    Along the slices the region index may only stay or step to the next one (no skipping: the
    body is contiguous); the first and last regions are free. Returns [n] region indices.
    """
    n, regions = log_probabilities.shape
    score = log_probabilities[0].astype(np.float64).copy()
    came_from_previous = np.zeros((n, regions), dtype=bool)
    for t in range(1, n):
        step = np.concatenate([[-np.inf], score[:-1]])
        came_from_previous[t] = step > score
        score = np.maximum(score, step) + log_probabilities[t]
    labels = np.empty(n, dtype=np.int64)
    labels[-1] = int(np.argmax(score))
    for t in range(n - 1, 0, -1):
        labels[t - 1] = labels[t] - int(came_from_previous[t, labels[t]])
    return labels


@dataclass(frozen=True)
class RegionRange:
    """One region of a profile: patient heights (LPS z, mm; ``z_top_mm`` > ``z_bottom_mm``) of
    its outer slice edges and, when the input's k axis runs superior-inferior, the input slice
    indices it covers (inclusive)."""

    name: str
    z_top_mm: float
    z_bottom_mm: float
    first_slice: int | None
    last_slice: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.name, "z_top_mm": round(self.z_top_mm, 1),
                "z_bottom_mm": round(self.z_bottom_mm, 1), "first_slice": self.first_slice,
                "last_slice": self.last_slice}


@dataclass(frozen=True)
class RegionProfile:
    """What a volume shows: modality (with its probability) and the regions from top down."""

    modality: str
    modality_probability: float
    regions: tuple[RegionRange, ...]
    slice_regions: np.ndarray  # classifier slices, top (superior) first: REGIONS indices
    slice_z_mm: np.ndarray  # their heights, mm

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def get(self, name: str) -> RegionRange | None:
        return next((r for r in self.regions if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"modality": self.modality,
                "modality_probability": round(self.modality_probability, 4),
                "regions": [r.to_dict() for r in self.regions]}


def _input_slices_between(volume: Volume, z_low: float, z_high: float) -> slice | None:
    """Input k-slices whose voxel centres reach into [z_low, z_high] (LPS z, mm), or None when
    none does. Works for any direction matrix: a slice tilted against the S-I axis counts when any
    in-plane corner reaches the range."""
    ni, nj, nk = volume.size
    corners = np.array([[i, j] for i in (0, ni - 1) for j in (0, nj - 1)], dtype=np.float64)
    k = np.arange(nk, dtype=np.float64)
    points = np.concatenate([np.broadcast_to(corners, (nk, 4, 2)),
                             np.broadcast_to(k[:, None, None], (nk, 4, 1))], axis=2)
    z = volume.index_to_physical(points)[..., 2]
    inside = np.nonzero((z.max(axis=1) >= z_low) & (z.min(axis=1) <= z_high))[0]
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else None


def _k_runs_superior_inferior(volume: Volume) -> bool:
    """Whether the input's k axis is within about 25 degrees of the patient S-I axis."""
    return abs(float(volume.direction[2, 2])) > 0.9


def region_profile(volume: Volume, classifier: BodyPartClassifier) -> RegionProfile:
    """Classify every axial slice of ``volume`` and smooth the result into ordered regions."""
    stack, log_probabilities, modality = classifier.predict(volume)
    top_first = np.arange(len(stack.z_mm))[::-1]
    labels = viterbi_profile(log_probabilities[top_first])
    z = stack.z_mm[top_first]
    half = classifier.metadata.slices.slice_mm / 2
    axial = _k_runs_superior_inferior(volume)
    ranges = []
    for index in dict.fromkeys(labels.tolist()):
        heights = z[labels == index]
        top, bottom = float(heights.max() + half), float(heights.min() - half)
        covered = _slice_centres_between(volume, bottom, top) if axial else None
        ranges.append(RegionRange(REGIONS[index], top, bottom,
                                  None if covered is None else covered[0],
                                  None if covered is None else covered[1]))
    best = int(np.argmax(modality))
    return RegionProfile(MODALITIES[best], float(np.exp(modality[best])), tuple(ranges),
                         labels, z)


def _slice_centres_between(volume: Volume, z_low: float, z_high: float
                           ) -> tuple[int, int] | None:
    """(first, last) input k whose in-plane centre lies in [z_low, z_high), or None."""
    ni, nj, nk = volume.size
    centres = np.stack([np.full(nk, (ni - 1) / 2), np.full(nk, (nj - 1) / 2), np.arange(nk)], 1)
    z = volume.index_to_physical(centres)[:, 2]
    inside = np.nonzero((z >= z_low) & (z < z_high))[0]
    return (int(inside.min()), int(inside.max())) if inside.size else None


# ============================================================================ task choice


def choose_auto_task(profile: RegionProfile, available: Sequence[str]) -> str:
    """The task for a profile: MR head -> brain-mr, MR chest -> heart-mr, CT chest, abdomen or
    pelvis -> abdomen-ct; otherwise :class:`InputError` naming what was detected. Regions
    shown over less than :data:`MIN_REGION_MM` do not count."""
    names = {name for name in profile.names if _extent(profile, name) >= MIN_REGION_MM}
    if profile.modality == "MR":
        shown = [name for name in ("head", "chest") if name in names]
        wanted = ("brain-mr" if max(shown, key=lambda n: _extent(profile, n)) == "head"
                  else "heart-mr") if shown else None
    else:
        wanted = "abdomen-ct" if names & {"chest", "abdomen", "pelvis"} else None
    if wanted is not None and wanted in available:
        return wanted
    detected = f"{profile.modality} {'..'.join(profile.names)}"
    reason = (f"needs task {wanted}, which this model lacks" if wanted
              else "matches no task")
    raise InputError(f"task auto: the volume shows {detected}, which {reason}; "
                     f"give --task (one of: {', '.join(available)})")


def _extent(profile: RegionProfile, name: str) -> float:
    region = profile.get(name)
    return 0.0 if region is None else region.z_top_mm - region.z_bottom_mm


def abdomen_slab(profile: RegionProfile, volume: Volume,
                 above_mm: float = SLAB_MARGIN_ABOVE_MM,
                 below_mm: float = SLAB_MARGIN_BELOW_MM) -> slice | None:
    """Input k-slices from the lung bases (top of the abdomen, ``above_mm`` higher) to the
    bottom of the pelvis (``below_mm`` lower); None when the volume shows no abdomen or pelvis
    (then nothing is cropped)."""
    parts = [profile.get(name) for name in ("abdomen", "pelvis")]
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    top = max(p.z_top_mm for p in parts) + above_mm
    bottom = min(p.z_bottom_mm for p in parts) - below_mm
    return _input_slices_between(volume, bottom, top)


@dataclass(frozen=True)
class AutoChoice:
    """What task Auto found: the task, the profile behind it and the input slab to segment
    (None: the whole volume)."""

    task: str
    profile: RegionProfile
    slab: slice | None

    def summary(self) -> str:
        """One status line, e.g. ``auto: CT, regions chest..pelvis, task abdomen-ct, slab
        slices 40-310``."""
        text = (f"auto: {self.profile.modality}, regions {'..'.join(self.profile.names)}, "
                f"task {self.task}")
        if self.slab is not None:
            text += f", slab slices {self.slab.start}-{self.slab.stop - 1}"
        return text


def auto_choice(volume: Volume, available: Sequence[str],
                classifier: BodyPartClassifier | None = None) -> AutoChoice | None:
    """Task Auto with the body-part classifier (the bundled one by default); None when no
    classifier file is installed."""
    classifier = classifier or bundled_classifier()
    if classifier is None:
        return None
    profile = region_profile(volume, classifier)
    task = choose_auto_task(profile, available)
    slab = abdomen_slab(profile, volume) if task == "abdomen-ct" else None
    if slab is not None and slab.stop - slab.start == volume.array.shape[0]:
        slab = None
    return AutoChoice(task, profile, slab)


# ============================================================================ command line


def add_regions_command(subparsers) -> None:
    """Register ``deeporganseg regions INPUT [--json]``."""
    parser = subparsers.add_parser(
        "regions", help="show which body regions (and modality) a volume covers",
        description="Classify the axial slices of a volume into body regions with the bundled "
                    "body-part classifier; print the regions' slice and z ranges.")
    parser.add_argument("input", help="input volume file or DICOM series folder")
    parser.add_argument("--classifier", help=f"classifier file; default: the bundled "
                                             f"{CLASSIFIER_FILE}")
    parser.add_argument("--model", help="segmentation model whose tasks Auto chooses from; "
                                        "default: the bundled model (if any)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=_run_regions)


def _available_tasks(model: str | None) -> tuple[str, ...]:
    from .bundle import read_metadata
    from .resources import default_model_path

    try:
        path = Path(model) if model else default_model_path()
    except InputError:
        return ("abdomen-ct", "heart-mr", "brain-mr")
    return tuple(task.name for task in read_metadata(path).tasks)


def _run_regions(args: argparse.Namespace, progress, cancel) -> int:
    from .volume import read_volume

    classifier = (load_classifier(args.classifier) if args.classifier else bundled_classifier())
    if classifier is None:
        raise InputError(f"no body-part classifier {CLASSIFIER_FILE} found; give --classifier")
    volume = read_volume(args.input)
    profile = region_profile(volume, classifier)
    available = _available_tasks(args.model)
    slab = None
    try:
        task = choose_auto_task(profile, available)
        slab = abdomen_slab(profile, volume) if task == "abdomen-ct" else None
    except InputError as error:
        task = f"none ({error})"
    document = {**profile.to_dict(), "auto_task": task,
                "slab_slices": None if slab is None else [slab.start, slab.stop - 1]}
    print(json.dumps(document, indent=2) if args.json else _table(document))
    return 0


def _table(document: dict[str, Any]) -> str:
    """The regions document as a fixed-width text table."""
    def indices(r: dict[str, Any]) -> str:
        return "-" if r["first_slice"] is None else f"{r['first_slice']}-{r['last_slice']}"

    lines = [f"modality: {document['modality']} (p = {document['modality_probability']:.3f})",
             f"{'region':<10}{'slices':>12}{'z top (mm)':>14}{'z bottom (mm)':>16}"]
    lines += [f"{r['region']:<10}{indices(r):>12}{r['z_top_mm']:>14.1f}{r['z_bottom_mm']:>16.1f}"
              for r in document["regions"]]
    lines.append(f"auto task: {document['auto_task']}")
    if document["slab_slices"]:
        lines.append(f"slab: slices {document['slab_slices'][0]}-{document['slab_slices'][1]}")
    return "\n".join(lines)
