"""Specification of the QC overlay montage (DeepOrganSegLib.qc)."""

from __future__ import annotations

import numpy as np
import pytest

from DeepOrganSegLib.qc import default_colors, save_overlay_png
from DeepOrganSegLib.volume import Volume

RED = (255, 0, 0)


def left_sided_volume(direction: np.ndarray | None = None,
                      spacing: tuple[float, float, float] = (2.0, 2.0, 2.0)
                      ) -> tuple[Volume, Volume]:
    """A 40 mm cube of tissue whose labelled block lies in the patient's left half (LPS x > 0).

    The voxel grid is built from ``direction`` and ``spacing`` so that the same patient-space
    content is stored in differently oriented arrays.
    """
    direction = np.eye(3) if direction is None else direction
    size = np.round(40.0 / np.array(spacing)).astype(int)  # voxels along i, j, k
    centre_index = (size - 1) / 2
    origin = -direction @ (centre_index * np.array(spacing))
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).reshape(-1, 3)
    points = origin + (ijk * np.array(spacing)) @ direction.T
    image = (100.0 + points[:, 1]).reshape(k.shape).astype(np.float32)
    labels = ((points[:, 0] > 5) & (np.abs(points[:, 1]) < 8) & (np.abs(points[:, 2]) < 8))
    geometry = dict(spacing=spacing, origin=tuple(origin), direction=direction)
    return (Volume(image, **geometry),
            Volume(labels.reshape(k.shape).astype(np.uint8), **geometry))


def red_columns_of_axial_panel(png_path) -> np.ndarray:
    """Columns (0-1 across the axial panel, the left third) where the overlay is red."""
    from matplotlib.image import imread

    pixels = imread(str(png_path))[..., :3]
    third = pixels.shape[1] // 3
    axial = pixels[:, :third]
    red = (axial[..., 0] > 0.5) & (axial[..., 1] < 0.35) & (axial[..., 2] < 0.35)
    return np.nonzero(red)[1] / third


def test_montage_is_a_png_with_three_views(tmp_path):
    image, labels = left_sided_volume()
    path = save_overlay_png(image, labels, tmp_path / "qc.png", title="cube",
                            label_names={1: "block"})
    assert path == tmp_path / "qc.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    height, width = imread(str(path)).shape[:2]
    assert width > 2 * height  # three panels side by side


def test_patient_left_is_shown_on_the_right_of_the_axial_view(tmp_path):
    image, labels = left_sided_volume()
    path = save_overlay_png(image, labels, tmp_path / "qc.png", colors={1: RED})
    columns = red_columns_of_axial_panel(path)
    assert columns.size and columns.mean() > 0.5


@pytest.mark.parametrize("direction", [
    np.diag([-1.0, -1.0, 1.0]),  # RAS-style flips
    np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),  # permuted and flipped
    np.array([[np.cos(0.4), -np.sin(0.4), 0.0], [np.sin(0.4), np.cos(0.4), 0.0],
              [0.0, 0.0, 1.0]]),  # oblique
])
def test_any_orientation_is_displayed_in_patient_space(tmp_path, direction):
    image, labels = left_sided_volume(direction)
    path = save_overlay_png(image, labels, tmp_path / "qc.png", colors={1: RED})
    assert red_columns_of_axial_panel(path).mean() > 0.5


def test_anisotropic_voxels_are_shown_with_their_true_proportions(tmp_path):
    image, labels = left_sided_volume(spacing=(1.0, 1.0, 5.0))
    path = save_overlay_png(image, labels, tmp_path / "qc.png", colors={1: RED})
    from matplotlib.image import imread

    pixels = imread(str(path))[..., :3]
    third = pixels.shape[1] // 3
    coronal = pixels[:, third:2 * third]
    red = (coronal[..., 0] > 0.5) & (coronal[..., 1] < 0.35) & (coronal[..., 2] < 0.35)
    rows, cols = np.nonzero(red)
    height = rows.max() - rows.min() + 1  # the block is 16 mm high ...
    width = cols.max() - cols.min() + 1  # ... and 15 mm wide (x from 5 to 20 mm)
    assert 0.6 < height / width < 1.6


def test_empty_label_map_still_gives_a_montage_through_the_centre(tmp_path):
    image, labels = left_sided_volume()
    empty = labels.with_array(np.zeros_like(labels.array))
    path = save_overlay_png(image, empty, tmp_path / "empty.png", window=(0, 200))
    assert path.stat().st_size > 1000


def test_png_is_written_atomically_without_leftovers(tmp_path):
    image, labels = left_sided_volume()
    save_overlay_png(image, labels, tmp_path / "qc.png")
    save_overlay_png(image, labels, tmp_path / "qc.png")  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["qc.png"]


def test_default_colours_are_distinct_and_skip_the_background():
    colors = default_colors(range(0, 10))
    assert 0 not in colors
    assert len(set(colors.values())) == 9
