"""Pre-processing: the network's input on the working grid (:mod:`.grid`), and its class
probabilities back onto the exact input grid, voxel for voxel (:func:`resample_probabilities_to`).
"""

from __future__ import annotations

from typing import cast

import numpy as np
from scipy import ndimage
import torch
import torch.nn.functional as F

from .model import Normalization, TaskSpec
from .errors import InputError
from .grid import WorkingGrid, resample_to_grid
from .volume import Volume

__all__ = ["normalize_intensities", "resample_probabilities_to", "probabilities_on_grid",
           "prepare_image", "position_channels", "blank_background", "CT_FILL_HU",
           "POSITION_SCALE_MM"]

#: What the working grid holds outside a CT's extent: air, in HU.
CT_FILL_HU = -1024.0
#: Position channels are offsets from the body's axial centre in units of this many mm.
POSITION_SCALE_MM = 100.0


def normalize_intensities(array: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Normalise a working-grid image as the model file says (float32 out, in place where
    possible). CT: clip in HU then centre/scale. MR: percentile clip then z-score over the
    non-zero voxels (the background of skull-stripped or masked MR stays at its clipped low)."""
    array = np.asarray(array, dtype=np.float32)
    if normalization.kind == "ct":
        low, high = normalization.clip_hu
        np.clip(array, low, high, out=array)
        array -= normalization.center_hu
        array /= normalization.scale_hu
        return array
    sample = array[:: max(1, array.shape[0] // 64)].ravel()
    foreground = sample[sample > sample.min()]
    if foreground.size == 0:
        raise InputError("the image is constant; nothing to segment")
    low, high = np.percentile(foreground, normalization.percentiles)
    np.clip(array, low, high, out=array)
    inside = foreground.clip(low, high)
    mean, std = float(inside.mean()), float(inside.std())
    array -= mean
    array /= max(std, 1e-6)
    return array


def _body_mask(raw: np.ndarray, modality: str) -> np.ndarray:
    """Voxels inside the patient (CT: above -500 HU; MR: above a tenth of the 99th percentile).
    The CT table and the arms count too: they do in every scan, phantoms included."""
    if modality == "CT":
        return raw > -500.0
    sample = raw[:: max(1, raw.shape[0] // 64)]
    return raw > 0.1 * float(np.percentile(sample, 99))


def position_channels(raw: np.ndarray, grid: WorkingGrid, modality: str) -> np.ndarray:
    """Where each voxel lies across the body: [2, k, j, i] float32, the left-right (x) and
    antero-posterior (y) offsets in LPS from the body's axial centre (the centroid of the body
    mask over the whole volume), in units of :data:`POSITION_SCALE_MM`.

    Why: in portal-venous CT the spleen and the liver share HU and texture; what tells them
    apart is which side of the body they lie on, which a 12 cm patch cannot see. The working
    grid is axis-aligned in LPS, so x and y are the patient's own axes whatever the input's
    orientation; offsets from the body (not from the scanner) do not move with the table."""
    body = _body_mask(raw, modality).any(axis=0)  # [j, i]: the body's axial footprint
    x = grid.origin[0] + np.arange(grid.size[0], dtype=np.float64) * grid.spacing[0]
    y = grid.origin[1] + np.arange(grid.size[1], dtype=np.float64) * grid.spacing[1]
    if body.any():
        weights = body.astype(np.float64)
        centre_x = float((weights.sum(axis=0) * x).sum() / weights.sum())
        centre_y = float((weights.sum(axis=1) * y).sum() / weights.sum())
    else:
        centre_x, centre_y = float(x.mean()), float(y.mean())
    k, j, i = grid.shape
    channels = np.empty((2, k, j, i), dtype=np.float32)
    channels[0] = ((x - centre_x) / POSITION_SCALE_MM).astype(np.float32)[None, None, :]
    channels[1] = ((y - centre_y) / POSITION_SCALE_MM).astype(np.float32)[None, :, None]
    return channels


def prepare_image(volume: Volume, task: TaskSpec, grid: WorkingGrid,
                  inputs: tuple[str, ...] = ("image",)) -> np.ndarray:
    """The network's input for ``volume`` on ``grid``: [C, k, j, i] float32, one channel per
    name in ``inputs`` (``image``: resampled and normalised for ``task``; ``position``: the two
    :func:`position_channels`). The one preprocessing path of inference, training and tuning."""
    default = CT_FILL_HU if task.modality == "CT" else None
    raw = resample_to_grid(volume, grid, default_value=default)
    if not np.isfinite(raw).all():
        raise InputError("the image holds NaN or Inf voxels; fix or mask them first")
    position = position_channels(raw, grid, task.modality) if "position" in inputs else None
    image = normalize_intensities(raw, task.normalization)
    if inputs == ("image",):
        return image[None]  # no copy of the whole working image
    channels = []
    for name in inputs:
        channels.extend([image] if name == "image" else list(cast(np.ndarray, position)))
    return np.stack(channels)


def blank_background(volume: Volume, grid: WorkingGrid) -> np.ndarray:
    """Working-grid voxels (bool [k, j, i]) that lie wholly in the input's *blank* background.

    Blank: input voxels at exactly the volume's minimum value that reach the edge of the grid
    through such voxels, and the working grid's margin beyond the input's extent. That is
    masked-out or zero-filled space: the outside of a skull-stripped or body-masked MR, the
    padding outside a CT's reconstruction circle. A scanner's own background has noise and is
    not blank; cavities at the minimum inside the body (gas, lungs) do not reach the edge.

    Why: no organ lies where the scan has no signal, but a network given a flat region can still
    predict one from its context (the bundled model called 0.57 L of the empty space around the
    skull-stripped ICBM152 T1 grey matter). Nearest-neighbour sampling would let an organ's edge
    voxel turn blank, so a working voxel counts only if its whole linear footprint is blank."""
    at_minimum = volume.with_array((volume.array == volume.array.min()).view(np.uint8))
    coverage = resample_to_grid(at_minimum, grid, default_value=1.0)
    candidates = coverage >= 1.0 - 1e-4
    if not candidates.any():
        return candidates
    components, _ = ndimage.label(candidates)
    edge = np.zeros(candidates.shape, dtype=bool)
    edge[[0, -1]] = edge[:, [0, -1]] = edge[:, :, [0, -1]] = True
    touching = np.unique(components[edge & candidates])
    return np.isin(components, touching[touching != 0])


def _physical_to_grid_normalized(points: torch.Tensor, grid: WorkingGrid) -> torch.Tensor:
    """LPS mm -> grid_sample coordinates (x=i, y=j, z=k in [-1, 1], align_corners=True)."""
    origin = torch.tensor(grid.origin, dtype=points.dtype, device=points.device)
    spacing = torch.tensor(grid.spacing, dtype=points.dtype, device=points.device)
    extent = torch.tensor([max(s - 1, 1) for s in grid.size], dtype=points.dtype,
                          device=points.device)
    return (points - origin) / spacing / extent * 2 - 1


def resample_probabilities_to(probabilities: torch.Tensor, grid: WorkingGrid, target: Volume,
                              k_slices: slice) -> torch.Tensor:
    """Trilinearly sample working-grid ``probabilities`` [C, k, j, i] at the voxel centres of
    ``target`` slices ``k_slices``: returns [C, slab_k, j, i] (float32). Points outside the
    working grid take the nearest edge value."""
    ni, nj, _ = target.size
    k = torch.arange(k_slices.start, k_slices.stop, dtype=torch.float64)
    j = torch.arange(nj, dtype=torch.float64)
    i = torch.arange(ni, dtype=torch.float64)
    kk, jj, ii = torch.meshgrid(k, j, i, indexing="ij")
    ijk = torch.stack((ii, jj, kk), dim=-1)
    matrix = torch.as_tensor(target.direction * np.asarray(target.spacing)[None, :],
                             dtype=torch.float64)
    points = torch.as_tensor(target.origin, dtype=torch.float64) + ijk @ matrix.T
    sample_at = _physical_to_grid_normalized(points, grid).to(torch.float32)
    sampled = F.grid_sample(probabilities[None].float(), sample_at[None], mode="bilinear",
                            padding_mode="border", align_corners=True)
    return sampled[0]


def probabilities_on_grid(probabilities: torch.Tensor, source: WorkingGrid,
                          target: WorkingGrid) -> torch.Tensor:
    """Trilinearly sample ``probabilities`` [C, k, j, i] on ``source`` at the voxel centres of
    the axis-aligned ``target`` grid: [C, k, j, i] float32 (edge values outside ``source``).
    Both grids are LPS-aligned, so each axis maps on its own (a cascade's coarse stage-1 grid
    onto stage 2's)."""
    axes = []
    for axis in (2, 1, 0):  # k, j, i: grid_sample wants (z, y, x) order in the grid's last dim
        positions = target.origin[axis] + torch.arange(target.size[axis], dtype=torch.float64) \
            * target.spacing[axis]
        index = (positions - source.origin[axis]) / source.spacing[axis]
        axes.append((index / max(source.size[axis] - 1, 1) * 2 - 1).to(torch.float32))
    kk, jj, ii = torch.meshgrid(*axes, indexing="ij")
    sample_at = torch.stack((ii, jj, kk), dim=-1)[None]
    sampled = F.grid_sample(probabilities[None].float(), sample_at, mode="bilinear",
                            padding_mode="border", align_corners=True)
    return sampled[0]
