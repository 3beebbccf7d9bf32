"""Quality-control pictures: an axial/coronal/sagittal montage of an image with its label overlay.

The three planes pass through the centroid of the labelled voxels and are resampled in patient
space (LPS, isotropic pixels), so oblique, flipped or anisotropic volumes look right. Display
follows the radiological convention: the patient's right on the left of axial and coronal views,
anterior up in axial views, superior up in coronal and sagittal views (anterior on the left).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import numpy as np
import SimpleITK as sitk

from .volume import Volume
from .volume_io import write_atomically

__all__ = ["save_overlay_png", "default_colors"]

_MAX_PIXELS = 320  # longest side of a resampled plane
_EDGE_LETTERS = {  # view -> patient directions at the (left, right, top, bottom) edges
    "axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I")}


def default_colors(values) -> dict[int, tuple[int, int, int]]:
    """A distinct RGB colour (0-255) per label value (up to 18), from matplotlib's tab20."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors  # type: ignore[attr-defined]  # a ListedColormap
    # saturated colours first; the two greys (14, 15) would vanish on a grey image
    order = [n for n in list(range(0, 20, 2)) + list(range(1, 20, 2)) if n not in (14, 15)]
    return {int(v): cast("tuple[int, int, int]",  # tab20's colours are RGB
                         tuple(int(255 * c) for c in palette[order[(int(v) - 1) % len(order)]]))
            for v in values if int(v) != 0}


def _label_centroid(labels: Volume) -> np.ndarray:
    """Patient-space (LPS mm) centroid of the labelled voxels, or of the grid if none."""
    indices = np.argwhere(labels.array > 0)
    if indices.size == 0:
        k, j, i = labels.array.shape
        centre_ijk = np.array([(i - 1) / 2, (j - 1) / 2, (k - 1) / 2])
    else:
        centre_ijk = indices.mean(axis=0)[::-1]
    return labels.index_to_physical(centre_ijk)


def _physical_bounds(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box (mm) of the voxel centres."""
    k, j, i = volume.array.shape
    corners = np.array(np.meshgrid([0, i - 1], [0, j - 1], [0, k - 1], indexing="ij"))
    points = volume.index_to_physical(corners.reshape(3, -1).T)
    return points.min(axis=0), points.max(axis=0)


def _plane(image: sitk.Image, centre: np.ndarray, lo: np.ndarray, hi: np.ndarray,
           normal_axis: int, step: float, interpolator: int, background: float) -> np.ndarray:
    """Resample one LPS-aligned plane through ``centre`` into a 2D array (rows, columns).

    Returned orientation, as displayed: axial rows run anterior -> posterior and columns patient
    right -> left; coronal and sagittal rows run superior -> inferior, columns right -> left and
    anterior -> posterior respectively.
    """
    in_plane = [a for a in range(3) if a != normal_axis]
    size = [1, 1, 1]
    origin = centre.copy()
    for a in in_plane:
        size[a] = max(1, int(np.floor((hi[a] - lo[a]) / step)) + 1)
        origin[a] = lo[a]
    resampled = sitk.Resample(image, size, sitk.Transform(), interpolator, origin.tolist(),
                              [step] * 3, np.eye(3).flatten().tolist(), background,
                              image.GetPixelID())
    array = sitk.GetArrayFromImage(resampled)  # [z, y, x]
    if normal_axis == 2:
        return array[0]  # rows y (A->P), columns x (R->L)
    if normal_axis == 1:
        return array[::-1, 0, :]  # rows z (S->I), columns x (R->L)
    return array[::-1, :, 0]  # rows z (S->I), columns y (A->P)


def _draw_edge_letters(ax, view: str) -> None:
    """Patient-direction letters at the four edges of a panel."""
    left, right, top, bottom = _EDGE_LETTERS[view]
    style = dict(color="yellow", fontsize=9, transform=ax.transAxes, ha="center", va="center")
    ax.text(0.03, 0.5, left, **style)
    ax.text(0.97, 0.5, right, **style)
    ax.text(0.5, 0.97, top, **style)
    ax.text(0.5, 0.03, bottom, **style)


def _display_window(image: Volume, window: tuple[float, float] | None) -> tuple[float, float]:
    if window is not None:
        return float(window[0]), float(window[1])
    low, high = np.percentile(image.array, [1.0, 99.5])
    return float(low), float(max(high, low + 1e-6))


def save_overlay_png(image: Volume, labels: Volume, path: str | os.PathLike, *,
                     colors: dict[int, tuple[int, int, int]] | None = None, title: str = "",
                     window: tuple[float, float] | None = None,
                     label_names: dict[int, str] | None = None, alpha: float = 0.4) -> Path:
    """Write an axial/coronal/sagittal montage of ``image`` with ``labels`` overlaid (PNG).

    Args:
        image: the intensity volume (any orientation, any spacing).
        labels: a label map on a grid in the same patient space (it need not be the same grid).
        path: the PNG to write (atomically).
        colors: label value -> RGB (0-255); default a tab20 colour per value.
        title: drawn above the montage.
        window: display (low, high) intensity; default the 1st-99.5th percentile.
        label_names: when given, a legend names the labels present.
        alpha: overlay opacity.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    values = [int(v) for v in np.unique(labels.array) if v != 0]
    colors = {**default_colors(values), **(colors or {})}
    centre = _label_centroid(labels)
    lo, hi = _physical_bounds(image)
    step = max(float(min(image.spacing)), float((hi - lo).max()) / _MAX_PIXELS)
    low, high = _display_window(image, window)
    sitk_image = image.to_sitk()
    sitk_labels = labels.with_array(labels.array.astype(np.uint8, copy=False)).to_sitk()

    figure = Figure(figsize=(12, 4.6), dpi=100, facecolor="black")
    axes = figure.subplots(1, 3)
    lut = np.zeros((256, 4), dtype=np.float32)
    for value, rgb in colors.items():
        if 0 < value < 256:
            lut[value, :3] = np.asarray(rgb, dtype=np.float32) / 255.0
            lut[value, 3] = alpha
    for ax, normal_axis, name in zip(axes, (2, 1, 0), ("axial", "coronal", "sagittal")):
        plane = _plane(sitk_image, centre, lo, hi, normal_axis, step, sitk.sitkLinear, low)
        label_plane = _plane(sitk_labels, centre, lo, hi, normal_axis, step,
                             sitk.sitkNearestNeighbor, 0)
        ax.imshow(plane, cmap="gray", vmin=low, vmax=high, interpolation="bilinear")
        ax.imshow(lut[label_plane], interpolation="nearest")
        ax.set_title(name, color="white", fontsize=10)
        ax.axis("off")
        _draw_edge_letters(ax, name)
    if title:
        figure.suptitle(title, color="white", fontsize=11)
    if label_names:
        handles = [Patch(color=np.asarray(colors[v]) / 255.0,  # type: ignore[arg-type]  # RGB array
                         label=label_names.get(v, str(v)))
                   for v in values if v in colors]
        if handles:
            figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9),
                          fontsize=8, frameon=False, labelcolor="white")
    figure.subplots_adjust(left=0.01, right=0.99, top=0.86 if title else 0.92,
                           bottom=0.1 if label_names else 0.02, wspace=0.03)
    path = Path(path)
    return write_atomically(path, lambda tmp: figure.savefig(tmp, format="png",
                                                             facecolor="black"))
