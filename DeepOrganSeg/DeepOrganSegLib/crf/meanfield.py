"""Fully connected 3D CRF (Krähenbühl & Koltun 2011) refining the network's probabilities.

Mean-field inference with a Potts model (or a label-compatibility matrix) and two Gaussian edge
potentials, exactly the model of Dou et al.'s 3D DSN post-processing:

* appearance: ``w1 * exp(-|Δs|² / 2θα² - |ΔI|² / 2θβ²)`` — nearby voxels of similar intensity
  take the same label;
* smoothness: ``w2 * exp(-|Δs|² / 2θγ²)`` — removes small isolated regions.

Distances ``Δs`` are in millimetres (the voxel spacing is honoured, so anisotropic volumes behave),
intensity differences ``ΔI`` in the units of the image passed in (the model's normalised
intensities). The appearance kernel is filtered with a permutohedral lattice
(:mod:`.permutohedral`, the algorithm of densecrf), built once per call and reused by all
iterations and labels; the smoothness kernel exactly, by separable convolution on the voxel grid.
Both are normalised symmetrically as in densecrf, so that labels agree with pydensecrf's.
Everything is torch: the same code runs on CPU and CUDA, on the device of the probabilities.

The unary is ``-log p̂`` of the fused probabilities ``p̂ = (1 - Σ τ_d) p_main + Σ τ_d p_side_d``
(:func:`fuse_side_outputs`). :func:`dense_crf_roi` runs only on the bounding box of the foreground
plus a margin, which makes whole CTs practical on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..progress import CancelToken, ProgressFunction
from .parameters import CRFParameters
from .permutohedral import PermutohedralLattice

__all__ = ["PROBABILITY_FLOOR", "ROI_MARGIN_MM", "bounding_box", "dense_crf", "dense_crf_roi",
           "fuse_side_outputs", "keep_found_organs", "refine_network_probabilities"]

PROBABILITY_FLOOR = 1e-5
"""Probabilities are clipped to at least this before ``-log``: a unary of at most 11.5 (as
pydensecrf's ``unary_from_softmax``), so that the pairwise terms can overrule a confident error."""

#: Millimetres :func:`dense_crf_roi` adds around the foreground's bounding box: the CRF's
#: reach beyond what the network labelled.
ROI_MARGIN_MM = 10.0


def fuse_side_outputs(main: Tensor, sides: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Fused probabilities ``(1 - Σ τ_d) main + Σ τ_d sides[d]`` (all ``[C, Z, Y, X]``)."""
    if len(sides) != len(weights):
        raise ValueError(f"{len(sides)} side outputs but {len(weights)} side-output weights")
    if any(w < 0 for w in weights) or sum(weights) > 1.0:
        raise ValueError(f"side-output weights must be non-negative and sum to at most 1, got {tuple(weights)}")
    for side in sides:
        if side.shape != main.shape:
            raise ValueError(f"side output of shape {tuple(side.shape)} does not match {tuple(main.shape)}")
    fused = main * (1.0 - sum(weights))
    for side, weight in zip(sides, weights):  # in place: one copy of the grid's C channels
        fused.add_(side, alpha=weight)
    return fused


def dense_crf(probabilities: Tensor, image: Tensor, spacing_kji: Sequence[float],
              params: CRFParameters, *, compatibility: Tensor | None = None,
              clamp: Tensor | None = None, progress: ProgressFunction | None = None,
              cancel: CancelToken | None = None) -> Tensor:
    """Refine ``probabilities`` ``[C, Z, Y, X]`` by mean-field inference; returns ``[C, Z, Y, X]``
    float32 marginals on the same device.

    ``image`` is ``[Z, Y, X]`` or ``[F, Z, Y, X]`` (F channels, all with width θβ),
    ``spacing_kji`` the voxel size in mm along Z, Y, X. ``compatibility`` ``[C, C]`` is the
    label-compatibility penalty μ(l, l') (default: Potts, ``1 - I``). ``clamp`` ``[Z, Y, X]``
    int64 holds a known label per voxel (-1 where free): those voxels keep that label and pass it
    on to their neighbours. ``cancel`` is polled between iterations.
    """
    if probabilities.ndim != 4 or probabilities.shape[0] < 2:
        raise ValueError(f"probabilities must be [C, Z, Y, X] with C >= 2, got {tuple(probabilities.shape)}")
    num_labels, shape = probabilities.shape[0], tuple(probabilities.shape[1:])
    device = probabilities.device
    image = _image_channels(image, shape).to(device=device, dtype=torch.float32)
    compatibility = _check_compatibility(compatibility, num_labels, device)
    clamped, clamp_labels = _clamped_voxels(clamp, shape, num_labels, device)
    report: ProgressFunction = progress or _ignore_progress

    unary = probabilities.reshape(num_labels, -1).float().clamp(min=PROBABILITY_FLOOR).log_().neg_()
    report("crf", 0.0, "building the lattice")
    kernels = _kernels(image, spacing_kji, params)
    q = _clamp_marginals(_softmax_(-unary), clamped, clamp_labels)
    message = torch.empty_like(q)  # Σ_m w_m k_m ∗ Q; buffers are swapped, not reallocated
    for iteration in range(params.iterations):
        if cancel is not None:
            cancel.raise_if_cancelled()
        message.zero_()
        for weight, kernel in kernels:
            kernel.accumulate(q, message, weight)
        # Potts: the energy of label l falls by its message (μ = 1 - I up to a constant per voxel)
        logits = message if compatibility is None else torch.mm(compatibility, message).neg_()
        q, message = _clamp_marginals(_softmax_(logits.sub_(unary)), clamped, clamp_labels), q
        report("crf", (iteration + 1) / params.iterations,
               f"mean-field iteration {iteration + 1} of {params.iterations}")
    return q.reshape(num_labels, *shape)


def _ignore_progress(stage: str, fraction: float, message: str = "") -> None:
    """The progress function of a caller that gives none."""


def dense_crf_roi(probabilities: Tensor, image: Tensor, spacing_kji: Sequence[float],
                  params: CRFParameters, *, margin_mm: float = ROI_MARGIN_MM,
                  compatibility: Tensor | None = None, clamp: Tensor | None = None,
                  progress: ProgressFunction | None = None,
                  cancel: CancelToken | None = None) -> Tensor:
    """:func:`dense_crf` on the bounding box of the foreground (labels other than 0 in the argmax
    or in ``clamp``) grown by ``margin_mm``; outside it the probabilities are returned as they
    are (as float32), except that clamped voxels become one-hot everywhere."""
    shape = tuple(probabilities.shape[1:])
    foreground = probabilities.max(0).indices > 0  # (argmax over dim 0 is much slower on CPU)
    if clamp is not None:
        foreground |= clamp.to(probabilities.device) > 0
    inside = None
    if foreground.any():
        box = bounding_box(foreground, spacing_kji, margin_mm)
        inside = dense_crf(
            probabilities[(slice(None), *box)], _image_channels(image, shape)[(slice(None), *box)],
            spacing_kji, params, compatibility=compatibility,
            clamp=None if clamp is None else clamp[box], progress=progress, cancel=cancel)
    # the copy is made once the CRF's buffers are gone, not beside them (0.1 GB of the peak on
    # a 512 x 512 x 300 CT)
    refined = probabilities.float().clone()
    if inside is not None:
        refined[(slice(None), *box)] = inside
        del inside
    clamped, labels = _clamped_voxels(clamp, shape, len(probabilities), refined.device)
    _clamp_marginals(refined.view(len(refined), -1), clamped, labels)
    return refined


def keep_found_organs(network: Tensor, refined: Tensor, min_share: float) -> Tensor:
    """``refined`` (the CRF's probabilities [C, k, j, i]) with every organ that the CRF shrank
    below ``min_share`` of the network's volume of it given back: where ``network`` (the
    probabilities the CRF started from) labels such an organ, its probabilities replace the
    CRF's. In place on ``refined``; returned."""
    if min_share <= 0:
        return refined
    before = network.max(0).indices
    after = refined.max(0).indices
    channels = len(network)
    counts_before = torch.bincount(before.flatten(), minlength=channels)
    counts_after = torch.bincount(after.flatten(), minlength=channels)
    for channel in range(1, channels):
        found = int(counts_before[channel])
        if found and int(counts_after[channel]) < min_share * found:
            where = before == channel
            refined[:, where] = network[:, where].to(refined.dtype)
    return refined


def refine_network_probabilities(unary: Tensor, image: Tensor, spacing_kji: Sequence[float],
                                 params: CRFParameters, *,
                                 progress: ProgressFunction | None = None,
                                 cancel: CancelToken | None = None) -> Tensor:
    """The CRF step of a segmentation, one place for ``segment`` and the tuner that picks its
    parameters: :func:`dense_crf_roi` on ``unary`` (the network's probabilities, side outputs
    fused), then :func:`keep_found_organs` with ``params.min_organ_share``."""
    refined = dense_crf_roi(unary, image, spacing_kji, params, progress=progress, cancel=cancel)
    return keep_found_organs(unary, refined, params.min_organ_share)


def _kernels(image: Tensor, spacing_kji: Sequence[float],
             params: CRFParameters) -> list[tuple[float, _NormalizedKernel]]:
    """(weight, kernel) of the appearance and the smoothness term, leaving out zero weights."""
    kernels: list[tuple[float, _NormalizedKernel]] = []
    if params.appearance_weight > 0:
        kernels.append((params.appearance_weight, _BilateralKernel(
            image, spacing_kji, params.appearance_spatial_mm, params.appearance_intensity)))
    if params.smoothness_weight > 0:
        kernels.append((params.smoothness_weight, _SpatialKernel(
            tuple(image.shape[1:]), spacing_kji, params.smoothness_spatial_mm, image.device)))
    return kernels


class _NormalizedKernel:
    """A Gaussian kernel K with densecrf's symmetric normalisation,
    ``filter(Q) = D^-1/2 K D^-1/2 Q`` where ``D = diag(K 1)``; subclasses apply K."""

    def __init__(self, num_points: int, device: torch.device) -> None:
        self._norm, self._total = self._normalisation(num_points, device)

    def _normalisation(self, num_points: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``D^-1/2`` as ``[1, N]`` and ``filter(1)`` as ``[N]``, by two applications of K."""
        ones = torch.ones(1, num_points, device=device)
        norm = self._apply(ones, ones).add_(1e-20).rsqrt_()
        return norm, self._apply(norm, ones).mul_(norm)[0]

    def _apply(self, values: Tensor, scale: Tensor) -> Tensor:
        """``K (scale * values)`` for ``values`` ``[C, N]`` and ``scale`` ``[1, N]``."""
        raise NotImplementedError

    def filter(self, q: Tensor) -> Tensor:
        """``q`` ``[C, N]`` -> ``[C, N]``."""
        return self._apply(q, self._norm).mul_(self._norm)

    def accumulate(self, q: Tensor, out: Tensor, weight: float) -> None:
        """``out += weight * filter(q)`` for marginals ``q`` (each voxel's labels sum to 1): only
        the first C - 1 labels are filtered, the last is ``filter(1)`` less the others."""
        head = self.filter(q[:-1])
        out[:-1].add_(head, alpha=weight)
        out[-1].add_(self._total - head.sum(0), alpha=weight)


class _BilateralKernel(_NormalizedKernel):
    """Appearance kernel ``exp(-|Δs|² / 2θα² - |ΔI|² / 2θβ²)`` by the permutohedral lattice."""

    def __init__(self, image: Tensor, spacing_kji: Sequence[float], spatial_mm: float,
                 intensity: float) -> None:
        positions = _positions_mm(tuple(image.shape[1:]), spacing_kji, image.device).div_(spatial_mm)
        intensities = image.reshape(len(image), -1).t() / intensity
        features = torch.cat([positions, intensities], 1)
        del positions, intensities
        self._lattice = PermutohedralLattice(features)
        del features
        super().__init__(self._lattice.num_points, image.device)

    def _apply(self, values: Tensor, scale: Tensor) -> Tensor:
        # row-major [N, C]: the sparse products read it about 1.5 times faster than a transposed view
        rows = values.new_empty(values.shape[1], len(values))
        torch.mul(values.t(), scale.t(), out=rows)
        return self._lattice.filter(rows).t()


class _SpatialKernel(_NormalizedKernel):
    """Smoothness kernel ``exp(-|Δs|² / 2θγ²)``, computed exactly (truncated at 3θγ) by separable
    convolution along Z, Y and X."""

    def __init__(self, shape: tuple[int, ...], spacing_kji: Sequence[float], spatial_mm: float,
                 device: torch.device) -> None:
        self._shape = shape
        self._taps = [_gaussian_taps(spatial_mm / float(spacing), size)
                      for spacing, size in zip(spacing_kji, shape)]
        super().__init__(math.prod(shape), device)

    def _normalisation(self, num_points: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """K is a product of 1D kernels, and so are ``K 1``, ``D^-1/2`` and ``filter(1)``: three
        outer products of per-axis vectors instead of two filters of the whole grid."""
        norm, total = torch.ones((), device=device), torch.ones((), device=device)
        for axis, (size, taps) in enumerate(zip(self._shape, self._taps)):
            ones = torch.ones(1, size, device=device)
            axis_norm = _convolve_axis(ones, taps, 1).rsqrt_()
            axis_total = _convolve_axis(axis_norm, taps, 1).mul_(axis_norm)
            view = [1, 1, 1]
            view[axis] = size
            norm = norm * axis_norm.view(view)
            total = total * axis_total.view(view)
        return norm.reshape(1, num_points), total.reshape(num_points)

    def _apply(self, values: Tensor, scale: Tensor) -> Tensor:
        values = (values * scale).reshape(len(values), *self._shape)
        for axis, taps in enumerate(self._taps, start=1):
            values = _convolve_axis(values, taps, axis)
        return values.reshape(len(values), -1)


def _gaussian_taps(sigma_voxels: float, size: int) -> list[float]:
    """One side of a unit-peak Gaussian, ``exp(-k² / 2σ²)`` for k = 0 .. min(⌈3σ⌉, size - 1)."""
    radius = min(math.ceil(3.0 * sigma_voxels), size - 1)
    return [math.exp(-k * k / (2.0 * sigma_voxels ** 2)) for k in range(radius + 1)]


def _convolve_axis(values: Tensor, taps: list[float], axis: int) -> Tensor:
    """Convolve with the symmetric kernel ``taps`` (centre first) along ``axis``, zero outside."""
    out = values * taps[0]
    n = values.shape[axis]
    for k, tap in enumerate(taps[1:], start=1):
        out.narrow(axis, k, n - k).add_(values.narrow(axis, 0, n - k), alpha=tap)
        out.narrow(axis, 0, n - k).add_(values.narrow(axis, k, n - k), alpha=tap)
    return out


def _positions_mm(shape: tuple[int, ...], spacing_kji: Sequence[float], device: torch.device) -> Tensor:
    """Voxel centres ``[N, 3]`` (z, y, x) in mm, in C order of ``shape``."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) * float(s)
            for n, s in zip(shape, spacing_kji)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _image_channels(image: Tensor, shape: tuple[int, ...]) -> Tensor:
    """``image`` as ``[F, Z, Y, X]``, checked against the probabilities' grid."""
    channels = image[None] if image.ndim == 3 else image
    if channels.ndim != 4 or tuple(channels.shape[1:]) != shape:
        raise ValueError(f"image of shape {tuple(image.shape)} does not match the probabilities' grid {shape}")
    return channels


def _check_compatibility(compatibility: Tensor | None, num_labels: int,
                         device: torch.device) -> Tensor | None:
    if compatibility is None:
        return None
    if tuple(compatibility.shape) != (num_labels, num_labels):
        raise ValueError(f"compatibility must be [{num_labels}, {num_labels}], got {tuple(compatibility.shape)}")
    return compatibility.to(device=device, dtype=torch.float32)


def _softmax_(logits: Tensor) -> Tensor:
    """Softmax over the labels (dim 0) of ``logits`` ``[C, N]``, in place."""
    logits.sub_(logits.amax(0, keepdim=True)).exp_()
    return logits.div_(logits.sum(0, keepdim=True))


def _clamped_voxels(clamp: Tensor | None, shape: tuple[int, ...], num_labels: int,
                    device: torch.device) -> tuple[Tensor | None, Tensor | None]:
    """Flat indices of the clamped voxels and their labels (``None, None`` when none)."""
    if clamp is None:
        return None, None
    if tuple(clamp.shape) != shape:
        raise ValueError(f"clamp of shape {tuple(clamp.shape)} does not match the grid {shape}")
    flat = clamp.to(device).reshape(-1).long()
    if bool((flat >= num_labels).any()):
        raise ValueError(f"clamp holds labels >= the number of labels {num_labels}")
    voxels = torch.nonzero(flat >= 0).squeeze(1)
    return voxels, flat[voxels]


def _clamp_marginals(q: Tensor, voxels: Tensor | None, labels: Tensor | None) -> Tensor:
    """Set the marginals ``q`` ``[C, N]`` of clamped voxels to one-hot, in place."""
    if voxels is not None and len(voxels):
        q[:, voxels] = 0.0
        q[labels, voxels] = 1.0
    return q


def bounding_box(mask: Tensor, spacing_kji: Sequence[float], margin_mm: float) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin_mm`` (clipped to the grid)."""
    box = []
    for axis, (size, spacing) in enumerate(zip(mask.shape, spacing_kji)):
        occupied = mask.any(dim=[a for a in range(mask.ndim) if a != axis]).nonzero().squeeze(1)
        margin = math.ceil(margin_mm / float(spacing))
        box.append(slice(max(int(occupied[0]) - margin, 0), min(int(occupied[-1]) + 1 + margin, size)))
    return tuple(box)
