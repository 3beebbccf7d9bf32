"""CT artefacts of dense objects, added to the intensity map (HU) before the scanner's blur.

Filtered back-projection assumes one X-ray energy; a polychromatic beam hardens through dense
material, and the reconstruction answers with streaks along the lines through it:

* **metal** (titanium clips and screws): alternating bright and dark streaks radiating from
  each object, hundreds of HU near it and fading with distance, and a dark band between two
  metal objects of one slice (the classic band between two pedicle screws);
* **beam hardening between bones**: a faint dark band (10-40 HU) along the line joining the two
  largest cortical-bone cross-sections of a slice (femoral heads, the iliac wings, vertebra and
  ribs), in some scans only: reconstruction kernels and scanners' corrections differ.

Streak directions are drawn once per case (they follow the scanner's geometry, not the slice),
and nothing here touches the label map. An approximation on the image, not a projection
simulation: it puts what a network must learn to ignore where it occurs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .geometry import Grid
from .labels import TISSUE_ID

__all__ = ["add_dense_object_artefacts", "BEAM_HARDENING_SHARE"]

#: Share of CT cases whose reconstruction leaves visible beam-hardening bands between bones.
BEAM_HARDENING_SHARE = 0.3
#: Cortical bone cross-sections smaller than this (mm^2) are too thin to harden the beam much.
_MIN_BONE_AREA_MM2 = 150.0


def add_dense_object_artefacts(image: np.ndarray, tissue: np.ndarray, grid: Grid,
                               rng: np.random.Generator) -> np.ndarray:
    """``image`` (HU, on the render ``grid``) with metal streaks where ``tissue`` holds metal
    and, in :data:`BEAM_HARDENING_SHARE` of cases, dark bands between large bones. Always the
    same draws, so that the stream stays aligned whatever is present."""
    angles = rng.uniform(0.0, np.pi, int(rng.integers(8, 16)))
    signs = np.where(np.arange(angles.size) % 2 == 0, 1.0, -1.0)
    metal_hu = float(rng.uniform(250.0, 700.0))
    streak_mm = float(rng.uniform(0.8, 2.0))
    hardening = bool(rng.random() < BEAM_HARDENING_SHARE)
    band_hu = float(rng.uniform(10.0, 40.0))
    metal = tissue == TISSUE_ID["metal"]
    has_metal = metal.any(axis=(1, 2))
    if not (has_metal.any() or hardening):
        return image
    x, y = _pixel_mm(grid)
    body = image > -500.0
    out = image.copy()
    pixel_area = grid.spacing[0] * grid.spacing[1]
    bone = tissue == TISSUE_ID["bone_cortical"]
    for k in range(image.shape[0]):
        streaks = np.zeros(image.shape[1:], dtype=np.float32)
        if has_metal[k]:
            centres = _centres(metal[k], x, y, min_area_mm2=0.0, pixel_area=pixel_area)
            for cx, cy in centres:
                r = np.hypot(x - cx, y - cy)
                fade = 15.0 / (15.0 + r)
                for angle, sign in zip(angles, signs):
                    d = np.abs((x - cx) * np.sin(angle) - (y - cy) * np.cos(angle))
                    streaks += sign * metal_hu * fade * np.exp(-0.5 * (d / streak_mm) ** 2)
            if len(centres) >= 2:
                streaks -= metal_hu * 0.5 * _band(x, y, centres[0], centres[1], 4.0)
        if hardening and bone[k].any():
            centres = _centres(bone[k], x, y, _MIN_BONE_AREA_MM2, pixel_area)
            if len(centres) >= 2:
                streaks -= band_hu * _band(x, y, centres[0], centres[1], 8.0)
        out[k] += np.where(body[k], streaks, 0.0).astype(out.dtype)
    return out


def _pixel_mm(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """x (i) and y (j) of every pixel of a slice, mm, broadcastable to (j, i)."""
    ax, ay, _ = grid.axes()
    return ax[None, :].astype(np.float32), ay[:, None].astype(np.float32)


def _centres(mask: np.ndarray, x: np.ndarray, y: np.ndarray, min_area_mm2: float,
             pixel_area: float) -> list[tuple[float, float]]:
    """Centroids (mm) of ``mask``'s connected pieces of at least ``min_area_mm2``, largest
    first."""
    pieces, count = ndi.label(mask)
    if not count:
        return []
    sizes = np.bincount(pieces.ravel())[1:]
    xs = np.bincount(pieces.ravel(), np.broadcast_to(x, mask.shape).ravel())[1:]
    ys = np.bincount(pieces.ravel(), np.broadcast_to(y, mask.shape).ravel())[1:]
    order = np.argsort(-sizes)
    return [(float(xs[n] / sizes[n]), float(ys[n] / sizes[n])) for n in order
            if sizes[n] * pixel_area >= min_area_mm2]


def _band(x: np.ndarray, y: np.ndarray, p: tuple[float, float], q: tuple[float, float],
          width_mm: float) -> np.ndarray:
    """1 on the segment p-q, falling off as a Gaussian of SD ``width_mm`` across it, 0 beyond
    its ends."""
    px, py = p
    dx, dy = q[0] - px, q[1] - py
    length2 = max(dx * dx + dy * dy, 1e-6)
    t = ((x - px) * dx + (y - py) * dy) / length2
    inside = (t >= 0.0) & (t <= 1.0)
    d = np.abs((x - px) * dy - (y - py) * dx) / np.sqrt(length2)
    return np.where(inside, np.exp(-0.5 * (d / width_mm) ** 2), 0.0).astype(np.float32)
